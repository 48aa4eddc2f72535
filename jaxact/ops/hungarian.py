"""Exact linear assignment (Hungarian matching) in pure JAX.

The solver is the shortest-augmenting-path method with row/column potentials
(Jonker-Volgenant style, the same family as ``scipy.optimize.linear_sum_assignment``).
It is written with ``lax.while_loop`` only, so it jits with static shapes, vmaps over a
batch of cost matrices and runs on TPU without host callbacks.

Shapes and masks are handled by embedding the problem in a ``K x K`` square
(``K = max(N, M)``) where padded and masked rows/columns are simply never visited. The
solver always augments from the side with fewer valid entries (decided at run time, so
it works under ``vmap`` with per-example masks), which makes every valid row matched when
there are at most as many valid rows as valid columns, and every valid column matched
otherwise. The result is a minimum-cost matching of maximum cardinality on the valid
sub-matrix, i.e. what scipy returns for ``cost[row_mask][:, col_mask]``.

Cost: ``O(k^2 K)`` vector work for ``k = min(#valid rows, #valid cols)``; the outer loop
runs ``k`` times (the max over the batch under ``vmap``).

Costs must be finite: callers should clip ``inf`` / huge values (e.g. to ``1e6``) before
matching. Non-finite costs do not hang the loops (every loop has a trip bound) but give an
unspecified, possibly partial, matching. Computation is in float32 (float64 if given
float64 with x64 enabled); costs are shifted per row before solving, so a large common
offset does not hurt, but differences below float32 resolution of the cost magnitude
cannot be resolved.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _solve_square(cost: jax.Array, row_valid: jax.Array, col_valid: jax.Array):
    """Shortest augmenting path on a square problem with at most as many valid rows as cols.

    Args:
      cost: ``[K, K]`` finite float costs; entries in invalid rows/cols are ignored.
      row_valid: ``[K]`` bool; every valid row gets matched.
      col_valid: ``[K]`` bool; requires ``row_valid.sum() <= col_valid.sum()``.

    Returns:
      ``(col4row [K], row4col [K])`` int32, -1 where unmatched.
    """
    k = cost.shape[0]
    dtype = cost.dtype
    inf = jnp.array(jnp.inf, dtype)
    neg1 = jnp.full((k,), -1, jnp.int32)
    arange = jnp.arange(k, dtype=jnp.int32)

    # Rows are always matched, so a per-row shift does not change the optimum; it removes
    # large common offsets and makes all reduced costs start non-negative.
    row_min = jnp.min(jnp.where(col_valid[None, :], cost, inf), axis=1, keepdims=True)
    cost = jnp.where(row_valid[:, None] & col_valid[None, :], cost - row_min, 0.0)

    # Valid rows first, in index order; the outer loop visits only the first n of them.
    order = jnp.argsort(~row_valid, stable=True).astype(jnp.int32)
    n_rows = jnp.sum(row_valid, dtype=jnp.int32)

    def augment_one(state):
        step, u, v, col4row, row4col = state
        cur = order[step]
        # Under vmap this body also runs for examples that are already done; keep their
        # searches empty so they do not lengthen the batched inner loops.
        active = step < n_rows

        # Dijkstra over columns from `cur`, on reduced costs cost[i, j] - u[i] - v[j].
        def dijkstra_cond(s):
            _, _, _, _, _, _, sink, remaining = s
            # `any(remaining)` only guards against non-termination on invalid input.
            return active & (sink < 0) & jnp.any(remaining)

        def dijkstra_body(s):
            i, min_val, shortest, path, rows_seen, cols_seen, _, remaining = s
            rows_seen = rows_seen.at[i].set(True)
            reduced = min_val + cost[i] - u[i] - v
            better = remaining & (reduced < shortest)
            path = jnp.where(better, i, path)
            shortest = jnp.where(better, reduced, shortest)
            cand_dist = jnp.where(remaining, shortest, inf)
            min_val = jnp.min(cand_dist)
            cand = remaining & (cand_dist == min_val)
            # Among equally short columns prefer a free one: it ends the search early.
            cand_free = cand & (row4col < 0)
            j = jnp.where(jnp.any(cand_free), jnp.argmax(cand_free), jnp.argmax(cand))
            j = j.astype(jnp.int32)
            cols_seen = cols_seen.at[j].set(True)
            remaining = remaining.at[j].set(False)
            sink = jnp.where(row4col[j] < 0, j, -1)
            return (row4col[j], min_val, shortest, path, rows_seen, cols_seen, sink, remaining)

        init = (
            cur,
            jnp.zeros((), dtype),
            jnp.full((k,), inf),
            neg1,
            jnp.zeros((k,), bool),
            jnp.zeros((k,), bool),
            jnp.array(-1, jnp.int32),
            col_valid,
        )
        _, min_val, shortest, path, rows_seen, cols_seen, sink, _ = lax.while_loop(
            dijkstra_cond, dijkstra_body, init
        )

        # Dual update keeps reduced costs >= 0 and tight on the matching.
        safe_col = jnp.maximum(col4row, 0)
        row_delta = jnp.where(arange == cur, min_val, min_val - shortest[safe_col])
        u = u + jnp.where(rows_seen, row_delta, 0.0)
        v = v - jnp.where(cols_seen, min_val - shortest, 0.0)

        # Flip the alternating path ending at `sink` back to `cur`.
        def flip_cond(s):
            j, _, _, done, count = s
            return (~done) & (count <= k)

        def flip_body(s):
            j, col4row, row4col, _, count = s
            i = path[j]
            row4col = row4col.at[j].set(i)
            prev = col4row[i]
            col4row = col4row.at[i].set(j)
            return prev, col4row, row4col, i == cur, count + 1

        flip_init = (sink, col4row, row4col, sink < 0, jnp.array(0, jnp.int32))
        _, col4row, row4col, _, _ = lax.while_loop(flip_cond, flip_body, flip_init)
        return step + 1, u, v, col4row, row4col

    init = (
        jnp.array(0, jnp.int32),
        jnp.zeros((k,), dtype),
        jnp.zeros((k,), dtype),
        neg1,
        neg1,
    )
    _, _, _, col4row, row4col = lax.while_loop(lambda s: s[0] < n_rows, augment_one, init)
    return col4row, row4col


@jax.jit
def linear_sum_assignment(
    cost: jax.Array,
    row_mask: jax.Array | None = None,
    col_mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Exact minimum-cost bipartite matching.

    Args:
      cost: ``[N, M]`` finite costs (any real dtype; ints are promoted to float32).
        ``inf``/NaN must not be passed: clip first.
      row_mask: optional ``[N]`` bool; rows that are False are never matched.
      col_mask: optional ``[M]`` bool; columns that are False are never matched (e.g.
        padded ground truth).

    Returns:
      ``(row_to_col [N], col_to_row [M])`` int32, -1 for unmatched or masked entries.
      With ``r`` valid rows and ``c`` valid columns, exactly ``min(r, c)`` pairs are
      matched and their total cost is minimal. Use ``jax.vmap`` for batches.
    """
    # The matching is piecewise constant in the costs; stopping gradients also keeps
    # reverse-mode autodiff from trying to differentiate through the while loops.
    cost = lax.stop_gradient(jnp.asarray(cost))
    if cost.ndim != 2:
        raise ValueError(f"cost must be [N, M], got shape {cost.shape}")
    n, m = cost.shape
    dtype = jnp.result_type(cost.dtype, jnp.float32)
    cost = cost.astype(dtype)
    row_mask = jnp.ones((n,), bool) if row_mask is None else jnp.asarray(row_mask, bool)
    col_mask = jnp.ones((m,), bool) if col_mask is None else jnp.asarray(col_mask, bool)
    if n == 0 or m == 0:
        return jnp.full((n,), -1, jnp.int32), jnp.full((m,), -1, jnp.int32)

    k = max(n, m)
    square = jnp.zeros((k, k), dtype).at[:n, :m].set(cost)
    rows_valid = jnp.zeros((k,), bool).at[:n].set(row_mask)
    cols_valid = jnp.zeros((k,), bool).at[:m].set(col_mask)

    # Augment from the side with fewer valid entries so that every augmentation succeeds.
    swap = jnp.sum(rows_valid) > jnp.sum(cols_valid)
    solve_cost = jnp.where(swap, square.T, square)
    solve_rows = jnp.where(swap, cols_valid, rows_valid)
    solve_cols = jnp.where(swap, rows_valid, cols_valid)
    col4row, row4col = _solve_square(solve_cost, solve_rows, solve_cols)

    row_to_col = jnp.where(swap, row4col, col4row)[:n]
    col_to_row = jnp.where(swap, col4row, row4col)[:m]
    return row_to_col, col_to_row


def matched_cost(cost: jax.Array, row_to_col: jax.Array) -> jax.Array:
    """Total cost of a matching.

    Args:
      cost: ``[..., N, M]`` costs.
      row_to_col: ``[..., N]`` int column per row, -1 for unmatched rows.

    Returns:
      ``[...]`` sum of ``cost[i, row_to_col[i]]`` over matched rows.
    """
    matched = row_to_col >= 0
    picked = jnp.take_along_axis(cost, jnp.maximum(row_to_col, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(matched, picked, 0), axis=-1)
