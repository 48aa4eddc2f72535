"""Tests for jaxact.ops.hungarian against scipy.optimize.linear_sum_assignment."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from jaxact.ops import hungarian
from jaxact.ops.hungarian import linear_sum_assignment, matched_cost

# One compilation per (shape, mask) signature; every test batches many matrices through it.
_batched = jax.jit(jax.vmap(linear_sum_assignment))


def _check_against_scipy(costs, row_masks, col_masks, row_to_col, col_to_row):
    """Validates each matching and compares its total cost with scipy on the valid sub-matrix."""
    costs = np.asarray(costs, np.float64)
    row_to_col, col_to_row = np.asarray(row_to_col), np.asarray(col_to_row)
    assert row_to_col.dtype == np.int32 and col_to_row.dtype == np.int32
    for cost, rm, cm, r2c, c2r in zip(
        costs, row_masks, col_masks, row_to_col, col_to_row, strict=True
    ):
        rows = np.flatnonzero(r2c >= 0)
        cols = r2c[rows]
        # A valid matching between valid rows and valid columns, consistent both ways.
        assert np.all(rm[rows]) and np.all(cm[cols])
        assert len(np.unique(cols)) == len(cols)
        np.testing.assert_array_equal(c2r[cols], rows)
        assert np.sum(c2r >= 0) == len(rows)
        assert np.all(r2c[r2c < 0] == -1) and np.all(c2r[c2r < 0] == -1)

        sub = cost[rm][:, cm]
        ref_rows, ref_cols = scipy_lsa(sub)
        assert len(rows) == len(ref_rows) == min(rm.sum(), cm.sum())
        ref_total = sub[ref_rows, ref_cols].sum()
        total = cost[rows, cols].sum()
        scale = np.abs(sub).max() if sub.size else 1.0
        np.testing.assert_allclose(total, ref_total, rtol=0, atol=1e-6 * scale * (len(rows) + 1))


def _run(costs, row_masks=None, col_masks=None):
    costs = np.asarray(costs, np.float32)
    b, n, m = costs.shape
    rm = np.ones((b, n), bool) if row_masks is None else row_masks
    cm = np.ones((b, m), bool) if col_masks is None else col_masks
    r2c, c2r = _batched(jnp.asarray(costs), jnp.asarray(rm), jnp.asarray(cm))
    _check_against_scipy(costs, rm, cm, r2c, c2r)
    return r2c, c2r


def test_hand_example():
    cost = jnp.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    row_to_col, col_to_row = linear_sum_assignment(cost)
    # Optimum 1 + 2 + 2 = 5: rows (0, 1, 2) -> cols (1, 0, 2).
    np.testing.assert_array_equal(row_to_col, [1, 0, 2])
    np.testing.assert_array_equal(col_to_row, [1, 0, 2])
    assert float(matched_cost(cost, row_to_col)) == 5.0


@pytest.mark.parametrize("shape", [(7, 7), (5, 9), (9, 5)])
def test_random_uniform(shape):
    rng = np.random.default_rng(sum(shape))
    _run(rng.uniform(size=(96, *shape)))


@pytest.mark.parametrize("shape", [(6, 6), (4, 8), (8, 4)])
def test_integer_ties(shape):
    # Costs in {0, 1, 2} have many optimal matchings; only the total must agree.
    rng = np.random.default_rng(10 + sum(shape))
    _run(rng.integers(0, 3, size=(64, *shape)))


def test_large_and_negative_values():
    rng = np.random.default_rng(20)
    _run(rng.uniform(size=(64, 7, 7)) * 1e5)
    _run(rng.uniform(-1e6, 1e6, size=(32, 7, 7)))
    # A huge common offset: rows are shifted internally, so small integer differences survive.
    _run(1e6 + rng.integers(0, 5, size=(32, 7, 7)))


def test_masks_match_scipy_on_submatrix():
    rng = np.random.default_rng(30)
    b, n, m = 128, 8, 6
    costs = rng.uniform(size=(b, n, m))
    costs[: b // 2] = rng.integers(0, 3, size=(b // 2, n, m))
    # Mask densities make both "more valid rows" and "more valid cols" common.
    rm = rng.uniform(size=(b, n)) < rng.uniform(0.2, 1.0, size=(b, 1))
    cm = rng.uniform(size=(b, m)) < rng.uniform(0.2, 1.0, size=(b, 1))
    rm[0], cm[1] = False, False  # nothing to match
    cm[2] = [True, False, False, False, False, False]  # a single valid column
    _run(costs, rm, cm)


def test_detr_like_padded_ground_truth():
    # 20 predictions x up to 5 padded GT boxes, variable number of GT per clip.
    rng = np.random.default_rng(40)
    b, n, m = 64, 20, 5
    num_gt = rng.integers(0, m + 1, size=b)
    cm = np.arange(m)[None] < num_gt[:, None]
    r2c, c2r = _run(rng.uniform(size=(b, n, m)), col_masks=cm)
    # Every real GT column is matched, no padded one is.
    np.testing.assert_array_equal(np.asarray(c2r) >= 0, cm)


def test_no_retrace_and_unbatched_jit():
    rng = np.random.default_rng(50)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def solve(cost, col_mask):
        return jax.vmap(linear_sum_assignment, in_axes=(0, None, 0))(cost, None, col_mask)

    for _ in range(3):
        cost = rng.uniform(size=(16, 6, 4)).astype(np.float32)
        cm = rng.uniform(size=(16, 4)) < 0.7
        r2c, c2r = solve(cost, cm)
        _check_against_scipy(cost, np.ones((16, 6), bool), cm, r2c, c2r)

    single = jax.jit(linear_sum_assignment)
    cost = rng.uniform(size=(5, 3)).astype(np.float32)
    r2c, c2r = single(cost)
    _check_against_scipy(
        cost[None], np.ones((1, 5), bool), np.ones((1, 3), bool), r2c[None], c2r[None]
    )


def test_empty_and_integer_inputs():
    r2c, c2r = linear_sum_assignment(jnp.zeros((0, 3)))
    chex.assert_shape([r2c, c2r], [(0,), (3,)])
    np.testing.assert_array_equal(c2r, -1)
    r2c, _ = linear_sum_assignment(jnp.array([[3, 1], [1, 3]], jnp.int32))
    np.testing.assert_array_equal(r2c, [1, 0])


def test_non_finite_costs_terminate():
    # Unsupported input, but it must not hang a training step: loops have trip bounds.
    cost = np.random.default_rng(60).uniform(size=(5, 5)).astype(np.float32)
    cost[1], cost[2, 3] = np.inf, np.nan
    r2c, _ = linear_sum_assignment(cost)
    matched = np.asarray(r2c)[np.asarray(r2c) >= 0]
    assert len(np.unique(matched)) == len(matched)


def test_matched_cost_batched_and_gradient():
    cost = jnp.array([[[1.0, 2.0], [3.0, 4.0], [0.5, 9.0]]])  # [1, 3, 2]
    row_to_col = jnp.array([[-1, 1, 0]])
    np.testing.assert_allclose(matched_cost(cost, row_to_col), [4.0 + 0.5])

    # The matching is treated as constant, so the loss gradient is the assignment indicator.
    def loss(c):
        return matched_cost(c, linear_sum_assignment(c)[0])

    grad = jax.grad(loss)(cost[0])
    # Optimum: row 2 -> col 0 (0.5), row 0 -> col 1 (2.0); row 1 unmatched.
    np.testing.assert_array_equal(grad, [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])


def _mixed_costs(rng, b, n, m):
    """Uniform, small-integer (many ties) and all-equal (fully degenerate) cost matrices."""
    costs = rng.uniform(-1.0, 1.0, size=(b, n, m))
    costs[b // 3 : 2 * b // 3] = rng.integers(0, 3, size=(2 * b // 3 - b // 3, n, m))
    costs[2 * b // 3 :] = rng.integers(-2, 3, size=(b - 2 * b // 3, 1, 1))
    return costs


def _random_masks(rng, b, size):
    """Per-example masks of random density, including all-valid and all-masked examples."""
    masks = rng.uniform(size=(b, size)) < rng.uniform(0.1, 1.0, size=(b, 1))
    masks[0] = False
    masks[1:4] = True
    return masks


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 7), (7, 1), (3, 3), (5, 12), (12, 5), (20, 100), (100, 20)]
)
def test_rectangular_masked_ties_vs_scipy(shape):
    # Both orientations, masks that leave either side (or nothing) smaller, ties, degenerate.
    n, m = shape
    rng = np.random.default_rng(70 + n * m)
    b = 48
    _run(_mixed_costs(rng, b, n, m), _random_masks(rng, b, n), _random_masks(rng, b, m))


@pytest.mark.parametrize("bid_rounds", [0, 1, 12])
def test_bidding_rounds_do_not_change_optimum(bid_rounds):
    # Bidding only warm-starts the augmenting paths: any number of rounds gives an optimum.
    rng = np.random.default_rng(80 + bid_rounds)
    b, n, m = 48, 9, 14
    solve = jax.jit(jax.vmap(functools.partial(hungarian._assign, bid_rounds=bid_rounds)))
    costs = _mixed_costs(rng, b, n, m).astype(np.float32)
    rm, cm = _random_masks(rng, b, n), _random_masks(rng, b, m)
    r2c, c2r = solve(jnp.asarray(costs), jnp.asarray(rm), jnp.asarray(cm))
    _check_against_scipy(costs, rm, cm, r2c, c2r)


def test_detr_sized_batch_and_dense_square():
    # The benchmark's sizes: 100 queries x up to 20 padded GT, and one dense square problem.
    rng = np.random.default_rng(90)
    b, n, m = 16, 100, 20
    cm = np.arange(m)[None] < rng.integers(0, m + 1, size=b)[:, None]
    costs = rng.uniform(size=(b, n, m)).astype(np.float32)
    # As detection_losses calls it (no row mask) ...
    solve = jax.jit(jax.vmap(linear_sum_assignment, in_axes=(0, None, 0)))
    r2c, c2r = solve(jnp.asarray(costs), None, jnp.asarray(cm))
    _check_against_scipy(costs, np.ones((b, n), bool), cm, r2c, c2r)
    np.testing.assert_array_equal(np.asarray(c2r) >= 0, cm)
    # ... and with explicit all-true row masks.
    _run(costs, col_masks=cm)
    _run(rng.uniform(size=(2, 80, 80)))


def test_all_masked_and_single_entries():
    cost = jnp.array([[2.0, 1.0, 3.0], [0.5, 4.0, 1.0]])
    r2c, c2r = linear_sum_assignment(cost, jnp.array([False, False]))
    np.testing.assert_array_equal(r2c, [-1, -1])
    np.testing.assert_array_equal(c2r, [-1, -1, -1])
    r2c, c2r = linear_sum_assignment(cost, None, jnp.array([False, False, False]))
    np.testing.assert_array_equal(r2c, [-1, -1])
    # 1 x N and N x 1: the single row / column takes its cheapest valid partner.
    r2c, c2r = linear_sum_assignment(cost[:1], None, jnp.array([True, False, True]))
    np.testing.assert_array_equal(r2c, [0])
    np.testing.assert_array_equal(c2r, [0, -1, -1])
    r2c, c2r = linear_sum_assignment(cost[:, :1])
    np.testing.assert_array_equal(r2c, [-1, 0])
    np.testing.assert_array_equal(c2r, [1])


def test_non_finite_costs_with_masks_stay_inside_masks():
    rng = np.random.default_rng(100)
    costs = rng.uniform(size=(32, 6, 9)).astype(np.float32)
    costs[:, 1] = np.inf
    costs[:, 2, 3] = np.nan
    costs[::2, :, 5] = -np.inf
    rm, cm = _random_masks(rng, 32, 6), _random_masks(rng, 32, 9)
    r2c, c2r = (np.asarray(x) for x in _batched(jnp.asarray(costs), jnp.asarray(rm), jnp.asarray(cm)))
    for r, c, rmask, cmask in zip(r2c, c2r, rm, cm, strict=True):
        rows = np.flatnonzero(r >= 0)
        assert np.all(rmask[rows]) and np.all(cmask[r[rows]])
        assert len(np.unique(r[rows])) == len(rows)
        np.testing.assert_array_equal(c[r[rows]], rows)
        assert np.sum(c >= 0) == len(rows)
