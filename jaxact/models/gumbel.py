"""Hard Gumbel-softmax with straight-through gradients: discrete choices that still train.

    logits [..., K] -> one-hot [..., K]
      training:   one_hot(argmax(logits + g)) forward, the gradient of softmax((logits + g) / tau)
                  backward (g ~ Gumbel(0, 1); tau the temperature)
      evaluation: one_hot(argmax(logits)), no noise

Shared by the temporal channel gate (K = 3: keep / reuse / drop) and the actor grouping (K = G
groups). The forward value is exactly one-hot in both modes, so a layer that multiplies by it
selects, and counts of the choices are integers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def hard_one_hot(logits: jax.Array) -> jax.Array:
    """`[..., K]` -> one-hot of the argmax `[..., K]` in `logits`' dtype (no gradient)."""
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)


def straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
    """The value of `hard`, the gradient of `soft`."""
    return soft + jax.lax.stop_gradient(hard - soft)


def gumbel_one_hot(logits: jax.Array, rng: jax.Array | None, temperature=1.0) -> jax.Array:
    """Hard Gumbel-softmax sample `[..., K]` with straight-through gradients; `rng=None`: the
    deterministic argmax (evaluation). `temperature` (> 0; a float or a traced scalar) sharpens
    the soft distribution whose gradient flows back: low values pass sharper but noisier
    gradients."""
    if rng is None:
        return hard_one_hot(logits)
    gumbel = jax.random.gumbel(rng, logits.shape, jnp.float32)
    soft = jax.nn.softmax((logits.astype(jnp.float32) + gumbel) / temperature, axis=-1)
    return straight_through(hard_one_hot(soft), soft).astype(logits.dtype)
