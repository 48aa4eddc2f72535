"""Masked k-means, threshold (leader) clustering and per-cluster reference selection in pure JAX.

All functions take a fixed-size set of vectors ``points [N, D]`` with a validity ``mask [N]``, so
a memory bank with a variable number of filled slots keeps static shapes. They are jittable (``k``,
``num_iters`` and ``rule`` static), vmappable over a leading class axis, deterministic for a given
rng, and NaN-free even for all-masked input. Masked rows are replaced by zeros before any
arithmetic, so whatever they hold (huge values, inf, NaN) can never influence the result.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

REFERENCE_RULES = ("nearest_to_centre", "random", "farthest")
CLUSTERINGS = ("kmeans", "threshold")

_HIGHEST = jax.lax.Precision.HIGHEST


def _prepare(points: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (float points with masked rows zeroed [N, D], bool mask [N])."""
    points = jnp.asarray(points)
    points = points.astype(jnp.promote_types(points.dtype, jnp.float32))
    mask = jnp.asarray(mask).astype(bool)
    # where, not multiply: 0 * inf would be NaN.
    return jnp.where(mask[:, None], points, 0.0), mask


def _sample_index(log_weights: jax.Array, key: jax.Array) -> jax.Array:
    """Index drawn with probability proportional to exp(log_weights) (Gumbel-max); [N] -> []."""
    return jnp.argmax(log_weights + jax.random.gumbel(key, log_weights.shape, log_weights.dtype))


def _kmeans_pp_init(
    points: jax.Array, mask: jax.Array, k: int, rng: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """k-means++ seeding among valid points.

    Args:
      points: [N, D], masked rows already zeroed.
      mask: [N] bool.

    Returns:
      centroids [k, D] and alive [k] bool. A seed is dead when nothing is left to draw from (no
      valid point, or every valid point coincides with an earlier seed); dead seeds are zeros and
      are excluded from assignment.
    """
    keys = jax.random.split(rng, k)
    dtype = points.dtype
    neg_inf = jnp.array(-jnp.inf, dtype)

    first = _sample_index(jnp.where(mask, 0.0, neg_inf), keys[0])
    alive0 = jnp.any(mask)
    c0 = jnp.where(alive0, points[first], 0.0)
    # Exact (non-matmul) squared distances so duplicates of a seed get weight exactly 0.
    min_d2 = jnp.where(mask, jnp.sum((points - c0) ** 2, axis=-1), 0.0)

    centroids = jnp.zeros((k, points.shape[-1]), dtype).at[0].set(c0)
    alive = jnp.zeros((k,), bool).at[0].set(alive0)

    def body(i, carry):
        centroids, alive, min_d2 = carry
        w = jnp.where(mask, min_d2, 0.0)
        ok = jnp.any(w > 0)
        idx = _sample_index(jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), neg_inf), keys[i])
        c = jnp.where(ok, points[idx], 0.0)
        d2 = jnp.sum((points - c) ** 2, axis=-1)
        min_d2 = jnp.where(ok, jnp.minimum(min_d2, d2), min_d2)
        return centroids.at[i].set(c), alive.at[i].set(ok), min_d2

    centroids, alive, _ = jax.lax.fori_loop(1, k, body, (centroids, alive, min_d2))
    return centroids, alive


def _assign(points: jax.Array, centroids: jax.Array, alive: jax.Array) -> jax.Array:
    """Nearest alive centroid (squared euclidean) per point: [N, D], [k, D], [k] -> int32 [N]."""
    d2 = jnp.sum(centroids * centroids, axis=-1)[None, :] - 2.0 * jnp.matmul(
        points, centroids.T, precision=_HIGHEST
    )  # |x|^2 is constant per row, so it does not change the argmin
    d2 = jnp.where(alive[None, :], d2, jnp.inf)
    return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def _cluster_sums(points, mask, assign, k):
    """Per-cluster sums [k, D] and valid-member counts [k] for assignments [N]."""
    onehot = jax.nn.one_hot(assign, k, dtype=points.dtype) * mask[:, None].astype(points.dtype)
    sums = jnp.matmul(onehot.T, points, precision=_HIGHEST)
    return sums, jnp.sum(onehot, axis=0)


def kmeans(
    points: jax.Array, mask: jax.Array, k: int, num_iters: int, rng: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Masked k-means (squared euclidean): k-means++ seeding, then ``num_iters`` Lloyd steps.

    Args:
      points: [N, D] vectors.
      mask: [N] bool, True for points that take part.
      k: static number of clusters.
      num_iters: static number of Lloyd iterations (fixed count, no convergence test).
      rng: PRNG key for the seeding.

    Returns:
      centroids: [k, D]; for invalid clusters a finite placeholder.
      assignments: int32 [N], cluster of each valid point w.r.t. the returned centroids; -1 for
        masked points.
      cluster_valid: bool [k], True iff the cluster has at least one valid member. With fewer
        distinct valid points than k the surplus clusters are invalid.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}.")
    points, mask = _prepare(points, mask)
    # Centre on the valid mean: shift invariant, and shrinks the cancellation in the matmul form.
    count = jnp.sum(mask).astype(points.dtype)
    shift = jnp.sum(points, axis=0) / jnp.maximum(count, 1.0)
    points = jnp.where(mask[:, None], points - shift, 0.0)

    centroids, alive = _kmeans_pp_init(points, mask, k, rng)

    def lloyd(_, centroids):
        sums, counts = _cluster_sums(points, mask, _assign(points, centroids, alive), k)
        # An empty cluster keeps its centroid (and may win points back later).
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)

    centroids = jax.lax.fori_loop(0, num_iters, lloyd, centroids)
    assign = _assign(points, centroids, alive)
    _, counts = _cluster_sums(points, mask, assign, k)
    assign = jnp.where(mask, assign, -1)
    return centroids + shift, assign, counts > 0


def threshold_clusters(
    points: jax.Array, mask: jax.Array, max_clusters: int, threshold: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Clusters by a preset distance: leader clustering, the data choosing how many clusters.

    Points are taken in order; a valid point joins the nearest leader (the point that opened a
    cluster) when it lies within ``threshold`` (euclidean) of it, else it opens a new cluster.
    Data that form one tight group give one cluster. The number of clusters is capped at the
    static ``max_clusters``: past the cap a far point joins its nearest leader. Centroids are
    the members' means.

    Args:
      points: [N, D] vectors (their order decides which point leads; pass a random sample).
      mask: [N] bool, True for points that take part.
      max_clusters: static maximum number of clusters K.
      threshold: the largest distance from a leader to its members (>= 0).

    Returns:
      (centroids [K, D], assignments int32 [N] (-1 for masked points), cluster_valid bool [K]),
      as `kmeans` returns them; the realised count is ``cluster_valid.sum()``.
    """
    if max_clusters < 1:
        raise ValueError(f"max_clusters must be >= 1; got {max_clusters}.")
    if isinstance(threshold, int | float) and not threshold >= 0:
        raise ValueError(f"threshold must be >= 0; got {threshold}.")
    points, mask = _prepare(points, mask)
    k = max_clusters

    def visit(carry, item):
        leaders, opened = carry
        x, valid = item
        d2 = jnp.sum((leaders - x) ** 2, axis=-1)  # exact: duplicates are at distance 0
        d2 = jnp.where(jnp.arange(k) < opened, d2, jnp.inf)
        nearest = jnp.argmin(d2).astype(jnp.int32)
        far = ~(d2[nearest] <= threshold**2)  # also True while no cluster is open
        new = valid & far & (opened < k)
        leaders = jnp.where(new, leaders.at[jnp.minimum(opened, k - 1)].set(x), leaders)
        assign = jnp.where(new, opened, jnp.where(valid, nearest, -1)).astype(jnp.int32)
        return (leaders, opened + new.astype(jnp.int32)), assign

    init = (jnp.zeros((k, points.shape[-1]), points.dtype), jnp.zeros((), jnp.int32))
    (leaders, _), assign = jax.lax.scan(visit, init, (points, mask))
    sums, counts = _cluster_sums(points, mask, jnp.maximum(assign, 0), k)
    centroids = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], leaders)
    return centroids, assign, counts > 0


def _member_sqdist(points, centroids, assignments):
    """Squared distance of each point to its own cluster's centroid: [N] (exact, no matmul)."""
    own = centroids[jnp.clip(assignments, 0, centroids.shape[0] - 1)]
    return jnp.sum((points - own) ** 2, axis=-1)


def _pick_nearest(points, centroids, assignments, members, rng):
    d2 = _member_sqdist(points, centroids, assignments)
    return jnp.argmin(jnp.where(members, d2[:, None], jnp.inf), axis=0)


def _pick_farthest(points, centroids, assignments, members, rng):
    d2 = _member_sqdist(points, centroids, assignments)
    return jnp.argmax(jnp.where(members, d2[:, None], -jnp.inf), axis=0)


def _pick_random(points, centroids, assignments, members, rng):
    if rng is None:
        raise ValueError("reference rule 'random' needs an rng key.")
    # Members of different clusters are disjoint, so one shared draw per point is enough to give
    # each cluster an independent, uniform choice among its own members.
    score = jax.random.uniform(rng, points.shape[:1], points.dtype)
    return jnp.argmax(jnp.where(members, score[:, None], -1.0), axis=0)


_RULES: dict[str, Callable[..., jax.Array]] = {
    "nearest_to_centre": _pick_nearest,
    "random": _pick_random,
    "farthest": _pick_farthest,
}
assert tuple(_RULES) == REFERENCE_RULES


def _check_rule(rule: str) -> None:
    if rule not in _RULES:
        raise ValueError(
            f"Unknown reference rule {rule!r}; valid rules are: {', '.join(REFERENCE_RULES)}."
        )


def select_references(
    points: jax.Array,
    mask: jax.Array,
    centroids: jax.Array,
    assignments: jax.Array,
    cluster_valid: jax.Array,
    rule: str,
    rng: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """Picks one member point per cluster as that cluster's reference.

    Args:
      points: [N, D] vectors.
      mask: [N] bool; only valid points can be chosen.
      centroids: [k, D] cluster centres.
      assignments: int [N] cluster index per point (-1 or out of range: no cluster).
      cluster_valid: bool [k].
      rule: static; ``"nearest_to_centre"`` (member closest to the centroid), ``"farthest"``
        (member farthest from it) or ``"random"`` (uniformly random member).
      rng: PRNG key, used by ``"random"`` only (may be None for the others).

    Returns:
      refs: [k, D], a member point per cluster; zeros where invalid.
      ref_valid: bool [k], True iff the cluster is valid and has a valid member.
    """
    _check_rule(rule)
    points, mask = _prepare(points, mask)
    centroids = jnp.asarray(centroids).astype(points.dtype)
    assignments = jnp.asarray(assignments)
    k = centroids.shape[0]
    members = (
        (assignments[:, None] == jnp.arange(k)[None, :])
        & mask[:, None]
        & jnp.asarray(cluster_valid).astype(bool)[None, :]
    )  # [N, k]
    ref_valid = jnp.any(members, axis=0)
    # Centroids of invalid clusters may be anything; keep non-finite values out of the arithmetic.
    centroids = jnp.where(jnp.isfinite(centroids), centroids, 0.0)
    idx = _RULES[rule](points, centroids, assignments, members, rng)
    refs = jnp.where(ref_valid[:, None], points[idx], 0.0)
    return refs, ref_valid


def cluster_references(
    points: jax.Array, mask: jax.Array, k: int, num_iters: int, rule: str, rng: jax.Array,
    clustering: str = "kmeans", threshold: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Clustering followed by ``select_references``: up to k reference vectors for one point set.

    Args:
      points: [N, D] vectors.
      mask: [N] bool.
      k, num_iters, rule: static, see ``kmeans`` and ``select_references``; with
        ``clustering="threshold"``, k is the maximum number of clusters.
      rng: PRNG key (split between seeding and the ``"random"`` rule).
      clustering: static, ``"kmeans"`` or ``"threshold"`` (`threshold_clusters` at
        ``threshold``).

    Returns:
      refs [k, D] and ref_valid bool [k].
    """
    _check_rule(rule)
    if clustering not in CLUSTERINGS:
        raise ValueError(f"Unknown clustering {clustering!r}; valid: {', '.join(CLUSTERINGS)}.")
    init_key, pick_key = jax.random.split(rng)
    if clustering == "threshold":
        centroids, assignments, cluster_valid = threshold_clusters(points, mask, k, threshold)
    else:
        centroids, assignments, cluster_valid = kmeans(points, mask, k, num_iters, init_key)
    return select_references(points, mask, centroids, assignments, cluster_valid, rule, pick_key)
