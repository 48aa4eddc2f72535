"""Where early prediction falls short of the Bayes limit: top-1 per group of clips that show the
same cues (`maneuvers.observed_cues`: indicator, braking, drift, manoeuvre begun) when the first
fraction of each clip is observed.

  python -m benchmarks.early_cue_groups --groups_workdir=workdirs/maneuvers_early/prefix/seed_0

The run (a `configs/maneuvers_early.py` workdir) is restored and evaluated on `--groups_split`
(validation by default: a diagnosis should not read test) at the centre view. Each clip's
latent draws are recomputed from its seed (`builders.example_seed`, `maneuvers.clip_latents`);
records are matched to seeds by label, onset and length, and by their boxes where those tie.
The Bayes column scores the limit's decision rule (`maneuvers.bayes_decisions`) on the same
clips. Prints a table per ratio and writes `--groups_json`
(benchmarks/results/early_cue_groups.json): `{"date", "machine", "workdir", "split",
"ratios": {ratio: {"clips", "bayes", "memory", "baseline", "groups": [{"cues", "clips",
"bayes", "memory", "baseline"}]}}}`.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from benchmarks.machine import machine_description, now
from jaxact import files
from jaxact.data import builders, maneuvers, pipeline
from jaxact.evaluation.classification import PREDICTION_KEYS
from jaxact.train import classifier, loop

_WORKDIR = flags.DEFINE_string("groups_workdir", None, "A maneuvers_early run's workdir.")
_SPLIT = flags.DEFINE_string("groups_split", "validation", "Split to evaluate on.")
_RATIOS = flags.DEFINE_list("groups_ratios", ["0.2", "0.3", "0.4"], "Observed fractions.")
_JSON = flags.DEFINE_string("groups_json", "benchmarks/results/early_cue_groups.json",
                            "Where the table's JSON goes.")


def record_latents(source, split: str, render_config) -> dict:
    """`_draw_latents`-style dict of [N] arrays, plus `label`, for the records of `source`, in
    its order."""
    by_key = {}
    for index in range(len(source)):
        seed = builders.example_seed(split, index)
        label = index % len(maneuvers.MANEUVERS)
        lat = maneuvers.clip_latents(seed, label, render_config)
        by_key.setdefault((label, lat["onset"], lat["length"]), []).append((seed, lat))
    rows = []
    for j in range(len(source)):
        record = source[j]
        label = int(record["label"])
        found = by_key.get((label, int(record["onset"]), len(record["boxes"])), [])
        if len(found) > 1:  # the same timing: the boxes tell them apart
            found = [(s, lat) for s, lat in found if np.array_equal(
                maneuvers.render_clip(s, label, render_config)["boxes"], record["boxes"])]
        if len(found) != 1:
            raise ValueError(f"{split} record {j}: {len(found)} seeds of the split render it; "
                             "is the dataset rendered with this config?")
        rows.append({**found[0][1], "label": label})
    return {k: np.array([row[k] for row in rows]) for k in rows[0]}


def cue_name(summary_row) -> str:
    indicator, brake, drift, label = summary_row
    parts = [name for name, on in (("indicator", indicator), ("braking", brake),
                                   ("drift", drift)) if on]
    return " + ".join(parts or ["no cue"]) + (", manoeuvre begun" if label >= 0 else "")


def group_table(summary, correct: dict) -> list[dict]:
    """One row per distinct cue name, largest first: clips and each column's top-1."""
    names = np.array([cue_name(row) for row in summary])
    rows = []
    for name in sorted(set(names), key=lambda n: (-np.sum(names == n), n)):
        keep = names == name
        rows.append({"cues": name, "clips": int(keep.sum()),
                     **{k: float(v[keep].mean()) for k, v in correct.items()}})
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--groups_workdir is required")
    config = loop.read_config(_WORKDIR.value, "--groups_workdir")
    split = _SPLIT.value
    config.eval.split = split
    config.data.extra_train_clips = 0  # evaluation only: no training clips to render
    dataset = f"{config.data.name}/{config.data.get('builder_config', '')}"
    render_config = (builders.Maneuvers.preset(config.data.builder_config).render
                     if config.data.name == "maneuvers" else None)
    if render_config is None or not render_config.cues:
        raise app.UsageError(f"--groups_workdir: {dataset} has no cues to group by")
    exp = classifier.Experiment(config, _WORKDIR.value)
    models = exp.restore_final()
    evaluator = exp.classification_evaluator()
    lat = record_latents(exp.data.source(split), split, render_config)
    table = {"date": now(), "machine": machine_description(), "workdir": _WORKDIR.value,
             "split": split, "ratios": {}}
    for ratio in (float(r) for r in _RATIOS.value):
        out = evaluator.outputs(models, ratio, views=(pipeline.CENTRE_VIEW,))
        labels = next(iter(out.values()))["label"]
        if not np.array_equal(labels, lat["label"]):
            raise ValueError(f"{split}: the evaluation order is not the records' order")
        observed = maneuvers.observed_frames(ratio, lat["length"])
        summary = maneuvers.observed_cues(lat, labels, observed)
        decisions = maneuvers.bayes_decisions(render_config, ratio)
        correct = {"bayes": decisions[maneuvers.summary_index(summary)] == labels}
        for name, key in PREDICTION_KEYS.items():
            if name in out:
                correct[name] = out[name][key] == labels
        table["ratios"][f"{ratio:.1f}"] = {"clips": len(labels),
                                           **{k: float(v.mean()) for k, v in correct.items()},
                                           "groups": group_table(summary, correct)}
    files.write_json(_JSON.value, table, indent=2)
    columns = [k for k in ("bayes", *PREDICTION_KEYS) if k in correct]
    for ratio, r in table["ratios"].items():
        print(f"\n{split}, first {float(ratio):.0%} observed ({r['clips']} clips): "
              + ", ".join(f"{k} {r[k]:.3f}" for k in columns))
        print("| cues seen | clips | " + " | ".join(columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for g in r["groups"]:
            print(f"| {g['cues']} | {g['clips']} | "
                  + " | ".join(f"{g[k]:.2f}" for k in columns) + " |")
    print(f"\nwritten: {_JSON.value}")


if __name__ == "__main__":
    app.run(main)
