"""Decoupling of actor features into a temporal and a spatial branch (no parameters).

    actor features X [B, N, T, S, S, C]
      -> temporal features x_t = mean of X over the S x S bins  [B, N, T, C]     (how it moves)
      -> spatial features  x_s = mean of X over the T frames    [B, N, S, S, C]  (shape, posture)

Each branch keeps one factor of the spatio-temporal volume and averages the other away, so the
encodings and the fusion that follow (`encodings`, `fusion`, `fusion_head`) can treat them apart.
Only the last four axes are named: any leading axes (e.g. `[B, N]` or a flat `[R]`) pass through.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def decouple(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[..., T, S, S, C]` -> (temporal `[..., T, C]`, spatial `[..., S, S, C]`) means.

    Means are taken in `x`'s dtype (XLA accumulates bfloat16 reductions in float32).
    """
    if x.ndim < 4:
        raise ValueError(f"decouple needs [..., T, S, S, C] features, got shape {x.shape}")
    x_t = jnp.mean(x, axis=(-3, -2))
    x_s = jnp.mean(x, axis=-4)
    return x_t, x_s
