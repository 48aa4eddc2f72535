"""Tests for jaxact.ops.kmeans: masked k-means and reference selection."""

import chex
import jax
import numpy as np
import pytest
from scipy.cluster.vq import kmeans2

from jaxact.ops import kmeans as km

kmeans = jax.jit(km.kmeans, static_argnames=("k", "num_iters"))
select_references = jax.jit(km.select_references, static_argnames=("rule",))
cluster_references = jax.jit(km.cluster_references, static_argnames=("k", "num_iters", "rule"))


def _blobs(per_blob=15, dim=3, seed=0):
    """Four well-separated Gaussian blobs: points [4 * per_blob, dim], labels [4 * per_blob]."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]], float)[:, :dim]
    labels = np.repeat(np.arange(4), per_blob)
    points = centres[labels] + 0.7 * rng.normal(size=(len(labels), dim))
    perm = rng.permutation(len(labels))
    return points[perm].astype(np.float32), labels[perm]


def _wcss(points, labels):
    """Within-cluster sum of squares of a labelling (labels < 0 ignored)."""
    total = 0.0
    for j in np.unique(labels[labels >= 0]):
        members = points[labels == j].astype(np.float64)
        total += np.sum((members - members.mean(0)) ** 2)
    return total


def _assert_same_partition(assign, labels):
    """Clusters and labels induce the same partition (up to renaming)."""
    pairs = set(zip(assign.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == len(set(assign.tolist())) == len(set(labels.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_blobs_and_matches_scipy_objective(seed):
    points, labels = _blobs(seed=seed)
    mask = np.ones(len(points), bool)
    cents, assign, valid = kmeans(points, mask, k=4, num_iters=10, rng=jax.random.key(seed))
    cents, assign = np.asarray(cents), np.asarray(assign)
    assert np.all(valid)
    _assert_same_partition(assign, labels)
    ours = _wcss(points, assign)
    np.testing.assert_allclose(ours, _wcss(points, labels), rtol=1e-6)
    _, sp_labels = kmeans2(points.astype(np.float64), 4, iter=10, minit="++", seed=seed)
    np.testing.assert_allclose(ours, _wcss(points, sp_labels), rtol=1e-6)
    # Converged centroids are the member means.
    for j in range(4):
        np.testing.assert_allclose(cents[j], points[assign == j].mean(0), atol=1e-4)


def _poison(points, mask, value):
    out = np.array(points, copy=True)
    out[~mask] = value
    return out


def test_masked_points_never_influence():
    points, _ = _blobs(seed=3)
    rng = np.random.default_rng(3)
    mask = rng.random(len(points)) > 0.3
    key = jax.random.key(7)
    results = []
    for value in (0.0, 1e30, -1e20, np.nan, np.inf):
        poisoned = _poison(points, mask, value)
        out = kmeans(poisoned, mask, k=4, num_iters=8, rng=key)
        assert all(np.all(np.isfinite(o)) for o in out)
        np.testing.assert_array_equal(out[1][~mask], -1)
        assert np.all(np.asarray(out[1])[mask] >= 0)
        results.append(out)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rule", km.REFERENCE_RULES)
def test_references_are_valid_members(rule):
    points, _ = _blobs(seed=4)
    rng = np.random.default_rng(4)
    mask = rng.random(len(points)) > 0.4
    poisoned = _poison(points, mask, 1e30)
    refs, ref_valid = cluster_references(
        poisoned, mask, k=4, num_iters=8, rule=rule, rng=jax.random.key(1)
    )
    refs = np.asarray(refs)
    assert np.all(ref_valid) and np.all(np.isfinite(refs))
    valid_points = points[mask]
    for r in refs:
        assert np.any(np.all(valid_points == r, axis=1)), "reference is not a valid point"


def test_all_masked():
    points = np.full((10, 4), np.nan, np.float32)
    mask = np.zeros(10, bool)
    cents, assign, valid = kmeans(points, mask, k=3, num_iters=5, rng=jax.random.key(0))
    assert not np.any(valid)
    assert np.all(np.isfinite(cents))
    np.testing.assert_array_equal(assign, -1)
    for rule in km.REFERENCE_RULES:
        refs, ref_valid = cluster_references(
            points, mask, k=3, num_iters=5, rule=rule, rng=jax.random.key(0)
        )
        assert not np.any(ref_valid) and np.all(np.isfinite(refs))


def test_fewer_valid_points_than_k():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(8, 3)).astype(np.float32)
    mask = np.zeros(8, bool)
    mask[[1, 4, 6]] = True
    cents, assign, valid = kmeans(points, mask, k=5, num_iters=4, rng=jax.random.key(2))
    assign = np.asarray(assign)
    assert np.sum(valid) == 3
    assert sorted(assign[mask].tolist()) == sorted(np.flatnonzero(valid).tolist())
    np.testing.assert_allclose(np.asarray(cents)[assign[mask]], points[mask], atol=1e-6)
    refs, ref_valid = cluster_references(
        points, mask, k=5, num_iters=4, rule="nearest_to_centre", rng=jax.random.key(2)
    )
    np.testing.assert_array_equal(ref_valid, valid)
    got = {tuple(r) for r in np.asarray(refs)[np.asarray(ref_valid)]}
    assert got == {tuple(p) for p in points[mask]}


def test_duplicate_points_leave_surplus_clusters_invalid():
    base = np.array([[1.0, 2.0], [5.0, -1.0]], np.float32)
    points = np.concatenate([base, base, base])  # 6 valid points, 2 distinct
    _, assign, valid = kmeans(points, np.ones(6, bool), k=4, num_iters=3, rng=jax.random.key(0))
    assert np.sum(valid) == 2
    assert len(set(np.asarray(assign).tolist())) == 2


def _numpy_references(points, mask, cents, assign, cvalid, rule):
    """Hand-written reference implementation of the deterministic rules."""
    k = len(cents)
    refs, ok = np.zeros_like(cents), np.zeros(k, bool)
    for j in range(k):
        idx = np.flatnonzero((assign == j) & mask)
        if not cvalid[j] or len(idx) == 0:
            continue
        d2 = np.sum((points[idx].astype(np.float64) - cents[j]) ** 2, axis=1)
        pick = idx[np.argmin(d2) if rule == "nearest_to_centre" else np.argmax(d2)]
        refs[j], ok[j] = points[pick], True
    return refs, ok


@pytest.mark.parametrize("rule", ["nearest_to_centre", "farthest"])
def test_deterministic_rules_match_numpy(rule):
    rng = np.random.default_rng(6)
    points = rng.normal(size=(40, 5)).astype(np.float32)
    mask = rng.random(40) > 0.25
    poisoned = _poison(points, mask, 1e30)
    # From k-means ...
    cents, assign, cvalid = kmeans(poisoned, mask, k=5, num_iters=6, rng=jax.random.key(3))
    refs, ok = select_references(poisoned, mask, cents, assign, cvalid, rule=rule, rng=None)
    want, want_ok = _numpy_references(
        points, mask, np.asarray(cents), np.asarray(assign), np.asarray(cvalid), rule
    )
    np.testing.assert_array_equal(ok, want_ok)
    np.testing.assert_array_equal(refs, want)
    # ... and from arbitrary inputs: random labels incl. -1, one cluster flagged invalid.
    assign = rng.integers(-1, 4, size=40).astype(np.int32)
    cents = rng.normal(size=(4, 5)).astype(np.float32)
    cvalid = np.array([True, False, True, True])
    refs, ok = select_references(poisoned, mask, cents, assign, cvalid, rule=rule, rng=None)
    want, want_ok = _numpy_references(points, mask, cents, assign, cvalid, rule)
    np.testing.assert_array_equal(ok, want_ok)
    np.testing.assert_array_equal(np.asarray(refs)[want_ok], want[want_ok])
    assert np.all(np.isfinite(refs))


def test_random_rule_members_deterministic_and_uniform():
    rng = np.random.default_rng(8)
    points = rng.normal(size=(12, 3)).astype(np.float32)
    mask = np.ones(12, bool)
    mask[[0, 5]] = False
    assign = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2], np.int32)  # cluster 0: 4 valid
    cents = np.zeros((3, 3), np.float32)
    cvalid = np.ones(3, bool)
    poisoned = _poison(points, mask, 1e30)

    def pick(key):
        return select_references(poisoned, mask, cents, assign, cvalid, rule="random", rng=key)

    a, ok = pick(jax.random.key(0))
    b, _ = pick(jax.random.key(0))
    np.testing.assert_array_equal(a, b)
    assert np.all(ok)
    keys = jax.random.split(jax.random.key(1), 400)
    refs, _ = jax.vmap(pick)(keys)  # [400, 3, 3]
    refs = np.asarray(refs)
    for j in range(3):
        members = points[(assign == j) & mask]
        hits = np.all(refs[:, j, None, :] == members[None], axis=-1)  # [400, members]
        assert np.all(hits.sum(1) == 1), "random reference is not a valid member"
        counts = hits.sum(0)
        expected = 400 / len(members)
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts


def test_jit_vmap_over_classes_and_no_retrace():
    rng = np.random.default_rng(9)
    c, n, d, k = 4, 16, 6, 3
    points = rng.normal(size=(c, n, d)).astype(np.float32)
    mask = rng.random((c, n)) > 0.3
    mask[1] = False  # an empty class
    mask[2] = np.arange(n) < 2  # a class with fewer valid points than k
    keys = jax.random.split(jax.random.key(0), c)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(p, m, r):
        return jax.vmap(lambda pp, mm, rr: km.cluster_references(pp, mm, k, 5, "farthest", rr))(p, m, r)

    refs, ok = batched(points, mask, keys)
    assert refs.shape == (c, k, d) and ok.shape == (c, k)
    assert np.all(np.isfinite(refs))
    assert not np.any(ok[1]) and np.sum(ok[2]) == 2
    for i in range(c):
        r_i, ok_i = cluster_references(
            points[i], mask[i], k=k, num_iters=5, rule="farthest", rng=keys[i]
        )
        np.testing.assert_array_equal(ok[i], ok_i)
        np.testing.assert_allclose(refs[i], r_i, atol=1e-6)
    # New values, same shapes: no retrace (assert_max_traces raises otherwise).
    batched(points + 1.0, ~mask, jax.random.split(jax.random.key(5), c))
    # kmeans itself vmaps too.
    cents, assign, valid = jax.jit(jax.vmap(lambda p, m, r: km.kmeans(p, m, k, 5, r)))(
        points, mask, keys
    )
    assert cents.shape == (c, k, d) and assign.shape == (c, n) and valid.shape == (c, k)
    np.testing.assert_array_equal(np.asarray(assign)[~mask], -1)


def test_deterministic_for_fixed_rng():
    points, _ = _blobs(seed=10)
    mask = np.ones(len(points), bool)
    a = kmeans(points, mask, k=4, num_iters=3, rng=jax.random.key(11))
    b = kmeans(points, mask, k=4, num_iters=3, rng=jax.random.key(11))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # Legacy uint32 keys work as well.
    _, assign, valid = kmeans(points, mask, k=4, num_iters=3, rng=jax.random.PRNGKey(11))
    assert np.all(valid) and np.all(np.asarray(assign) >= 0)


def test_edge_sizes():
    points, _ = _blobs(seed=12)
    mask = np.ones(len(points), bool)
    cents, assign, valid = kmeans(points, mask, k=1, num_iters=0, rng=jax.random.key(0))
    np.testing.assert_array_equal(assign, 0)
    assert np.all(valid)
    cents, _, _ = kmeans(points, mask, k=1, num_iters=1, rng=jax.random.key(0))
    np.testing.assert_allclose(cents[0], points.mean(0), atol=1e-5)


def test_unknown_rule_and_bad_k():
    points = np.zeros((4, 2), np.float32)
    mask = np.ones(4, bool)
    with pytest.raises(ValueError, match="'nearest'.*nearest_to_centre"):
        km.cluster_references(points, mask, 2, 2, "nearest", jax.random.key(0))
    with pytest.raises(ValueError, match="'middle'"):
        km.select_references(
            points, mask, points[:2], np.zeros(4, np.int32), np.ones(2, bool), "middle", None
        )
    with pytest.raises(ValueError, match="k must be >= 1"):
        km.kmeans(points, mask, 0, 2, jax.random.key(0))


# ----------------------------------------------------------------------------- threshold clustering


def _leader_reference(points, mask, max_clusters, threshold):
    """Plain-python leader clustering (the definition, one point at a time)."""
    leaders, assign = [], []
    for x, valid in zip(points, mask, strict=True):
        if not valid:
            assign.append(-1)
            continue
        d = [float(np.linalg.norm(x - leader)) for leader in leaders]
        if d and min(d) <= threshold:
            assign.append(int(np.argmin(d)))
        elif len(leaders) < max_clusters:
            leaders.append(x)
            assign.append(len(leaders) - 1)
        else:
            assign.append(int(np.argmin(d)))
    return np.array(assign)


def test_threshold_clustering_finds_the_hand_built_groups():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    truth = rng.permutation(np.repeat(np.arange(3), 6))
    points = centres[truth] + rng.uniform(-0.3, 0.3, (18, 2))  # within-group distance < 0.85
    points = np.concatenate([points, [[1e9, -1e9], [np.nan, 0.0]]])  # masked garbage
    mask = np.arange(20) < 18
    centroids, assign, valid = jax.jit(km.threshold_clusters, static_argnums=2)(
        points, mask, 5, 1.0)
    assign, valid = np.asarray(assign), np.asarray(valid)
    assert valid.tolist() == [True, True, True, False, False]  # 3 of at most 5
    assert (assign[18:] == -1).all()
    # The same partition as the truth (cluster numbers in order of first appearance).
    first_seen = {g: i for i, g in enumerate(dict.fromkeys(truth.tolist()))}
    np.testing.assert_array_equal(assign[:18], [first_seen[g] for g in truth])
    np.testing.assert_array_equal(assign, _leader_reference(points, mask, 5, 1.0))
    for c in range(3):
        np.testing.assert_allclose(centroids[c], points[:18][assign[:18] == c].mean(0), rtol=1e-5)
    # One tight class is one cluster; a tiny threshold caps at max_clusters, the rest joining
    # their nearest leader (as the definition says).
    _, one, valid_one = km.threshold_clusters(points[:18][truth == 0], np.ones(6, bool), 4, 1.0)
    assert np.asarray(valid_one).sum() == 1 and (np.asarray(one) == 0).all()
    _, capped, valid_capped = km.threshold_clusters(points, mask, 2, 0.01)
    assert np.asarray(valid_capped).all()
    np.testing.assert_array_equal(capped, _leader_reference(points, mask, 2, 0.01))


def test_threshold_references_vmap_and_no_retrace():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(3, 12, 4)).astype(np.float32)
    mask = rng.random((3, 12)) > 0.3
    traces = []

    def refs(p, m, r):
        traces.append(1)
        return km.cluster_references(p, m, k=4, num_iters=1, rule="nearest_to_centre", rng=r,
                                     clustering="threshold", threshold=1.5)

    fn = jax.jit(jax.vmap(refs))
    keys = jax.random.split(jax.random.key(0), 3)
    out, valid = fn(points, mask, keys)
    chex.assert_shape(out, (3, 4, 4))
    fn(points + 1.0, ~mask, keys)
    assert len(traces) == 1
    for c in range(3):  # every valid reference is a valid member of its class
        for ref in np.asarray(out[c])[np.asarray(valid[c])]:
            assert any(np.allclose(ref, p) for p in points[c][mask[c]])
    with pytest.raises(ValueError, match="clustering"):
        km.cluster_references(points[0], mask[0], 2, 1, "random", keys[0], clustering="dbscan")
    with pytest.raises(ValueError, match="threshold"):
        km.threshold_clusters(points[0], mask[0], 2, -1.0)
