"""Decoupled spatio-temporal fusion head: actor features -> per-actor and per-bin action logits.

    actor features [B, N, T, S, S, C]
      -> decouple                   temporal [B, N, T, C]       spatial [B, N, S, S, C]
      -> HyperConvEncoding (each)   temporal [B, N, T, C_e]     spatial [B, N, S, S, C_e]
      -> (temporal_layers > 0)      GatedTemporalStack          (relation) + ActorRelation
                                    temporal [B, N, T, C_e]     spatial [B, N, S, S, C_e]
      -> fusion (sum|concat|gram)   fused map [B, N, S, S, C_f]
           -> 1 x 1 conv                                    -> map_logits    [B, N, S, S, A + 1]
           -> mean over S x S (+ query features) -> hidden  -> action_logits [B, N, A]

`action_logits` are the per-actor multi-label logits that the AVA metrics read (as the pooled
head's); `map_logits` classify each RoI bin into "no behaviour" (channel 0) or one of the A
actions.

The two adaptive layers (`channel_gate`, `actor_relation`) are off by default (the part-2 head):
`temporal_layers` L > 0 adds a stack of convs over T to the encoded temporal branch, gated per
channel when `gate` (the detector sets it from its own `gate` field); `relation` adds the
grouped relation features of the real actors (`actor_mask`) to the encoded spatial branch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxact.models.actor_relation import ActorRelation
from jaxact.models.channel_gate import POLICIES, GatedTemporalStack
from jaxact.models.decoupling import SPATIAL, decouple
from jaxact.models.encodings import HyperConvEncoding
from jaxact.models.fusion import FUSIONS


class DecoupledFusionHead(nn.Module):
    """Actor features (+ query features) -> dict of action and per-bin logits.

    Attributes:
      num_actions: A.
      fusion: "sum", "concat" or "gram" (`jaxact.models.fusion`).
      spatial: the spatial branch is the "mean" of the T frames or the "keyframe" (T // 2)
        (`decoupling.decouple`); the parameters are the same either way.
      encodings: hypernetwork-generated 1 x 1 convs on both branches (False: plain learned 1 x 1
        convs of the same width, see `HyperConvEncoding`).
      enc_dim: C_e, channels of each encoded branch.
      fused_dim: C_f, channels of the fused map (and C_b of the Gram attention).
      hidden_dim: width of the hidden layer before the per-actor logits.
      reduce_dim: C_a of the Gram fusion (unused by the others).
      use_query: also feed the localizer's query features to the per-actor logits.
      temporal_layers: L gated (or, without `gate`, plain) temporal layers on the encoded
        temporal branch (0: none).
      temporal_kernel: K of their convs over T.
      gate: gate the temporal layers per channel (keep / reuse / drop); needs L > 0.
      gate_policy: "both" (the method: the policy reads each layer's output and input) or
        "input" (its input only, so that skipped channels need not be computed).
      gate_hidden: hidden width of each gate policy.
      relation: group the actors and add their relation features to the spatial branch.
      num_groups, relation_heads, relation_tau: G, attention heads and the similarity threshold
        of `ActorRelation`.
      relation_threshold: at evaluation, actors whose person score is below it take no part in
        the relations.
      dtype: computation dtype.
      param_dtype: parameter dtype.

    Parameters: `temporal_encoding`, `spatial_encoding`, `fusion`, `hidden`, `norm`, `logits`,
    `map_logits` (+ `temporal_stack`, `relation`). The Gram fusion's parameters depend on T
    (it folds time into channels).
    """

    ADAPTIVE: ClassVar[bool] = True  # takes the detector's gate, actors and Gumbel settings
    # Fields added with the adaptive layers (older saved configs get their defaults).
    ADAPTIVE_FIELDS: ClassVar[tuple[str, ...]] = (
        "temporal_layers", "temporal_kernel", "gate_policy", "gate_hidden", "relation",
        "num_groups", "relation_heads", "relation_tau", "relation_threshold", "spatial")
    # Allowed values of the string fields, for config checks before anything is traced.
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"fusion": tuple(FUSIONS),
                                                     "gate_policy": POLICIES,
                                                     "spatial": SPATIAL}

    num_actions: int
    fusion: str = "sum"
    spatial: str = "mean"
    encodings: bool = True
    enc_dim: int = 64
    fused_dim: int = 64
    hidden_dim: int = 128
    reduce_dim: int = 16
    use_query: bool = True
    temporal_layers: int = 0
    temporal_kernel: int = 3
    gate: bool = False
    gate_policy: str = "both"
    gate_hidden: int = 32
    relation: bool = False
    num_groups: int = 4
    relation_heads: int = 4
    relation_tau: float = 0.5
    relation_threshold: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, actor_features: jax.Array, query_features: jax.Array | None = None, *,
                 actor_scores: jax.Array | None = None, actor_mask: jax.Array | None = None,
                 train: bool = False, temperature=1.0,
                 gate_budget: float | None = None) -> dict[str, Any]:
        """`actor_features` `[B, N, T, S, S, C]` (+ `query_features` `[B, N, D]`) -> dict with
        `action_logits` `[B, N, A]` and `map_logits` `[B, N, S, S, A + 1]`, in `dtype`; with
        `gate` also `gates` (a `channel_gate.Gate` per layer), with `relation` also `relation`
        (`ActorRelation`'s aux dict).

        actor_scores: `[B, N]` person scores; at evaluation the relation's actors are those
          scoring >= `relation_threshold`.
        actor_mask: `[B, N]` bool, the relation's actors (in training: the matched queries);
          overrides `actor_scores`.
        train: sample the gate's and the grouping's choices (Gumbel noise from the "gumbel" rng
          stream) at `temperature`; False: argmax.
        gate_budget: the fraction of each gated layer's channels computed on the compact
          inference path (`gate_policy="input"`, evaluation only); None: every channel.
        """
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {tuple(FUSIONS)}, got {self.fusion!r}")
        if self.use_query and query_features is None:
            raise ValueError("use_query=True needs query_features")
        if self.gate and self.temporal_layers < 1:
            raise ValueError("gate=True needs temporal_layers >= 1 (the layers it gates)")
        chex.assert_rank(actor_features, 6)
        b, n, _, s, _, _ = actor_features.shape
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        sample = train and (self.gate or self.relation)
        rng = self.make_rng("gumbel") if sample else None
        out = {}

        x_t, x_s = decouple(actor_features, self.spatial)
        encode = lambda name: HyperConvEncoding(self.enc_dim, enabled=self.encodings, name=name,
                                                **dt)
        x_t = encode("temporal_encoding")(x_t)
        x_s = encode("spatial_encoding")(x_s)
        if self.temporal_layers:
            x_t, gates = GatedTemporalStack(
                self.temporal_layers, self.temporal_kernel, gate=self.gate,
                policy=self.gate_policy, gate_hidden=self.gate_hidden, name="temporal_stack",
                **dt)(x_t, None if rng is None else jax.random.fold_in(rng, 0), temperature,
                      budget=None if gate_budget is None else
                      min(self.enc_dim, max(1, math.ceil(gate_budget * self.enc_dim))))
            if self.gate:
                out["gates"] = gates
        if self.relation:
            if actor_mask is None:
                if actor_scores is None:
                    raise ValueError("relation=True needs actor_mask or actor_scores")
                actor_mask = actor_scores >= self.relation_threshold
            codes = jnp.mean(x_s, axis=(-3, -2))  # [B, N, C_e]
            related, aux = ActorRelation(
                self.num_groups, self.relation_heads, tau=self.relation_tau, name="relation",
                **dt)(codes, actor_mask, None if rng is None else jax.random.fold_in(rng, 1),
                      temperature)
            out["relation"] = {**aux, "tau": jnp.asarray(self.relation_tau, jnp.float32)}
            x_s = x_s + related[:, :, None, None, :]
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
        return {"action_logits": action_logits, "map_logits": map_logits, **out}
