"""Exact Hungarian matching: `jaxact.ops.hungarian` against scipy (and optax) on the CPU.

  python -m benchmarks.hungarian
  python -m benchmarks.hungarian --hu_rounds=31 --hu_note="2 cores shared with a training run"
  python -m benchmarks.hungarian --hu_baseline=/tmp/old_hungarian.py   # also time another copy

Problems (uniform [0, 1) float32 costs, seeded; masked columns are padded ground truth whose
number per example is uniform in 1..M):

  detr_64x100x20    64 x [100 queries, 20 padded GT]: DETR-sized batched matching (the bar)
  detr_16x50x40     16 x [50, 40 padded GT]
  boxes_64x100x20   64 x [100, 20] DETR matching costs of random boxes (5 L1 - 2 GIoU - p)
  dense_300x300     one 300 x 300 problem, nothing masked

Solvers: `jaxact` is `jax.vmap(linear_sum_assignment)` (plain for the single problem), jitted
and compiled before timing; `scipy_loop` is a Python loop of
`scipy.optimize.linear_sum_assignment` over the valid sub-matrix `cost[b][:, mask[b]]` of each
example (float64, sliced inside the loop); `optax` is `jax.vmap(optax.assignment.
hungarian_algorithm)`, jitted, on the padded matrices with masked columns at a constant cost
(which leaves the optimum on the valid columns unchanged), when the installed optax has it.
Times are per batch, of single calls: median (also min and 90th percentile) over `--hu_rounds`
rounds x `--hu_calls` calls, the solvers taking turns round by round (interleaved, so a busy
machine slows them alike), each turn after one untimed call. On a loaded machine jaxact's
calls have a heavy tail (a few ms when XLA's worker threads are descheduled) that scipy's
single-threaded loop lacks; the median of single calls is robust to it.

Exactness: each solver's total cost per example (float64 sums of the float32 costs over its
matched valid pairs) against scipy's; `exact` is True when every example agrees to
`1e-5 * max(1, |total|)`.

JSON (`--hu_output`): `{"date", "machine", "note", "versions", "settings", "problems": [{"name",
"batch", "shape", "valid_cols", "ms": {solver: median ms per batch}, "ms_min", "ms_p90", "exact",
"max_abs_total_diff"}], "ratios": {...}, "bar": {...}}`. `ratios` (of medians) holds
`jaxact_time_over_scipy_<problem>`, `jaxact_time_over_optax_<problem>` (and `_baseline_`) for
every problem, with `jaxact_time_over_scipy_batched` the DETR-sized `detr_64x100x20` one
(`..._batched_min`: the same from the fastest calls).
"""

from __future__ import annotations

import importlib.util
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy
from absl import app, flags
from scipy.optimize import linear_sum_assignment as scipy_lsa

from benchmarks.machine import machine_description, now
from jaxact import files
from jaxact.ops import hungarian

_ROUNDS = flags.DEFINE_integer("hu_rounds", 41, "Interleaved timing rounds.")
_CALLS = flags.DEFINE_integer("hu_calls", 5, "Timed calls per solver per round (median over all).")
_SEED = flags.DEFINE_integer("hu_seed", 0, "Seed of the random problems.")
_PROBLEMS = flags.DEFINE_list(
    "hu_problems",
    ["detr_64x100x20", "detr_16x50x40", "boxes_64x100x20", "dense_300x300"],
    "Problems to run (see the module docstring).",
)
_BASELINE = flags.DEFINE_string(
    "hu_baseline", "", "Optional path of another hungarian.py to time alongside ('baseline')."
)
_BAR = flags.DEFINE_float("hu_bar", 2.0, "Bar on jaxact_time_over_scipy_batched.")
_NOTE = flags.DEFINE_string("hu_note", "", "How busy the machine was.")
_OUTPUT = flags.DEFINE_string("hu_output", "benchmarks/results/hungarian.json", "JSON path.")

BATCHED = "detr_64x100x20"


def _optax_hungarian():
    """`optax.assignment.hungarian_algorithm`, or None where the installed optax lacks it."""
    try:
        from optax import assignment
    except ImportError:
        return None
    return getattr(assignment, "hungarian_algorithm", None)


def _giou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`[..., N, 4]`, `[..., M, 4]` xyxy -> `[..., N, M]` generalized IoU."""
    a, b = a[..., :, None, :], b[..., None, :, :]
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
    inter = np.prod(np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]),
                            0, None), axis=-1)
    union = area(a) + area(b) - inter
    hull = np.prod(np.maximum(a[..., 2:], b[..., 2:]) - np.minimum(a[..., :2], b[..., :2]), axis=-1)
    return inter / union - (hull - union) / hull


def make_problem(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`(cost [B, N, M] float32, col_mask [B, M] bool)` of a named problem."""
    kind, size = name.split("_")
    dims = [int(x) for x in size.split("x")]
    b, n, m = dims if len(dims) == 3 else [1, *dims]
    if kind == "dense":
        return rng.uniform(size=(b, n, m)).astype(np.float32), np.ones((b, m), bool)
    mask = np.arange(m)[None] < rng.integers(1, m + 1, size=b)[:, None]
    if kind == "detr":
        return rng.uniform(size=(b, n, m)).astype(np.float32), mask
    if kind == "boxes":  # DETR's cost: 5 L1(cxcywh) - 2 GIoU - p(person)
        centre = rng.uniform(0.1, 0.9, size=(b, n + m, 2))
        wh = rng.uniform(0.05, 0.3, size=(b, n + m, 2))
        cxcywh = np.concatenate([centre, wh], axis=-1)
        xyxy = np.concatenate([centre - wh / 2, centre + wh / 2], axis=-1)
        pred, gt = slice(0, n), slice(n, n + m)
        l1 = np.abs(cxcywh[:, pred, None] - cxcywh[:, None, gt]).sum(-1)
        cost = 5 * l1 - 2 * _giou(xyxy[:, pred], xyxy[:, gt]) - rng.uniform(size=(b, n, 1))
        return np.where(mask[:, None], cost, 0.0).astype(np.float32), mask
    raise ValueError(f"unknown problem {name!r}")


def _load_baseline(path: str):
    spec = importlib.util.spec_from_file_location("hungarian_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.linear_sum_assignment


def solvers(cost: np.ndarray, mask: np.ndarray) -> dict:
    """Name -> (zero-argument timed call, `[B, N]` row_to_col from its result)."""
    b, n, m = cost.shape
    cost_j, mask_j = jnp.asarray(cost), jnp.asarray(mask)
    cost64 = cost.astype(np.float64)

    def jax_solver(lsa):
        if b == 1:  # one problem: no vmap
            fn = jax.jit(lambda c, cm: lsa(c[0], None, cm[0]))
            return (lambda: jax.block_until_ready(fn(cost_j, mask_j)),
                    lambda out: np.asarray(out[0])[None])
        fn = jax.jit(jax.vmap(lsa, in_axes=(0, None, 0)))
        return (lambda: jax.block_until_ready(fn(cost_j, None, mask_j)),
                lambda out: np.asarray(out[0]))

    def scipy_loop():
        return [scipy_lsa(c[:, cm]) for c, cm in zip(cost64, mask, strict=True)]

    def scipy_rows(out):
        r2c = np.full((b, n), -1)
        for k, ((rows, cols), cm) in enumerate(zip(out, mask, strict=True)):
            r2c[k, rows] = np.flatnonzero(cm)[cols]
        return r2c

    out = {"jaxact": jax_solver(hungarian.linear_sum_assignment),
           "scipy_loop": (scipy_loop, scipy_rows)}
    if _BASELINE.value:
        out["baseline"] = jax_solver(_load_baseline(_BASELINE.value))
    optax_lsa = _optax_hungarian()
    if optax_lsa is not None:
        # Masked columns at one constant cost: any optimum restricted to the valid columns is
        # optimal there (n >= m, so the masked ones can always take spare rows).
        fn = jax.jit(jax.vmap(lambda c, cm: optax_lsa(jnp.where(cm[None, :], c, 0.0))))

        def optax_rows(res):
            rows, cols = (np.asarray(x) for x in res)
            r2c = np.full((b, n), -1)
            for k in range(b):
                valid = mask[k, cols[k]]
                r2c[k, rows[k][valid]] = cols[k][valid]
            return r2c

        out["optax"] = (lambda: jax.block_until_ready(fn(cost_j, mask_j)), optax_rows)
    return out


def totals(cost: np.ndarray, mask: np.ndarray, r2c: np.ndarray) -> np.ndarray:
    """`[B]` float64 total cost of each example's matched valid pairs (checked valid)."""
    out = np.zeros(len(cost))
    for k, (c, cm, r) in enumerate(zip(cost.astype(np.float64), mask, r2c, strict=True)):
        rows = np.flatnonzero(r >= 0)
        cols = r[rows]
        assert np.all(cm[cols]) and len(np.unique(cols)) == len(cols), "invalid matching"
        assert len(rows) == min(c.shape[0], cm.sum()), "matching not of maximum cardinality"
        out[k] = c[rows, cols].sum()
    return out


def run_problem(name: str, rng: np.random.Generator) -> dict:
    cost, mask = make_problem(name, rng)
    calls = solvers(cost, mask)
    results = {key: read(call()) for key, (call, read) in calls.items()}  # compiles
    reference = totals(cost, mask, results["scipy_loop"])
    exact, max_diff = {}, {}
    for key, r2c in results.items():
        diff = np.abs(totals(cost, mask, r2c) - reference)
        max_diff[key] = float(diff.max())
        exact[key] = bool(np.all(diff <= 1e-5 * np.maximum(1.0, np.abs(reference))))
    times = {key: [] for key in calls}
    for _ in range(_ROUNDS.value):
        for key, (call, _) in calls.items():
            call()  # untimed: wakes XLA's worker threads after the previous solver
            for _ in range(_CALLS.value):
                start = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - start)
    b, n, m = cost.shape
    return {"name": name, "batch": b, "shape": [n, m],
            "valid_cols": "all" if mask.all() else f"uniform in 1..{m} per example",
            "ms": {key: round(float(np.median(t)) * 1e3, 4) for key, t in times.items()},
            "ms_min": {key: round(float(np.min(t)) * 1e3, 4) for key, t in times.items()},
            "ms_p90": {key: round(float(np.percentile(t, 90)) * 1e3, 4)
                       for key, t in times.items()},
            "exact": exact, "max_abs_total_diff": max_diff}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    rng = np.random.default_rng(_SEED.value)
    problems = [run_problem(name, rng) for name in _PROBLEMS.value]

    ratios = {}
    for p in problems:
        ms = p["ms"]
        ratios[f"jaxact_time_over_scipy_{p['name']}"] = round(ms["jaxact"] / ms["scipy_loop"], 3)
        for other in ("optax", "baseline"):
            if other in ms:
                ratios[f"jaxact_time_over_{other}_{p['name']}"] = round(
                    ms["jaxact"] / ms[other], 3)
        if p["name"] == BATCHED:
            ratios["jaxact_time_over_scipy_batched"] = ratios[f"jaxact_time_over_scipy_{BATCHED}"]
            # Fastest calls only: even less sensitive to a busy machine than the medians.
            ratios["jaxact_time_over_scipy_batched_min"] = round(
                p["ms_min"]["jaxact"] / p["ms_min"]["scipy_loop"], 3)
    batched = ratios.get("jaxact_time_over_scipy_batched")
    all_exact = all(p["exact"]["jaxact"] for p in problems)
    bar = {"jaxact_time_over_scipy_batched_max": _BAR.value, "exact_required": True,
           "met": batched is not None and batched <= _BAR.value and all_exact}
    if batched is not None and batched > _BAR.value:
        bar["missed_by"] = f"{batched / _BAR.value:.2f}x slower than the bar allows"

    versions = {"jax": jax.__version__, "scipy": scipy.__version__}
    try:
        import optax
        versions["optax"] = optax.__version__
    except ImportError:
        pass
    out = {"date": now(), "machine": machine_description(), "note": _NOTE.value,
           "versions": versions,
           "settings": {"rounds": _ROUNDS.value, "calls": _CALLS.value, "seed": _SEED.value,
                        "bid_rounds": hungarian._BID_ROUNDS, "baseline": _BASELINE.value},
           "problems": problems, "ratios": ratios, "bar": bar}
    files.write_json(_OUTPUT.value, out, indent=2)

    keys = list(dict.fromkeys(k for p in problems for k in p["ms"]))
    print(f"CPU ms per batch (median of {_ROUNDS.value} rounds x {_CALLS.value} single calls); "
          "exact = totals equal scipy's")
    print(f"{'problem':<17} | " + " | ".join(f"{k:>16}" for k in keys) + " | jaxact/scipy")
    for p in problems:
        cells = []
        for k in keys:
            if k in p["ms"]:
                cells.append(f"{p['ms'][k]:>9.3f} {'exact' if p['exact'][k] else 'WRONG':>6}")
            else:
                cells.append(f"{'-':>16}")
        ratio = ratios[f"jaxact_time_over_scipy_{p['name']}"]
        print(f"{p['name']:<17} | " + " | ".join(cells) + f" | {ratio:>11.2f}x")
    print(f"\nbar (jaxact_time_over_scipy_batched <= {_BAR.value:g}, exact): "
          f"{'met' if bar['met'] else 'MISSED'} ({batched}; fastest calls "
          f"{ratios.get('jaxact_time_over_scipy_batched_min')})")
    print(f"written: {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
