"""Memory classifier vs softmax baseline on the three JHMDB joint splits; prints a table.

Run from the repository root:

  python -m benchmarks.jhmdb                        # configs/jhmdb_memory.py on splits 1-3
  python -m benchmarks.jhmdb --splits=1 --config.train.num_steps=500
  python -m benchmarks.jhmdb --jhmdb_validation     # on each train file's validation part
  python -m benchmarks.jhmdb --jhmdb_validation --jhmdb_validation_by=videos   # other videos

`--jhmdb_validation` is for choosing settings without looking at test: every split holds out
`data.validation_fraction` (0.2 unless --config sets another) of its train file, class-stratified,
trains on the rest and reports top-1 on that held-out part (`eval.split='validation'`); its
workdirs are `--workdir_root/validation/splitN`. Those clips come from the videos (people,
scenes) the rest was cut from, while test's come from others; `--jhmdb_validation_by=videos`
holds out instead the clips of split N's train file that are in split N % 3 + 1's test file
(`data.validation_path`): the official splits (HMDB51's protocol) never put clips of one source
video on both sides, so none of these clips' videos is among those of the 302-326 clips left to
train on (107-132 validation clips a split). Its workdirs are
`--workdir_root/validation_videos/splitN`.

Each split trains in its own workdir (`--workdir_root/splitN`), so a finished split is reused
(restored, not retrained) when the benchmark is run again; its config is named
`jhmdb_memory:split=N`, as `--config=configs/jhmdb_memory.py:split=N` would name it. Needs
../shared/data/jhmdb_joints.
"""

import json
import os
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from configs import jhmdb_memory
from jaxact.train import classifier

_CONFIG = config_flags.DEFINE_config_file("config", "configs/jhmdb_memory.py", "Base config.",
                                          lock_config=True)
_SPLITS = flags.DEFINE_list("splits", ["1", "2", "3"], "Official splits to run.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "workdirs/jhmdb_benchmark",
                                    "One workdir per split under this directory.")
_VALIDATION = flags.DEFINE_bool(
    "jhmdb_validation", False,
    "Train on part of each train file and report top-1 on the held-out rest (data."
    "validation_fraction, 0.2 unless --config sets it; eval.split='validation'), in "
    "workdirs under WORKDIR_ROOT/validation. For choosing settings; test is not evaluated.")
_VALIDATION_BY = flags.DEFINE_enum(
    "jhmdb_validation_by", "fraction", ["fraction", "videos"],
    "With --jhmdb_validation: 'fraction', a random part of each train file (the training "
    "videos); 'videos', the train file's clips in the next split's test file (other source "
    "videos; workdirs under WORKDIR_ROOT/validation_videos).")

VALIDATION_FRACTION = 0.2  # --jhmdb_validation's default part of each train file

# Published top-1 on these files (../shared/data/README.md).
PUBLISHED = (("1-NN on resampled, standardised joints", "0.42", "-"),
             ("DD-Net (paper)", "0.772", "1.82 M"),
             ("DD-Net (its README, after fixes)", "0.82-0.83", "1.82 M"))


def run_root(workdir_root: str, validation: bool, by: str = "fraction") -> str:
    """Where the split workdirs and summary.json go: `workdir_root`, or its `validation/`
    (`validation_videos/` when the part is other videos' clips)."""
    if not validation:
        return workdir_root
    return os.path.join(workdir_root, "validation" if by == "fraction" else "validation_videos")


def partner_split(split: int) -> int:
    """The split whose test file gives split `split` its other-videos validation part."""
    return split % 3 + 1


def make_config(base, split: int, validation: bool, by: str = "fraction"):
    """The config of one split: `base` (a copy) with the split's files; with `validation`, a
    validation part of the train file that is evaluated instead of test: by 'fraction'
    (`data.validation_fraction`, VALIDATION_FRACTION unless `base` sets one) or by 'videos'
    (`data.validation_path`: the partner split's test file)."""
    config = base.copy_and_resolve_references()
    with config.unlocked():
        config.data.train_path, config.data.test_path = jhmdb_memory.split_paths(split)
        config.config_name = f"jhmdb_memory:split={split}"
        if validation:
            if by == "videos":
                config.data.validation_fraction = 0.0
                config.data.validation_path = jhmdb_memory.split_paths(partner_split(split))[1]
            elif not config.data.validation_fraction:
                config.data.validation_fraction = VALIDATION_FRACTION
            config.eval.split = "validation"
    return config


def part_name(config) -> str:
    """What a run of `config` reports top-1 on, for the table's title."""
    if config.eval.split != "validation":
        return "test"
    if config.data.validation_path:
        return (f"validation part (clips also in {os.path.basename(config.data.validation_path)}"
                ": other videos, not trained on)")
    return (f"validation part ({config.data.validation_fraction:g} of each train file, not "
            "trained on)")


def run_split(split: int) -> dict:
    config = make_config(_CONFIG.value, split, _VALIDATION.value, _VALIDATION_BY.value)
    workdir = os.path.join(run_root(_WORKDIR_ROOT.value, _VALIDATION.value, _VALIDATION_BY.value),
                           f"split{split}")
    start = time.time()
    results = classifier.Experiment(config, workdir).train_and_evaluate()
    results["wall_seconds"] = time.time() - start
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    return results


def mean_std(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def format_tables(runs: dict, part: str = "test") -> str:
    """The printed tables of `runs` (split -> results.json), which report top-1 on `part`
    (`part_name`)."""
    lines = [f"\nJHMDB (14 classes, 2-D joints): {part} top-1 per split",
             f"{'split':>6} | {'memory':>7} | {'baseline':>8} | {'params':>8} | "
             f"{'memory train s':>14} | {'both methods s':>14}"]
    for split, r in runs.items():
        lines.append(f"{split:>6} | {r['top1']:>7.3f} | {r['baseline_top1']:>8.3f} | "
                     f"{r['num_params']:>8,} | {r['train_seconds']:>14.0f} | "
                     f"{r['total_train_seconds']:>14.0f}")
    mem = [r["top1"] for r in runs.values()]
    base = [r["baseline_top1"] for r in runs.values()]
    lines.append(f"{'mean':>6} | memory {mean_std(mem)} | baseline {mean_std(base)}")

    lines.append("\nEarly prediction (mean top-1 over splits; first p of each clip observed)")
    ratios = list(next(iter(runs.values()))["early_prediction"]["memory"])
    lines.append(f"{'method':>9} | " + " | ".join(f"{r:>5}" for r in ratios))
    for method in ("memory", "baseline"):
        values = [np.mean([r["early_prediction"][method][p] for r in runs.values()])
                  for p in ratios]
        lines.append(f"{method:>9} | " + " | ".join(f"{v:>5.3f}" for v in values))

    lines.append("\nPublished on the same files" + (
        " (test top-1: not comparable to the validation part)" if part != "test" else ""))
    for name, top1, params in PUBLISHED:
        lines.append(f"  {name:<40} top-1 {top1:<10} params {params}")
    return "\n".join(lines)


def main(argv):
    del argv
    splits = [int(s) for s in _SPLITS.value]
    runs = {split: run_split(split) for split in splits}
    validation, by = _VALIDATION.value, _VALIDATION_BY.value
    print(format_tables(runs, part_name(make_config(_CONFIG.value, splits[0], validation, by))))
    mem = [r["top1"] for r in runs.values()]
    base = [r["baseline_top1"] for r in runs.values()]
    summary = {"splits": splits, "eval_split": "validation" if validation else "test",
               "validation_by": by if validation else None,
               "memory_top1": mem, "baseline_top1": base,
               "memory_mean": float(np.mean(mem)), "memory_std": float(np.std(mem)),
               "baseline_mean": float(np.mean(base)), "baseline_std": float(np.std(base)),
               "train_seconds": [r["train_seconds"] for r in runs.values()],
               "total_train_seconds": [r["total_train_seconds"] for r in runs.values()]}
    root = run_root(_WORKDIR_ROOT.value, validation, by)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    app.run(main)
