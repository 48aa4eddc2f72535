"""Several trained JHMDB runs (e.g. seeds) as one classifier per split; prints a table.

Run from the repository root, after `benchmarks.jhmdb` has trained each root:

  python -m benchmarks.jhmdb_ensemble workdirs/jhmdb_s0 workdirs/jhmdb_s1 workdirs/jhmdb_s2
  python -m benchmarks.jhmdb_ensemble --ensemble_part=validation_videos ROOT0 ROOT1 ROOT2

Each positional argument is a `--workdir_root` of `benchmarks.jhmdb`; the runs of split N are
`ROOT/[PART/]splitN` (`--ensemble_part`: `test` reads `ROOT/splitN`, the others the validation
workdirs of that name). The members' memory classifiers vote as one (`--ensemble_combine`):
`frames`, the frames of every member and every test view vote together, as one model's views
do (`classification.combine_views`); `scores`, each member's vote scores over its views
(`memory_logp`) are averaged. The baselines average their log-probabilities either way. Also
printed: each member's own top-1 and the members' mean, on the same clips. Writes
`--ensemble_json` (benchmarks/results/jhmdb_ensemble.json by default).
"""

import json
import os

import numpy as np
from absl import app, flags

from benchmarks import machine
from jaxact.evaluation import classification
from jaxact.train import classifier, loop

_PART = flags.DEFINE_enum("ensemble_part", "test", ["test", "validation", "validation_videos"],
                          "Which workdirs of each root: the test runs or a validation layout.")
_SPLITS = flags.DEFINE_list("ensemble_splits", ["1", "2", "3"], "Official splits to combine.")
_COMBINE = flags.DEFINE_enum("ensemble_combine", "frames", ["frames", "scores"],
                             "How the memory classifiers combine: all frames vote, or averaged "
                             "vote scores.")
_JSON = flags.DEFINE_string("ensemble_json", "benchmarks/results/jhmdb_ensemble.json",
                            "Where the results go.")


def restore(workdir: str):
    """The run's experiment (its saved config) and its final models."""
    exp = classifier.Experiment(loop.read_config(workdir), workdir)
    return exp, exp.restore_final()


def run_outputs(exp, models) -> list[tuple]:
    """`(view, {name: collect output})` for every test view of the run, on its eval split."""
    split = exp.config.eval.split
    return [(view, classification.collect(exp.eval_loader(split, view=view), exp.predict_batch,
                                          models, f"eval {split} {exp.workdir}"))
            for view in exp.views]


def ensemble(members: list, workdirs: list, combine: str = "frames") -> dict:
    """`members`: each run's `run_outputs` and its experiment, as `(exp, outputs)`. Returns name
    -> `combine_views`-like outputs over every member's every view: the memory classifiers'
    frames all vote together (`combine="frames"`) or their per-member vote scores
    `memory_logp` are averaged (`"scores"`); the baselines average log-probabilities. The runs
    must share class names, memory temperature and clips."""
    if combine not in ("frames", "scores"):
        raise ValueError(f"combine={combine!r}: expected 'frames' or 'scores'")
    first_exp, first = members[0]
    for (exp, outputs), workdir in zip(members, workdirs, strict=True):
        if exp.class_names != first_exp.class_names or \
                exp.memory.temperature != first_exp.memory.temperature:
            raise ValueError(f"{workdir}: class names or memory.temperature differ from "
                             f"{workdirs[0]}'s; these runs cannot vote together")
        for (_, out), (_, ref) in zip(outputs, first, strict=False):
            if not np.array_equal(out["memory"]["label"], ref["memory"]["label"]):
                raise ValueError(f"{workdir}: its evaluation clips differ from {workdirs[0]}'s")

    def combined(outputs_of_members):
        views = [view for outputs in outputs_of_members for view, _ in outputs]
        return {name: classification.combine_views(
                    [out[name] for outputs in outputs_of_members for _, out in outputs], views,
                    first_exp.data.flip_permutation, first_exp.memory.temperature)
                for name in first[0][1]}

    everything = combined([outputs for _, outputs in members])
    if combine == "scores":
        logp = np.mean([combined([outputs])["memory"]["memory_logp"] for _, outputs in members],
                       axis=0)
        # The pooled frames' vote counts did not decide here: leave them out.
        memory = {k: v for k, v in everything["memory"].items() if k != "memory_votes"}
        everything["memory"] = {**memory, "memory_logp": logp, "memory_pred": np.argmax(logp, -1)}
    return everything


def top1s(combined: dict) -> dict:
    out = {"memory": classification.top1(combined["memory"]["memory_pred"],
                                         combined["memory"]["label"])}
    if "baseline" in combined:
        out["baseline"] = classification.top1(combined["baseline"]["softmax_pred"],
                                              combined["baseline"]["label"])
    return out


def split_workdir(root: str, part: str, split: int) -> str:
    return os.path.join(root, f"split{split}") if part == "test" else \
        os.path.join(root, part, f"split{split}")


def main(argv):
    roots = argv[1:]
    if len(roots) < 2:
        raise app.UsageError("name two or more benchmarks.jhmdb workdir roots")
    rows = {}
    for split in (int(s) for s in _SPLITS.value):
        workdirs = [split_workdir(r, _PART.value, split) for r in roots]
        members = []
        for w in workdirs:
            exp, models = restore(w)
            members.append((exp, run_outputs(exp, models)))
        singles = [top1s(ensemble([m], [w])) for m, w in zip(members, workdirs, strict=True)]
        rows[split] = {"ensemble": top1s(ensemble(members, workdirs, _COMBINE.value)),
                       "members": singles,
                       "clips": int(len(members[0][1][0][1]["memory"]["label"]))}
    print(f"\nJHMDB, {len(roots)} runs as one ({_PART.value} top-1, memory combined by "
          f"{_COMBINE.value})\n"
          "| split | clips | members' memory top-1 | mean | ensemble memory | members' baseline "
          "mean | ensemble baseline |\n|---|---|---|---|---|---|---|")
    for split, r in rows.items():
        mem = [m["memory"] for m in r["members"]]
        base = [m.get("baseline", float("nan")) for m in r["members"]]
        print(f"| {split} | {r['clips']} | {' / '.join(f'{v:.3f}' for v in mem)} | "
              f"{np.mean(mem):.3f} | {r['ensemble']['memory']:.3f} | {np.mean(base):.3f} | "
              f"{r['ensemble'].get('baseline', float('nan')):.3f} |")
    mean = {k: float(np.mean([r["ensemble"][k] for r in rows.values()]))
            for k in rows[next(iter(rows))]["ensemble"]}
    members_mean = {k: float(np.mean([np.mean([m[k] for m in r["members"]])
                                      for r in rows.values()])) for k in mean}
    print(f"| mean | | | {members_mean['memory']:.3f} | {mean['memory']:.3f} | "
          f"{members_mean.get('baseline', float('nan')):.3f} | "
          f"{mean.get('baseline', float('nan')):.3f} |")
    os.makedirs(os.path.dirname(_JSON.value) or ".", exist_ok=True)
    with open(_JSON.value, "w") as f:
        json.dump({"date": machine.now(), "machine": machine.machine_description(),
                   "part": _PART.value, "combine": _COMBINE.value, "roots": roots,
                   "splits": {str(k): v for k, v in rows.items()},
                   "ensemble_mean": mean, "members_mean": members_mean}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
