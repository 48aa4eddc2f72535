"""Per-behaviour thresholds of the whole-lesson analysis, chosen on labelled validation lessons.

  python -m benchmarks.analysis_calibration --calibration_runs=RUN_A,RUN_B \
      --lesson_seeds=200,201,202,203 --lesson_seconds=60

A detector's behaviour scores are not equally confident for every behaviour (a brief turn to a
neighbour scores lower than a long raised hand), so one pair of hysteresis thresholds misses the
weaker behaviours. For each run and lesson seed S, the lesson is written to RUN/lessons/seed_S
(as `benchmarks.lesson_analysis` does; kept when there) and the run's detector goes over it
once; its keyframe detections are cached in keyframes.json beside it, so a second sitting only
re-scores. `--ensemble_with=RUN2` calibrates RUN fused with RUN2 (`analyze.ensemble_with`;
cached in RUN/lessons_ensemble). The people are tracked with the run's settings (nothing here
changes tracking).

Then, per behaviour independently, every setting of `GRID` (smoothing window, `on`, `off` as a
fraction of `on`, `min_duration`) scores the intervals of every run and lesson against the ground
truth (`lesson_analysis.behaviour_metrics`: interval F1 at temporal IoU >= 0.5, count MAE).
Rule, fixed before any number was seen: the setting with the highest interval F1 pooled over
all runs and lessons (TP / FP / FN summed) wins; ties go to the lower pooled count MAE, then
to the run's own settings, then to the first in grid order. Use validation lessons only (the
default seeds; lesson_analysis reports the test lessons 100-102).

With few lessons the winner may fit them rather than the detector: `--calibration_folds=K`
(default 2) also cuts the lesson seeds into K groups and scores each group with the thresholds
calibrated on the others, against the run's own (`cross_validate`), to show whether
calibrating carries over.

Writes `--calibration_json`: `{"date", "machine", "runs", "ensemble_with", "lesson_seeds",
"seconds", "grid", "rule", "per_behaviour_settings": {name: {"smooth_seconds", "on", "off",
"min_duration"}}, "validation": {name: {"run_settings": metrics, "chosen": metrics}}, "cross_validation":
{"folds", "per_behaviour": {name: {"run_settings", "chosen"}}, "all_behaviours"}}` with metrics
`{"interval_f1", "count_mae", "tp", "fp", "fn", "abs_error", "num_seconds"}`.
Paste `per_behaviour_settings` into a config's `analyze.per_behaviour`, or pass the file to
`benchmarks.lesson_analysis --calibration`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Mapping, Sequence

import numpy as np
from absl import app, flags, logging

from benchmarks import lesson_analysis as la
from benchmarks.machine import machine_description, now
from benchmarks.runs import read_json
from jaxact.analysis import report

_RUNS = flags.DEFINE_list("calibration_runs", None,
                          "Workdirs of finished detector runs (pooled).")
# --lesson_seeds and --lesson_seconds are lesson_analysis' flags; the seeds default to these.
VALIDATION_SEEDS = (200, 201, 202, 203)
_FOLDS = flags.DEFINE_integer(
    "calibration_folds", 2, "Cross-validation folds over the lesson seeds, to see whether "
    "calibrated thresholds carry to other lessons (0: off).")
_OUTPUT = flags.DEFINE_string("calibration_json", "benchmarks/results/analysis_calibration.json",
                              "Where the JSON goes.")

# `off` is a fraction of `on`, so low thresholds keep a hysteresis band above 0.
GRID = {"smooth_seconds": (0.0, 0.5, 1.0, 1.5),
        "on": (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
        "off_over_on": (0.5, 2 / 3, 0.8), "min_duration": (0.5, 1.0)}
RULE = ("per behaviour: max interval F1 pooled over runs x lessons; ties: lower pooled count "
        "MAE, then the run's own settings, then grid order")


def grid_settings() -> list[dict]:
    """Every per-behaviour setting of `GRID`, in grid order."""
    return [{"smooth_seconds": s, "on": on, "off": round(on * r, 4), "min_duration": d}
            for s, on, r, d in itertools.product(*GRID.values())]


# ----------------------------------------------------------------------------- detections


def _to_json(keyframes: Sequence[Mapping]) -> list[dict]:
    return [{"frame": int(k["frame"]), "time": float(k["time"]),
             **{f: np.asarray(k[f]).tolist() for f in ("boxes", "scores", "behaviour_scores")}}
            for k in keyframes]


def _from_json(keyframes: Sequence[Mapping]) -> list[dict]:
    return [{"frame": k["frame"], "time": k["time"],
             **{f: np.asarray(k[f], np.float32) for f in ("boxes", "scores", "behaviour_scores")}}
            for k in keyframes]


def lesson_keyframes(analyzer_factory, workdir: str, seed: int, seconds: float,
                     lesson_dir: str, ensemble_with: str | None = None
                     ) -> tuple[list[dict], dict]:
    """(keyframe detections, ground_truth.json) of lesson `seed` by the run's detector; the
    detections come from lesson_dir/keyframes.json when it holds this run, lesson and the
    run's current `analyze.stride` (the keyframes it detects)."""
    from jaxact.train import loop

    config = la.run_config(workdir, ensemble_with)
    cache = os.path.join(lesson_dir, "keyframes.json")
    done = read_json(cache)
    video, gt = la.ensure_lesson(seed, seconds, lesson_dir)
    key = {"workdir": workdir, "seed": seed, "seconds": seconds,
           "stride": int(config.analyze.stride)}
    if config.analyze.ensemble_with:  # older caches of single runs stay valid
        key["ensemble_with"] = config.analyze.ensemble_with
    if done and all(done.get(k) == v for k, v in key.items()):
        return _from_json(done["keyframes"]), gt
    runner = dataclasses.replace(analyzer_factory().runner, video=False, map_size=None)
    keyframes = runner.run(video, None)["keyframes"]
    loop.write_json(cache, {**key, "keyframes": _to_json(keyframes)})
    return keyframes, gt


# ----------------------------------------------------------------------------- scoring


@dataclasses.dataclass
class Lesson:
    """What scoring a setting on one (run, lesson) needs; only the intervals change."""

    seed: int
    truth: dict
    keyframes: list
    tracks: list
    assignment: dict
    class_names: tuple
    settings: report.AnalysisSettings  # the run's


def prepare(keyframes: Sequence[Mapping], gt: Mapping, class_names: Sequence[str],
            settings: report.AnalysisSettings) -> Lesson:
    truth = la.parse_ground_truth(gt)
    tracks = report.build_tracks(keyframes, settings)
    rows = la.keyframe_rows(truth, [k["time"] for k in keyframes])
    _, assignment = la.track_students(truth, tracks, rows)
    return Lesson(int(gt["seed"]), truth, list(keyframes), tracks, assignment,
                  tuple(class_names), settings)


def score(lessons: Sequence[Lesson], per_behaviour: Mapping | None) -> dict:
    """{behaviour: `lesson_analysis.pool_behaviour` metrics} pooled over `lessons`, each
    analysed with `per_behaviour` (name -> settings, as `AnalysisSettings.per_behaviour`, for
    every behaviour; None: the run's settings)."""
    rows = []
    for lesson in lessons:
        settings = lesson.settings
        if per_behaviour is not None:
            settings = dataclasses.replace(settings, per_behaviour=dict(per_behaviour))
        analysis = report.analyze(lesson.keyframes, lesson.class_names,
                                  lesson.truth["duration"], settings, lesson.tracks)
        rows.append(la.behaviour_metrics(lesson.truth, analysis, lesson.assignment))
    return {name: la.pool_behaviour([r[name] for r in rows]) for name in lessons[0].class_names}


def choose(candidates: Sequence[dict], scores: Sequence[Mapping], own: dict) -> int:
    """Index of the winner among `candidates` (settings) with `scores` (metrics of one
    behaviour each), by `RULE`; `own`: the run's settings of that behaviour."""
    def key(i):
        f1 = scores[i]["interval_f1"]
        mae = scores[i]["count_mae"]
        return (-(f1 if f1 is not None else -1.0), mae if mae is not None else np.inf,
                candidates[i] != own, i)
    return min(range(len(candidates)), key=key)


def calibrate(lessons: Sequence[Lesson]) -> tuple[dict, dict]:
    """(per_behaviour_settings, validation metrics) by `RULE` over `GRID`."""
    names = lessons[0].class_names
    own = {n: lessons[0].settings.for_behaviour(n) for n in names}
    candidates = grid_settings()
    per_setting = [score(lessons, {n: c for n in names}) for c in candidates]
    baseline = score(lessons, None)
    chosen, validation = {}, {}
    for name in names:
        i = choose(candidates, [s[name] for s in per_setting], own[name])
        chosen[name] = candidates[i]
        validation[name] = {"run_settings": baseline[name], "chosen": per_setting[i][name]}
    return chosen, validation


def cross_validate(lessons: Sequence[Lesson], folds: int) -> dict:
    """Does calibrating generalise to other lessons? The lesson seeds are cut into `folds`
    contiguous groups; each group is scored with the thresholds `calibrate` picks on the
    others and with the run's own. Returns {"folds": [[seed, ...]], "per_behaviour": {name:
    {"run_settings", "chosen"}}, "all_behaviours": {"run_settings", "chosen"}}: interval F1,
    count MAE and TP / FP / FN pooled over the held-out groups (`pool_behaviour`)."""
    seeds = sorted({lesson.seed for lesson in lessons})
    if not 2 <= folds <= len(seeds):
        raise ValueError(f"--calibration_folds={folds}: need 2 to {len(seeds)} (the lesson seeds) folds")
    groups = [list(g) for g in np.array_split(seeds, folds)]
    names = lessons[0].class_names
    held = {"run_settings": {n: [] for n in names}, "chosen": {n: [] for n in names}}
    for group in groups:
        fit = [lesson for lesson in lessons if lesson.seed not in group]
        test = [lesson for lesson in lessons if lesson.seed in group]
        chosen, _ = calibrate(fit)
        for key, per_behaviour in (("run_settings", None), ("chosen", chosen)):
            for name, metrics in score(test, per_behaviour).items():
                held[key][name].append(metrics)
    return {"folds": [[int(s) for s in g] for g in groups],
            "per_behaviour": {n: {k: la.pool_behaviour(held[k][n]) for k in held}
                              for n in names},
            "all_behaviours": {k: la.pool_behaviour([m for n in names for m in held[k][n]])
                               for k in held}}


def format_table(validation: Mapping, chosen: Mapping) -> str:
    head = (f"{'behaviour':<18} | {'smooth':>6} | {'on':>4} | {'off':>4} | {'min s':>5} | "
            f"{'F1 run':>6} | {'F1 new':>6} | {'MAE run':>7} | {'MAE new':>7}")
    lines = [head, "-" * len(head)]
    num = la._num
    for name, v in validation.items():
        c = chosen[name]
        lines.append(f"{name:<18} | {c['smooth_seconds']:>6.1f} | {c['on']:>4.2f} | "
                     f"{c['off']:>4.2f} | {c['min_duration']:>5.1f} | "
                     f"{num(v['run_settings']['interval_f1']):>6} | "
                     f"{num(v['chosen']['interval_f1']):>6} | "
                     f"{num(v['run_settings']['count_mae']):>7} | "
                     f"{num(v['chosen']['count_mae']):>7}")
    return "\n".join(lines)


def format_cross_validation(cv: Mapping) -> str:
    lines = [f"held-out interval F1 (count MAE), {len(cv['folds'])}-fold over lesson seeds "
             f"{cv['folds']}: run's settings -> calibrated on the other folds"]
    rows = {**cv["per_behaviour"], "all behaviours": cv["all_behaviours"]}
    for name, v in rows.items():
        run, new = v["run_settings"], v["chosen"]
        lines.append(f"  {name:<18} {la._num(run['interval_f1'])} ({la._num(run['count_mae'])}) "
                     f"-> {la._num(new['interval_f1'])} ({la._num(new['count_mae'])})")
    return "\n".join(lines)


def run_calibration(workdirs: Sequence[str], seeds: Sequence[int], seconds: float,
                    output: str, folds: int = 2, ensemble_with: str | None = None) -> dict:
    from jaxact.train import get_experiment, loop

    # An ensemble's detections are cached apart, keeping the run's own.
    lessons_dir = "lessons_ensemble" if ensemble_with else "lessons"
    lessons = []
    for workdir in workdirs:
        analyzer = []  # built on the first lesson without cached detections

        def factory(workdir=workdir, analyzer=analyzer):
            if not analyzer:
                analyzer.append(la.Analyzer(workdir, ensemble_with=ensemble_with))
            return analyzer[0]

        config = la.run_config(workdir, ensemble_with)
        exp = get_experiment(config.experiment)(config, workdir)
        settings = exp.analysis_settings()
        for seed in seeds:
            print(f"{workdir}: lesson seed {seed} ({seconds:g} s)", flush=True)
            keyframes, gt = lesson_keyframes(factory, workdir, seed, seconds,
                                             os.path.join(workdir, lessons_dir, f"seed_{seed}"),
                                             ensemble_with)
            lessons.append(prepare(keyframes, gt, exp.class_names, settings))
    chosen, validation = calibrate(lessons)
    out = {"date": now(), "machine": machine_description(), "runs": list(workdirs),
           "ensemble_with": ensemble_with or "",
           "lesson_seeds": list(seeds), "seconds": seconds, "grid": GRID, "rule": RULE,
           "per_behaviour_settings": chosen, "validation": validation,
           "cross_validation": cross_validate(lessons, folds) if folds else None}
    loop.write_json(output, out)
    print("\n" + format_table(validation, chosen))
    if folds:
        print("\n" + format_cross_validation(out["cross_validation"]))
    print(f"\nwritten: {output}")
    return out


def main(argv):
    if len(argv) > 1 or not _RUNS.value:
        raise app.UsageError("usage: python -m benchmarks.analysis_calibration "
                             "--calibration_runs=RUN[,RUN] "
                             "[--lesson_seeds=200,201,202,203 --lesson_seconds=60]")
    logging.set_verbosity(logging.WARNING)
    seeds = (flags.FLAGS.lesson_seeds if flags.FLAGS["lesson_seeds"].present
             else VALIDATION_SEEDS)
    run_calibration(_RUNS.value, [int(s) for s in seeds], flags.FLAGS.lesson_seconds,
                    _OUTPUT.value, _FOLDS.value, flags.FLAGS.ensemble_with or None)


if __name__ == "__main__":
    app.run(main)
