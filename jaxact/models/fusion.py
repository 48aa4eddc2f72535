"""Fusion of the encoded temporal and spatial branches into one spatial map per actor.

    temporal [..., T, C_e] + spatial [..., S, S, C_e]  ->  fused map [..., S, S, C_f]

`...` is any number of leading actor axes, passed through unchanged: `DecoupledFusionHead` keeps
`[B, N]`, a flat `[R]` (R = B * N actors) works the same. The map stays on the S x S RoI grid so
that per-bin behaviours can be classified on it (`fusion_head`).

  SumFusion     add the branches on their shared channel axis, then Dense -> C_f
  ConcatFusion  concatenate them on the channel axis, then Dense -> C_f
  GramFusion    convs on the concatenation, Gram-matrix channel attention, convs -> C_f

Sum and concat see the temporal branch pooled over T (broadcast over S x S); the Gram fusion
folds T into channels, so its convs still see temporal order.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


def _check_branches(temporal: jax.Array, spatial: jax.Array) -> None:
    if temporal.ndim < 2 or spatial.ndim < 3 or temporal.ndim + 1 != spatial.ndim:
        raise ValueError(f"fusion needs temporal [..., T, C] and spatial [..., S, S, C] with the "
                         f"same leading axes, got {temporal.shape} and {spatial.shape}")
    chex.assert_equal_shape_prefix([temporal, spatial], temporal.ndim - 2)


def _broadcast_to_grid(x: jax.Array, grid: jax.Array) -> jax.Array:
    """`[..., C]` -> `[..., S, S, C]` copies over the S x S bins of `grid` `[..., S, S, C']`."""
    return jnp.broadcast_to(x[..., None, None, :], (*grid.shape[:-1], x.shape[-1]))


def sum_branches(temporal: jax.Array, spatial: jax.Array, pool_time_first: bool = True):
    """`temporal` `[..., T, C]` + `spatial` `[..., S, S, C]` -> `[..., S, S, C]`.

    `pool_time_first=True` (the cheap form): mean of the temporal branch over T, broadcast over
    S x S, plus the spatial branch. False (the full form): broadcast both to `[..., T, S, S, C]`,
    add, then mean over T. The mean is linear and the spatial term is constant over T, so both
    give mean_t(x_t) + x_s: the same map up to rounding, at 1 / T of the full form's memory.
    """
    _check_branches(temporal, spatial)
    if pool_time_first:
        return spatial + _broadcast_to_grid(jnp.mean(temporal, axis=-2), spatial)
    full = temporal[..., :, None, None, :] + spatial[..., None, :, :, :]  # [..., T, S, S, C]
    return jnp.mean(full, axis=-4)


def gram_channel_attention(b: jax.Array) -> jax.Array:
    """Gram-matrix channel attention: `[..., S, S, C]` -> `M F` as `[..., S, S, C]`.

    F = b reshaped to `[..., C, S*S]` (one row per channel); G = F F^T `[..., C, C]`; M = softmax
    of G over its last axis (the plain softmax of G, not DANet's softmax(max(G) - G)); the result
    is M F reshaped back: each output channel is a convex mix of the input channels, weighted by
    how alike their maps are.

    Computed in float32 and cast back to `b`'s dtype: the softmax reads differences of Gram
    entries, which grow with S*S and the features' scale, and bfloat16 (or TF32) rounding of
    them would move the weights.
    """
    *lead, h, w, c = b.shape
    f = jnp.swapaxes(b.reshape(*lead, h * w, c), -1, -2).astype(jnp.float32)  # [..., C, S*S]
    hi = jax.lax.Precision.HIGHEST
    g = jnp.matmul(f, jnp.swapaxes(f, -1, -2), precision=hi)  # [..., C, C]
    m = jax.nn.softmax(g, axis=-1)
    mf = jnp.matmul(m, f, precision=hi)  # [..., C, S*S]
    return jnp.swapaxes(mf, -1, -2).reshape(b.shape).astype(b.dtype)


class SumFusion(nn.Module):
    """`temporal` `[..., T, C_e]` + `spatial` `[..., S, S, C_e]` -> `[..., S, S, C_f]`.

    `sum_branches` (the temporal branch pooled over T, broadcast over S x S, added to the spatial
    one), then Dense -> C_f. `pool_time_first=False` computes the same sum by its full form
    (broadcast to `[..., T, S, S, C_e]`, then mean over T); same parameters, same output.

    Attributes:
      features: C_f.
      pool_time_first: the cheap form of the sum (see `sum_branches`).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    features: int
    pool_time_first: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, temporal: jax.Array, spatial: jax.Array) -> jax.Array:
        x = sum_branches(temporal, spatial, self.pool_time_first)
        return nn.Dense(self.features, name="out", dtype=self.dtype,
                        param_dtype=self.param_dtype)(x)


class ConcatFusion(nn.Module):
    """`temporal` `[..., T, C_t]` + `spatial` `[..., S, S, C_s]` -> `[..., S, S, C_f]`.

    Concatenates (spatial, temporal pooled over T and broadcast over S x S) on the channel axis,
    `[..., S, S, C_s + C_t]`, then Dense -> C_f.

    Attributes:
      features: C_f.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, temporal: jax.Array, spatial: jax.Array) -> jax.Array:
        _check_branches(temporal, spatial)
        x = jnp.concatenate([spatial, _broadcast_to_grid(jnp.mean(temporal, axis=-2), spatial)],
                            axis=-1)
        return nn.Dense(self.features, name="out", dtype=self.dtype,
                        param_dtype=self.param_dtype)(x)


class GramFusion(nn.Module):
    """`temporal` `[..., T, C_e]` + `spatial` `[..., S, S, C_e]` -> `[..., S, S, C_f]`.

      1. 1 x 1 convs (`reduce_temporal`, `reduce_spatial`) bring both branches to C_a channels.
      2. A = concat(spatial `[..., S, S, C_a]`, temporal folded to `T * C_a` channels, t-major,
         the same at every bin) `[..., S, S, (1 + T) * C_a]`. Folding time into channels instead
         of pooling it keeps temporal order: the next conv weighs each frame separately. The
         parameters therefore depend on T: the module is built for one clip length.
      3. B = conv3x3 -> ReLU -> conv3x3 (`mix1`, `mix2`) `[..., S, S, C_b]`.
      4. MF = `gram_channel_attention(B)`; C = B + gamma * MF, gamma a trainable scalar that
         starts at 0, so training starts from the plain conv path and lets attention in.
      5. D = conv3x3 -> ReLU -> conv3x3 (`out1`, `out2`) `[..., S, S, C_f]`, the fused map.

    All convs are 'SAME'-padded, so the S x S grid is kept. `attention=False` drops step 4
    (C = B, no `gamma` parameter): an ablation, and at initialisation the same function.

    Attributes:
      features: C_f.
      reduce_dim: C_a.
      gram_dim: C_b, the channels the Gram matrix is taken over.
      attention: use the Gram-matrix channel attention.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    features: int
    reduce_dim: int = 16
    gram_dim: int = 64
    attention: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, temporal: jax.Array, spatial: jax.Array) -> jax.Array:
        _check_branches(temporal, spatial)
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        t = nn.Dense(self.reduce_dim, name="reduce_temporal", **dt)(temporal)  # [..., T, C_a]
        s = nn.Dense(self.reduce_dim, name="reduce_spatial", **dt)(spatial)  # [..., S, S, C_a]
        t = t.reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1])  # [..., T * C_a], t-major
        a = jnp.concatenate([s, _broadcast_to_grid(t, s).astype(s.dtype)], axis=-1)
        conv = lambda n, name: nn.Conv(n, (3, 3), padding="SAME", name=name, **dt)
        b = conv(self.gram_dim, "mix2")(nn.relu(conv(self.gram_dim, "mix1")(a)))
        if self.attention:
            gamma = self.param("gamma", nn.initializers.zeros, (), self.param_dtype)
            b = b + jnp.asarray(gamma, b.dtype) * gram_channel_attention(b)
        return conv(self.features, "out2")(nn.relu(conv(self.features, "out1")(b)))


FUSIONS: dict[str, type[nn.Module]] = {"sum": SumFusion, "concat": ConcatFusion,
                                       "gram": GramFusion}
