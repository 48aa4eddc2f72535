"""The memory classifier's method options against its default, paired on the same seeds and clips.

Run from the repository root:

  python -m benchmarks.memory_parts                     # every row, seeds 0-2 (~5 min a run)
  python -m benchmarks.memory_parts --parts_rows=default,threshold --parts_seeds=0
  python -m benchmarks.memory_parts --parts_train=false  # the table of finished runs
  python -m benchmarks.memory_parts --parts_variant=smoke --parts_root=/tmp/parts \
      --parts_output=/tmp/parts.json --parts_num_clips=24    # seconds: a check of the script

Rows (`ROWS`), each `configs/maneuvers_memory.py` (plus `--parts_variant`) with one change:
`default`; `misclassified` (`memory.loss_on`: the network adjusts only on videos the memory
misclassifies, the method's compare-then-adjust); `threshold` (`memory.clustering`: leader
clustering at `memory.cluster_threshold`, the number of clusters set by the data); `aux_data`
(`memory.aux_data='validation'`: the auxiliary network pre-trains on, and fills the bank from,
the 300 clips of the validation split instead of the 1,200 training clips). Every run trains the
memory classifier only (`baseline.enabled=False`) and without the validation curve
(`train.eval_every=0`, so the `aux_data` row may read the validation split).

Scoring: each run's final memory state classifies `--parts_num_clips` clips of the validation
seed stream starting at clip `--parts_first_clip` (rendered in memory, as
`benchmarks.maneuvers_validation --split=holdout` does; the default range lies past the 300
validation clips the `aux_data` row trains on and past the 1,200-clip split the default config
was chosen on), with the config's test views. Per-clip correctness is cached in each workdir
(`parts_eval.npz`, keyed by the clip range), so a sitting resumes where the last one stopped.

Columns: top-1 mean and population std over the seeds; the paired difference to `default` on the
same seeds (mean over seeds, +- std of the per-seed differences); the clips only the row or only
`default` gets right, pooled over seeds, and the exact McNemar p of those counts; the realised
clusters per class of the final references (mean over classes and seeds); the test-split top-1
of results.json for reference. The table is rewritten after every finished run.

JSON (`--parts_output`, default benchmarks/results/memory_parts.json): `{"date", "machine",
"variant", "clips": [first, count], "rows": [{"row", "overrides", "seeds", "top1", "top1_std",
"diff_vs_default", "diff_std", "only_row_right", "only_default_right", "mcnemar_p",
"clusters_per_class", "test_top1"}]}`.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import app, flags

from benchmarks import maneuvers_validation
from benchmarks.machine import machine_description, now
from benchmarks.runs import check_saved_config, read_results, run_dir
from configs import maneuvers_memory
from jaxact import files
from jaxact.evaluation import classification
from jaxact.train import get_experiment

ROWS = {
    "default": {},
    "misclassified": {"memory.loss_on": "misclassified"},
    "threshold": {"memory.clustering": "threshold"},
    "aux_data": {"memory.aux_data": "validation"},
}
# What every row changes from the config: no baseline (not compared here), no validation curve.
COMMON = {"baseline.enabled": False, "train.eval_every": 0}

_ROWS = flags.DEFINE_list("parts_rows", list(ROWS), "Rows to train (the table lists every row).")
_SEEDS = flags.DEFINE_list("parts_seeds", ["0", "1", "2"], "Seeds of every row.")
_VARIANT = flags.DEFINE_string("parts_variant", "", "Config variant (e.g. tiny, smoke).")
_ROOT = flags.DEFINE_string("parts_root", "workdirs/memory_parts", "One workdir per run under it.")
_TRAIN = flags.DEFINE_bool("parts_train", True, "Train missing runs (false: table only).")
_FIRST_CLIP = flags.DEFINE_integer("parts_first_clip", 1200,
                                   "First validation-stream clip scored.", lower_bound=0)
_NUM_CLIPS = flags.DEFINE_integer("parts_num_clips", 1200, "Validation-stream clips scored.",
                                  lower_bound=1)
_OUTPUT = flags.DEFINE_string("parts_output", "benchmarks/results/memory_parts.json",
                              "Where the table's JSON goes.")


def make_config(row: str, variant: str, seed: int):
    config = maneuvers_memory.get_config(variant)
    config.config_name = f"maneuvers_memory{':' + variant if variant else ''} [{row}]"
    for dotted, value in {**COMMON, **ROWS[row]}.items():
        section, field = dotted.split(".")
        config[section][field] = value
    config.seed = seed
    return config


def train_run(row: str, variant: str, seed: int, root: str) -> None:
    config, workdir = make_config(row, variant, seed), run_dir(root, row, seed)
    check_saved_config(workdir, config, "use another --parts_root or the --parts_variant it "
                                        "was trained with")
    exp = get_experiment(config.experiment)(config, workdir)
    files.write_json(os.path.join(workdir, "config.json"),
                     json.loads(config.to_json_best_effort()), indent=2)  # as launch.py does
    print(f"\n== {row} seed {seed}: {config.config_name} -> {workdir}", flush=True)
    exp.train_and_evaluate()


def score_runs(workdirs: list[str], first: int, count: int, chunk: int) -> None:
    """Writes `parts_eval.npz` (per-clip correctness `[count]`, realised clusters per class) in
    each workdir that lacks one for this clip range; all of them share each rendered chunk."""
    todo = []
    for w in workdirs:
        path = os.path.join(w, "parts_eval.npz")
        if os.path.exists(path):
            with np.load(path) as f:
                if list(f["clips"]) == [first, count]:
                    continue
        todo.append(w)
    if not todo:
        return
    runs = [maneuvers_validation.restore_workdir(w, "holdout", 0) for w in todo]
    rows = maneuvers_validation.evaluate_holdout(runs, first, count, chunk)
    for w, row, (_, models) in zip(todo, rows, runs, strict=True):
        valid = np.asarray(jax.device_get(models["memory"][1].valid))  # [classes, clusters]
        with open(os.path.join(w, "parts_eval.npz"), "wb") as f:  # small: no partial-file risk
            np.savez(f, clips=np.array([first, count]), correct=row["memory"],
                     clusters_per_class=valid.sum(axis=-1))


def build_table(root: str, seeds: list[int], variant: str, first: int, count: int) -> dict:
    """The JSON table of every row's finished and scored seeds."""
    scored = {}
    for row in ROWS:
        for s in seeds:
            path = os.path.join(run_dir(root, row, s), "parts_eval.npz")
            results = read_results(run_dir(root, row, s))
            if results is None or not os.path.exists(path):
                continue
            with np.load(path) as f:
                if list(f["clips"]) != [first, count]:
                    continue
                scored[row, s] = (f["correct"].astype(bool), float(f["clusters_per_class"].mean()),
                                  results["top1"])
    rows = []
    for row, overrides in ROWS.items():
        found = [s for s in seeds if (row, s) in scored]
        entry = {"row": row, "overrides": overrides, "seeds": found, "top1": None,
                 "top1_std": None, "diff_vs_default": None, "diff_std": None,
                 "only_row_right": None, "only_default_right": None, "mcnemar_p": None,
                 "clusters_per_class": None, "test_top1": None}
        if found:
            acc = [scored[row, s][0].mean() for s in found]
            entry.update(top1=float(np.mean(acc)), top1_std=float(np.std(acc)),
                         clusters_per_class=float(np.mean([scored[row, s][1] for s in found])),
                         test_top1=float(np.mean([scored[row, s][2] for s in found])))
        paired = [s for s in found if ("default", s) in scored]
        if row != "default" and paired:
            diffs = [scored[row, s][0].mean() - scored["default", s][0].mean() for s in paired]
            test = classification.paired_comparison(
                np.concatenate([scored[row, s][0] for s in paired]),
                np.concatenate([scored["default", s][0] for s in paired]))
            entry.update(diff_vs_default=float(np.mean(diffs)), diff_std=float(np.std(diffs)),
                         only_row_right=test["only_a_right"],
                         only_default_right=test["only_b_right"], mcnemar_p=test["mcnemar_p"])
        rows.append(entry)
    return {"date": now(), "machine": machine_description(), "variant": variant,
            "clips": [first, count], "rows": rows}


def format_table(table: dict) -> str:
    first, count = table["clips"]
    lines = [f"memory classifier options, top-1 on validation-stream clips {first}-"
             f"{first + count - 1}; {table['date']}",
             "| row | seeds | top-1 | vs default (paired) | only row / only default right "
             "| McNemar p | clusters per class | test top-1 |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    for r in table["rows"]:
        top1 = "-" if r["top1"] is None else f"{r['top1']:.4f} +- {r['top1_std']:.4f}"
        diff = "-" if r["diff_vs_default"] is None else \
            f"{r['diff_vs_default']:+.4f} +- {r['diff_std']:.4f}"
        counts = "-" if r["only_row_right"] is None else \
            f"{r['only_row_right']} / {r['only_default_right']}"
        lines.append(f"| {r['row']} | {','.join(map(str, r['seeds'])) or '-'} | {top1} | {diff} "
                     f"| {counts} | {fmt(r['mcnemar_p'], '.3f')} "
                     f"| {fmt(r['clusters_per_class'], '.2f')} | {fmt(r['test_top1'], '.4f')} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_ROWS.value) - set(ROWS))
    if unknown:
        raise app.UsageError(f"--parts_rows: unknown {unknown}; expected some of {list(ROWS)}")
    seeds = [int(s) for s in _SEEDS.value]
    root, variant = _ROOT.value, _VARIANT.value
    first, count = _FIRST_CLIP.value, _NUM_CLIPS.value

    def update() -> dict:
        finished = [run_dir(root, row, s) for row in ROWS for s in seeds
                    if read_results(run_dir(root, row, s)) is not None]
        score_runs(finished, first, count, maneuvers_validation.CHUNK.value)
        table = build_table(root, seeds, variant, first, count)
        files.write_json(_OUTPUT.value, table, indent=2)
        return table

    table = update()
    if _TRAIN.value:
        for seed in seeds:  # seed-major: a sitting finishes seed 0 of every row first
            for row in _ROWS.value:
                if read_results(run_dir(root, row, seed)) is None:
                    train_run(row, variant, seed, root)
                    table = update()
    print("\n" + format_table(table))
    print(f"\nwritten: {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
