"""Action-head ablation of the classroom detector: one row per head setting, all at the same
budget and seeds; prints a table and writes it to benchmarks/results/ablate_detector.json.

Run from the repository root:

  python -m benchmarks.ablate_detector --device_note="2 CPU cores"     # every row, seeds 0 and 1
  python -m benchmarks.ablate_detector --rows=gram,gram_no_enc --device_note=H100
  python -m benchmarks.ablate_detector --train=false                   # the table of finished runs
  python -m benchmarks.ablate_detector --variant=smoke --workdir_root=/tmp/ablate_smoke \
      --output=/tmp/ablate_smoke.json                                  # seconds per run: a check

Rows (`ROWS`): `pooled`, `sum`, `concat`, `gram` (the decoupled head's fusions, encodings on),
`gram_no_enc` (`model.head.encodings=False`) and `gram_xyxy` (`loss.l1_coords='xyxy'`); then
the adaptive layers on `ADAPTIVE_FUSION`: `temporal` (2 ungated temporal layers, the head
gate's reference), `gate_head` (those layers gated), `gate_backbone` (the backbone's temporal
convolutions gated), `relation` (actor relations) and `full` (both gates and relations), and
`gate_head_budget`, `gate_backbone_budget`, `full_budget`: the same gates charged only for the
compute above half (`loss.flops_target=0.5`). Each on
`configs/classroom_detector.py:VARIANT` plus the row's `fusion=` variant and overrides. On 2 CPU
cores a run costs about one default training (~14 min), so the table spans several sittings; on a
lent GPU it takes minutes: `--device_note` records where each run went (also kept per run).

Each (row, seed) trains in-process in `WORKDIR_ROOT/NAME/seed_S` (config.json written there as
launch.py writes it, so `launch.py --workdir=... --mode=eval|predict` work on it later) unless
its results.json exists, which is then read, not retrained; an interrupted run resumes from its
checkpoint. A saved config.json that differs from the config this command would train fails,
naming the fields, so runs of another `--variant` are never mixed into a table. Seeds run in
the outer loop: a sitting finishes seed 0 of every row before seed 1 of any. `bench_meta.json`
beside results.json records the machine, date and `--device_note` of the run. Library logs go to
`WORKDIR_ROOT/ablate_detector.INFO` and each run's to `WORKDIR/ablate_detector.INFO`.

Columns: frame-mAP (mean and spread over the finished seeds), person AP@0.5, per-class AP,
behaviour-map mIoU (None for heads without maps), parameters, forward GFLOPs per clip (XLA cost
analysis, from results.json) and CPU latency per clip: the jitted forward plus detection scoring
on one clip, on the host CPU even where an accelerator is present, median of `--latency_calls`
calls after warm-up, measured once per row on the first finished seed's parameters and kept in
`WORKDIR_ROOT/NAME/latency.json` with the machine it ran on. The spread is the population
standard deviation (ddof=0; half the range for two seeds), None with fewer than two seeds.

The table covers every row of `ROWS` and the seeds of `--seeds`, whatever `--rows` trains (rows
without a finished seed show None values and `seeds: []`), and is rewritten (temp file + rename)
after every finished run, so an interrupted sitting loses nothing. JSON:
`{"date", "machine", "variant", "seeds_asked", "spread", "rows": [{"name", "fusion",
"encodings", "gate", "relation", "temporal_layers", "gate_policy", "l1_coords", "flops_target",
"seeds", "missing_seeds", "frame_map", "frame_map_std", "person_ap50", "person_ap50_std",
"per_class_ap", "map_miou", "map_miou_std", "per_class_map_iou", "params", "gflops_per_clip",
"gated_flops_fraction", "gated_flops_fraction_people", "model_flops_fraction", "groups_used",
"latency_ms", "latency_ms_masked", "latency_ms_compact", "latency", "runs"}, ...]}`;
`runs`: `[{"seed", "machine", "date", "device", "train_seconds", "frame_map"}]`, `latency`: where
and when it was measured. Gated rows: `gated_flops_fraction` is the counted FLOPs of the gated
layers over every query on the test split (`_people`: over the queries scoring >= 0.5),
`model_flops_fraction` that saving against the whole forward's FLOPs; `latency_ms_masked` is
the normal forward (a masked channel still costs time under static shapes) and
`latency_ms_compact` the compact path at the budget (`latency.gate_budget`, a fraction of
each gated layer's channels) that holds every found person's (head) and every clip's (backbone)
kept channels on the test split. Top-level `date` and `machine` are those of the sitting that wrote it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging

from benchmarks.machine import cpu_cores, machine_description, now
from benchmarks.runs import (  # noqa: F401 (run_dir, ConfigMismatch: this module's API too)
    ConfigMismatch,
    check_saved_config,
    read_json,
    read_results,
    run_dir,
)
from configs import classroom_detector
from jaxact.train import detector, get_experiment, loop

_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "workdirs/ablate_detector",
                                    "Runs go to WORKDIR_ROOT/ROW/seed_S.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds of every row.")
_ROWS = flags.DEFINE_list("rows", None, "Rows to train (default: all); the table lists all.")
_VARIANT = flags.DEFINE_string("variant", "", "Base config variant ('' = the default config, "
                               "'smoke' for a quick check, 'tiny'); each row adds its fusion=.")
_TRAIN = flags.DEFINE_boolean("train", True, "Train missing runs and measure missing latencies "
                              "(false: only read finished runs).")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/ablate_detector.json",
                              "Where the table's JSON goes.")
_DEVICE_NOTE = flags.DEFINE_string("device_note", "", "Free text saved with every run trained "
                                   "now, e.g. '2 CPU cores' or 'H100'.")
_LATENCY_CALLS = flags.DEFINE_integer("latency_calls", 10, "Timed calls per latency (median).",
                                      lower_bound=1)


@dataclasses.dataclass(frozen=True)
class Row:
    """One head setting: `configs/classroom_detector.py` variant and dotted-field overrides."""

    name: str
    variant: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# The adaptive layers' rows (part 3) build on the part-2 winner, the default config (the rule:
# best mean frame-mAP over 2 seeds among rows with frame-mAP >= 0.70, person AP50 >= 0.90 and
# <= 20 min of training on 2 idle cores): `classroom_detector.DEFAULT_FUSION` with its default
# box L1. The part-2 rows pin the L1 they were measured with.
ADAPTIVE_FUSION = classroom_detector.DEFAULT_FUSION
_CXCYWH = {"loss.l1_coords": "cxcywh"}
# The gated rows decide from each layer's input (`gate_policy="input"`): only then can the compact
# inference path skip channels, so their latency can be measured, not just their FLOPs counted.
_GATED = {"model.head.gate_policy": "input"}
# With the plain FLOPs loss (weight 1) both gates learned to skip every channel (seed 0: head
# -2.4, backbone -5.1 frame-mAP points); the budget rows charge only the compute above half.
_BUDGET = {"loss.flops_target": 0.5}

ROWS = (
    Row("pooled", "fusion=pooled", _CXCYWH),
    Row("sum", "fusion=sum", _CXCYWH),
    Row("concat", "fusion=concat", _CXCYWH),
    Row("gram", "fusion=gram", _CXCYWH),
    Row("gram_no_enc", "fusion=gram", {"model.head.encodings": False, **_CXCYWH}),
    Row("gram_xyxy", "fusion=gram", {"loss.l1_coords": "xyxy"}),
    # Part 3 on ADAPTIVE_FUSION: the head gate's reference (the same temporal layers, ungated;
    # the backbone gate's is the ADAPTIVE_FUSION row), the gates, the relations, and all of it
    # (the full method).
    Row("temporal", f"fusion={ADAPTIVE_FUSION}", {"model.head.temporal_layers": 2}),
    Row("gate_head", f"fusion={ADAPTIVE_FUSION},gate=head", _GATED),
    Row("gate_backbone", f"fusion={ADAPTIVE_FUSION},gate=backbone"),
    Row("relation", f"fusion={ADAPTIVE_FUSION},relation"),
    Row("full", f"fusion={ADAPTIVE_FUSION},gate=both,relation", _GATED),
    Row("gate_head_budget", f"fusion={ADAPTIVE_FUSION},gate=head", {**_GATED, **_BUDGET}),
    Row("gate_backbone_budget", f"fusion={ADAPTIVE_FUSION},gate=backbone", _BUDGET),
    Row("full_budget", f"fusion={ADAPTIVE_FUSION},gate=both,relation", {**_GATED, **_BUDGET}),
)
ROW_NAMES = tuple(row.name for row in ROWS)
SPREAD = "population std (ddof=0) over the finished seeds; None with fewer than 2"


def get_row(row: str | Row) -> Row:
    if isinstance(row, Row):
        return row
    for r in ROWS:
        if r.name == row:
            return r
    raise ValueError(f"unknown row {row!r}; expected some of {list(ROW_NAMES)}")


# ----------------------------------------------------------------------------- configs


def row_variant(row: Row, base_variant: str = "") -> str:
    """`base_variant` plus the row's own variant, e.g. 'smoke,fusion=gram'."""
    if "fusion" in base_variant:
        raise ValueError(f"--variant={base_variant!r}: the rows set fusion= themselves")
    return ",".join(filter(None, (base_variant.strip(", "), row.variant)))


def make_config(row: str | Row, base_variant: str = "", seed: int = 0):
    """The run's config: `classroom_detector.get_config(base_variant + row variant)`, the row's
    overrides applied (each must name an existing field) and `seed` set."""
    row = get_row(row)
    variant = row_variant(row, base_variant)
    config = classroom_detector.get_config(variant)
    for path, value in row.overrides.items():
        *parents, name = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        if name not in node:
            raise ValueError(f"row {row.name}: the config has no field {path}")
        node[name] = value
    config.seed = seed
    config.config_name = f"classroom_detector:{variant}" + "".join(
        f" --config.{k}={v}" for k, v in row.overrides.items())
    return config


def setting_columns(config) -> dict:
    """The head setting of a row, read from its config (None where the head has no such field)."""
    head = config.model.head
    decoupled = head.get("name", "pooled") != "pooled"
    return {"fusion": head.get("fusion") if decoupled else "pooled",
            "encodings": head.get("encodings") if decoupled else None,
            "gate": config.model.get("gate", "off"), "relation": bool(head.get("relation", False)),
            "temporal_layers": head.get("temporal_layers", 0),
            "gate_policy": head.get("gate_policy") if config.model.get("gate", "off") != "off"
            else None,
            "l1_coords": config.loss.l1_coords,
            "flops_target": config.loss.get("flops_target", 0.0)}


# ----------------------------------------------------------------------------- reading runs


def read_run(workdir: str) -> dict | None:
    """`{"results", "meta"}` of a finished run (results.json present), else None."""
    results = read_results(workdir)
    if results is None:
        return None
    return {"results": results, "meta": read_json(os.path.join(workdir, "bench_meta.json")) or {}}


def _mean_std(values: Iterable) -> tuple[float | None, float | None]:
    """Mean and population std of the values that are not None (None, None when none are; std
    None with fewer than two)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else None


def _mean_per_class(dicts: list) -> dict | None:
    dicts = [d for d in dicts if d is not None]
    if not dicts:
        return None
    names = list(dict.fromkeys(k for d in dicts for k in d))
    return {k: _mean_std(d.get(k) for d in dicts)[0] for k in names}


def aggregate_row(row: Row, columns: dict, runs: dict, seeds: Sequence[int],
                  latency: dict | None) -> dict:
    """The table row of `row` from its finished `runs` (seed -> `read_run`) among `seeds`."""
    finished = [s for s in seeds if s in runs]
    results = [runs[s]["results"] for s in finished]
    frame_map, frame_map_std = _mean_std(r.get("frame_map") for r in results)
    person, person_std = _mean_std(r.get("person_ap50") for r in results)
    miou, miou_std = _mean_std(r.get("map_miou") for r in results)
    gated, _ = _mean_std(r.get("gated_flops_fraction") for r in results)
    gated_people, _ = _mean_std(r.get("gated_flops_fraction_people") for r in results)
    model_fraction, _ = _mean_std(r.get("model_flops_fraction") for r in results)
    groups, _ = _mean_std(r.get("groups_used") for r in results)
    first = results[0] if results else {}
    gate_on = columns.get("gate", "off") != "off"
    return {
        "name": row.name, **columns,
        "seeds": finished, "missing_seeds": [s for s in seeds if s not in runs],
        "frame_map": frame_map, "frame_map_std": frame_map_std,
        "person_ap50": person, "person_ap50_std": person_std,
        "per_class_ap": _mean_per_class([r.get("per_class_ap") for r in results]),
        "map_miou": miou, "map_miou_std": miou_std,
        "per_class_map_iou": _mean_per_class([r.get("per_class_map_iou") for r in results]),
        "params": first.get("num_params"), "gflops_per_clip": first.get("gflops_per_clip"),
        "gated_flops_fraction": gated, "gated_flops_fraction_people": gated_people,
        "model_flops_fraction": model_fraction, "groups_used": groups,
        "latency_ms": latency["latency_ms"] if latency else None,
        "latency_ms_masked": latency["latency_ms"] if latency and gate_on else None,
        "latency_ms_compact": latency.get("latency_ms_compact") if latency else None,
        "latency": {k: v for k, v in latency.items() if k != "latency_ms"} if latency else None,
        "runs": [{"seed": s, "machine": runs[s]["meta"].get("machine"),
                  "date": runs[s]["meta"].get("date"), "device": runs[s]["meta"].get("device"),
                  "train_seconds": runs[s]["results"].get("train_seconds"),
                  "frame_map": runs[s]["results"].get("frame_map")} for s in finished],
    }


def build_table(workdir_root: str, rows: Sequence[str | Row] = ROW_NAMES,
                seeds: Sequence[int] = (0, 1), variant: str = "") -> dict:
    """The table of the finished runs under `workdir_root` (reads files only: trains and
    measures nothing). A run counts when its results.json exists; its config.json, when there
    is one, must be the config of `variant` (else ValueError)."""
    seeds = [int(s) for s in seeds]
    table_rows = []
    for row in map(get_row, rows):
        runs = {}
        for seed in seeds:
            workdir = run_dir(workdir_root, row.name, seed)
            run = read_run(workdir)
            if run is not None:
                check_saved_config(workdir, make_config(row, variant, seed))
                runs[seed] = run
        latency = read_json(os.path.join(workdir_root, row.name, "latency.json"))
        columns = setting_columns(make_config(row, variant, seeds[0] if seeds else 0))
        table_rows.append(aggregate_row(row, columns, runs, seeds, latency))
    return {"date": now(), "machine": machine_description(), "variant": variant,
            "seeds_asked": seeds, "spread": SPREAD, "rows": table_rows}


# ----------------------------------------------------------------------------- printing


def _num(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(table: dict) -> str:
    rows = table["rows"]
    classes = list(dict.fromkeys(k for r in rows for k in (r["per_class_ap"] or {})))
    head = (f"{'row':<20} | {'seeds':>5} | {'frame-mAP':>13} | {'AP50 pers':>9} | "
            + " | ".join(f"{c[:8]:>8}" for c in classes)
            + f"{' | ' if classes else ''}{'map mIoU':>8} | {'params':>9} | {'GFLOPs':>7} | "
            f"{'CPU ms':>7} | ran on")
    lines = [f"classroom detector heads, variant={table['variant'] or 'default'}, seeds "
             f"{','.join(map(str, table['seeds_asked']))}; mean ± population std; "
             f"table written {table['date']} on {table['machine']}", head, "-" * len(head)]
    for r in rows:
        fm = _num(r["frame_map"])
        if r["frame_map_std"] is not None:
            fm += f" ± {r['frame_map_std']:.3f}"
        per_class = r["per_class_ap"] or {}
        where = sorted({run["device"] or run["machine"] or "?" for run in r["runs"]})
        lines.append(
            f"{r['name']:<20} | {','.join(map(str, r['seeds'])) or '-':>5} | {fm:>13} | "
            f"{_num(r['person_ap50']):>9} | "
            + " | ".join(f"{_num(per_class.get(c)):>8}" for c in classes)
            + f"{' | ' if classes else ''}{_num(r['map_miou']):>8} | "
            f"{_num(r['params'], ',d'):>9} | {_num(r['gflops_per_clip'], '.3f'):>7} | "
            f"{_num(r['latency_ms'], '.1f'):>7} | {'; '.join(where) or '-'}")
    adaptive = [r for r in rows if r.get("gate", "off") != "off" or r.get("relation")
                or r.get("temporal_layers")]
    if adaptive:
        head = (f"{'row':<20} | {'gate':>8} | {'budget':>6} | {'relation':>8} | {'gated FLOPs':>11} | "
                f"{'people':>6} | {'model FLOPs':>11} | {'masked ms':>9} | {'compact ms':>10} | "
                f"{'groups':>6}")
        lines += ["", "adaptive layers: counted FLOPs as fractions of the ungated ones (test "
                  "split); latency on the host CPU", head, "-" * len(head)]
        for r in adaptive:
            lines.append(
                f"{r['name']:<20} | {r['gate']:>8} | {_num(r.get('flops_target'), '.2f'):>6} | "
                f"{str(r['relation']):>8} | "
                f"{_num(r['gated_flops_fraction']):>11} | "
                f"{_num(r['gated_flops_fraction_people']):>6} | "
                f"{_num(r['model_flops_fraction']):>11} | {_num(r['latency_ms_masked'], '.1f'):>9} | "
                f"{_num(r['latency_ms_compact'], '.1f'):>10} | {_num(r['groups_used'], '.2f'):>6}")
    return "\n".join(lines)


def write_table(table: dict, output: str) -> None:
    loop.write_json(output, table)  # temp file + rename


# ----------------------------------------------------------------------------- running


def train_run(row: Row, seed: int, workdir_root: str, variant: str, device_note: str):
    """Trains (or resumes) one run in its workdir; returns its Experiment."""
    config = make_config(row, variant, seed)
    workdir = run_dir(workdir_root, row.name, seed)
    check_saved_config(workdir, config)
    exp = get_experiment(config.experiment)(config, workdir)  # checks, then creates the workdir
    logging.get_absl_handler().use_absl_log_file("ablate_detector", workdir)
    loop.write_json(os.path.join(workdir, "config.json"),
                    json.loads(config.to_json_best_effort()))  # as launch.py writes it
    print(f"\n== {row.name} seed {seed}: {config.config_name} -> {workdir}", flush=True)
    results = exp.train_and_evaluate()
    loop.write_json(os.path.join(workdir, "bench_meta.json"),
                    {"machine": machine_description(), "date": now(), "device": device_note,
                     "row": row.name, "seed": seed, "config_name": config.config_name})
    print(exp.summary(results), flush=True)
    return exp


def measure_latency(model, params, input_shape: tuple[int, ...], calls: int = 10,
                    warmup: int = 2, gate_budget: float | None = None) -> float:
    """Median ms of the jitted forward + detection scoring on one clip `input_shape`, on the host
    CPU (parameters and clip moved there); `gate_budget`: on the gate's compact path."""
    cpu = jax.devices("cpu")[0]
    params = jax.device_put(params, cpu)
    video = jax.device_put(np.random.default_rng(0).uniform(size=input_shape)
                           .astype(np.float32), cpu)
    predict = jax.jit(lambda p, v: detector.detections_from_outputs(
        model.apply({"params": p}, v, gate_budget=gate_budget)))
    for _ in range(warmup):
        jax.block_until_ready(predict(params, video))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(predict(params, video))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def row_latency(row: Row, seed: int, workdir_root: str, calls: int, device_note: str,
                exp=None) -> dict:
    """Measures and saves the row's CPU latency on the final parameters of run `seed` (`exp`:
    its Experiment when at hand, else built from the run's config.json)."""
    workdir = run_dir(workdir_root, row.name, seed)
    if exp is None:
        config = loop.read_config(workdir)
        exp = get_experiment(config.experiment)(config, workdir)
    params = exp.restore_final()
    ms = measure_latency(exp.model, params, exp.input_shape(1), calls)
    cores = cpu_cores()
    compact = {}
    results = (read_run(workdir) or {}).get("results", {})
    head = exp.config.model.head
    needs = []  # per gated layer, the kept fraction the budget must hold on the test split
    if results.get("gate_people_kept_max") and head.get("gate_policy") == "input":
        needs += [k / head.enc_dim for k in results["gate_people_kept_max"]]
    needs += results.get("gate_clip_kept_max") or []
    head_gated = exp.config.model.gate in ("head", "both")
    if needs and (not head_gated or head.get("gate_policy") == "input"):
        budget = max(needs)
        compact = {"latency_ms_compact": round(measure_latency(
            exp.model, params, exp.input_shape(1), calls, gate_budget=budget), 3),
            "gate_budget": budget}
    latency = {"latency_ms": round(ms, 3), **compact, "device": f"cpu ({cores} cores)",
               "machine": machine_description(), "date": now(), "device_note": device_note,
               "seed": seed, "calls": calls, "batch": 1}
    loop.write_json(os.path.join(workdir_root, row.name, "latency.json"), latency)
    print(f"{row.name}: CPU latency {ms:.1f} ms per clip (median of {calls})"
          + (f", compact path {compact['latency_ms_compact']:.1f} ms computing "
             f"{compact['gate_budget']:.0%} of the gated channels" if compact else ""),
          flush=True)
    return latency


def run_benchmark(workdir_root: str, seeds: Sequence[int], train_rows: Sequence[str],
                  variant: str, train: bool, output: str, device_note: str = "",
                  latency_calls: int = 10) -> dict:
    """Trains the missing runs of `train_rows` (seed-major) and their missing latencies when
    `train`; rewrites `output` after every finished run; returns the table of all `ROWS`."""
    rows = [get_row(name) for name in train_rows]
    for row in rows:
        make_config(row, variant)  # a bad --variant or row fails before anything trains

    def update():
        table = build_table(workdir_root, ROW_NAMES, seeds, variant)
        write_table(table, output)
        return table

    table = update()
    if train:
        try:
            for seed in seeds:
                for row in rows:
                    exp, changed = None, False
                    if read_run(run_dir(workdir_root, row.name, seed)) is None:
                        exp, changed = train_run(row, seed, workdir_root, variant, device_note), True
                    if not os.path.exists(os.path.join(workdir_root, row.name, "latency.json")):
                        row_latency(row, seed, workdir_root, latency_calls, device_note, exp)
                        changed = True
                    if changed:
                        table = update()
                        if (seed, row) != (seeds[-1], rows[-1]):  # the last one is shown below
                            print("\n" + format_table(table), flush=True)
        except loop.Preempted as e:  # checkpoint saved: the same command resumes
            print(f"{e}; rerun the same command to resume", flush=True)
            table = update()
    print("\n" + format_table(table))
    print(f"\nwritten: {output}")
    return table


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_ROWS.value or ()) - set(ROW_NAMES))
    if unknown:
        raise app.UsageError(f"--rows: unknown {unknown}; expected some of {list(ROW_NAMES)}")
    if _TRAIN.value:  # library chatter to a log file, as launch.py does; each run logs to its own
        os.makedirs(_WORKDIR_ROOT.value, exist_ok=True)
        logging.get_absl_handler().use_absl_log_file("ablate_detector", _WORKDIR_ROOT.value)
    else:
        logging.set_verbosity(logging.WARNING)
    try:
        run_benchmark(_WORKDIR_ROOT.value, [int(s) for s in _SEEDS.value],
                      _ROWS.value or list(ROW_NAMES), _VARIANT.value, _TRAIN.value,
                      _OUTPUT.value, _DEVICE_NOTE.value, _LATENCY_CALLS.value)
    except ConfigMismatch as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
