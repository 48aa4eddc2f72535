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
