"""Actor-relation grouping: actors of a clip split into G groups, then relate within their group.

    codes [B, N, d] (spatial codes of the N box queries), actor_mask [B, N]
      -> hard group per actor (Gumbel-softmax, straight-through)      groups [B, N, G]
      -> optional refinement: join the most similar other real actor's group if s >= tau
      -> masked self-attention among the real actors of each group    relation [B, N, d]

Padded, unmatched or low-score queries (`actor_mask` False) take part in nothing: they are no key
to anyone, do not pull anyone into their group, and their output is zero. The caller adds the
relation features to the spatial branch; `similarity_loss` trains the similarity heads.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxact.models.gumbel import gumbel_one_hot


def scatter_groups(x: jax.Array, groups: jax.Array) -> jax.Array:
    """`x` `[B, N, d]`, `groups` `[B, N, G]` -> `[B, N, G, d]`: actor i's features in slot g
    weighted by groups[i, g] (for one-hot groups: the features in its group, zeros elsewhere)."""
    return x[:, :, None, :] * groups[..., None].astype(x.dtype)


def gather_groups(y: jax.Array, groups: jax.Array) -> jax.Array:
    """`y` `[B, N, G, d]`, `groups` `[B, N, G]` -> `[B, N, d]`: sum_g groups[i, g] y[i, g] (for
    one-hot groups: the slot of actor i's own group). Inverse of `scatter_groups` there."""
    return jnp.sum(y * groups[..., None].astype(y.dtype), axis=2)


def cosine_similarity(a: jax.Array, b: jax.Array, eps: float = 1e-6) -> jax.Array:
    """`a`, `b` `[B, N, k]` -> cos(a_i, b_j) `[B, N, N]` in float32. Norms are clamped at `eps`
    through the squared norm, so a zero vector gives 0 and a finite gradient (a norm's gradient
    at zero is NaN)."""
    def unit(x):
        x = x.astype(jnp.float32)
        return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps**2))
    return jnp.einsum("bik,bjk->bij", unit(a), unit(b), precision=jax.lax.Precision.HIGHEST)


def pair_mask(actor_mask: jax.Array) -> jax.Array:
    """`[B, N]` -> `[B, N, N]`: both actors real and i != j."""
    n = actor_mask.shape[-1]
    return actor_mask[:, :, None] & actor_mask[:, None, :] & ~jnp.eye(n, dtype=bool)


def refine_groups(groups: jax.Array, similarity: jax.Array, pairs: jax.Array,
                  tau: float) -> jax.Array:
    """`groups` `[B, N, G]`, `similarity` and `pairs` `[B, N, N]` -> refined groups `[B, N, G]`.

    Actor i takes the group of j* = argmax_j s_ij over its pairs (other real actors) when
    s_ij* >= tau, else keeps its own; all actors read the unrefined `groups`, so there are no
    chains. The partner's one-hot is gathered, not rebuilt, so its straight-through gradient
    flows on. Rows without pairs (non-real actors, lone actors) keep their own group.
    """
    masked = jnp.where(pairs, similarity, -jnp.inf)
    best = jnp.argmax(masked, axis=-1)  # [B, N]
    join = jnp.max(masked, axis=-1) >= tau  # -inf for rows without pairs: never joins
    partner = jnp.take_along_axis(groups, jnp.broadcast_to(best[..., None], groups.shape), axis=1)
    return jnp.where(join[..., None], partner, groups)


def share_probability(group_probs: jax.Array) -> jax.Array:
    """`[B, N, G]` -> p `[B, N, N]`, p_ij = sum_g q_ig q_jg: the probability that i and j land
    in the same group when each picks its group independently."""
    return jnp.einsum("big,bjg->bij", group_probs, group_probs)


def similarity_loss(similarity: jax.Array, share_prob: jax.Array, pairs: jax.Array,
                    tau: float) -> jax.Array:
    """L_sim = mean over `pairs` of p_ij (s_ij - tau) + (1 - p_ij) (tau - s_ij); 0 without pairs.

    All inputs `[B, N, N]`. L_sim is a reward: the detector minimises -L_sim, which pushes the
    similarity of pairs likely to share a group above tau and that of pairs likely apart below
    it. (The method's formula is lost; this is our reading of its text.)
    """
    term = share_prob * (similarity - tau) + (1.0 - share_prob) * (tau - similarity)
    total = jnp.sum(jnp.where(pairs, term, 0.0))  # where, not *: no NaN from masked entries
    return total / jnp.maximum(jnp.sum(pairs), 1)


def groups_used(groups: jax.Array, actor_mask: jax.Array) -> jax.Array:
    """`groups` `[B, N, G]`, `actor_mask` `[B, N]` -> `[B]` int32: groups holding a real actor."""
    held = jnp.any((groups > 0) & actor_mask[..., None], axis=1)  # [B, G]
    return jnp.sum(held, axis=-1, dtype=jnp.int32)


class ActorRelation(nn.Module):
    """`codes` `[B, N, d]`, `actor_mask` `[B, N]` -> (relation features `[B, N, d]`, aux).

      1. Group logits `[B, N, G]`: the mean of each code over d, `[B, N, 1]`, through
         Dense(group_hidden) -> ReLU -> Dense(G). A per-actor MLP on one scalar: the spec's
         literal form. `groups` = hard Gumbel-softmax of the logits (argmax when `rng` is None).
      2. Similarity s_ij = cos(phi(c_i), phi'(c_j)) `[B, N, N]`, two Dense(similarity_dim) heads.
      3. `refine`: `refine_groups` with `tau`.
      4. The real actors' codes scattered to their group, `[B, G, N, d]`; one multi-head
         self-attention shared across groups, each actor attending to the real actors of its
         group; gathered back from its group's slot. Every query also attends to itself, so no
         row is fully masked (rows of non-members are computed, then dropped by the gather).

    aux: `group_logits`, `group_probs` (float32), `groups` (after refinement; one-hot for every
    query, non-real ones included: mask with `actor_mask`), `similarity`, `pair_mask`,
    `groups_used` `[B]`.

    `groups` (an argument) `[B, N, G]` replaces the sampled assignment before refinement: for
    tests and forced groupings.

    Attributes:
      num_groups: G.
      num_heads: attention heads (must divide d).
      group_hidden: width of the group MLP's hidden layer.
      similarity_dim: width of phi and phi'.
      tau: similarity threshold of the refinement.
      refine: join the most similar actor's group.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    num_groups: int = 4
    num_heads: int = 4
    group_hidden: int = 16
    similarity_dim: int = 32
    tau: float = 0.5
    refine: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, codes: jax.Array, actor_mask: jax.Array, rng: jax.Array | None = None,
                 temperature=1.0, groups: jax.Array | None = None):
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        n, d = codes.shape[-2:]
        actor_mask = actor_mask.astype(bool)
        v = jnp.mean(codes, axis=-1, keepdims=True)  # [B, N, 1]
        h = nn.relu(nn.Dense(self.group_hidden, name="group_hidden", **dt)(v))
        logits = nn.Dense(self.num_groups, name="group_out", **dt)(h)  # [B, N, G]
        if groups is None:
            groups = gumbel_one_hot(logits, rng, temperature)
        groups = jnp.asarray(groups, logits.dtype)

        phi = nn.Dense(self.similarity_dim, name="phi", **dt)(codes)
        phi_prime = nn.Dense(self.similarity_dim, name="phi_prime", **dt)(codes)
        similarity = cosine_similarity(phi, phi_prime)
        pairs = pair_mask(actor_mask)
        if self.refine:
            groups = refine_groups(groups, similarity, pairs, self.tau)

        member = groups * actor_mask[..., None].astype(groups.dtype)  # non-real: all zeros
        x = jnp.moveaxis(scatter_groups(codes, member), 2, 1)  # [B, G, N, d]
        keys = jnp.moveaxis(member > 0, 2, 1)  # [B, G, N]
        mask = keys[:, :, None, None, :] | jnp.eye(n, dtype=bool)  # [B, G, 1, N, N]
        attend = nn.MultiHeadDotProductAttention(self.num_heads, qkv_features=d, out_features=d,
                                                 name="attention", **dt)
        out = jnp.moveaxis(attend(x, mask=mask), 1, 2)  # [B, N, G, d]
        relation = gather_groups(out, member)

        aux = {"group_logits": logits,
               "group_probs": jax.nn.softmax(logits.astype(jnp.float32), axis=-1),
               "groups": groups, "similarity": similarity, "pair_mask": pairs,
               "groups_used": groups_used(groups, actor_mask)}
        return relation, aux
