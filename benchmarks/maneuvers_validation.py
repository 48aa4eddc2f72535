"""Top-1 of trained maneuvers workdirs on an enlarged validation split; prints a table.

Run from the repository root:

  python -m benchmarks.maneuvers_validation workdirs/seed0 workdirs/seed1 workdirs/seed2
  python -m benchmarks.maneuvers_validation --num_validation=2400 workdirs/seed*
  python -m benchmarks.maneuvers_validation --split=test workdirs/seed*   # the standard test split
  python -m benchmarks.maneuvers_validation --temporal_views=1 --flip_view=false workdirs/seed*
  python -m benchmarks.maneuvers_validation --split=holdout --holdout_clips=6000 workdirs/seed*

The 300-clip validation split is too small to rank memory setups that differ by a few clips, and
choosing on the test split would bias the comparison. This renders a larger validation split from
the same generator (same seed stream, a superset of the standard one, disjoint from train and test)
and evaluates each workdir's final memory state, and its baseline when it has one, with the test
views of the workdir's config (`eval.temporal_views`, `eval.flip_view`) unless flags override
them. Without the [tf] extra a split must stay under TFDS's 1 GB in-memory shuffle, about 1,200
clips.

`--split=holdout` is for a final check of a setup already chosen: clips of the validation seed
stream past the first `--num_validation` ones, so never seen by any choice made on the enlarged
split. They are rendered in memory, `--chunk` clips at a time, and not written through TFDS, so
there is no size limit; every workdir is evaluated on each chunk before the next is rendered.

Workdirs with a baseline also get a paired comparison: the clips only the memory classifier gets
right, those only the baseline gets right, and the exact McNemar p-value of the pooled counts
(two-sided binomial test on the discordant clips, `classification.paired_comparison`).
"""

import dataclasses
import os

import numpy as np
from absl import app, flags

from jaxact.data import builders
from jaxact.evaluation import classification
from jaxact.train import classifier, loop

_NUM_VALIDATION = flags.DEFINE_integer("num_validation", 1200, "Clips in the validation split.",
                                       lower_bound=1)
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test", "holdout"],
                           "'validation': the enlarged split; 'test': the standard test split; "
                           "'holdout': validation-stream clips past the enlarged split.")
_HOLDOUT_CLIPS = flags.DEFINE_integer("holdout_clips", 6000, "Clips in the holdout split.",
                                      lower_bound=1)
# Public: benchmarks.memory_readouts renders its clips with the same flag.
CHUNK = flags.DEFINE_integer("chunk", 1200, "Holdout clips rendered and held in memory at once.",
                             lower_bound=1)
_TEMPORAL_VIEWS = flags.DEFINE_integer("temporal_views", None,
                                       "Overrides eval.temporal_views of every workdir's config.")
_FLIP_VIEW = flags.DEFINE_boolean("flip_view", None,
                                  "Overrides eval.flip_view of every workdir's config.")


def restore_workdir(workdir: str, split: str, num_validation: int):
    """The workdir's experiment (its config, with the views of the flags) and its final models:
    name -> (params, references or None), the baseline's when the workdir has one."""
    config = loop.read_config(workdir)
    for field, flag in (("temporal_views", _TEMPORAL_VIEWS), ("flip_view", _FLIP_VIEW)):
        if flag.value is not None:
            config.eval[field] = flag.value
    if config.data.name != "maneuvers":
        raise ValueError(f"{workdir}/config.json: data.name={config.data.name!r}, expected "
                         "'maneuvers'")
    config.baseline.enabled = os.path.isdir(os.path.join(workdir, "checkpoints", "baseline"))
    exp = classifier.Experiment(config, workdir)
    if split == "validation":
        # Tiny train and test splits: only validation is read, and rendering them costs minutes.
        exp.data.builder = builders.load(
            "maneuvers", config.data.builder_config, config.data.data_dir,
            {"num_train": 6, "num_test": 6, "num_validation": num_validation})
    return exp, exp.restore_final()


def correct_clips(exp, models, split: str) -> dict:
    """Per-clip correctness `[N]` bool of each model on the split."""
    evaluator = dataclasses.replace(exp.classification_evaluator(), split=split)
    out = evaluator.outputs(models)
    row = {"memory": out["memory"]["memory_pred"] == out["memory"]["label"]}
    if "baseline" in out:
        row["baseline"] = out["baseline"]["softmax_pred"] == out["baseline"]["label"]
    return row


class _Rendered:
    """The workdir's data, except that the 'holdout' split is `records`, a list of rendered clips."""

    def __init__(self, data):
        self._data, self.records = data, []

    def source(self, split: str):
        return self.records if split == "holdout" else self._data.source(split)

    def __getattr__(self, name):
        return getattr(self._data, name)


def evaluate_holdout(runs: list, first_clip: int, num_clips: int, chunk: int,
                     evaluate=correct_clips) -> list:
    """`evaluate(exp, models, 'holdout')` (per-clip arrays) of every run on validation-stream clips
    `[first_clip, first_clip + num_clips)`, one rendered chunk at a time, concatenated."""
    builder_configs = {exp.config.data.builder_config for exp, _ in runs}
    if len(builder_configs) > 1:  # one rendered chunk feeds every workdir
        raise ValueError(f"the workdirs use different data {sorted(builder_configs)}")
    renderer = runs[0][0].data.builder
    for exp, _ in runs:
        exp.data = _Rendered(exp.data)
    parts = [[] for _ in runs]
    for start in range(first_clip, first_clip + num_clips, chunk):
        indices = range(start, min(start + chunk, first_clip + num_clips))
        records = [record for _, record in renderer.render_examples("validation", indices)]
        for (exp, models), part in zip(runs, parts, strict=True):
            exp.data.records = records
            part.append(evaluate(exp, models, "holdout"))
        print(f"validation-stream clips {indices.start}-{indices.stop - 1} evaluated", flush=True)
    return [{k: np.concatenate([p[k] for p in part]) for k in part[0]} for part in parts]


def main(argv):
    workdirs = argv[1:]
    if not workdirs:
        raise app.UsageError("name one or more trained workdirs")
    split = _SPLIT.value
    runs = [restore_workdir(w, split, _NUM_VALIDATION.value) for w in workdirs]
    if split == "holdout":
        rows = evaluate_holdout(runs, _NUM_VALIDATION.value, _HOLDOUT_CLIPS.value, CHUNK.value)
    else:
        rows = [correct_clips(exp, models, split) for exp, models in runs]
    for row, w, (exp, _) in zip(rows, workdirs, runs, strict=True):
        row.update(workdir=w, seed=exp.config.seed, views=len(exp.views))
    print(f"\n{split} split\n"
          "| workdir | seed | views | clips | memory top-1 | baseline top-1 | only memory right "
          "| only baseline right |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = ["-", "-", "-"]
        if "baseline" in r:
            paired = classification.paired_comparison(r["memory"], r["baseline"])
            cells = [f"{r['baseline'].mean():.4f}", str(paired["only_a_right"]),
                     str(paired["only_b_right"])]
        print(f"| {r['workdir']} | {r['seed']} | {r['views']} | {len(r['memory'])} "
              f"| {r['memory'].mean():.4f} | " + " | ".join(cells) + " |")
    mean = np.mean([r["memory"].mean() for r in rows])
    paired_rows = [r for r in rows if "baseline" in r]
    if not paired_rows:
        print(f"| **mean** | | | | {mean:.4f} | - | | |")
        return
    pooled = classification.paired_comparison(
        np.concatenate([r["memory"] for r in paired_rows]),
        np.concatenate([r["baseline"] for r in paired_rows]))
    print(f"| **mean / total** | | | | {mean:.4f} "
          f"| {np.mean([r['baseline'].mean() for r in paired_rows]):.4f} "
          f"| {pooled['only_a_right']} | {pooled['only_b_right']} |")
    print(f"\nMcNemar exact test, pooled over workdirs: {pooled['only_a_right']} vs "
          f"{pooled['only_b_right']} discordant clips, two-sided p = {pooled['mcnemar_p']:.3f}")


if __name__ == "__main__":
    app.run(main)
