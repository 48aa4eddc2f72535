"""The train state: everything that changes during training, in one pytree."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from jaxact.models import memory as memlib


def check_ema_decay(decay: float) -> None:
    """Fails naming `train.ema_decay` unless it is in [0, 1) (0: no average)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {decay}")


class TrainState(train_state.TrainState):
    """flax's train state (step, params, optimizer and its state, `apply_fn`) plus an rng key
    from which every step's randomness is folded, and, with `ema_decay` > 0, an exponential
    moving average of the params (`ema_params`, what evaluation reads: `eval_params`) and the
    number of steps it has averaged since it was last restarted (`ema_count`). The optimizer,
    `apply_fn` and `ema_decay` are static, so they are not checkpointed; without the average,
    `ema_params` and `ema_count` are None and the checkpointed pytree is the same as before it."""

    rng: jax.Array
    ema_params: Any  # None without the average
    ema_count: Any  # int32 scalar; None without the average
    ema_decay: float = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, apply_fn, params, tx, rng, ema_decay: float = 0.0, **kwargs):
        check_ema_decay(ema_decay)
        state = super().create(apply_fn=apply_fn, params=params, tx=tx, rng=rng,
                               ema_params=None, ema_count=None, ema_decay=float(ema_decay),
                               **kwargs)
        state = state.replace(step=jnp.zeros((), jnp.int32))  # a typed counter, as checkpointed
        return state.restart_ema()

    def restart_ema(self) -> TrainState:
        """The average restarted at the current params (a new phase, or new params)."""
        if not self.ema_decay:
            return self
        return self.replace(ema_params=jax.tree.map(jnp.copy, self.params),
                            ema_count=jnp.zeros((), jnp.int32))

    def apply_gradients(self, *, grads, **kwargs) -> TrainState:
        new = super().apply_gradients(grads=grads, **kwargs)
        if not self.ema_decay:
            return new
        # Warm start: while few steps are averaged the decay is lower, so the average is not
        # held near the (random or pre-trained) starting point. Counted from the last restart,
        # not the global step, so a later phase warm-starts too.
        count = self.ema_count.astype(jnp.float32)
        decay = jnp.minimum(self.ema_decay, (1.0 + count) / (10.0 + count))
        ema = jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), self.ema_params, new.params)
        return new.replace(ema_params=ema, ema_count=self.ema_count + 1)


def eval_params(state: TrainState):
    """The params to evaluate: the moving average where the state keeps one, else the params."""
    return state.params if state.ema_params is None else state.ema_params


class MemoryTrainState(TrainState):
    """The memory classifier's state: the bank (`jaxact.models.memory.MemoryBank`) and its
    current references (`memory.References`) travel with the params, through every step and
    into every checkpoint."""

    memory: memlib.MemoryBank
    references: memlib.References


def make_init(model, tx: optax.GradientTransformation, input_shape, ema_decay: float = 0.0):
    """`rng -> TrainState` of `model` initialised on zeros of `input_shape`, a shape tuple or a
    mapping of them (a model with several inputs) (to be jitted); `ema_decay` > 0 keeps a
    moving average of the params."""

    def init(rng) -> TrainState:
        params_rng, state_rng = jax.random.split(rng)
        inputs = jax.tree.map(lambda shape: jnp.zeros(shape, jnp.float32), input_shape,
                              is_leaf=lambda x: isinstance(x, tuple))
        params = model.init(params_rng, inputs)["params"]
        return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=state_rng,
                                 ema_decay=ema_decay)

    return init


def dropout_rng(state: TrainState) -> jax.Array:
    """A fresh dropout key per step, independent of the keys other uses fold from `state.rng`."""
    return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 1)


def count_params(params) -> int:
    return int(optax.tree.size(params))


def learning_rate_schedule(config) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay to 0 at `num_steps` (`train`)."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
        decay_steps=max(config.num_steps, config.warmup_steps + 1), end_value=0.0)


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW (or SGD with Nesterov momentum) with linear warmup and cosine decay over
    `num_steps`, plus global-norm clipping.

    `config` is the `train` section: optimizer, learning_rate, warmup_steps, num_steps,
    weight_decay, grad_clip, max_nonfinite_steps. Updates whose gradients hold NaN/inf are
    skipped (params and moments unchanged) and counted; `nonfinite_metrics` reads the counts and
    the training loop stops once `max_nonfinite_steps` come in a row.
    """
    schedule = learning_rate_schedule(config)
    name = config.optimizer
    if name == "adamw":
        optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    elif name == "sgd":
        optimizer = optax.chain(optax.add_decayed_weights(config.weight_decay),
                                optax.sgd(schedule, momentum=0.9, nesterov=True))
    else:
        raise ValueError(f"train.optimizer={name!r}: expected 'adamw' or 'sgd'")
    inner = optax.chain(optax.clip_by_global_norm(config.grad_clip), optimizer)
    return optax.apply_if_finite(inner, max_consecutive_errors=config.max_nonfinite_steps)


def nonfinite_metrics(opt_state) -> dict:
    """`nonfinite_streak` (skipped updates in a row) and `nonfinite_total` of `make_optimizer`'s
    state."""
    return {"nonfinite_streak": opt_state.notfinite_count,
            "nonfinite_total": opt_state.total_notfinite}
