"""Tests for jaxact.ops.distances against scipy.spatial.distance.cdist."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.spatial.distance import cdist
from scipy.special import rel_entr, softmax

from jaxact.ops import distances as dist

CONTINUOUS = tuple(m for m in dist.METRICS if m not in ("hamming", "jaccard"))
BINARY = ("hamming", "jaccard")
ENTROPY = ("relative_entropy", "jensen_shannon")
SCIPY_NAME = {"manhattan": "cityblock"}
# Jitted once per metric/shape: far faster than op-by-op dispatch on a small shared CPU.
pairwise = jax.jit(dist.pairwise, static_argnames=("metric", "soft"))
feature_variance = jax.jit(dist.feature_variance)
inverse_covariance = jax.jit(dist.inverse_covariance)
# (N, M, D): N != M, D = 1, square with D > N + M - 1 (singular covariance).
SHAPES = [(5, 7, 3), (6, 4, 1), (8, 8, 16)]


def _data(n, m, d, seed=0, offset=2.0):
    """Random float64 x [n, d], y [m, d] with two identical rows across x and y."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + offset  # offset exercises the matmul cancellation
    y = rng.normal(size=(m, d)) + offset
    y[0] = x[0]
    y[-1] = x[1]
    return x, y


def _kwargs(metric, x, y):
    """(pairwise kwargs, cdist kwargs) with the same float values for both."""
    both = np.concatenate([x, y])
    if metric == "minkowski":
        return {"p": 3.0}, {"p": 3.0}
    if metric == "seuclidean":
        v = np.asarray(feature_variance(both), np.float64)
        return {"variance": v}, {"V": v}
    if metric == "mahalanobis":
        vi = np.asarray(inverse_covariance(both, ridge=1e-2), np.float64)
        return {"inv_cov": vi}, {"VI": vi}
    return {}, {}


def _scipy(metric, x, y, threshold=0.0, entropy_temperature=1.0, **kw):
    if metric in BINARY:
        return cdist(x > threshold, y > threshold, metric)
    if metric in ENTROPY:  # rows as distributions: softmax(v / T)
        p, q = softmax(x / entropy_temperature, axis=1), softmax(y / entropy_temperature, axis=1)
        if metric == "relative_entropy":
            return rel_entr(p[:, None, :], q[None, :, :]).sum(-1)
        return cdist(p, q, "jensenshannon")
    return cdist(x, y, SCIPY_NAME.get(metric, metric), **kw)


def _compare(got, ref, metric, rtol, atol):
    got = np.asarray(got)
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got))
    finite = np.isfinite(ref)
    if metric == "correlation":
        # scipy gives NaN for constant rows (always for D = 1); ours defines that distance as 1.
        np.testing.assert_array_equal(got[~finite], 1.0)
    else:
        assert finite.all()
    np.testing.assert_allclose(got[finite], ref[finite], rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("metric", CONTINUOUS)
def test_matches_scipy_float32(metric, shape):
    x, y = (a.astype(np.float32) for a in _data(*shape))
    jkw, skw = _kwargs(metric, x, y)
    got = pairwise(jnp.asarray(x), jnp.asarray(y), metric, **jkw)
    assert got.dtype == jnp.float32
    ref = _scipy(metric, x.astype(np.float64), y.astype(np.float64), **skw)
    _compare(got, ref, metric, rtol=1e-4, atol=1e-4)
    same = np.asarray(got)[[0, 1], [0, shape[1] - 1]]  # the identical rows
    if metric in ("euclidean", "sqeuclidean", "seuclidean", "mahalanobis"):
        np.testing.assert_array_equal(same, 0.0)  # exact thanks to the noise-floor snap
    elif not (metric == "correlation" and shape[2] == 1):
        np.testing.assert_allclose(same, 0.0, atol=1e-6)


@pytest.mark.parametrize("metric", CONTINUOUS)
def test_matches_scipy_float64(metric):
    with jax.enable_x64(True):
        for shape in SHAPES:
            x, y = _data(*shape, seed=1)
            jkw, skw = _kwargs(metric, x, y)
            got = pairwise(jnp.asarray(x), jnp.asarray(y), metric, **jkw)
            assert got.dtype == jnp.float64
            _compare(got, _scipy(metric, x, y, **skw), metric, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("metric", BINARY)
def test_binary_metrics_exact(metric, shape):
    x, y = _data(*shape, offset=0.0)
    x[2 % shape[0]] = -1.0  # an all-off row: jaccard(0, 0) must be 0
    y[1 % shape[1]] = -1.0
    got = np.asarray(pairwise(jnp.float32(x), jnp.float32(y), metric, threshold=0.3))
    ref = _scipy(metric, x, y, threshold=0.3)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    # Counts recovered from the float result are exact integers.
    if metric == "hamming":
        np.testing.assert_array_equal(np.rint(got * shape[2]), np.rint(ref * shape[2]))


def test_integer_and_bool_inputs():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, size=(4, 9)).astype(bool)
    y = rng.integers(0, 2, size=(5, 9)).astype(bool)
    for metric in BINARY:
        got = pairwise(jnp.asarray(x), jnp.asarray(y), metric, threshold=0.5)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, cdist(x, y, metric), rtol=1e-6)
    got = pairwise(jnp.asarray(x, jnp.int32), jnp.asarray(y, jnp.int32), "manhattan")
    np.testing.assert_allclose(got, cdist(x, y, "cityblock"))


@pytest.mark.parametrize("metric", BINARY)
def test_soft_binarization(metric):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 10)).astype(np.float32)
    y = rng.normal(size=(5, 10)).astype(np.float32)
    # Keep features away from the threshold so a sharp sigmoid is within 1e-6 of the step.
    x = np.where(np.abs(x) < 0.1, 0.5, x)
    y = np.where(np.abs(y) < 0.1, -0.5, y)
    hard = pairwise(x, y, metric)
    sharp = pairwise(x, y, metric, soft=True, temperature=1e-3)
    np.testing.assert_allclose(sharp, hard, atol=1e-5)
    errors = [
        np.abs(pairwise(x, y, metric, soft=True, temperature=t) - hard).max() for t in (1.0, 0.1, 0.01)
    ]
    assert errors[0] > errors[1] > errors[2]

    def loss(a):
        return jnp.sum(pairwise(a, y, metric, soft=True, temperature=0.5))

    g = jax.grad(loss)(jnp.asarray(x))
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-3
    # Hard binarization has zero gradient, but still a finite one.
    g_hard = jax.grad(lambda a: jnp.sum(pairwise(a, y, metric)))(jnp.asarray(x))
    np.testing.assert_array_equal(g_hard, 0.0)


def test_soft_jaccard_all_off_is_finite():
    x = jnp.full((2, 4), -50.0)
    for t in (1e-3, 0.1):
        d, g = jax.value_and_grad(
            lambda a, t=t: jnp.sum(pairwise(a, a, "jaccard", soft=True, temperature=t))
        )(x)
        assert np.isfinite(d) and np.all(np.isfinite(g))


@pytest.mark.parametrize("metric", CONTINUOUS)
def test_gradients_finite_at_zero_distance(metric):
    x, _ = _data(4, 4, 5)
    x[3] = 0.0  # zero-norm row (cosine) that is also constant (correlation)
    x = jnp.float32(x)
    jkw, _ = _kwargs(metric, np.asarray(x), np.asarray(x))

    def loss(a, b):
        return jnp.sum(pairwise(a, b, metric, **jkw))

    gx, gy = jax.grad(loss, argnums=(0, 1))(x, x)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
    # Also a lone zero-distance pair (the diagonal) and through jit.
    gd = jax.jit(jax.grad(lambda a: jnp.sum(jnp.diag(pairwise(a, a, metric, **jkw)))))(x)
    assert np.all(np.isfinite(gd))


@pytest.mark.parametrize("metric", CONTINUOUS)
def test_gradients_correct_at_generic_points(metric):
    with jax.enable_x64(True):
        x, y = _data(3, 4, 3, seed=5)
        jkw, _ = _kwargs(metric, x, y)
        y = y[1:-1]  # drop the identical rows: non-differentiable there
        check_grads(
            lambda a, b: pairwise(a, b, metric, **jkw),
            (jnp.asarray(x), jnp.asarray(y)),
            order=1,
            modes=["rev"],
            atol=1e-4,
            rtol=1e-4,
        )


@pytest.mark.parametrize("metric", ENTROPY)
def test_entropy_temperature_and_asymmetry(metric):
    x, y = _data(4, 3, 6, seed=9)
    for t in (0.25, 4.0):
        got = pairwise(jnp.float32(x), jnp.float32(y), metric, entropy_temperature=t)
        _compare(got, _scipy(metric, x, y, entropy_temperature=t), metric, rtol=1e-4, atol=1e-5)
    forward = np.asarray(pairwise(jnp.float32(x), jnp.float32(y), metric))
    backward = np.asarray(pairwise(jnp.float32(y), jnp.float32(x), metric)).T
    if metric == "jensen_shannon":
        np.testing.assert_allclose(forward, backward, rtol=1e-5, atol=1e-6)  # symmetric
    else:
        assert np.abs(forward - backward).max() > 1e-3  # KL is not
    # Only the distributions count: a shift of every feature changes nothing (up to float32
    # rounding, which the square root lifts to ~1e-4 where the distributions meet).
    np.testing.assert_allclose(pairwise(jnp.float32(x + 5.0), jnp.float32(y), metric), forward,
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="entropy_temperature"):
        dist.pairwise(jnp.float32(x), jnp.float32(y), metric, entropy_temperature=0.0)


def test_cosine_zero_norm_is_one():
    x = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    d = pairwise(x, x, "cosine")
    np.testing.assert_allclose(d, [[1.0, 1.0], [1.0, 0.0]], atol=1e-6)
    d = pairwise(x, x, "correlation")
    np.testing.assert_allclose(d, [[1.0, 1.0], [1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 7.0, 60.0])
def test_minkowski_orders(p):
    x, y = _data(4, 5, 6, seed=6)
    got = pairwise(jnp.float32(x * 100), jnp.float32(y * 100), "minkowski", p=p)
    _compare(got, cdist(x * 100, y * 100, "minkowski", p=p), "minkowski", rtol=1e-4, atol=1e-3)


def test_minkowski_inf_is_chebyshev():
    x, y = _data(4, 5, 6)
    np.testing.assert_array_equal(
        dist.pairwise(x, y, "minkowski", p=np.inf), pairwise(x, y, "chebyshev")
    )


def test_feature_variance_and_inverse_covariance_masked():
    rng = np.random.default_rng(7)
    pts = rng.normal(size=(12, 4)) * [1.0, 2.0, 0.5, 3.0]
    mask = np.ones(12, bool)
    mask[[2, 5, 9]] = False
    poisoned = pts.copy()
    poisoned[~mask] = 1e30
    poisoned[9] = np.nan
    valid = pts[mask]
    np.testing.assert_allclose(
        dist.feature_variance(poisoned, mask), np.var(valid, axis=0, ddof=1), rtol=1e-5
    )
    want = np.linalg.inv(np.cov(valid.T) + 1e-3 * np.eye(4))
    np.testing.assert_allclose(dist.inverse_covariance(poisoned, mask), want, rtol=1e-4)
    # Degenerate sets stay finite and positive definite.
    for m in (np.zeros(12, bool), np.eye(1, 12, 0, dtype=bool)[0]):
        v = np.asarray(dist.feature_variance(poisoned, m))
        vi = np.asarray(dist.inverse_covariance(poisoned, m))
        assert np.all(v > 0) and np.all(np.isfinite(vi))
        assert np.all(np.linalg.eigvalsh(vi) > 0)


def test_missing_metric_parameters():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="seuclidean.*variance"):
        dist.pairwise(x, x, "seuclidean")
    with pytest.raises(ValueError, match="mahalanobis.*inv_cov"):
        dist.pairwise(x, x, "mahalanobis")
    with pytest.raises(ValueError, match="shape"):
        dist.pairwise(x, x, "mahalanobis", inv_cov=jnp.eye(2))
    with pytest.raises(ValueError, match="p must be > 0"):
        dist.pairwise(x, x, "minkowski", p=0.0)


def test_check_metric():
    assert dist.check_metric("cosine") == "cosine"
    assert dist.check_metric("cityblock") == "manhattan"
    with pytest.raises(ValueError) as err:
        dist.check_metric("eucledian", field="model.memory.metric")
    msg = str(err.value)
    assert "model.memory.metric" in msg and "'eucledian'" in msg
    assert "Did you mean 'euclidean'?" in msg
    assert all(m in msg for m in dist.METRICS)
    with pytest.raises(ValueError, match="Did you mean 'manhattan'"):
        dist.check_metric("cityblok")
    with pytest.raises(ValueError, match="Unknown metric 'Xyz'"):
        dist.pairwise(jnp.ones((1, 2)), jnp.ones((1, 2)), "Xyz")


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "manhattan", "jaccard",
                                    "jensen_shannon"])
def test_jit_and_vmap(metric):
    rng = np.random.default_rng(8)
    x = jnp.float32(rng.normal(size=(3, 4, 5)))
    y = jnp.float32(rng.normal(size=(3, 6, 5)))
    fn = jax.jit(jax.vmap(lambda a, b: pairwise(a, b, metric)))
    got = fn(x, y)
    assert got.shape == (3, 4, 6)
    for c in range(3):
        np.testing.assert_allclose(got[c], pairwise(x[c], y[c], metric), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- nearest

# Jitted once per metric/chunk size/shapes, like pairwise above.
nearest = jax.jit(dist.nearest, static_argnames=("metric", "chunk_size", "soft"))


def _check_nearest(idx, d, ref, valid=None, rtol=1e-4, atol=1e-4):
    """``nearest``'s (idx [Q], d [Q]) against a float64 reference matrix ``ref`` [Q, N]: d is the
    row minimum over the valid rows; idx is numpy's argmin (the first of exactly equal minima)
    unless other rows are within float32 rounding of it, when it must be one of them; a row with
    no valid candidate gives (-1, inf)."""
    idx, d = np.asarray(idx), np.asarray(d)
    assert idx.dtype == np.int32 and idx.shape == d.shape == ref.shape[:1]
    ref = np.where(np.ones(ref.shape[1], bool) if valid is None else valid, ref, np.inf)
    for q, row in enumerate(ref):
        best = row.min()
        if not np.isfinite(best):
            assert idx[q] == -1 and d[q] == np.inf
            continue
        np.testing.assert_allclose(d[q], best, rtol=rtol, atol=atol)
        near = np.flatnonzero(row <= best + atol + rtol * abs(best))
        if np.all(row[near] == best):  # one minimum or exact ties: the first index
            assert idx[q] == near[0], (q, idx[q], near)
        else:  # distinct values within rounding: any of them
            assert idx[q] in near, (q, idx[q], near)


@pytest.mark.parametrize("metric", dist.METRICS)
def test_nearest_matches_scipy(metric):
    # N = 203 in chunks of 32: six full chunks and a tail of 11. hamming/jaccard on D = 6 have
    # many exact ties.
    x, y = _data(11, 203, 6, seed=10)
    jkw, skw = _kwargs(metric, x, y)
    x, y = x.astype(np.float32), y.astype(np.float32)
    ref = _scipy(metric, x.astype(np.float64), y.astype(np.float64), **skw)
    if metric == "correlation":  # no constant rows here, so scipy's NaN never occurs
        assert np.all(np.isfinite(ref))
    idx, d = nearest(x, y, metric, chunk_size=32, **jkw)
    assert d.dtype == jnp.float32
    _check_nearest(idx, d, ref)
    # Masked: the identical rows (distance 0) and whole chunks are invalid; invalid rows are
    # poisoned with inf/NaN, which must not reach the valid ones (the euclidean centring).
    rng = np.random.default_rng(11)
    valid = rng.random(203) < 0.6
    valid[[0, 202]] = False
    valid[32:96] = False
    poisoned = y.copy()
    poisoned[~valid] = np.inf
    poisoned[5] = np.nan
    valid[5] = False
    idx, d = nearest(x, poisoned, metric, chunk_size=32, valid=valid, **jkw)
    _check_nearest(idx, d, ref, valid)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "hamming"])
@pytest.mark.parametrize("chunk_size", [256, 1_000, 10_000])
def test_nearest_ties_give_first_index(metric, chunk_size):
    # 1000 rows drawn from 40 distinct ones: every distinct row recurs in many chunks and
    # 64-128 wide blocks (chunks of 256: blocks of 128, the tail of 232 blocks of 116; 1000:
    # 125; 10_000 is clipped to 1000). Half the queries are stored rows (distance 0).
    rng = np.random.default_rng(12)
    base = rng.normal(size=(40, 5)).astype(np.float32) + 1.0
    who = rng.integers(0, 40, 1_000)
    stored = base[who]
    queries = np.concatenate([base[:10], rng.normal(size=(10, 5)).astype(np.float32)])
    ref = _scipy(metric, queries.astype(np.float64), stored.astype(np.float64))
    if metric != "hamming":  # the test needs the nearest distinct row to be clearly nearest
        per_base = np.sort(_scipy(metric, queries.astype(np.float64), base.astype(np.float64)))
        assert np.all(per_base[:, 1] - per_base[:, 0] > 1e-3)
    assert np.all((ref == ref.min(1, keepdims=True)).sum(1) > 5)  # ties everywhere
    idx, d = nearest(queries, stored, metric, chunk_size=chunk_size)
    np.testing.assert_array_equal(idx, ref.argmin(1))  # the first of the tied rows
    _check_nearest(idx, d, ref, atol=1e-5)
    # The same with half the rows masked: the first valid one of the ties.
    valid = rng.random(1_000) < 0.5
    idx, d = nearest(queries, stored, metric, chunk_size=chunk_size, valid=valid)
    np.testing.assert_array_equal(idx, np.where(valid, ref, np.inf).argmin(1))


@pytest.mark.parametrize("metric", ["sqeuclidean", "manhattan"])
def test_nearest_chunk_size_edge_cases(metric):
    x, y = _data(6, 50, 4, seed=13)
    ref = _scipy(metric, x, y)
    x, y = x.astype(np.float32), y.astype(np.float32)
    valid = np.random.default_rng(13).random(50) < 0.5
    # 1 (50 steps of one row), 7 (7 chunks, tail of 1), N, > N (one chunk).
    for chunk_size in (1, 7, 50, 51, 10_000):
        idx, d = nearest(x, y, metric, chunk_size=chunk_size)
        _check_nearest(idx, d, ref)
        idx, d = nearest(x, y, metric, chunk_size=chunk_size, valid=valid)
        _check_nearest(idx, d, ref, valid)


def test_nearest_argmin_rows_matches_numpy():
    rng = np.random.default_rng(14)
    for width in (250, 128, 131, 1):  # blocks of 125, of 128, none (131 is prime), none
        score = rng.integers(0, 5, (37, width)).astype(np.float32)  # many ties
        score[3] = 1.0  # a row that is all one tie
        score[4, -1] = -1.0  # the minimum in the last block
        np.testing.assert_array_equal(dist._argmin_rows(jnp.asarray(score)), score.argmin(1))
    assert dist._block_width(10_000) == 125 and dist._block_width(8_192) == 128
    assert dist._block_width(131) == 0


def test_nearest_empty_and_fully_masked():
    x, y = _data(3, 20, 4)
    x, y = x.astype(np.float32), y.astype(np.float32)
    for valid in (np.zeros(20, bool), None):
        stored = y if valid is not None else y[:0]  # all rows invalid, or no rows at all
        idx, d = nearest(x, stored, "euclidean", chunk_size=8, valid=valid)
        np.testing.assert_array_equal(idx, [-1, -1, -1])
        np.testing.assert_array_equal(d, [np.inf] * 3)
    one = np.eye(1, 20, 13, dtype=bool)[0]  # a single valid row: every query's nearest
    idx, d = nearest(x, y, "cosine", chunk_size=8, valid=one)
    np.testing.assert_array_equal(idx, [13, 13, 13])
    np.testing.assert_allclose(d, cdist(x, y[13:14], "cosine")[:, 0], rtol=1e-5, atol=1e-6)
    idx, d = nearest(x[:0], y, "euclidean", chunk_size=8)  # no queries
    assert idx.shape == d.shape == (0,)


def test_nearest_float64():
    with jax.enable_x64(True):
        x, y = _data(5, 37, 3, seed=15)
        for metric in ("euclidean", "mahalanobis", "jensen_shannon"):
            jkw, skw = _kwargs(metric, x, y)
            idx, d = nearest(jnp.asarray(x), jnp.asarray(y), metric, chunk_size=8, **jkw)
            assert d.dtype == jnp.float64
            _check_nearest(idx, d, _scipy(metric, x, y, **skw), rtol=1e-9, atol=1e-9)


def test_nearest_jit_traces_once_per_shape():
    traces = []

    @jax.jit
    def search(q, s, valid):
        traces.append(q.shape)
        return dist.nearest(q, s, "sqeuclidean", chunk_size=16, valid=valid)

    rng = np.random.default_rng(16)
    for seed in range(3):  # new values, same shapes: one trace
        x, y = _data(4, 40, 3, seed=seed)
        idx, d = search(jnp.float32(x), jnp.float32(y), rng.random(40) < 0.7)
    assert len(traces) == 1
    search(jnp.float32(x[:3]), jnp.float32(y), rng.random(40) < 0.7)
    assert len(traces) == 2


def test_nearest_errors():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"queries \[Q, D\] and stored \[N, D\]"):
        dist.nearest(x, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        dist.nearest(x, x, chunk_size=0)
    with pytest.raises(ValueError, match=r"valid must have shape \(2,\)"):
        dist.nearest(x, x, valid=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="seuclidean.*variance"):
        dist.nearest(x, x, "seuclidean")
    with pytest.raises(ValueError, match="Did you mean 'cosine'"):
        dist.nearest(x, x, "cosin")
    with pytest.raises(TypeError):
        dist.nearest(x, x, "minkowski", q=3.0)
