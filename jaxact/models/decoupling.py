"""Decoupling of actor features into a temporal and a spatial branch (no parameters).

    actor features X [B, N, T, S, S, C]
      -> temporal features x_t = mean of X over the S x S bins  [B, N, T, C]     (how it moves)
      -> spatial features  x_s = mean of X over the T frames    [B, N, S, S, C]  (shape, posture)
                             or X at the keyframe T // 2 (`spatial="keyframe"`)

With the keyframe-isolated backbone the keyframe's features come from the keyframe alone, so
`spatial="keyframe"` reads the posture at the labelled instant; the mean blurs a pose that
changes inside the window (a hand going up at the keyframe shows in half the frames).

Each branch keeps one factor of the spatio-temporal volume and averages the other away, so the
encodings and the fusion that follow (`encodings`, `fusion`, `fusion_head`) can treat them apart.
Only the last four axes are named: any leading axes (e.g. `[B, N]` or a flat `[R]`) pass through.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SPATIAL = ("mean", "keyframe")


def decouple(x: jax.Array, spatial: str = "mean") -> tuple[jax.Array, jax.Array]:
    """`[..., T, S, S, C]` -> (temporal `[..., T, C]`, spatial `[..., S, S, C]`).

    spatial: "mean" over the T frames, or "keyframe": the frame `T // 2`.
    Means are taken in `x`'s dtype (XLA accumulates bfloat16 reductions in float32).
    """
    if x.ndim < 4:
        raise ValueError(f"decouple needs [..., T, S, S, C] features, got shape {x.shape}")
    if spatial not in SPATIAL:
        raise ValueError(f"spatial must be one of {SPATIAL}, got {spatial!r}")
    x_t = jnp.mean(x, axis=(-3, -2))
    x_s = jnp.mean(x, axis=-4) if spatial == "mean" else x[..., x.shape[-4] // 2, :, :, :]
    return x_t, x_s
