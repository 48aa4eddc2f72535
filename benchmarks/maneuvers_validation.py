"""Top-1 of trained maneuvers workdirs on an enlarged validation split; prints a table.

  python benchmarks/maneuvers_validation.py workdirs/seed0 workdirs/seed1 workdirs/seed2
  python benchmarks/maneuvers_validation.py --num_validation=2400 workdirs/seed*

The 300-clip validation split is too small to rank memory setups that differ by a few clips, and
choosing on the test split would bias the comparison. This renders a larger validation split from
the same generator (same seed stream, a superset of the standard one, disjoint from train and test)
and evaluates each workdir's final memory state, and its baseline when it has one. Without the
[tf] extra a split must stay under TFDS's 1 GB in-memory shuffle, about 1,200 clips.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from jaxact.data import builders  # noqa: E402
from jaxact.train import classifier  # noqa: E402

_NUM_VALIDATION = flags.DEFINE_integer("num_validation", 1200, "Clips in the validation split.")


def evaluate_workdir(workdir: str, num_validation: int) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.data.name != "maneuvers":
        raise ValueError(f"{workdir}/config.json: data.name={config.data.name!r}, expected "
                         "'maneuvers'")
    exp = classifier.Experiment(config, workdir)
    # Tiny train and test splits: only validation is read, and rendering them would cost minutes.
    exp.data.builder = builders.load(
        "maneuvers", config.data.builder_config, config.data.data_dir,
        {"num_train": 6, "num_test": 6, "num_validation": num_validation})
    row = {"workdir": workdir, "seed": config.seed}
    state = classifier.restore_final(exp, "memory", with_memory=True)
    out = classifier.predict_split(exp, state.params, state.references, "validation")
    row["clips"] = len(out["label"])
    row["memory"] = float(np.mean(out["memory_pred"] == out["label"]))
    if os.path.isdir(os.path.join(workdir, "checkpoints", "baseline")):
        state = classifier.restore_final(exp, "baseline", with_memory=False)
        out = classifier.predict_split(exp, state.params, None, "validation")
        row["baseline"] = float(np.mean(np.argmax(out["softmax_logp"], -1) == out["label"]))
    return row


def main(argv):
    workdirs = argv[1:]
    if not workdirs:
        raise app.UsageError("name one or more trained workdirs")
    rows = [evaluate_workdir(w, _NUM_VALIDATION.value) for w in workdirs]
    print("\n| workdir | seed | clips | memory top-1 | baseline top-1 |\n|---|---|---|---|---|")
    for r in rows:
        base = f"{r['baseline']:.4f}" if "baseline" in r else "-"
        print(f"| {r['workdir']} | {r['seed']} | {r['clips']} | {r['memory']:.4f} | {base} |")
    mean = np.mean([r["memory"] for r in rows])
    bases = [r["baseline"] for r in rows if "baseline" in r]
    print(f"| **mean** | | | {mean:.4f} | {np.mean(bases):.4f} |" if bases
          else f"| **mean** | | | {mean:.4f} | - |")


if __name__ == "__main__":
    app.run(main)
