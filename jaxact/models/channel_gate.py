"""Temporal channel gate: per layer and per channel, keep (compute), reuse (copy) or drop (zero).

    X'_0 = X_0                                    encoded temporal features [..., T, C]
    for t = 1..L:
      X_t    = layer_t(X'_{t-1})                  pre-norm conv over T + ReLU   [..., T, C]
      logits = policy_t([GAP(X_t), GAP(X'_{t-1})]) Dense -> ReLU -> Dense       [..., C, 3]
      P_t    = hard Gumbel-softmax(logits)        one-hot over (keep, reuse, drop) per channel
      X'_t   = X_t * P_t[keep] + X'_{t-1} * P_t[reuse]      (dropped channels are 0)

The two products are the method's two masked diagonal 1 x 1 convolutions. X'_t is the layer's
output and the next layer's reuse source. Training samples P_t with straight-through gradients
(`gumbel.gumbel_one_hot`) at an annealed temperature; evaluation takes the argmax.

`policy="input"` decides from GAP(X'_{t-1}) alone, before X_t exists: only then can a skipped
channel go uncomputed, which `GatedTemporalStack(..., budget=k)` does (the compact path). With
the method's `policy="both"` the policy reads X_t, so the whole layer is computed whatever it
decides and the saving is a count only.

Counted compute (`flops_fraction`): a layer's ungated FLOPs m_t split evenly over its C output
channels; a kept channel costs m_t / C, a reused one `reuse_cost` * m_t / C, a dropped one 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxact.models.gumbel import gumbel_one_hot, hard_one_hot

KEEP, REUSE, DROP = 0, 1, 2
DECISIONS = ("keep", "reuse", "drop")
POLICIES = ("both", "input")
# Initial logit bias of (keep, reuse, drop): a new gate keeps ~80% of channels under Gumbel noise,
# so the stack first trains as an ungated one and the FLOPs loss then buys channels off.
_INITIAL_BIAS = (2.0, 0.0, 0.0)


class Gate(NamedTuple):
    """One gated layer's decisions and cost, as the losses and metrics read them.

    decisions: `[B, ..., C, 3]` one-hot (keep, reuse, drop) per element and channel.
    flops: the layer's ungated FLOPs per element (an element is one `[B, ...]` entry: an actor
      for the head's layers, a clip for the backbone's).
    """

    decisions: jax.Array
    flops: float


def select_channels(decisions: jax.Array, computed: jax.Array, previous: jax.Array) -> jax.Array:
    """`decisions` `[..., C, 3]`, `computed` X_t and `previous` X'_{t-1} `[..., T, C]` ->
    X'_t `[..., T, C]`: channel i is computed[i] (keep), previous[i] (reuse) or 0 (drop)."""
    keep = decisions[..., None, :, KEEP].astype(computed.dtype)
    reuse = decisions[..., None, :, REUSE].astype(computed.dtype)
    return computed * keep + previous * reuse


def flops_fraction(gates: Sequence[Gate], reuse_cost: float = 0.0) -> jax.Array:
    """The counted compute of `gates` per clip, as a fraction of their ungated FLOPs: `[B]`.

    sum_t (m_t / C_t) (kept_t + reuse_cost * reused_t) / sum_t m_t, where m_t is layer t's
    FLOPs per clip (its per-element FLOPs times its elements per clip) and kept / reused count
    channels over the clip's elements. Differentiable through straight-through decisions: the
    FLOPs loss is its mean over clips.
    """
    if not gates:
        raise ValueError("flops_fraction needs at least one gated layer")
    counted, total = 0.0, 0.0
    for gate in gates:
        d = gate.decisions.astype(jnp.float32)
        per_channel = d[..., KEEP] + reuse_cost * d[..., REUSE]  # [B, ..., C]
        elements = per_channel[0, ..., 0].size  # elements per clip
        axes = tuple(range(1, per_channel.ndim))
        counted = counted + gate.flops * jnp.sum(per_channel, axis=axes) / d.shape[-2]
        total = total + gate.flops * elements
    return counted / total


def actor_flops_fraction(gates: Sequence[Gate], reuse_cost: float = 0.0) -> jax.Array:
    """Per element `[B, ...]` (e.g. per actor `[B, N]`), the counted fraction of the gated
    layers' FLOPs: sum_t m_t mean_C(kept + reuse_cost * reused) / sum_t m_t. Every layer must
    have the same elements (e.g. the head's per-actor layers)."""
    counted = sum(g.flops * jnp.mean(g.decisions[..., KEEP].astype(jnp.float32)
                                     + reuse_cost * g.decisions[..., REUSE], axis=-1)
                  for g in gates)
    return counted / sum(g.flops for g in gates)


def decision_fractions(gates: Sequence[Gate]) -> jax.Array:
    """`[B, L, 3]`: per clip and gated layer, the fractions of (keep, reuse, drop) over the
    layer's elements (actors) and channels."""
    return jnp.stack([jnp.mean(g.decisions.astype(jnp.float32).reshape(
        g.decisions.shape[0], -1, 3), axis=1) for g in gates], axis=1)


def _windows(x: jax.Array, size: int) -> jax.Array:
    """`[..., T, C]` -> `[..., T, size, C]`: the zero-padded ('same') windows over T."""
    lo = (size - 1) // 2
    pad = [(0, 0)] * (x.ndim - 2) + [(lo, size - 1 - lo), (0, 0)]
    padded = jnp.pad(x, pad)
    t = x.shape[-2]
    return jnp.stack([padded[..., k:k + t, :] for k in range(size)], axis=-2)


class TemporalLayer(nn.Module):
    """`[..., T, C_in]` -> `[..., T, C]`: LayerNorm, conv over T ('same' padding), ReLU.

    Normalising the input, not the output, keeps every output channel a function of the input
    alone, so `compact` can compute a subset of channels exactly.

    Parameters: `norm`, `kernel` `[K, C_in, C]`, `bias` `[C]`.
    """

    features: int
    in_features: int
    kernel_size: int = 3
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        self.norm = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)
        self.kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=()),
                                 (self.kernel_size, self.in_features, self.features),
                                 self.param_dtype)
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)

    def flops(self, t: int) -> float:
        """Multiply-adds x 2 per element of T frames."""
        return 2.0 * t * self.kernel_size * self.in_features * self.features

    def __call__(self, x: jax.Array) -> jax.Array:
        w = _windows(self.norm(x), self.kernel_size)
        w, kernel, bias = nn.dtypes.promote_dtype(w, self.kernel, self.bias, dtype=self.dtype)
        return nn.relu(jnp.einsum("...tkc,kco->...to", w, kernel) + bias)

    def compact(self, x: jax.Array, channels: jax.Array) -> jax.Array:
        """Only the output `channels` `[..., k]` (per element): `[..., T, C_in]` -> `[..., T, k]`,
        equal to `self(x)[..., channels]` at k / C of the conv's FLOPs."""
        w = _windows(self.norm(x), self.kernel_size)
        picked = jnp.moveaxis(self.kernel[:, :, channels], (0, 1), (-3, -2))  # [..., K, C_in, k]
        w, picked, b = nn.dtypes.promote_dtype(w, picked, self.bias[channels], dtype=self.dtype)
        return nn.relu(jnp.einsum("...tkc,...kco->...to", w, picked) + b[..., None, :])


class GatePolicy(nn.Module):
    """Pooled features `[..., D]` -> per-channel (keep, reuse, drop) logits `[..., C, 3]`."""

    channels: int
    hidden: int = 32
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pooled: jax.Array) -> jax.Array:
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        h = nn.relu(nn.Dense(self.hidden, name="hidden", **dt)(pooled))
        bias_init = lambda *_: jnp.tile(jnp.asarray(_INITIAL_BIAS, self.param_dtype),
                                        self.channels)
        logits = nn.Dense(3 * self.channels, name="logits", bias_init=bias_init, **dt)(h)
        return logits.reshape(*logits.shape[:-1], self.channels, 3)


class GatedTemporalStack(nn.Module):
    """L gated temporal layers over `[..., T, C]` features (see the module docstring).

    Attributes:
      num_layers: L.
      kernel_size: K of each conv over T.
      gate: False runs the same layers ungated (X'_t = X_t), the gate's reference.
      policy: "both" (the method: GAP of X_t and of X'_{t-1}) or "input" (X'_{t-1} only).
      gate_hidden: hidden width of each policy.
      dtype, param_dtype: computation and parameter dtypes.

    Parameters: `layer_t` (`TemporalLayer`) and, with `gate`, `gate_t` (`GatePolicy`).
    """

    num_layers: int = 2
    kernel_size: int = 3
    gate: bool = True
    policy: str = "both"
    gate_hidden: int = 32
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, rng: jax.Array | None = None, temperature=1.0,
                 decisions: Sequence[jax.Array] | None = None,
                 budget: int | None = None) -> tuple[jax.Array, list[Gate]]:
        """`x` `[..., T, C]` -> (X'_L `[..., T, C]`, one `Gate` per layer; [] without `gate`).

        rng: Gumbel noise for training; None: argmax decisions (evaluation).
        temperature: of the Gumbel-softmax (a float or a traced scalar).
        decisions: forced one-hot decisions per layer `[..., C, 3]` (tests), instead of the
          policy's.
        budget: the compact inference path (`policy="input"`, no rng): compute only the `budget`
          channels with the highest keep logits per element; a kept channel outside them is
          reused instead. Equal to the full path when `budget` covers every kept channel.
        """
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if budget is not None and (self.policy != "input" or rng is not None or not self.gate):
            raise ValueError("the compact path (budget=) needs gate=True, policy='input' and no "
                             "rng: only then is a decision known before its channel is computed")
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        t, c = x.shape[-2:]
        previous, gates = x, []
        for i in range(self.num_layers):
            layer = TemporalLayer(c, c, self.kernel_size, name=f"layer_{i}", **dt)
            if not self.gate:
                previous = layer(previous)
                continue
            policy = GatePolicy(c, self.gate_hidden, name=f"gate_{i}", **dt)
            pooled_previous = jnp.mean(previous, axis=-2)
            if budget is not None:
                logits = policy(pooled_previous)
                chosen = hard_one_hot(logits) if decisions is None else decisions[i]
                previous = self._compact_select(layer, previous, logits, chosen, budget)
            else:
                computed = layer(previous)
                pooled = (pooled_previous if self.policy == "input" else
                          jnp.concatenate([jnp.mean(computed, axis=-2), pooled_previous], -1))
                logits = policy(pooled)
                if decisions is not None:
                    chosen = decisions[i]
                else:
                    key = None if rng is None else jax.random.fold_in(rng, i)
                    chosen = gumbel_one_hot(logits, key, temperature)
                previous = select_channels(chosen, computed, previous)
            gates.append(Gate(chosen, layer.flops(t)))
        return previous, gates

    @staticmethod
    def _compact_select(layer: TemporalLayer, previous, logits, chosen, budget: int):
        c = previous.shape[-1]
        if not 1 <= budget <= c:
            raise ValueError(f"budget must be in [1, {c}], got {budget}")
        _, channels = jax.lax.top_k(logits[..., KEEP] - jnp.max(logits, axis=-1), budget)
        computed = layer.compact(previous, channels)  # [..., T, k]
        placed = jax.nn.one_hot(channels, c, dtype=computed.dtype)  # [..., k, C]
        covered = jnp.sum(placed, axis=-2) > 0  # [..., C]
        keep = chosen[..., KEEP] > 0
        reuse = (chosen[..., REUSE] > 0) | (keep & ~covered)  # over budget: reuse instead
        computed = jnp.einsum("...tk,...kc->...tc", computed, placed)
        out = jnp.where((keep & covered)[..., None, :], computed, 0.0)
        return out + jnp.where(reuse[..., None, :], previous, 0.0)
