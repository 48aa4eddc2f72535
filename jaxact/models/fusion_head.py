"""Decoupled spatio-temporal fusion head: actor features -> per-actor and per-bin action logits.

    actor features [B, N, T, S, S, C]
      -> decouple                   temporal [B, N, T, C]       spatial [B, N, S, S, C]
      -> HyperConvEncoding (each)   temporal [B, N, T, C_e]     spatial [B, N, S, S, C_e]
      -> fusion (sum|concat|gram)   fused map [B, N, S, S, C_f]
           -> 1 x 1 conv                                    -> map_logits    [B, N, S, S, A + 1]
           -> mean over S x S (+ query features) -> hidden  -> action_logits [B, N, A]

`action_logits` are the per-actor multi-label logits that the AVA metrics read (as the pooled
head's); `map_logits` classify each RoI bin into "no behaviour" (channel 0) or one of the A
actions.
"""

from __future__ import annotations

from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxact.models.decoupling import decouple
from jaxact.models.encodings import HyperConvEncoding
from jaxact.models.fusion import FUSIONS


class DecoupledFusionHead(nn.Module):
    """Actor features (+ query features) -> dict of action and per-bin logits.

    Attributes:
      num_actions: A.
      fusion: "sum", "concat" or "gram" (`jaxact.models.fusion`).
      encodings: hypernetwork-generated 1 x 1 convs on both branches (False: plain learned 1 x 1
        convs of the same width, see `HyperConvEncoding`).
      enc_dim: C_e, channels of each encoded branch.
      fused_dim: C_f, channels of the fused map (and C_b of the Gram attention).
      hidden_dim: width of the hidden layer before the per-actor logits.
      reduce_dim: C_a of the Gram fusion (unused by the others).
      use_query: also feed the localizer's query features to the per-actor logits.
      dtype: computation dtype.
      param_dtype: parameter dtype.

    Parameters: `temporal_encoding`, `spatial_encoding`, `fusion`, `hidden`, `norm`, `logits`,
    `map_logits`. The Gram fusion's parameters depend on T (it folds time into channels).
    """

    # Allowed values of the string fields, for config checks before anything is traced.
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"fusion": tuple(FUSIONS)}

    num_actions: int
    fusion: str = "sum"
    encodings: bool = True
    enc_dim: int = 64
    fused_dim: int = 64
    hidden_dim: int = 128
    reduce_dim: int = 16
    use_query: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, actor_features: jax.Array,
                 query_features: jax.Array | None = None) -> dict[str, jax.Array]:
        """`actor_features` `[B, N, T, S, S, C]` (+ `query_features` `[B, N, D]`) -> dict with
        `action_logits` `[B, N, A]` and `map_logits` `[B, N, S, S, A + 1]`, in `dtype`."""
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {tuple(FUSIONS)}, got {self.fusion!r}")
        if self.use_query and query_features is None:
            raise ValueError("use_query=True needs query_features")
        chex.assert_rank(actor_features, 6)
        b, n, _, s, _, _ = actor_features.shape
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}

        x_t, x_s = decouple(actor_features)
        encode = lambda name: HyperConvEncoding(self.enc_dim, enabled=self.encodings, name=name,
                                                **dt)
        x_t = encode("temporal_encoding")(x_t)
        x_s = encode("spatial_encoding")(x_s)
        fusion_kw = {"reduce_dim": self.reduce_dim, "gram_dim": self.fused_dim}
        fused = FUSIONS[self.fusion](self.fused_dim, name="fusion", **dt,
                                     **(fusion_kw if self.fusion == "gram" else {}))(x_t, x_s)
        chex.assert_shape(fused, (b, n, s, s, self.fused_dim))

        map_logits = nn.Dense(self.num_actions + 1, name="map_logits", **dt)(fused)
        x = jnp.mean(fused, axis=(-3, -2))  # [B, N, C_f]
        if self.use_query:
            x = jnp.concatenate([x, query_features.astype(x.dtype)], axis=-1)
        x = nn.relu(nn.LayerNorm(name="norm", **dt)(nn.Dense(self.hidden_dim, name="hidden",
                                                              **dt)(x)))
        action_logits = nn.Dense(self.num_actions, name="logits", **dt)(x)
        return {"action_logits": action_logits, "map_logits": map_logits}
