"""Early prediction on the cue data: three training modes x two methods against the Bayes limit.

  python -m benchmarks.maneuvers_early               # modes full, prefix, first30; seeds 0-2
  python -m benchmarks.maneuvers_early --early_modes=first30 --early_seeds=0
  python -m benchmarks.maneuvers_early --early_train=false     # the table of finished runs

Each (mode, seed) trains `configs/maneuvers_early.py:train=MODE` (plus `--early_variant`, e.g.
`tiny`) in `EARLY_ROOT/MODE/seed_S` (config.json written as launch.py writes it), unless its
results.json is there, which is then read: an interrupted sitting resumes (a run in progress
resumes from its checkpoint); a workdir whose config.json is another setting's (an older
config, another variant) stops the benchmark before anything is read. One run gives both
methods (the memory classifier and the softmax baseline forked from the same pre-training). The
table is rewritten after every finished run.

JSON (`--early_output`, default benchmarks/results/maneuvers_early.json): `{"date", "machine",
"variant", "dataset" (the runs' `NAME/CONFIG`), "bayes_limit": {ratio: acc}, "runs":
[{"train_mode", "method", "seeds", "top1": {ratio: mean over seeds}, "top1_std": {ratio:
population std}, "full_clip_top1"}]}`;
ratios are the eval sweep's ("0.1" ... "1.0"), top-1 on the test split, centre view.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from benchmarks.machine import machine_description, now
from benchmarks.runs import check_saved_config, read_results, run_dir
from configs import maneuvers_early
from jaxact import files
from jaxact.train import get_experiment

_MODES = flags.DEFINE_list("early_modes", list(maneuvers_early.TRAIN_MODES), "Training modes to run.")
_EARLY_SEEDS = flags.DEFINE_list("early_seeds", ["0", "1", "2"], "Seeds of every mode.")
_EARLY_VARIANT = flags.DEFINE_string("early_variant", "", "Extra config variant (e.g. tiny).")
_EARLY_ROOT = flags.DEFINE_string("early_root", "workdirs/maneuvers_early",
                                  "One workdir per run under this directory.")
_EARLY_TRAIN = flags.DEFINE_bool("early_train", True, "Train missing runs (false: table only).")
_EARLY_OUTPUT = flags.DEFINE_string("early_output", "benchmarks/results/maneuvers_early.json",
                                    "Where the table's JSON goes.")

METHODS = ("memory", "baseline")


def make_config(mode: str, variant: str, seed: int):
    config = maneuvers_early.get_config(",".join(filter(None, (f"train={mode}", variant))))
    config.seed = seed
    return config


def check_runs(root: str, seeds: Sequence[int], variant: str) -> None:
    """Fails (`runs.ConfigMismatch`) where a run of the table was trained with other settings."""
    for seed in seeds:
        for mode in maneuvers_early.TRAIN_MODES:
            check_saved_config(run_dir(root, mode, seed), make_config(mode, variant, seed),
                               "use another --early_root or the --early_variant it was "
                               "trained with")


def train_run(mode: str, variant: str, seed: int, root: str) -> dict:
    config = make_config(mode, variant, seed)
    workdir = run_dir(root, mode, seed)
    exp = get_experiment(config.experiment)(config, workdir)
    files.write_json(os.path.join(workdir, "config.json"),
                     json.loads(config.to_json_best_effort()), indent=2)  # as launch.py writes it
    print(f"\n== {mode} seed {seed}: {config.config_name} -> {workdir}", flush=True)
    return exp.train_and_evaluate()


def build_table(root: str, modes: Sequence[str], seeds: Sequence[int], variant: str) -> dict:
    """The JSON table of the finished runs of `modes` x `seeds`."""
    rows, limit, dataset = [], None, None
    for mode in modes:
        found = {s: r for s in seeds if (r := read_results(run_dir(root, mode, s))) is not None}
        for r in found.values():
            limit = limit or r["early_prediction"].get("bayes_limit")
            dataset = dataset or r.get("dataset")
        for method in METHODS:
            curves = [r["early_prediction"][method] for r in found.values()
                      if r["early_prediction"].get(method)]
            ratios = sorted(curves[0], key=float) if curves else []
            rows.append({
                "train_mode": mode, "method": method, "seeds": sorted(found),
                "top1": {p: float(np.mean([c[p] for c in curves])) for p in ratios},
                "top1_std": {p: float(np.std([c[p] for c in curves])) for p in ratios},
                "full_clip_top1": float(np.mean([r["top1" if method == "memory" else
                                                   "baseline_top1"] for r in found.values()]))
                if found else None})
    return {"date": now(), "machine": machine_description(), "variant": variant,
            "dataset": dataset, "bayes_limit": limit, "runs": rows}


def format_table(table: dict) -> str:
    limit = table["bayes_limit"] or {}
    ratios = sorted(limit or {p for r in table["runs"] for p in r["top1"]}, key=float)
    head = f"{'train mode':<11} | {'method':<8} | {'seeds':<5} | " + " | ".join(
        f"{p:>5}" for p in ratios) + " | whole clip (all views)"
    lines = [f"early prediction on {table.get('dataset') or 'maneuvers'}, test top-1 (centre "
             f"view), mean over seeds; {table['date']}", head, "-" * len(head)]
    if limit:
        lines.append(f"{'Bayes limit':<11} | {'':<8} | {'':<5} | "
                     + " | ".join(f"{limit[p]:>5.3f}" for p in ratios) + " |")
    for r in table["runs"]:
        cells = " | ".join(f"{r['top1'][p]:>5.3f}" if p in r["top1"] else f"{'-':>5}"
                           for p in ratios)
        full = "-" if r["full_clip_top1"] is None else f"{r['full_clip_top1']:.3f}"
        lines.append(f"{r['train_mode']:<11} | {r['method']:<8} | "
                     f"{','.join(map(str, r['seeds'])) or '-':<5} | {cells} | {full}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_MODES.value) - set(maneuvers_early.TRAIN_MODES))
    if unknown:
        raise app.UsageError(f"--early_modes: unknown {unknown}; expected some of "
                             f"{list(maneuvers_early.TRAIN_MODES)}")
    seeds = [int(s) for s in _EARLY_SEEDS.value]
    root, variant = _EARLY_ROOT.value, _EARLY_VARIANT.value

    def update() -> dict:
        table = build_table(root, list(maneuvers_early.TRAIN_MODES), seeds, variant)
        files.write_json(_EARLY_OUTPUT.value, table, indent=2)
        return table

    check_runs(root, seeds, variant)
    table = update()
    if _EARLY_TRAIN.value:
        for seed in seeds:  # seed-major: a sitting finishes seed 0 of every mode first
            for mode in _MODES.value:
                if read_results(run_dir(root, mode, seed)) is None:
                    train_run(mode, variant, seed, root)
                    table = update()
    print("\n" + format_table(table))
    print(f"\nwritten: {_EARLY_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
