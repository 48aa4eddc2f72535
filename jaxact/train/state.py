"""The train state: everything that changes during training, in one pytree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxact.models import memory as memlib


class TrainState(train_state.TrainState):
    """flax's train state (step, params, optimizer and its state, `apply_fn`) plus an rng key
    from which every step's randomness is folded. The optimizer and `apply_fn` are static, so
    they are not checkpointed."""

    rng: jax.Array

    @classmethod
    def create(cls, *, apply_fn, params, tx, rng, **kwargs):
        state = super().create(apply_fn=apply_fn, params=params, tx=tx, rng=rng, **kwargs)
        return state.replace(step=jnp.zeros((), jnp.int32))  # a typed counter, as checkpointed


class MemoryTrainState(TrainState):
    """The memory classifier's state: the bank (`jaxact.models.memory.MemoryBank`) and its
    current references (`memory.References`) travel with the params, through every step and
    into every checkpoint."""

    memory: memlib.MemoryBank
    references: memlib.References


def make_init(model, tx: optax.GradientTransformation, input_shape):
    """`rng -> TrainState` of `model` initialised on zeros of `input_shape`, a shape tuple or a
    mapping of them (a model with several inputs) (to be jitted)."""

    def init(rng) -> TrainState:
        params_rng, state_rng = jax.random.split(rng)
        inputs = jax.tree.map(lambda shape: jnp.zeros(shape, jnp.float32), input_shape,
                              is_leaf=lambda x: isinstance(x, tuple))
        params = model.init(params_rng, inputs)["params"]
        return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=state_rng)

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
