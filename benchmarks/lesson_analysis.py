"""Whole-lesson analysis of a trained detector against the lessons' own ground truth.

  python -m benchmarks.lesson_analysis --run=workdirs/ablate_detector/pooled/seed_1 \
      --lesson_seeds=100,101,102 --lesson_seconds=60

For each seed S: the synthetic lesson (`jaxact.data.lessons.write_lesson`) goes to
LESSONS_ROOT/seed_S (lesson.mp4 + ground_truth.json; default LESSONS_ROOT: RUN/lessons), kept
when a ground truth of the same seed and length is there. The detector's whole-lesson analysis
(`Experiment.analyzer`, the runner of `--mode=analyze`, with the run's `analyze` settings)
writes its report to LESSONS_ROOT/seed_S/report, and the lesson's metrics go to
LESSONS_ROOT/seed_S/metrics.json; a metrics.json of the same run, length and `analyze`
settings is read instead of analysing again, so an interrupted sitting resumes. Prints a table
and writes `--lesson_json`.
`--calibration=benchmarks/results/analysis_calibration.json` analyses with the per-behaviour
thresholds chosen there (`benchmarks.analysis_calibration`) instead of the run's own.
`--ensemble_with=RUN2[,RUN3]` fuses those runs' detections with RUN's (`analyze.ensemble_with`,
`jaxact.analysis.ensemble`).

Everything is scored at the analysed keyframes (every `analyze.stride` frames), against the
ground-truth frame of the keyframe; people hidden in a frame are not in it.

  idf1, mota, id_switches  motmetrics, per keyframe: the true people against the report's tracks
      detected there (the tracks the report is made of), distance 1 - IoU, pairs with IoU < 0.5
      never matched. Over lessons the counts (IDTP, IDFP, IDFN, misses, false positives,
      switches, objects) are summed: what merging the accumulators gives, as ids never meet
      across lessons.
  track <-> student  Hungarian (scipy) maximising the number of keyframes where motmetrics
      paired the two (MATCH or SWITCH events); pairs never paired stay unmatched.
  count_mae  per behaviour: mean over the lesson's whole seconds of |predicted - true| students
      on, predicted = the report's `count_per_second`, true = students with the behaviour on at
      any ground-truth frame (all frames, not only keyframes) in [s, s + 1). Pooled over lessons:
      summed errors over summed seconds.
  interval_f1  per behaviour: true intervals = maximal runs of frames with the behaviour on,
      [first, last frame time] (a hidden frame neither ends nor extends a run); predicted = the
      report's intervals of each track. Temporal IoU of closed intervals: each interval is
      widened by dt / 2 at both ends (dt = the report's keyframe spacing; on both sides alike),
      so a single sample lasts dt as the report's `seconds` say. A matched track's predictions
      pair one-to-one with its student's true intervals of the same behaviour, greedily by IoU
      (>= 0.5); the rest of them, and every prediction of an unmatched track, are false
      positives, unpaired true intervals false negatives. F1 = 2PR / (P + R) of TP, FP, FN
      summed over lessons (None with no true and no predicted interval).
  per_student_accuracy  over matched students and the keyframes where the student is visible:
      the fraction where the set of behaviours whose report intervals (of the matched track)
      cover the keyframe time (start <= t <= end) equals the true set of that frame. Pooled over
      lessons (correct / total). Unmatched students are left out: idf1 and mota see them.
  seat_accuracy  matched students whose track's seat (row, column) in the report is their true
      seat (row 1 = front, column 1 = leftmost in the image, as in the ground truth); pooled.
  realtime_factor  lesson seconds / wall seconds of the analysis: decoding, prediction,
      tracking, the behaviour maps, the annotated video (a second decoding pass) and the
      report; the parameters are restored and the forward compiled once before the first
      lesson, outside the timing (the steady state of a long video).
      Pooled: summed lesson seconds over summed wall seconds.

JSON: `{"date", "machine", "workdir", "config_name", "ensemble_with", "seeds", "seconds", "calibration",
"per_behaviour_settings" (the analysis' per-behaviour overrides), "per_behaviour": {name:
{"count_mae", "interval_f1", "tp", "fp", "fn"}}, "interval_f1_all", "per_student_accuracy",
"seat_accuracy", "idf1", "mota", "id_switches", "realtime_factor", "rules", "lessons":
[per-lesson rows]}`;
`interval_f1_all`: from the TP, FP, FN of every behaviour together.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from absl import app, flags, logging
from scipy.optimize import linear_sum_assignment

from benchmarks.machine import machine_description, now
from benchmarks.runs import read_json
from jaxact.analysis import tracking

_RUN = flags.DEFINE_string("run", None, "Workdir of a finished detector run.")
_LESSON_SEEDS = flags.DEFINE_list("lesson_seeds", ["100", "101", "102"], "Lesson seeds.")
_LESSON_SECONDS = flags.DEFINE_float("lesson_seconds", 60.0, "Length of each lesson (seconds).")
_LESSONS_ROOT = flags.DEFINE_string("lessons_root", "", "Lessons go to LESSONS_ROOT/seed_S "
                                    "(default: RUN/lessons).")
_LESSON_JSON = flags.DEFINE_string("lesson_json", "benchmarks/results/lesson_analysis.json",
                                   "Where the table's JSON goes.")
_ENSEMBLE_WITH = flags.DEFINE_string(
    "ensemble_with", "", "Other finished detector runs (comma-separated workdirs) fused with "
    "--run's detections (its config's analyze.ensemble_with); also read by "
    "benchmarks.analysis_calibration.")
_CALIBRATION = flags.DEFINE_string(
    "calibration", "", "A benchmarks.analysis_calibration JSON: analyse with its per-behaviour "
    "settings instead of the run's `analyze.per_behaviour`.")

MOT_IOU = 0.5  # motmetrics' max distance is 1 - MOT_IOU
INTERVAL_IOU = 0.5
_SLACK = 1e-9  # keyframe and frame times are t / fps: equal times may differ by rounding
RULES = {
    "evaluated_at": "analysed keyframes, against the ground-truth frame of each",
    "mot": f"motmetrics per keyframe, distance 1 - IoU, max distance {1 - MOT_IOU}; counts "
           "summed over lessons (= merged accumulators)",
    "track_matching": "Hungarian on the number of keyframes motmetrics paired track and student",
    "count_mae": "mean over whole seconds of |report count_per_second - students on at any "
                 "frame in [s, s+1)|; pooled: summed errors / summed seconds",
    "interval_f1": f"true runs of frames [first, last]; intervals widened by dt/2 each end (dt "
                   f"= keyframe spacing); greedy one-to-one by temporal IoU >= {INTERVAL_IOU} "
                   "within matched (track, student, behaviour); TP/FP/FN summed over lessons",
    "per_student_accuracy": "matched students x keyframes where visible: set of behaviours "
                            "whose intervals cover t == true set; pooled correct / total",
    "seat_accuracy": "matched students whose track's (row, column) is their true seat; pooled",
    "realtime_factor": "lesson seconds / analysis wall seconds (restore and compile excluded)",
}


# ----------------------------------------------------------------------------- ground truth


def parse_ground_truth(gt: Mapping) -> dict:
    """ground_truth.json (`lessons.write_lesson`) -> arrays: `times` [T], `ids` [P] (student
    ids, column order), `seats` {id: (row, column)}, `visible` bool [T, P], `boxes` [T, P, 4]
    (NaN where hidden), `on` {behaviour: bool [T, P]} (False where hidden), `fps`, `duration`
    (seconds)."""
    ids = [int(p["id"]) for p in gt["people"]]
    column = {pid: c for c, pid in enumerate(ids)}
    frames = gt["frames"]
    names = list(gt["behaviours"])
    visible = np.zeros((len(frames), len(ids)), bool)
    boxes = np.full((len(frames), len(ids), 4), np.nan)
    on = {name: np.zeros((len(frames), len(ids)), bool) for name in names}
    for t, frame in enumerate(frames):
        for person in frame["people"]:
            c = column[int(person["id"])]
            visible[t, c] = True
            boxes[t, c] = person["box"]
            for name in person["behaviours"]:
                on[name][t, c] = True
    return {"times": np.array([f["time"] for f in frames], np.float64), "ids": ids,
            "seats": {int(p["id"]): tuple(int(v) for v in p["seat"]) for p in gt["people"]},
            "visible": visible, "boxes": boxes, "on": on, "fps": float(gt["fps"]),
            "duration": len(frames) / float(gt["fps"])}


def true_intervals(on, visible, times) -> list[tuple[float, float]]:
    """One student's behaviour: `on`, `visible` bool [T], `times` [T] -> the maximal runs of on
    frames as (first, last frame time). Hidden frames are skipped: unknown, they neither end
    nor extend a run."""
    out: list[tuple[float, float]] = []
    first = last = None
    for t in np.flatnonzero(np.asarray(visible, bool)):
        if on[t]:
            first = times[t] if first is None else first
            last = times[t]
        elif first is not None:
            out.append((float(first), float(last)))
            first = None
    if first is not None:
        out.append((float(first), float(last)))
    return out


def true_counts_per_second(on, visible, times, duration: float) -> np.ndarray:
    """`on`, `visible` bool [T, P], `times` [T] -> int [ceil(duration)]: students with the
    behaviour on at any (visible) frame of each whole second."""
    size = max(math.ceil(duration - _SLACK), 0)
    seen = np.zeros((size, np.shape(on)[1]), bool)
    second = np.floor(np.asarray(times) + _SLACK).astype(int)
    rows = np.flatnonzero(second < size)
    np.logical_or.at(seen, second[rows], (np.asarray(on) & np.asarray(visible))[rows])
    return seen.sum(axis=1)


def count_mae(predicted, true) -> float:
    """Mean over seconds of |predicted - true| (equal lengths: one lesson's seconds)."""
    predicted, true = np.asarray(predicted), np.asarray(true)
    if predicted.shape != true.shape:
        raise ValueError(f"{predicted.shape} predicted seconds for {true.shape} true ones")
    return float(np.mean(np.abs(predicted - true))) if true.size else 0.0


# ----------------------------------------------------------------------------- intervals


def temporal_iou(a: Sequence[float], b: Sequence[float], dt: float) -> float:
    """IoU of closed intervals (start, end) of sample times, each widened by dt / 2 at both
    ends: a sample stands for dt seconds, so (t, t) lasts dt (as `report`'s `seconds`)."""
    lo_a, hi_a, lo_b, hi_b = a[0] - dt / 2, a[1] + dt / 2, b[0] - dt / 2, b[1] + dt / 2
    inter = max(min(hi_a, hi_b) - max(lo_a, lo_b), 0.0)
    union = (hi_a - lo_a) + (hi_b - lo_b) - inter
    return inter / union if union > 0 else 0.0


def match_intervals(predicted: Sequence, true: Sequence, dt: float,
                    min_iou: float = INTERVAL_IOU) -> list[tuple[int, int]]:
    """One-to-one (predicted index, true index) pairs: greedily the highest temporal IoU first
    (ties: lower predicted, then true index), pairs below `min_iou` never."""
    pairs = sorted(((temporal_iou(p, t, dt), i, j) for i, p in enumerate(predicted)
                    for j, t in enumerate(true)), key=lambda x: (-x[0], x[1], x[2]))
    used_p, used_t, out = set(), set(), []
    for iou, i, j in pairs:
        if iou >= min_iou and i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def f1_score(tp: int, fp: int, fn: int) -> float | None:
    """2PR / (P + R) (= 2TP / (2TP + FP + FN)); None when there is nothing true or predicted."""
    if tp + fp + fn == 0:
        return None
    return 2 * tp / (2 * tp + fp + fn)


def interval_counts(predicted: Mapping, true: Mapping, assignment: Mapping, names: Sequence[str],
                    dt: float) -> dict:
    """{behaviour: {"tp", "fp", "fn"}}. `predicted`: track id -> {behaviour: [(start, end)]};
    `true`: student id -> {behaviour: [(start, end)]}; `assignment`: student id -> track id.
    Only a student's matched track can hit its intervals (`match_intervals`)."""
    out = {}
    track_of = dict(assignment)
    for name in names:
        tp = 0
        for student, track in track_of.items():
            tp += len(match_intervals(predicted.get(track, {}).get(name, []),
                                      true.get(student, {}).get(name, []), dt))
        num_pred = sum(len(b.get(name, [])) for b in predicted.values())
        num_true = sum(len(b.get(name, [])) for b in true.values())
        out[name] = {"tp": tp, "fp": num_pred - tp, "fn": num_true - tp}
    return out


def behaviours_at(intervals: Mapping, t: float) -> frozenset:
    """Behaviours whose intervals (closed, {behaviour: [(start, end)]}) cover time `t`."""
    return frozenset(name for name, ivs in intervals.items()
                     if any(s - _SLACK <= t <= e + _SLACK for s, e in ivs))


def student_accuracy(truth: Mapping, keyframe_rows: Sequence[int], predicted: Mapping,
                     assignment: Mapping) -> tuple[int, int]:
    """(correct, total) over the matched students and the keyframes (ground-truth frame rows)
    where they are visible: correct when `behaviours_at` of the matched track's intervals
    equals the student's true behaviour set of that frame. `truth`: `parse_ground_truth`."""
    column = {pid: c for c, pid in enumerate(truth["ids"])}
    correct = total = 0
    for student, track in assignment.items():
        c = column[student]
        for row in keyframe_rows:
            if not truth["visible"][row, c]:
                continue
            wanted = frozenset(n for n, on in truth["on"].items() if on[row, c])
            got = behaviours_at(predicted.get(track, {}), float(truth["times"][row]))
            correct += got == wanted
            total += 1
    return correct, total


# ----------------------------------------------------------------------------- tracking


def mot_accumulator(frames: Sequence[tuple]):
    """`motmetrics.MOTAccumulator` of per-keyframe `(true ids, true boxes [N, 4], track ids,
    track boxes [M, 4])` (xyxy), distance 1 - IoU, pairs with IoU < `MOT_IOU` excluded."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for oids, oboxes, hids, hboxes in frames:
        dist = 1.0 - tracking.iou_matrix(oboxes, hboxes)
        dist[dist > 1.0 - MOT_IOU + _SLACK] = np.nan
        acc.update(list(oids), list(hids), dist)
    return acc


_MOT_COUNTS = ("idtp", "idfp", "idfn", "num_objects", "num_predictions", "num_misses",
               "num_false_positives", "num_switches")


def mot_counts(acc) -> dict:
    """The motmetrics counts that idf1 and mota are made of (summable over lessons)."""
    import motmetrics as mm

    got = mm.metrics.create().compute(acc, metrics=list(_MOT_COUNTS), return_dataframe=False)
    return {k: int(round(float(got[k]))) for k in _MOT_COUNTS}


def mot_scores(counts: Mapping) -> dict:
    """idf1, mota, id_switches from `mot_counts` (or their sums over lessons); motmetrics'
    formulas, None where undefined."""
    objects, predictions = counts["num_objects"], counts["num_predictions"]
    errors = counts["num_misses"] + counts["num_false_positives"] + counts["num_switches"]
    return {"idf1": 2 * counts["idtp"] / (objects + predictions) if objects + predictions else None,
            "mota": 1.0 - errors / objects if objects else None,
            "id_switches": int(counts["num_switches"])}


def mot_pairs(acc) -> Counter:
    """{(true id, track id): keyframes motmetrics paired them} (its MATCH and SWITCH events;
    TRANSFER, ASCEND and MIGRATE only annotate a SWITCH)."""
    events = acc.mot_events
    paired = events[events["Type"].isin(["MATCH", "SWITCH"])]
    return Counter((int(o), int(h)) for o, h in zip(paired["OId"], paired["HId"], strict=True))


def match_tracks(pairs: Mapping) -> dict:
    """student id -> track id maximising the summed keyframe counts of `pairs` ((student,
    track) -> count; Hungarian); pairs with no count stay unmatched."""
    students = sorted({s for s, _ in pairs})
    tracks = sorted({t for _, t in pairs})
    if not students:
        return {}
    counts = np.zeros((len(students), len(tracks)))
    for (s, t), n in pairs.items():
        counts[students.index(s), tracks.index(t)] = n
    rows, cols = linear_sum_assignment(-counts)
    return {students[r]: tracks[c] for r, c in zip(rows, cols, strict=True) if counts[r, c] > 0}


# ----------------------------------------------------------------------------- one lesson


def keyframe_rows(truth: Mapping, keyframe_times: Sequence[float]) -> list[int]:
    """Ground-truth frame row of each analysed keyframe time (they must coincide)."""
    rows = [int(round(t * truth["fps"])) for t in keyframe_times]
    if any(r >= len(truth["times"]) or abs(truth["times"][r] - t) > 1e-6
           for r, t in zip(rows, keyframe_times, strict=True)):
        raise ValueError("keyframe times do not fall on ground-truth frames")
    return rows


def track_students(truth: Mapping, tracks: Sequence[tracking.Track], rows: Sequence[int]
                   ) -> tuple[dict, dict]:
    """(motmetrics counts, student id -> track id) of the `tracks` at the keyframe `rows`."""
    fps, ids = truth["fps"], truth["ids"]
    at = {}  # frame row -> (track ids, boxes) of the tracks detected there
    for track in tracks:
        for t, box in zip(track.times, track.boxes, strict=True):
            at.setdefault(int(round(t * fps)), []).append((track.id, box))
    frames = []
    for r in rows:
        seen = np.flatnonzero(truth["visible"][r])
        hyp = at.get(r, [])
        frames.append(([ids[c] for c in seen], truth["boxes"][r, seen],
                       [h for h, _ in hyp], np.array([b for _, b in hyp]).reshape(-1, 4)))
    acc = mot_accumulator(frames)
    return mot_counts(acc), match_tracks(mot_pairs(acc))


def predicted_intervals(analysis: Mapping) -> dict:
    """track id -> {behaviour: [(start, end)]} of a report."""
    names = analysis["meta"]["class_names"]
    return {tr["id"]: {n: [(iv["start"], iv["end"]) for iv in tr["behaviours"][n]]
                       for n in names} for tr in analysis["tracks"]}


def behaviour_metrics(truth: Mapping, analysis: Mapping, assignment: Mapping) -> dict:
    """{behaviour: {"count_mae", "abs_error", "num_seconds", "tp", "fp", "fn",
    "interval_f1"}} of a report against the truth, tracks paired with students by
    `assignment` (`track_students`)."""
    names = list(analysis["meta"]["class_names"])
    dt = float(analysis["meta"]["keyframe_spacing"])
    true = {pid: {n: true_intervals(truth["on"][n][:, c], truth["visible"][:, c], truth["times"])
                  for n in names if n in truth["on"]} for c, pid in enumerate(truth["ids"])}
    out = {}
    for name, c in interval_counts(predicted_intervals(analysis), true, assignment, names,
                                   dt).items():
        pred = analysis["per_behaviour"][name]["count_per_second"]
        on = truth["on"].get(name, np.zeros_like(truth["visible"]))
        real = true_counts_per_second(on, truth["visible"], truth["times"], truth["duration"])
        out[name] = {"count_mae": count_mae(pred, real),
                     "abs_error": int(np.abs(np.asarray(pred) - real).sum()),
                     "num_seconds": len(real), **c, "interval_f1": f1_score(c["tp"], c["fp"], c["fn"])}
    return out


def evaluate_lesson(truth: Mapping, analysis: Mapping, tracks: Sequence[tracking.Track],
                    keyframe_times: Sequence[float]) -> dict:
    """Metrics of one lesson (module docstring). `truth`: `parse_ground_truth`; `analysis`:
    `report.analyze`; `tracks`: the tracks behind it (per-keyframe boxes); `keyframe_times`:
    every analysed keyframe, also those without a detection."""
    dt = float(analysis["meta"]["keyframe_spacing"])
    rows = keyframe_rows(truth, keyframe_times)
    counts, assignment = track_students(truth, tracks, rows)
    correct, total = student_accuracy(truth, rows, predicted_intervals(analysis), assignment)
    seat_of = {tr["id"]: tuple(tr["seat"]) for tr in analysis["tracks"]}
    seats_right = sum(seat_of[track] == truth["seats"][student]
                      for student, track in assignment.items())
    return {"num_students": len(truth["ids"]), "num_tracks": len(analysis["tracks"]),
            "matched_students": len(assignment), "num_keyframes": len(rows),
            "keyframe_spacing": dt, **mot_scores(counts), "mot": counts,
            "per_behaviour": behaviour_metrics(truth, analysis, assignment),
            "per_student_accuracy": correct / total if total else None,
            "accuracy_counts": {"correct": correct, "total": total},
            "seat_accuracy": seats_right / len(assignment) if assignment else None,
            "seat_counts": {"correct": int(seats_right), "total": len(assignment)}}


def pool_behaviour(rows: Sequence[Mapping]) -> dict:
    """One behaviour's `behaviour_metrics` (or `pool_behaviour`s) of several lessons ->
    {"count_mae" (summed errors over summed seconds), "interval_f1" (of the summed counts),
    "tp", "fp", "fn", "abs_error", "num_seconds"}: pooling pooled rows pools their lessons."""
    tp, fp, fn, error, seconds = (sum(r[k] for r in rows) for k in (
        "tp", "fp", "fn", "abs_error", "num_seconds"))
    return {"count_mae": error / seconds if seconds else None,
            "interval_f1": f1_score(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn,
            "abs_error": error, "num_seconds": seconds}


def aggregate(lessons: Sequence[Mapping], names: Sequence[str]) -> dict:
    """Pooled metrics of per-lesson rows (module docstring)."""
    per_behaviour = {name: pool_behaviour([r["per_behaviour"][name] for r in lessons])
                     for name in names}
    correct = sum(r["accuracy_counts"]["correct"] for r in lessons)
    total = sum(r["accuracy_counts"]["total"] for r in lessons)
    wall = sum(r["analyze_seconds"] for r in lessons)
    seats_right = sum(r["seat_counts"]["correct"] for r in lessons)
    seats_total = sum(r["seat_counts"]["total"] for r in lessons)
    return {"per_behaviour": per_behaviour,
            "interval_f1_all": f1_score(*(sum(b[k] for b in per_behaviour.values())
                                          for k in ("tp", "fp", "fn"))),
            "per_student_accuracy": correct / total if total else None,
            "seat_accuracy": seats_right / seats_total if seats_total else None,
            **mot_scores({k: sum(r["mot"][k] for r in lessons) for k in _MOT_COUNTS}),
            "realtime_factor": sum(r["seconds"] for r in lessons) / wall if wall else None}


# ----------------------------------------------------------------------------- running


class Analyzer:
    """A run's detector, restored and compiled once, analysing lessons exactly as
    `Experiment.analyze` does (its `LessonAnalyzer`), keeping the keyframe detections and the
    tracks that the report is made of."""

    def __init__(self, workdir: str, per_behaviour: Mapping | None = None,
                 ensemble_with: str | None = None):
        from jaxact.train import get_experiment

        self.config = run_config(workdir, ensemble_with)
        if per_behaviour is not None:
            self.config.analyze.per_behaviour = dict(per_behaviour)
        exp = get_experiment(self.config.experiment)(self.config, workdir)
        start = time.perf_counter()
        self.runner = exp.analyzer()
        # Compiled here, so the first lesson's timing is not mostly compilation.
        shape = exp.input_shape(self.config.eval.batch_size)
        jax.block_until_ready(self.runner.predict(np.zeros(shape, np.uint8)))
        self.setup_seconds = time.perf_counter() - start

    def analyze(self, path: str, output_dir: str) -> dict:
        """{"analysis", "tracks", "keyframe_times", "seconds" (wall)} of the video `path`; the
        report goes to `output_dir`."""
        out = self.runner.run(path, output_dir)
        return {"analysis": out["analysis"], "tracks": out["tracks"],
                "keyframe_times": [float(k["time"]) for k in out["keyframes"]],
                "seconds": out["seconds"]}


def run_config(workdir: str, ensemble_with: str | None = None):
    """The run's saved config; `ensemble_with` (not None) replaces its
    `analyze.ensemble_with`."""
    from jaxact.train import loop

    config = loop.read_config(workdir)
    if ensemble_with is not None:
        config.analyze.ensemble_with = ensemble_with
    return config


def ensure_lesson(seed: int, seconds: float, lesson_dir: str) -> tuple[str, dict]:
    """(lesson.mp4 path, ground_truth.json) of lesson `seed`, written unless already there."""
    from jaxact.data.lessons import LessonConfig, write_lesson

    video = os.path.join(lesson_dir, "lesson.mp4")
    gt = read_json(os.path.join(lesson_dir, "ground_truth.json"))
    if not (os.path.exists(video) and gt and gt["seed"] == seed and gt["seconds"] == seconds):
        write_lesson(seed, LessonConfig(seconds=seconds), lesson_dir)
        gt = read_json(os.path.join(lesson_dir, "ground_truth.json"))
    return video, gt


def lesson_row(analyzer_factory, workdir: str, seed: int, seconds: float, lesson_dir: str,
               per_behaviour: Mapping | None = None, ensemble_with: str | None = None) -> dict:
    """One lesson's metrics: its metrics.json when it holds this run, length, `per_behaviour`
    override and the run's current `analyze` section, else the lesson is written (unless
    there) and analysed. `analyzer_factory()`: the `Analyzer`."""
    from jaxact.train import loop

    metrics_path = os.path.join(lesson_dir, "metrics.json")
    done = read_json(metrics_path)
    analyze = json.loads(json.dumps(run_config(workdir, ensemble_with).analyze.to_dict()))
    if (done and done.get("workdir") == workdir and done.get("seconds") == seconds
            and done.get("per_behaviour_override") == per_behaviour
            and done.get("analyze") == analyze):
        return done
    video, gt = ensure_lesson(seed, seconds, lesson_dir)
    analyzer = analyzer_factory()
    out = analyzer.analyze(video, os.path.join(lesson_dir, "report"))
    row = {"seed": seed, "seconds": seconds, "workdir": workdir,
           "per_behaviour_override": per_behaviour, "analyze": analyze, "date": now(),
           "machine": machine_description(), "analyze_seconds": out["seconds"],
           "realtime_factor": seconds / out["seconds"],
           **evaluate_lesson(parse_ground_truth(gt), out["analysis"], out["tracks"],
                             out["keyframe_times"])}
    loop.write_json(metrics_path, row)
    return row


def read_calibration(path: str) -> dict:
    """The chosen `per_behaviour` settings of a `benchmarks.analysis_calibration` JSON."""
    got = read_json(path)
    if got is None:
        raise FileNotFoundError(f"--calibration={path}: no such file")
    if not isinstance(got.get("per_behaviour_settings"), Mapping):
        raise ValueError(f"--calibration={path}: no 'per_behaviour_settings' object; is it "
                         "a benchmarks.analysis_calibration JSON?")
    return got["per_behaviour_settings"]


def _num(v, fmt=".3f") -> str:
    return "-" if v is None else format(v, fmt)


def format_table(table: Mapping) -> str:
    head = (f"{'behaviour':<18} | {'count MAE':>9} | {'interval F1':>11} | {'TP':>4} | "
            f"{'FP':>4} | {'FN':>4}")
    lines = [head, "-" * len(head)]
    for name, b in table["per_behaviour"].items():
        lines.append(f"{name:<18} | {_num(b['count_mae']):>9} | {_num(b['interval_f1']):>11} | "
                     f"{b['tp']:>4} | {b['fp']:>4} | {b['fn']:>4}")
    lines += ["-" * len(head),
              f"interval F1 (all behaviours) {_num(table['interval_f1_all'])}",
              f"per-student accuracy         {_num(table['per_student_accuracy'])}",
              f"seat accuracy                {_num(table['seat_accuracy'])}",
              f"IDF1                         {_num(table['idf1'])}",
              f"MOTA                         {_num(table['mota'])}",
              f"ID switches                  {table['id_switches']}",
              f"realtime factor              {_num(table['realtime_factor'], '.1f')}",
              "", "per lesson: seed | students | tracks | matched | IDF1 | MOTA | switches | "
                  "accuracy | seats | realtime"]
    for r in table["lessons"]:
        lines.append(f"  {r['seed']} | {r['num_students']} | {r['num_tracks']} | "
                     f"{r['matched_students']} | {_num(r['idf1'])} | {_num(r['mota'])} | "
                     f"{r['id_switches']} | {_num(r['per_student_accuracy'])} | "
                     f"{_num(r['seat_accuracy'])} | {_num(r['realtime_factor'], '.1f')}")
    return "\n".join(lines)


def run_benchmark(workdir: str, seeds: Sequence[int], seconds: float, lessons_root: str,
                  output: str, calibration: str = "", ensemble_with: str | None = None) -> dict:
    from jaxact.train import loop

    config = run_config(workdir, ensemble_with)
    per_behaviour = None
    if calibration:
        per_behaviour = read_calibration(calibration)
    analyzer = []  # built on the first lesson that needs it: resumed sittings skip the model

    def factory():
        if not analyzer:
            analyzer.append(Analyzer(workdir, per_behaviour, ensemble_with))
        return analyzer[0]

    lessons = []
    for seed in seeds:
        print(f"lesson seed {seed} ({seconds:g} s)", flush=True)
        lessons.append(lesson_row(factory, workdir, seed, seconds,
                                  os.path.join(lessons_root, f"seed_{seed}"), per_behaviour,
                                  ensemble_with))
    names = list(lessons[0]["per_behaviour"])
    table = {"date": now(), "machine": machine_description(), "workdir": workdir,
             "config_name": config.get("config_name", ""),
             "ensemble_with": config.analyze.ensemble_with, "seeds": list(seeds),
             "seconds": seconds, "calibration": calibration or None,
             "per_behaviour_settings": (config.analyze.per_behaviour.to_dict()
                                        if per_behaviour is None else per_behaviour),
             **aggregate(lessons, names), "rules": RULES,
             "lessons": lessons}
    loop.write_json(output, table)
    print("\n" + format_table(table))
    print(f"\nwritten: {output}")
    return table


def main(argv):
    if len(argv) > 1 or not _RUN.value:
        raise app.UsageError("usage: python -m benchmarks.lesson_analysis --run=WORKDIR "
                             "[--lesson_seeds=100,101,102 --lesson_seconds=60]")
    if not _LESSON_SEEDS.value:
        raise app.UsageError("--lesson_seeds: need at least one seed")
    logging.set_verbosity(logging.WARNING)
    run_benchmark(_RUN.value, [int(s) for s in _LESSON_SEEDS.value], _LESSON_SECONDS.value,
                  _LESSONS_ROOT.value or os.path.join(_RUN.value, "lessons"), _LESSON_JSON.value,
                  _CALIBRATION.value, _ENSEMBLE_WITH.value or None)


if __name__ == "__main__":
    app.run(main)
