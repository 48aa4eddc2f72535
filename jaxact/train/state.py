"""The train state: everything that changes during training, in one pytree."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


@flax.struct.dataclass
class TrainState:
    """Params, optimizer state, step and rng, plus method-specific state.

    `memory` and `references` hold the memory classifier's bank (`jaxact.models.memory`); they are
    None for models without one. The optimizer is static (not a leaf) so it is not checkpointed.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    memory: Any = None
    references: Any = None
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)

    @classmethod
    def create(cls, params, tx, rng, **extra) -> TrainState:
        return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                   opt_state=tx.init(params), rng=rng, tx=tx, **extra)

    def apply_gradients(self, grads) -> TrainState:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state)


def dropout_rng(state: TrainState) -> jax.Array:
    """A fresh dropout key per step, independent of the keys other uses fold from `state.rng`."""
    return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 1)


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW (or SGD with Nesterov momentum) with linear warmup and cosine decay over
    `num_steps`, plus global-norm clipping.

    `config` is the `train` section: optimizer, learning_rate, warmup_steps, num_steps,
    weight_decay, grad_clip, max_nonfinite_steps. Updates whose gradients hold NaN/inf are
    skipped (params and moments unchanged) and counted; `nonfinite_metrics` reads the counts and
    the training loop stops once `max_nonfinite_steps` come in a row.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
        decay_steps=max(config.num_steps, config.warmup_steps + 1), end_value=0.0)
    name = config.get("optimizer", "adamw")
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
