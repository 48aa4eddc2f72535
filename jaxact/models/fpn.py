"""Feature pyramid network (Lin et al. 2017) over the keyframe's multi-level features.

Lateral 1 x 1 convs bring every level to `dim` channels, a top-down pass adds each coarser level
(nearest-neighbour upsampled) into the next finer one, and a 3 x 3 conv smooths each sum. Levels
may share a resolution (e.g. a dilated last stage); they are then added without upsampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


def upsample_to(x: jax.Array, height: int, width: int) -> jax.Array:
    """Nearest-neighbour resize of `[B, h, w, C]` to `[B, height, width, C]`."""
    b, h, w, c = x.shape
    if (h, w) == (height, width):
        return x
    if height % h == 0 and width % w == 0:
        # Integer factors: repeat is exact and cheaper than a general resize.
        return jnp.repeat(jnp.repeat(x, height // h, axis=1), width // w, axis=2)
    return jax.image.resize(x, (b, height, width, c), method="nearest")


class FPN(nn.Module):
    """`[B, H_l, W_l, C_l]` per level (finest first) -> list of `[B, H_l, W_l, dim]`.

    Attributes:
      dim: channels of every output level.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    dim: int = 64
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> list[jax.Array]:
        if not features:
            raise ValueError("FPN needs at least one feature level")
        for finer, coarser in zip(features[:-1], features[1:], strict=True):
            if coarser.shape[1] > finer.shape[1] or coarser.shape[2] > finer.shape[2]:
                raise ValueError("FPN levels must go from fine to coarse, got spatial shapes "
                                 f"{[f.shape[1:3] for f in features]}")
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        laterals = [nn.Conv(self.dim, (1, 1), name=f"lateral{i}", **dt)(f)
                    for i, f in enumerate(features)]
        for i in range(len(laterals) - 2, -1, -1):
            _, h, w, _ = laterals[i].shape
            laterals[i] = laterals[i] + upsample_to(laterals[i + 1], h, w)
        outputs = [nn.Conv(self.dim, (3, 3), name=f"output{i}", **dt)(x)
                   for i, x in enumerate(laterals)]
        for f, out in zip(features, outputs, strict=True):
            chex.assert_shape(out, (*f.shape[:3], self.dim))
        return outputs
