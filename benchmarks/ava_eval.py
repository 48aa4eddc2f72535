"""Speed of the AVA evaluator (`jaxact.evaluation.ava`) on a synthetic set of AVA v2.2 validation
size: 64 videos x 897 keyframes (57,408), ~1M detection rows, a 60-class label map out of 80 ids.

  python -m benchmarks.ava_eval [--ava_keyframes=57408] [--ava_note="..."]

The data are seeded: crowds of 0-4 people with 1-3 actions each; detection rows per keyframe: 10 on
average, 60-120 on every tenth keyframe (so the top-50 rule bites); scores with 3 decimals (ties), a
few empty boxes, 100 excluded keyframes. Times (median of `--ava_repeats` after one warm-up):
reading the two CSVs, `evaluate` on the rows in memory, and both. Prints a table and writes
benchmarks/results/ava_eval.json.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks.machine import cpu_cores, cpu_model, now
from jaxact.evaluation import ava
from jaxact.files import write_json

_KEYFRAMES = flags.DEFINE_integer("ava_keyframes", 64 * 897, "Keyframes (AVA v2.2 val: 64 x 897).")
_SEED = flags.DEFINE_integer("ava_seed", 0, "Seed of the synthetic data.")
_REPEATS = flags.DEFINE_integer("ava_repeats", 3, "Timed runs after the warm-up (median).")
_NOTE = flags.DEFINE_string("ava_note", "", "Conditions of the run, kept in the JSON.")
_RESULTS_JSON = flags.DEFINE_string("ava_results_json", "benchmarks/results/ava_eval.json",
                                    "Where the JSON goes.")

NUM_IDS = 80
LABEL_IDS = tuple(sorted(np.random.default_rng(80).choice(np.arange(1, NUM_IDS + 1), 60,
                                                          replace=False).tolist()))


def synthetic(num_keyframes: int, seed: int):
    """`(ground truth, detections, excluded)`: `ava.Rows` and a set of (video_id, timestamp)."""
    rng = np.random.default_rng(seed)
    videos = np.array([f"video{v:03d}" for v in range(-(-num_keyframes // 897))], object)
    kf_video = videos[np.arange(num_keyframes) // 897]
    kf_time = 902 + np.arange(num_keyframes) % 897

    people = rng.integers(0, 5, num_keyframes) * (rng.random(num_keyframes) < 0.9)
    person_kf = np.repeat(np.arange(num_keyframes), people)
    num_people = len(person_kf)
    crowd = rng.uniform(0.3, 0.7, (num_keyframes, 2))[person_kf]
    centre = crowd + rng.normal(0, 0.1, (num_people, 2))
    size = rng.uniform(0.1, 0.35, (num_people, 2))
    person_box = np.round(np.concatenate([centre - size / 2, centre + size / 2], 1), 3)
    person_actions = rng.integers(1, NUM_IDS + 1, (num_people, 3))
    num_actions = rng.integers(1, 4, num_people)
    gt_person = np.repeat(np.arange(num_people), num_actions)
    slot = np.arange(len(gt_person)) - np.repeat(np.cumsum(num_actions) - num_actions, num_actions)
    gt_kf = person_kf[gt_person]
    person_id = np.arange(num_people) - np.searchsorted(person_kf, person_kf)
    ground_truth = ava.Rows(kf_video[gt_kf], kf_time[gt_kf], person_box[gt_person],
                            person_actions[gt_person, slot], person_id[gt_person].astype(float))

    rows = np.where(np.arange(num_keyframes) % 10 == 0, rng.integers(60, 121, num_keyframes),
                    rng.poisson(10, num_keyframes))
    det_kf = np.repeat(np.arange(num_keyframes), rows)
    n = len(det_kf)
    first_person = np.cumsum(people) - people
    on_person = (people[det_kf] > 0) & (rng.random(n) < 0.7)
    person = first_person[det_kf] + (rng.random(n) * np.maximum(people[det_kf], 1)).astype(int)
    person = np.minimum(person, num_people - 1)
    random_box = np.sort(rng.random((n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]]
    boxes = np.where(on_person[:, None], person_box[person] + rng.normal(0, 0.03, (n, 4)),
                     random_box)
    boxes = np.round(boxes, 3)
    empty = rng.random(n) < 0.01
    boxes[empty, 2] = boxes[empty, 0]
    right = on_person & (rng.random(n) < 0.5)
    actions = np.where(right, person_actions[person, rng.integers(0, 3, n)],
                       rng.integers(1, NUM_IDS + 1, n))
    scores = np.round(np.where(right, 0.3 + 0.7 * rng.random(n), 0.8 * rng.random(n)), 3)
    order = rng.permutation(n)  # a keyframe's rows spread over the file
    detections = ava.Rows(kf_video[det_kf][order], kf_time[det_kf][order], boxes[order],
                          actions[order], scores[order])
    excluded = {(kf_video[i], int(kf_time[i])) for i in rng.choice(num_keyframes, 100, replace=False)}
    return ground_truth, detections, excluded


def write_csv(path: str, rows: ava.Rows, score_format: str) -> None:
    with open(path, "w") as f:
        for v, t, (x1, y1, x2, y2), a, s in zip(rows.video_ids, rows.timestamps, rows.boxes.tolist(),
                                                 rows.actions, rows.scores.tolist(), strict=True):
            f.write(f"{v},{t:04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{a},{s:{score_format}}\n")


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls after a warm-up one, and the last result."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main(argv):
    del argv
    ground_truth, detections, excluded = synthetic(_KEYFRAMES.value, _SEED.value)
    labels = {i: f"action {i}" for i in LABEL_IDS}
    with tempfile.TemporaryDirectory() as tmp:
        gt_csv, det_csv = os.path.join(tmp, "gt.csv"), os.path.join(tmp, "det.csv")
        write_csv(gt_csv, ground_truth, ".0f")
        write_csv(det_csv, detections, ".3f")
        read_s, (gt_read, det_read) = timed(
            lambda: (ava.read_csv(gt_csv, detections=False), ava.read_csv(det_csv, detections=True)),
            _REPEATS.value)
        eval_s, result = timed(lambda: ava.evaluate(gt_read, det_read, labels, excluded),
                               _REPEATS.value)
    table = [("read the two CSVs", read_s), ("evaluate (rows in memory)", eval_s),
             ("total", read_s + eval_s)]
    cores = cpu_cores()
    sizes = {"keyframes": _KEYFRAMES.value, "gt_rows": len(ground_truth),
             "detection_rows": len(detections), "classes": len(labels),
             "excluded_keyframes": len(excluded),
             "detections_evaluated": result["num_detections"]}
    print(f"AVA evaluator, {sizes['keyframes']} keyframes, {sizes['detection_rows']} detection rows, "
          f"{sizes['gt_rows']} GT rows, {sizes['classes']} classes; {cores} cores ({cpu_model()})")
    for name, seconds in table:
        print(f"  {name:28s} {seconds:7.2f} s")
    print(f"  (mAP of the synthetic set {result['map']:.4f})")
    write_json(_RESULTS_JSON.value, {
        "date": now(),
        "machine": {"host": platform.node(), "cores": cores, "cpu": cpu_model()},
        "note": _NOTE.value,
        "sizes": sizes,
        "repeats": _REPEATS.value,
        "seconds": {"read_csvs": round(read_s, 3), "evaluate": round(eval_s, 3),
                    "total": round(read_s + eval_s, 3)},
        "map": result["map"],
    }, indent=2)


if __name__ == "__main__":
    app.run(main)
