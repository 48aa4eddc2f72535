"""Encodings of the decoupled branches: 1 x 1 convolutions whose kernel a tiny hypernetwork makes.

    z [z_dim] (a trainable vector, not computed from the input)
      -> Dense(hidden) -> ReLU -> Dense(C_in * C_e) -> kernel [C_in, C_e] (x 1 / sqrt(C_in))
    features [..., C_in] -> features @ kernel + bias -> [..., C_e]

One instance per branch: the temporal one learns temporal-scale attributes, the spatial one shape
and posture attributes. The kernel depends on the parameters only (z and the hypernetwork's
weights), so it is the same for every actor and every position: a 1 x 1 conv reparameterised
through the hypernetwork, which ties the C_in * C_e kernel entries together through z.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class HyperConvEncoding(nn.Module):
    """`[..., C_in]` -> `[..., C_e]` by a 1 x 1 conv with a hypernetwork-generated kernel.

    The input may have any rank (temporal `[B, N, T, C]`, spatial `[B, N, S, S, C]`, ...): the
    conv acts on the last axis only.

    Parameters (with `enabled`): `z` `[z_dim]` ~ N(0, 1); `hyper_hidden` Dense(z_dim -> hidden);
    `hyper_kernel` Dense(hidden -> C_in * C_e); `bias` `[C_e]` (zeros; a plain parameter, not
    generated). The generated kernel is `hyper_kernel(relu(hyper_hidden(z))).reshape(C_in, C_e)
    / sqrt(C_in)`: the fixed fan-in factor keeps the output's scale that of a lecun-initialised
    Dense whatever C_in is (the raw generated entries have a variance of order 1).

    `enabled=False` replaces the branch's encoding by a plain learned 1 x 1 conv (`nn.Dense` to
    C_e, parameters under `conv`), not by the identity: the channel count C_e and the role of a
    learned per-branch projection stay the same, so the ablation changes only how the kernel is
    made.

    Attributes:
      features: C_e, the output channels.
      z_dim: length of the trainable code z.
      hidden: width of the hypernetwork's hidden layer.
      enabled: generate the kernel (True) or learn it directly (False).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    features: int
    z_dim: int = 16
    hidden: int = 64
    enabled: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        if not self.enabled:
            return nn.Dense(self.features, name="conv", **dt)(x)
        c_in = x.shape[-1]
        z = self.param("z", nn.initializers.normal(1.0), (self.z_dim,), self.param_dtype)
        h = nn.relu(nn.Dense(self.hidden, name="hyper_hidden", **dt)(z))
        kernel = nn.Dense(c_in * self.features, name="hyper_kernel", **dt)(h)
        kernel = kernel.reshape(c_in, self.features) * c_in**-0.5  # a Python float keeps the dtype
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return jnp.einsum("...i,io->...o", x, kernel) + bias
