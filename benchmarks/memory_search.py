"""Nearest-reference search and k-means as the memory bank does them, against FAISS and numpy.

  python -m benchmarks.memory_search                             # 100k and 1M vectors, D = 256
  python -m benchmarks.memory_search --ms_sizes=100000 --ms_note="2 idle cores"

Needs faiss-cpu (`pip install -e .[bench]`) for the FAISS columns; without it they are skipped
with a message and jaxact and numpy still run.

Search rows, one per (stored vectors N, metric): 1,024 queries against N stored vectors of
D = 256 (standard normal float32; the queries drawn independently), top-1 per query:

  jaxact     `jaxact.ops.distances.nearest(queries, stored, metric, chunk_size=--ms_chunk)`,
             jitted: the bank's own distance (`distances.pairwise`, what
             `memory.class_distances` calls) over `--ms_chunk`-row chunks of the stored
             vectors in one `lax.scan`, keeping the running best (a [1024, N] matrix would not
             fit at 1M); the top-1 of a chunk is a two-level argmin (the same indices as
             `jnp.argmin`, ~1.5x faster on XLA:CPU).
  jaxact_argmin  this benchmark's own scan of `distances.pairwise` per chunk (the last one
             zero-padded and masked) with `jnp.argmin` over each whole chunk (rows below 1M
             only): what XLA:CPU's two-output argmin reduction costs.
  xla_mm     the same scan with the least work XLA can do: the stored vectors' squared norms
             (or, for cosine, the unit vectors) computed once outside the timing, then
             `|s|^2 - 2 q.s` (min) or `q.s` (max) per chunk. What is left of the gap to FAISS
             here is XLA's matmul and reduction, not jaxact's distance.
  faiss      `IndexFlatL2` (sqeuclidean) / `IndexFlatIP` on unit vectors (cosine: both sides
             normalised with `faiss.normalize_L2`, the stored ones once, outside the timing).
  numpy      the matmul form with precomputed norms / unit vectors, in the same chunks.

The queries per second are medians of `--ms_repeats` (`--ms_repeats_large` at 1M) interleaved
rounds (every method once per round, so a busy machine slows them alike). Agreement: the
fraction of queries whose nearest index equals FAISS's; disagreements are checked in float64:
`ties` counts those whose two candidates are equally near to float32 rounding (relative 1e-5).

K-means row: `jaxact.ops.kmeans.kmeans` (k-means++ seeding, `--ms_kmeans_iters` Lloyd steps,
jitted) against `faiss.Kmeans` (random seeding, the same iterations, every point used:
`max_points_per_centroid` raised so FAISS does not subsample) on `--ms_kmeans_points` vectors of
D = 256 drawn around 32 centres of different spreads, `--ms_kmeans_clusters` clusters; seconds
and inertia (sum of squared distances to the nearest centroid, computed the same way for both),
medians over the repeats (each repeat a new seed for both).

1M x 256 float32 is 1 GB: the 1M rows run only when `/proc/meminfo`'s MemAvailable is at least
`--ms_min_free_gb`, else they are recorded as skipped with the reason. Finished rows in the JSON
are kept and not rerun (`--ms_redo` reruns them), so an interrupted run resumes.

Measured on 2 shared CPU cores (AMD EPYC, a training benchmark alongside): jaxact 0.86x FAISS
at 100k x 256 (sqeuclidean and cosine), 0.95x / 1.11x at 1M; every method finds FAISS's nearest
index for every query. With `jnp.argmin` over whole chunks jaxact reaches only 0.54x to 0.57x:
XLA:CPU's two-output argmin reduction over a [1024, 10000] block costs about as much as the
matmul. K-means: within noise of FAISS on 10k points (under 0.1 s each), 2% lower inertia
(k-means++ seeding).

JSON (`--ms_output`): `{"date", "machine", "note", "threads", "search": [{"n", "dim", "queries",
"metric", "qps": {method: q/s}, "seconds": {method: [rounds]}, "agreement_with_faiss":
{method: {"equal", "ties", "closer", "farther"}}, "date", "note"} | {"n", "metric", "skipped"}],
"kmeans": {...}, "ratios": {"jaxact_over_faiss_100k", ...}, "bars": [...]}`.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from benchmarks.machine import cpu_cores, machine_description, now
from jaxact import files
from jaxact.ops import distances, kmeans

# FAISS's OpenMP threads must not spin at barriers on a shared machine (see compare_pytorch);
# set before FAISS loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # optional: pip install -e .[bench]
    import faiss
except ImportError:  # pragma: no cover - exercised where faiss is absent
    faiss = None

_SIZES = flags.DEFINE_list("ms_sizes", ["100000", "1000000"], "Stored vectors N per row.")
_DIM = flags.DEFINE_integer("ms_dim", 256, "Vector size D.")
_QUERIES = flags.DEFINE_integer("ms_queries", 1024, "Queries per search.")
_METRICS = flags.DEFINE_list("ms_metrics", ["sqeuclidean", "cosine"], "Metrics.")
_CHUNK = flags.DEFINE_integer("ms_chunk", 10_000, "Stored vectors per scanned chunk (jaxact).")
_REPEATS = flags.DEFINE_integer("ms_repeats", 5, "Interleaved rounds per row (median).")
_REPEATS_LARGE = flags.DEFINE_integer("ms_repeats_large", 3, "Rounds for rows of N >= 1M.")
_KM_POINTS = flags.DEFINE_integer("ms_kmeans_points", 10_000, "K-means points.")
_KM_CLUSTERS = flags.DEFINE_integer("ms_kmeans_clusters", 16, "K-means clusters.")
_KM_ITERS = flags.DEFINE_integer("ms_kmeans_iters", 10, "Lloyd iterations (both).")
_KM_REPEATS = flags.DEFINE_integer("ms_kmeans_repeats", 5, "K-means rounds (median).")
_MIN_FREE = flags.DEFINE_float("ms_min_free_gb", 6.0, "MemAvailable needed for N >= 1M rows.")
_REDO = flags.DEFINE_boolean("ms_redo", False, "Rerun rows already in the JSON.")
_NOTE = flags.DEFINE_string("ms_note", "", "How busy the machine was (saved with each row).")
_OUTPUT = flags.DEFINE_string("ms_output", "benchmarks/results/memory_search.json", "JSON path.")

METRICS = ("sqeuclidean", "cosine")
BAR = 0.8  # jaxact's queries/s over FAISS flat's at 100k x 256, issue 26
LARGE = 1_000_000


def faiss_missing_message() -> str:
    return ("faiss-cpu is an optional benchmark dependency: pip install -e .[bench]; "
            "the FAISS columns are skipped")


def mem_available_gb() -> float:
    """MemAvailable of /proc/meminfo in GB (inf where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("inf")


# ----------------------------------------------------------------------------- data


def search_data(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(stored `[n, dim]`, queries `[queries, dim]`), standard normal float32."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim), dtype=np.float32),
            rng.standard_normal((queries, dim), dtype=np.float32))


def kmeans_data(n: int, dim: int, seed: int = 0, centres: int = 32) -> np.ndarray:
    """`[n, dim]` float32 around `centres` centres of spreads 0.5 to 2 (distinct clusters that
    overlap a little)."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centres, dim)).astype(np.float32) * 2.0
    spread = rng.uniform(0.5, 2.0, centres).astype(np.float32)
    who = rng.integers(0, centres, n)
    noise = rng.standard_normal((n, dim), dtype=np.float32)
    return mu[who] + spread[who, None] * noise


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


# ----------------------------------------------------------------------------- searches


def _chunked(stored, chunk: int):
    """`stored` `[n, D]` -> (`[n_chunks, chunk, D]`, n): zero rows pad the last chunk."""
    n = stored.shape[0]
    pad = -n % chunk
    if pad:
        stored = jnp.concatenate([stored, jnp.zeros((pad, stored.shape[1]), stored.dtype)])
    return stored.reshape(-1, chunk, stored.shape[1]), n


def _scan_best(queries, chunks, n: int, chunk_scores, largest: bool, block_argmin: bool = True):
    """Top-1 index per query over `chunks` `[c, chunk, D]` (rows >= `n` are padding):
    `chunk_scores(queries, chunk, i)` gives `[Q, chunk]` scores, minimised or maximised."""
    size = chunks.shape[1]
    sign = -1.0 if largest else 1.0
    init = (jnp.full((queries.shape[0],), jnp.inf, jnp.float32),
            jnp.zeros((queries.shape[0],), jnp.int32))

    def body(best, item):
        i, chunk = item
        score = sign * chunk_scores(queries, chunk, i)
        if n % size:  # padding rows never win
            score = jnp.where(i * size + jnp.arange(size) < n, score, jnp.inf)
        idx = distances._argmin_rows(score) if block_argmin else jnp.argmin(score, axis=1)
        val = jnp.take_along_axis(score, idx[:, None], axis=1)[:, 0]
        better = val < best[0]  # strict: ties keep the earlier (lower) index, as argmin does
        return (jnp.where(better, val, best[0]),
                jnp.where(better, i * size + idx.astype(jnp.int32), best[1])), None

    (_, best), _ = jax.lax.scan(body, init, (jnp.arange(chunks.shape[0]), chunks))
    return best


@functools.partial(jax.jit, static_argnames=("metric", "chunk_size"))
def library_nearest(queries, stored, *, metric: str, chunk_size: int):
    """`jaxact.ops.distances.nearest`, jitted: (int32 indices `[Q]`, distances `[Q]`)."""
    return distances.nearest(queries, stored, metric, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("metric", "n", "block_argmin"))
def jaxact_nearest(queries, chunks, *, metric: str, n: int, block_argmin: bool = True):
    """Nearest stored vector per query by `distances.pairwise` (the bank's distance), chunk by
    chunk in this benchmark's own scan: int32 `[Q]`. With `block_argmin=False` (the
    `jaxact_argmin` method) each chunk's top-1 is `jnp.argmin`."""
    return _scan_best(queries, chunks, n, lambda q, c, i: distances.pairwise(q, c, metric),
                      largest=False, block_argmin=block_argmin)


@functools.partial(jax.jit, static_argnames=("metric", "n"))
def xla_mm_nearest(queries, chunks, norms, *, metric: str, n: int):
    """The leanest XLA scan: sqeuclidean `|s|^2 - 2 q.s` with `norms` `[c, chunk]` precomputed;
    cosine `q.s` (argmax) of unit vectors (`chunks` already unit rows)."""
    if metric == "cosine":
        q = queries / jnp.linalg.norm(queries, axis=1, keepdims=True)
        return _scan_best(q, chunks, n, lambda q, c, i: q @ c.T, largest=True)
    return _scan_best(queries, chunks, n, lambda q, c, i: norms[i][None, :] - 2.0 * (q @ c.T),
                      largest=False)


def numpy_nearest(queries: np.ndarray, stored: np.ndarray, metric: str, chunk: int,
                  norms: np.ndarray | None = None) -> np.ndarray:
    """The matmul form in numpy, chunk by chunk; for cosine `stored` must be unit rows."""
    if metric == "cosine":
        queries = unit_rows(queries)
    best_val = np.full(queries.shape[0], np.inf, np.float32)
    best_idx = np.zeros(queries.shape[0], np.int64)
    rows = np.arange(queries.shape[0])
    for start in range(0, stored.shape[0], chunk):
        block = stored[start:start + chunk]
        dots = queries @ block.T
        if metric == "cosine":
            score = -dots
        else:
            block_norms = norms[start:start + chunk] if norms is not None else \
                np.einsum("ij,ij->i", block, block)
            score = block_norms[None, :] - 2.0 * dots
        idx = np.argmin(score, axis=1)
        val = score[rows, idx]
        better = val < best_val
        best_val = np.where(better, val, best_val)
        best_idx = np.where(better, idx + start, best_idx)
    return best_idx


def faiss_index(stored: np.ndarray, metric: str):
    """A flat FAISS index of `stored` (cosine: unit rows, inner product)."""
    if metric == "cosine":
        index = faiss.IndexFlatIP(stored.shape[1])
        index.add(np.ascontiguousarray(unit_rows(stored), np.float32))
    else:
        index = faiss.IndexFlatL2(stored.shape[1])
        index.add(np.ascontiguousarray(stored, np.float32))
    return index


def faiss_nearest(index, queries: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        queries = unit_rows(queries)
    _, idx = index.search(np.ascontiguousarray(queries, np.float32), 1)
    return idx[:, 0]


def exact_distance(queries: np.ndarray, stored: np.ndarray, idx: np.ndarray,
                   metric: str) -> np.ndarray:
    """float64 distance of each query to `stored[idx]`."""
    q = queries.astype(np.float64)
    s = stored[idx].astype(np.float64)
    if metric == "cosine":
        return 1.0 - np.sum(q * s, 1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(s, axis=1))
    return np.sum((q - s) ** 2, axis=1)


def agreement(queries, stored, idx, ref_idx, metric: str, rtol: float = 1e-5) -> dict:
    """How `idx` compares with the reference `ref_idx`: fractions of queries with the same index
    (`equal`), another index equally near in float64 (`ties`), a nearer one (`closer`), a
    farther one (`farther`)."""
    idx, ref_idx = np.asarray(idx), np.asarray(ref_idx)
    q = len(idx)
    differ = np.flatnonzero(idx != ref_idx)
    out = {"equal": round(1 - len(differ) / q, 6), "ties": 0.0, "closer": 0.0, "farther": 0.0}
    if len(differ):
        d = exact_distance(queries[differ], stored, idx[differ], metric)
        d_ref = exact_distance(queries[differ], stored, ref_idx[differ], metric)
        tie = np.abs(d - d_ref) <= rtol * np.maximum(np.abs(d_ref), 1e-12)
        out["ties"] = round(float(np.sum(tie)) / q, 6)
        out["closer"] = round(float(np.sum(~tie & (d < d_ref))) / q, 6)
        out["farther"] = round(float(np.sum(~tie & (d > d_ref))) / q, 6)
    return out


def search_methods(stored: np.ndarray, queries: np.ndarray, metric: str, chunk: int,
                   plain_argmin: bool = True) -> dict:
    """{method: zero-argument search returning int indices `[Q]` (blocking)}; the stored
    vectors are laid out for each method here, outside the timing. `plain_argmin` adds
    `jaxact_argmin`: jaxact's distance with `jnp.argmin` over each whole chunk."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: this benchmark compares {METRICS}")
    n = stored.shape[0]
    jq = jnp.asarray(queries)
    js = jnp.asarray(stored)
    methods = {"jaxact": lambda: np.asarray(
        library_nearest(jq, js, metric=metric, chunk_size=chunk)[0])}
    # this benchmark's chunked copy: for jaxact_argmin and the sqeuclidean xla_mm only (a GB at 1M)
    chunks = _chunked(js, chunk)[0] if plain_argmin or metric != "cosine" else None
    if plain_argmin:
        methods["jaxact_argmin"] = lambda: np.asarray(
            jaxact_nearest(jq, chunks, metric=metric, n=n, block_argmin=False))
    if metric == "cosine":
        unit = unit_rows(stored)
        unit_chunks, _ = _chunked(jnp.asarray(unit), chunk)
        methods["xla_mm"] = lambda: np.asarray(
            xla_mm_nearest(jq, unit_chunks, None, metric=metric, n=n))
        methods["numpy"] = lambda: numpy_nearest(queries, unit, metric, chunk)
    else:
        norms = jnp.sum(chunks * chunks, axis=-1)
        np_norms = np.einsum("ij,ij->i", stored, stored)
        methods["xla_mm"] = lambda: np.asarray(
            xla_mm_nearest(jq, chunks, norms, metric=metric, n=n))
        methods["numpy"] = lambda: numpy_nearest(queries, stored, metric, chunk, np_norms)
    if faiss is not None:
        index = faiss_index(stored, metric)
        methods["faiss"] = lambda: faiss_nearest(index, queries, metric)
    return methods


def search_row(n: int, dim: int, num_queries: int, metric: str, chunk: int, repeats: int,
               seed: int = 0, data=None, plain_argmin: bool = True) -> dict:
    """Times every method on one (n, metric) row, interleaved; checks agreement."""
    stored, queries = data if data is not None else search_data(n, dim, num_queries, seed)
    methods = search_methods(stored, queries, metric, chunk, plain_argmin)
    found = {name: fn() for name, fn in methods.items()}  # compiles, warms caches
    seconds = {name: [] for name in methods}
    for r in range(repeats):
        names = list(methods) if r % 2 == 0 else list(reversed(methods))
        for name in names:
            start = time.perf_counter()
            methods[name]()
            seconds[name].append(time.perf_counter() - start)
    ref = "faiss" if "faiss" in found else "numpy"
    qps = {name: round(num_queries / statistics.median(v), 1) for name, v in seconds.items()}
    return {"n": n, "dim": dim, "queries": num_queries, "metric": metric, "chunk": chunk,
            "qps": qps,
            "seconds": {k: [round(x, 4) for x in v] for k, v in seconds.items()},
            "reference": ref,
            "agreement": {name: agreement(queries, stored, idx, found[ref], metric)
                          for name, idx in found.items() if name != ref}}


# ----------------------------------------------------------------------------- k-means


@functools.partial(jax.jit, static_argnames=("k", "iters"))
def jaxact_kmeans(points, rng, *, k: int, iters: int):
    """`jaxact.ops.kmeans.kmeans` on all of `points` (the bank's clustering, jitted)."""
    centroids, _, valid = kmeans.kmeans(points, jnp.ones(points.shape[0], bool), k, iters, rng)
    return centroids, valid


def inertia(points: np.ndarray, centroids: np.ndarray) -> float:
    """Sum over points of the squared distance to the nearest centroid (float64)."""
    p, c = points.astype(np.float64), centroids.astype(np.float64)
    d = (p * p).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * p @ c.T
    return float(np.maximum(d.min(axis=1), 0.0).sum())


def faiss_kmeans(points: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    km = faiss.Kmeans(points.shape[1], k, niter=iters, seed=seed, nredo=1, verbose=False,
                      max_points_per_centroid=points.shape[0])  # no subsampling
    km.train(np.ascontiguousarray(points, np.float32))
    return km.centroids


def kmeans_row(n: int, dim: int, k: int, iters: int, repeats: int) -> dict:
    points = kmeans_data(n, dim)
    jpoints = jnp.asarray(points)
    jax.block_until_ready(jaxact_kmeans(jpoints, jax.random.key(0), k=k, iters=iters))
    methods = {"jaxact": lambda seed: np.asarray(
        jaxact_kmeans(jpoints, jax.random.key(seed), k=k, iters=iters)[0])}
    if faiss is not None:
        methods["faiss"] = lambda seed: faiss_kmeans(points, k, iters, seed)
    seconds = {name: [] for name in methods}
    inertias = {name: [] for name in methods}
    for r in range(repeats):
        for name in (list(methods) if r % 2 == 0 else list(reversed(methods))):
            start = time.perf_counter()
            centroids = methods[name](r + 1)
            seconds[name].append(time.perf_counter() - start)
            inertias[name].append(inertia(points, centroids))
    return {"points": n, "dim": dim, "clusters": k, "iterations": iters,
            "seconds": {name: round(statistics.median(v), 4) for name, v in seconds.items()},
            "inertia": {name: round(statistics.median(v), 1) for name, v in inertias.items()},
            "rounds_seconds": {k2: [round(x, 4) for x in v] for k2, v in seconds.items()},
            "rounds_inertia": {k2: [round(x, 1) for x in v] for k2, v in inertias.items()},
            "seeding": {"jaxact": "k-means++", "faiss": "random points"}}


# ----------------------------------------------------------------------------- report


def row_key(row: dict) -> tuple:
    return (row["n"], row["metric"])


def why_missed(qps: dict) -> str:
    """A reading of a missed search bar from the row's own numbers."""
    faiss_qps = qps["faiss"]
    text = (f"jaxact's search (distances.nearest) reaches {qps['jaxact'] / faiss_qps:.2f}x "
            f"FAISS, XLA's leanest scan (norms or unit vectors precomputed, matmul + min) "
            f"{qps['xla_mm'] / faiss_qps:.2f}x: jaxact's per-call extra passes (centring, "
            f"norms, rounding floor; cosine: normalising the stored chunk) cost "
            f"{max(0.0, 1 - qps['jaxact'] / qps['xla_mm']):.0%} of the lean scan's speed, the "
            f"rest is XLA's f32 matmul and reductions against FAISS's BLAS sgemm with a fused "
            f"top-1")
    if "jaxact_argmin" in qps:
        text += (f"; with jnp.argmin over each chunk instead of the two-level top-1 jaxact "
                 f"reaches {qps['jaxact_argmin'] / faiss_qps:.2f}x")
    return text


def ratios_and_bars(rows: list, km: dict | None) -> tuple[dict, list]:
    ratios, bars = {}, []
    for row in rows:
        if "qps" not in row:
            continue
        qps = row["qps"]
        size = f"{row['n'] // 1000}k" if row["n"] < LARGE else f"{row['n'] // LARGE}m"
        suffix = size + ("" if row["metric"] == "sqeuclidean" else f"_{row['metric']}")
        for other in ("faiss", "numpy"):
            if other in qps:
                ratios[f"jaxact_over_{other}_{suffix}"] = round(qps["jaxact"] / qps[other], 3)
        if "faiss" in qps:
            for variant in ("xla_mm", "jaxact_argmin"):
                if variant in qps:
                    ratios[f"{variant}_over_faiss_{suffix}"] = round(
                        qps[variant] / qps["faiss"], 3)
        if row["n"] == 100_000 and "faiss" in qps:
            ratio = qps["jaxact"] / qps["faiss"]
            bar = {"row": f"{row['n']} x {row['dim']} {row['metric']}", "bar": BAR,
                   "measured": round(ratio, 3), "met": ratio >= BAR,
                   "search": "jaxact.ops.distances.nearest (jitted; pairwise over chunks "
                             "of the bank with a two-level top-1)"}
            if "jaxact_argmin" in qps:
                bar["measured_with_jnp_argmin"] = round(qps["jaxact_argmin"] / qps["faiss"], 3)
            if not bar["met"]:
                bar["short_by"] = f"{100 * (1 - ratio / BAR):.0f}%"
                bar["why"] = why_missed(qps)
            bars.append(bar)
    if km and "faiss" in km["seconds"]:
        ratios["jaxact_over_faiss_kmeans_speed"] = round(
            km["seconds"]["faiss"] / km["seconds"]["jaxact"], 3)
        ratios["jaxact_over_faiss_kmeans_inertia"] = round(
            km["inertia"]["jaxact"] / km["inertia"]["faiss"], 4)
    return ratios, bars


def print_table(out: dict) -> None:
    print(f"\n{out['machine']}; {out['threads']} threads; faiss "
          f"{out.get('faiss_version') or 'absent'}; note: {out['note'] or '-'}; queries/s:")
    methods = ("jaxact", "jaxact_argmin", "xla_mm", "faiss", "numpy")
    print(f"{'N':>9} | {'metric':>11} | " + " | ".join(f"{m:>13}" for m in methods)
          + f" | {'jaxact/faiss':>12} | {'agree':>6}")
    for row in out["search"]:
        if "qps" not in row:
            print(f"{row['n']:>9} | {row['metric']:>11} | skipped: {row['skipped']}")
            continue
        qps = row["qps"]
        ratio = qps["jaxact"] / qps["faiss"] if "faiss" in qps else float("nan")
        agree = row["agreement"].get("jaxact", {}).get("equal", float("nan"))
        print(f"{row['n']:>9} | {row['metric']:>11} | " + " | ".join(
            f"{qps.get(m, float('nan')):>13.0f}" for m in methods)
            + f" | {ratio:>12.2f} | {agree:>6.4f}")
    km = out.get("kmeans")
    if km:
        print(f"\nk-means {km['points']} x {km['dim']}, {km['clusters']} clusters, "
              f"{km['iterations']} iterations: " + "; ".join(
                  f"{m} {km['seconds'][m]:.3f} s inertia {km['inertia'][m]:.4g}"
                  for m in km["seconds"]))
    for bar in out["bars"]:
        verdict = "met" if bar["met"] else f"missed by {bar['short_by']}: {bar['why']}"
        print(f"bar {bar['row']}: {bar['measured']:.2f}x >= {bar['bar']}x: {verdict}")


def run(sizes, dim: int, num_queries: int, metrics, chunk: int, repeats: int,
        repeats_large: int, km_points: int, km_clusters: int, km_iters: int, km_repeats: int,
        min_free_gb: float, redo: bool, note: str, output: str) -> dict:
    threads = cpu_cores()
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
    else:
        print(faiss_missing_message())
    old = {}
    if output and os.path.exists(output):
        with open(output) as f:
            old = json.load(f)
    done = {row_key(r): r for r in old.get("search", []) if "qps" in r}
    rows = []

    def merged():  # the rows so far, plus the old ones not (yet) replaced
        keys = {row_key(r) for r in rows}
        out = rows + [r for r in old.get("search", []) if row_key(r) not in keys]
        return sorted(out, key=lambda r: (r["n"], METRICS.index(r["metric"])
                                          if r["metric"] in METRICS else len(METRICS)))

    for n in sizes:
        todo = [m for m in metrics if redo or (n, m) not in done or
                (faiss is not None and "faiss" not in done[(n, m)]["qps"])]
        rows += [done[(n, m)] for m in metrics if m not in todo]
        if not todo:
            continue
        free = mem_available_gb()
        need = min_free_gb * n / LARGE
        if n >= LARGE and free < need:
            reason = (f"{n} x {dim} float32 is {n * dim * 4 / 1e9:.1f} GB; MemAvailable "
                      f"{free:.1f} GB < {need:.1f} GB needed for the copies of every method")
            # a finished row of an earlier run stays; the others are recorded as skipped
            rows += [done.get((n, m)) or {"n": n, "metric": m, "skipped": reason} for m in todo]
            print(f"skipped N={n}: {reason}")
            continue
        data = search_data(n, dim, num_queries)
        for metric in todo:
            reps = repeats_large if n >= LARGE else repeats
            row = search_row(n, dim, num_queries, metric, chunk, reps, data=data,
                             plain_argmin=n < LARGE)
            row.update(date=now(), note=note)
            rows.append(row)
            print(f"N={n} {metric}: " + ", ".join(f"{k} {v:.0f} q/s"
                                                   for k, v in row["qps"].items()), flush=True)
            if output:  # resumable: every finished row is saved at once
                files.write_json(output, {**old, "search": merged()}, indent=2)
        del data
    rows = merged()  # rows of other sizes and metrics stay in the table
    km = kmeans_row(km_points, dim, km_clusters, km_iters, km_repeats) if km_repeats else \
        old.get("kmeans")
    if km:
        km.setdefault("date", now())
        km.setdefault("note", note)
    ratios, bars = ratios_and_bars(rows, km)
    out = {"date": now(), "machine": machine_description(),
           "note": note or old.get("note", ""), "threads": threads,
           "faiss_version": getattr(faiss, "__version__", None),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
           "search": rows, "kmeans": km, "ratios": ratios, "bars": bars}
    if output:
        files.write_json(output, out, indent=2)
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    for m in _METRICS.value:
        if m not in METRICS:
            raise app.UsageError(f"--ms_metrics: {m!r} not in {METRICS}")
    out = run([int(s) for s in _SIZES.value], _DIM.value, _QUERIES.value, _METRICS.value,
              _CHUNK.value, _REPEATS.value, _REPEATS_LARGE.value, _KM_POINTS.value,
              _KM_CLUSTERS.value, _KM_ITERS.value, _KM_REPEATS.value, _MIN_FREE.value,
              _REDO.value, _NOTE.value, _OUTPUT.value)
    print_table(out)
    print(f"\nwritten: {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
