"""Memory classifier vs softmax baseline on the three JHMDB joint splits; prints a table.

Run from the repository root:

  python -m benchmarks.jhmdb                        # configs/jhmdb_memory.py on splits 1-3
  python -m benchmarks.jhmdb --splits=1 --config.train.num_steps=500

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

# Published top-1 on these files (../shared/data/README.md).
PUBLISHED = (("1-NN on resampled, standardised joints", "0.42", "-"),
             ("DD-Net (paper)", "0.772", "1.82 M"),
             ("DD-Net (its README, after fixes)", "0.82-0.83", "1.82 M"))


def run_split(split: int) -> dict:
    config = _CONFIG.value.copy_and_resolve_references()
    with config.unlocked():
        config.data.train_path, config.data.test_path = jhmdb_memory.split_paths(split)
        config.config_name = f"jhmdb_memory:split={split}"
    workdir = os.path.join(_WORKDIR_ROOT.value, f"split{split}")
    start = time.time()
    results = classifier.Experiment(config, workdir).train_and_evaluate()
    results["wall_seconds"] = time.time() - start
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    return results


def mean_std(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main(argv):
    del argv
    splits = [int(s) for s in _SPLITS.value]
    runs = {split: run_split(split) for split in splits}

    print("\nJHMDB (14 classes, 2-D joints): test top-1 per split")
    print(f"{'split':>6} | {'memory':>7} | {'baseline':>8} | {'params':>8} | "
          f"{'memory train s':>14} | {'both methods s':>14}")
    for split, r in runs.items():
        print(f"{split:>6} | {r['top1']:>7.3f} | {r['baseline_top1']:>8.3f} | "
              f"{r['num_params']:>8,} | {r['train_seconds']:>14.0f} | "
              f"{r['total_train_seconds']:>14.0f}")
    mem = [r["top1"] for r in runs.values()]
    base = [r["baseline_top1"] for r in runs.values()]
    print(f"{'mean':>6} | memory {mean_std(mem)} | baseline {mean_std(base)}")

    print("\nEarly prediction (mean top-1 over splits; first p of each clip observed)")
    ratios = list(next(iter(runs.values()))["early_prediction"]["memory"])
    print(f"{'method':>9} | " + " | ".join(f"{r:>5}" for r in ratios))
    for method in ("memory", "baseline"):
        values = [np.mean([r["early_prediction"][method][p] for r in runs.values()])
                  for p in ratios]
        print(f"{method:>9} | " + " | ".join(f"{v:>5.3f}" for v in values))

    print("\nPublished on the same files")
    for name, top1, params in PUBLISHED:
        print(f"  {name:<40} top-1 {top1:<10} params {params}")
    summary = {"splits": splits, "memory_top1": mem, "baseline_top1": base,
               "memory_mean": float(np.mean(mem)), "memory_std": float(np.std(mem)),
               "baseline_mean": float(np.mean(base)), "baseline_std": float(np.std(base)),
               "train_seconds": [r["train_seconds"] for r in runs.values()],
               "total_train_seconds": [r["total_train_seconds"] for r in runs.values()]}
    os.makedirs(_WORKDIR_ROOT.value, exist_ok=True)
    with open(os.path.join(_WORKDIR_ROOT.value, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    app.run(main)
