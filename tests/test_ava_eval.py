"""jaxact.evaluation.ava against a plain-loop re-implementation of the official AVA evaluator
(ActivityNet get_ava_performance.py on the TF object-detection Pascal evaluator)."""

import heapq
import json
import math
import os
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest

from jaxact.data.video_io import BadInputError
from jaxact.evaluation import ava

ROOT = os.path.join(os.path.dirname(__file__), "..")
SAMPLE = os.path.join(ROOT, "..", "shared", "data", "ava_sample")


# ----------------------------------------------------------------------------- the reference


def _iou(a, b):
    """Boxes (x1, y1, x2, y2); the official's arithmetic (np_box_ops.iou) on Python floats."""
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter = h * w
    return inter / ((a[3] - a[1]) * (a[2] - a[0]) + (b[3] - b[1]) * (b[2] - b[0]) - inter)


def _voc_ap(tps, num_gt):
    """metrics.compute_precision_recall + compute_average_precision, with loops."""
    if not tps:
        return 0.0
    precision, recall, cum = [], [], 0
    for k, tp in enumerate(tps, start=1):
        cum += tp
        precision.append(cum / k)
        recall.append(cum / num_gt)
    recall = [0.0, *recall, 1.0]
    precision = [0.0, *precision, 0.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum((recall[i] - recall[i - 1]) * precision[i]
               for i in range(1, len(recall)) if recall[i] != recall[i - 1])


def official_reference(label_ids, gt_rows, det_rows, excluded, top_k=50, ignore_without_gt=False):
    """Per-class AP `{id: float}` and mAP, the official way, keyframe by keyframe.

    Rows as tuples (video_id, timestamp, x1, y1, x2, y2, action_id, person_id or score). Ties
    (which the official leaves to heapq / quicksort): equal scores rank by row, earlier first;
    identical heap entries leave the heap earliest row first; equal IoUs go to the ground-truth
    box with the higher person_id, then the earlier row.
    """
    ids = set(label_ids)
    gt = defaultdict(list)
    for row, (vid, ts, x1, y1, x2, y2, action, pid) in enumerate(gt_rows):
        if action in ids:
            gt[(vid, ts)].append((-pid, row, action, (x1, y1, x2, y2)))
    heaps = defaultdict(list)
    for row, (vid, ts, x1, y1, x2, y2, action, score) in enumerate(det_rows):
        if action not in ids:
            continue
        heap, entry = heaps[(vid, ts)], (score, action, y1, x1, y2, x2, row)
        if top_k is None or len(heap) < top_k:
            heapq.heappush(heap, entry)
        elif score > heap[0][0]:
            heapq.heapreplace(heap, entry)
    gt = {key: sorted(rows) for key, rows in gt.items() if key not in excluded}
    num_gt = Counter(action for rows in gt.values() for _, _, action, _ in rows)

    ranked = defaultdict(list)  # class -> [(-score, row, is_tp)]
    for key, heap in heaps.items():
        if key in excluded or (ignore_without_gt and key not in gt):
            continue
        dets = [(-score, row, action, (x1, y1, x2, y2))
                for score, action, y1, x1, y2, x2, row in sorted(heap, key=lambda e: (-e[0], e[-1]))
                if x1 < x2 and y1 < y2]
        for c in {d[2] for d in dets}:
            boxes = [box for _, _, action, box in gt.get(key, []) if action == c]
            claimed = [False] * len(boxes)
            for neg_score, row, action, box in dets:
                if action != c:
                    continue
                tp = False
                if boxes:
                    ious = [_iou(box, b) for b in boxes]
                    j = ious.index(max(ious))
                    if ious[j] >= 0.5 and not claimed[j]:
                        claimed[j] = tp = True
                ranked[c].append((neg_score, row, tp))
    aps = {c: _voc_ap([tp for *_, tp in sorted(ranked[c])], num_gt[c]) if num_gt[c] else math.nan
           for c in label_ids}
    valid = [a for a in aps.values() if not math.isnan(a)]
    return aps, (sum(valid) / len(valid) if valid else math.nan)


# ----------------------------------------------------------------------------- random AVA data


def random_ava(seed, num_keyframes=240, num_actions=13):
    """GT and detection rows with the hard cases: crowds of overlapping people, several actions per
    box, 30-90 detections per keyframe, scores on a 0.01 grid (ties, also at the 50th place),
    empty and inverted detection boxes, empty GT boxes, keyframes without GT, excluded keyframes."""
    rng = np.random.default_rng(seed)
    gt_rows, det_rows, keyframes = [], [], []
    r3 = lambda x: round(float(x), 3)
    for k in range(num_keyframes):
        vid, ts = f"vid{k % 7}", 902 + k // 7
        keyframes.append((vid, ts))
        people, actions = [], []
        if k % 11 != 0:  # every 11th keyframe: no people
            centre = rng.uniform(0.3, 0.7, 2)
            for pid in range(rng.integers(1, 7)):
                # A crowd: people near one another overlap, so detections compete for boxes.
                c = centre + rng.normal(0, 0.08, 2)
                w, h = rng.uniform(0.1, 0.3, 2)
                box = [r3(c[0] - w / 2), r3(c[1] - h / 2), r3(c[0] + w / 2), r3(c[1] + h / 2)]
                if rng.random() < 0.03:
                    box[2] = box[0]  # an empty GT box: counted, never matched
                people.append(box)
                actions.append(rng.choice(np.arange(1, num_actions + 1), rng.integers(1, 4),
                                          replace=False))
                gt_rows.extend((vid, ts, *box, int(a), pid) for a in actions[-1])
        for _ in range(rng.integers(30, 91)):
            # Most detections near a person, half of those with one of its actions, scored higher.
            action, score = int(rng.integers(1, num_actions + 1)), rng.random() * 0.8
            if people and rng.random() < 0.7:
                p = rng.integers(len(people))
                box = np.array(people[p]) + rng.normal(0, 0.03, 4)
                if rng.random() < 0.5:
                    action, score = int(rng.choice(actions[p])), 0.3 + 0.7 * rng.random()
            else:
                box = np.sort(rng.uniform(0, 1, (2, 2)), axis=0).reshape(-1)[[0, 2, 1, 3]]
            box = [r3(v) for v in box]
            if rng.random() < 0.04:
                box[2] = box[0] - rng.choice([0.0, 0.05])  # empty or inverted detection box
            if action != 2:  # class 2: ground truth but never detected -> AP 0
                det_rows.append((vid, ts, *box, action, round(float(score), 2)))
    # Detections on keyframes nobody annotated.
    for k in range(10):
        for _ in range(20):
            box = [r3(v) for v in np.sort(rng.uniform(0, 1, (2, 2)), axis=0).reshape(-1)[[0, 2, 1, 3]]]
            det_rows.append((f"extra{k}", 902, *box, int(rng.integers(1, num_actions + 1)),
                             round(float(rng.random()), 2)))
    order = rng.permutation(len(det_rows))  # a keyframe's rows spread over the file
    det_rows = [det_rows[i] for i in order]
    excluded = {keyframes[i] for i in rng.choice(num_keyframes, 12, replace=False)}
    excluded.add(("extra0", 902))
    return gt_rows, det_rows, excluded


# Ids 4, 10, 12 are not in the label map; 14 and 15 are evaluated but never annotated (NaN).
LABEL_IDS = [1, 2, 3, 5, 6, 7, 8, 9, 11, 13, 14, 15]


def write_rows(path, rows):
    with open(path, "w") as f:
        f.writelines(",".join(map(str, row)) + "\n" for row in rows)
    return str(path)


def write_pbtxt(path, label_ids):
    with open(path, "w") as f:
        f.writelines(f'item {{\n  name: "action {i}"\n  id: {i}\n}}\n' for i in label_ids)
    return str(path)


def write_files(tmp_path, gt_rows, det_rows, excluded, label_ids=LABEL_IDS):
    return dict(labelmap=write_pbtxt(tmp_path / "labelmap.pbtxt", label_ids),
                groundtruth=write_rows(tmp_path / "gt.csv", gt_rows),
                detections=write_rows(tmp_path / "det.csv", det_rows),
                exclusions=write_rows(tmp_path / "excluded.csv", sorted(excluded)))


def assert_same_aps(result, ref_aps, ref_map):
    assert list(result["per_class_ap"]) == list(ref_aps)
    for c, ap in ref_aps.items():
        if math.isnan(ap):
            assert math.isnan(result["per_class_ap"][c]), c
        else:
            assert result["per_class_ap"][c] == pytest.approx(ap, abs=1e-6), c
    assert result["map"] == pytest.approx(ref_map, abs=1e-6)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("without_gt", ["false_positive", "ignore"])
def test_matches_official_reference_on_random_data(tmp_path, seed, without_gt):
    gt_rows, det_rows, excluded = random_ava(seed)
    files = write_files(tmp_path, gt_rows, det_rows, excluded)
    result = ava.evaluate_files(**files, keyframes_without_gt=without_gt)
    aps, mean_ap = official_reference(LABEL_IDS, gt_rows, det_rows, excluded,
                                      ignore_without_gt=without_gt == "ignore")
    assert_same_aps(result, aps, mean_ap)
    assert result["per_class_ap"][2] == 0.0  # ground truth, no detections
    assert math.isnan(result["per_class_ap"][14]) and result["num_gt"][14] == 0
    assert 0.05 < result["map"] < 0.95  # not a degenerate case


def test_matches_official_reference_without_top_k(tmp_path):
    gt_rows, det_rows, excluded = random_ava(3, num_keyframes=120)
    result = ava.evaluate_files(**write_files(tmp_path, gt_rows, det_rows, excluded),
                                top_k_per_keyframe=None)
    assert_same_aps(result, *official_reference(LABEL_IDS, gt_rows, det_rows, excluded, None))
    with_top_50 = ava.evaluate_files(**write_files(tmp_path, gt_rows, det_rows, excluded))
    assert with_top_50["num_detections"] < result["num_detections"]


def test_keep_top_k_is_the_official_heap():
    """Heavy score ties around the k-th place: the same rows survive as in read_csv's heapq."""
    rng = np.random.default_rng(7)
    n, k = 4000, 5
    keyframes = rng.integers(0, 300, n)
    scores = rng.choice([0.1, 0.2, 0.3, 0.4], n)
    actions = rng.integers(1, 4, n)
    boxes = rng.choice([0.0, 0.5], (n, 4))  # few distinct boxes: identical heap entries too
    heaps = defaultdict(list)
    for row in range(n):
        entry = (scores[row], actions[row], boxes[row, 1], boxes[row, 0], boxes[row, 3],
                 boxes[row, 2], row)
        heap = heaps[keyframes[row]]
        if len(heap) < k:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)
    expected = sorted(e[-1] for heap in heaps.values() for e in heap)
    keep = ava.keep_top_k(keyframes, scores, actions, boxes, k)
    assert np.flatnonzero(keep).tolist() == expected


def test_best_box_taken_is_a_false_positive_without_fallback():
    """Two people; both detections overlap person A most. The official gives A to the higher
    score and counts the other as a false positive, although it overlaps B at IoU >= 0.5."""
    gt = [("v", 1, 0.0, 0.0, 0.5, 1.0, 1, 0), ("v", 1, 0.1, 0.0, 0.6, 1.0, 1, 1)]
    det = [("v", 1, 0.02, 0.0, 0.52, 1.0, 1, 0.9), ("v", 1, 0.03, 0.0, 0.53, 1.0, 1, 0.8)]
    rows = lambda r: ava.Rows(np.array([x[0] for x in r], object), np.array([x[1] for x in r]),
                              np.array([x[2:6] for x in r]), np.array([x[6] for x in r]),
                              np.array([x[7] for x in r], float))
    result = ava.evaluate(rows(gt), rows(det), {1: "a"})
    # Ranked TP, FP with 2 GT: precision 1, 1/2; recall 1/2, 1/2 -> AP 0.5.
    assert result["per_class_ap"] == {1: 0.5} and result["map"] == 0.5
    assert official_reference([1], gt, det, set())[0] == {1: 0.5}


def test_cli_end_to_end(tmp_path):
    gt_rows, det_rows, excluded = random_ava(4, num_keyframes=60)
    files = write_files(tmp_path, gt_rows, det_rows, excluded)
    out = tmp_path / "result.json"
    args = [f"--{k}={v}" for k, v in files.items()] + [f"--output={out}"]
    proc = subprocess.run([sys.executable, "-m", "jaxact.evaluation.ava", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert "mAP@0.5IOU" in proc.stdout and "action 13" in proc.stdout
    written = json.loads(out.read_text())
    aps, mean_ap = official_reference(LABEL_IDS, gt_rows, det_rows, excluded)
    assert written["map"] == pytest.approx(mean_ap, abs=1e-6)
    assert list(written["per_class_ap"]) == [str(c) for c in LABEL_IDS]
    for c, ap in aps.items():
        got = written["per_class_ap"][str(c)]
        assert got is None if math.isnan(ap) else got == pytest.approx(ap, abs=1e-6)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # written atomically


def test_labelmap_formats(tmp_path):
    ava_2019 = tmp_path / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
    ava_2019.write_text('item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\n'
                        'item {\n  name: "crouch/kneel"\n  id: 3\n}\n'
                        'item {\n  name: "talk to (e.g., self, a person, a group)"\n  id: 79\n}\n')
    assert ava.read_labelmap(str(ava_2019)) == {
        1: "bend/bow (at the waist)", 3: "crouch/kneel", 79: "talk to (e.g., self, a person, a group)"}
    full = tmp_path / "ava_action_list_v2.2.pbtxt"
    full.write_text('label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n'
                    '  label_type: PERSON_MOVEMENT\n}\n# a comment\n'
                    'label { display_name: "swim" label_id: 2 label_type: PERSON_MOVEMENT }\n')
    assert ava.read_labelmap(str(full)) == {1: "bend/bow (at the waist)", 2: "swim"}
    as_csv = tmp_path / "labels.csv"
    as_csv.write_text("id,name\n12,stand\n17,sit\n")
    assert ava.read_labelmap(str(as_csv)) == {12: "stand", 17: "sit"}


@pytest.mark.parametrize("text, line, field, reason", [
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: x\n}\n', 7, "id", "integer"),
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 1\n}\n', 7, "id", "repeats"),
    ('item {\n  name: "a"\n  id: 1\n', 3, None, "file ends"),
    ('item {\n  name: "a\n  id: 1\n}\n', 2, None, "unexpected"),
    ('item {\n  name: "a"\n}\n', 1, None, "no 'id'"),
    ('itme {\n  name: "a"\n  id: 1\n}\n', 1, None, "unknown block"),
    ('item {\n  name: "a"\n  id: 0\n}\n', 3, "id", "1-based"),
])
def test_malformed_pbtxt_names_the_line(tmp_path, text, line, field, reason):
    path = tmp_path / "bad.pbtxt"
    path.write_text(text)
    with pytest.raises(BadInputError) as e:
        ava.read_labelmap(str(path))
    assert (e.value.path, e.value.row, e.value.field) == (str(path), line, field)
    assert reason in e.value.reason and str(path) in str(e.value)


@pytest.mark.parametrize("row, field, reason", [
    ("v,0902,0.1,0.1,0.5,abc,3,0.5", "y2", "not a number"),
    ("v,0902,0.1,0.1,0.5,0.5,3", None, "7 fields"),
    ("v,09x2,0.1,0.1,0.5,0.5,3,0.5", "timestamp", "integer"),
    ("v,0902,0.1,0.1,0.5,0.5,3.5,0.5", "action_id", "integer"),
    ("v,0902,0.1,0.1,0.5,0.5,3,nan", "score", "finite"),
    (",0902,0.1,0.1,0.5,0.5,3,0.5", "video_id", "empty"),
])
def test_bad_detection_row_names_file_line_field(tmp_path, row, field, reason):
    path = write_rows(tmp_path / "det.csv", [("v", "0902", 0.1, 0.1, 0.5, 0.5, 3, 0.9)] * 2)
    with open(path, "a") as f:
        f.write(f"\n{row}\n")  # the blank line still counts: the bad row is line 4
    with pytest.raises(BadInputError) as e:
        ava.read_csv(path, detections=True)
    assert (e.value.path, e.value.row, e.value.field) == (path, 4, field)
    assert reason in e.value.reason


def test_bad_ground_truth_and_cli_error(tmp_path, capsys):
    gt = write_rows(tmp_path / "gt.csv", [("v", 902, 0.1, 0.1, 0.5, 0.5, 3, 0),
                                          ("v", 902, 0.6, 0.1, 0.5, 0.5, 3, 1)])  # x2 < x1
    with pytest.raises(BadInputError) as e:
        ava.read_csv(gt, detections=False)
    assert (e.value.row, e.value.field) == (2, "x2") and "inverted" in e.value.reason
    det = write_rows(tmp_path / "det.csv", [("v", 902, 0.1, 0.1, 0.5, 0.5, 3, 0.9)])
    labelmap = write_pbtxt(tmp_path / "labels.pbtxt", [3])
    with pytest.raises(SystemExit) as exit_info:
        ava.main([f"--labelmap={labelmap}", f"--groundtruth={gt}", f"--detections={det}"])
    assert exit_info.value.code == 2
    assert f"{gt}: row 2, field 'x2'" in capsys.readouterr().err


def test_real_ava_rows():
    gt_path = os.path.join(SAMPLE, "ava_sample.csv")
    excluded_path = os.path.join(SAMPLE, "ava_excluded_timestamps_sample.csv")
    if not os.path.exists(gt_path) or not os.path.exists(excluded_path):
        pytest.skip(f"{SAMPLE} not present (real data lives in ../shared/data)")
    gt = ava.read_csv(gt_path, detections=False)
    # The annotations themselves as detections (score 0.9): every kept class has AP 1.
    det = ava.Rows(gt.video_ids, gt.timestamps, gt.boxes, gt.actions, np.full(len(gt), 0.9))
    result = ava.evaluate(gt, det, {12: "stand", 17: "carry", 74: "listen", 80: "watch"},
                          ava.read_exclusions(excluded_path))
    # Only 0f39OWEqJ24,0902 (12, 17, 79) is left after the exclusions; 79 is not in the label map.
    assert result["num_gt"] == {12: 1, 17: 1, 74: 0, 80: 0}
    assert result["per_class_ap"][12] == 1.0 and result["per_class_ap"][17] == 1.0
    assert math.isnan(result["per_class_ap"][74]) and result["map"] == 1.0


def test_read_csv_quoted_fields_and_rows_without_person_id(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("v1,0902,0.1,0.2,0.5,0.6,3,4\nv1,0903,0.1,0.2,0.5,0.6,5\n")
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('"v1",0902,0.1,0.2,0.5,0.6,3,4\r\n\n"v1", 0903 ,0.1,0.2,0.5,0.6,5\r\n')
    for path in (plain, quoted):
        rows = ava.read_csv(str(path), detections=False)
        assert rows.video_ids.tolist() == ["v1", "v1"] and rows.timestamps.tolist() == [902, 903]
        np.testing.assert_array_equal(rows.boxes, [[0.1, 0.2, 0.5, 0.6]] * 2)
        assert rows.actions.tolist() == [3, 5] and rows.scores.tolist() == [4.0, 1.0]


def test_detector_outputs_written_as_ava_files_score_like_frame_map(tmp_path):
    """The detector's eval files (detections.csv, groundtruth.csv, labelmap.pbtxt) read back
    exactly (to their printed precision) and, scored by this module, give frame_map's numbers
    under the same rules."""
    from jaxact.evaluation import detection
    from jaxact.evaluation.frame_map import frame_map

    rng = np.random.default_rng(7)
    dets, gts = [], []
    for _ in range(12):
        m = int(rng.integers(1, 4))
        xy = rng.uniform(0, 0.5, (m, 2))
        boxes = np.round(np.concatenate([xy, xy + rng.uniform(0.2, 0.4, (m, 2))], 1), 6)
        gts.append({"boxes": boxes, "labels": (rng.uniform(size=(m, 3)) < 0.5).astype(np.float32)})
        pred = np.round(boxes[rng.integers(0, m, 8)] + rng.normal(0, 0.03, (8, 4)), 6)
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 0.01)
        scores = np.round(rng.uniform(size=(8, 3)), 5)
        dets.append({"boxes": pred, "scores": scores, "person_scores": scores.max(1)})
    writers = detection.ava_files(dets, gts, "test", ("sit", "stand", "write"))
    for name, write in writers.items():
        write(str(tmp_path / name))
    assert ava.read_labelmap(str(tmp_path / "labelmap.pbtxt")) == {1: "sit", 2: "stand", 3: "write"}
    det_rows = ava.read_csv(str(tmp_path / "detections.csv"), detections=True)
    assert len(det_rows) == 12 * 8 * 3 and det_rows.video_ids[0] == "test_000000"
    result = ava.evaluate_files(str(tmp_path / "labelmap.pbtxt"), str(tmp_path / "groundtruth.csv"),
                                str(tmp_path / "detections.csv"))
    expected = frame_map(dets, gts, 3, top_k_per_keyframe=50, drop_invalid_boxes=True)
    np.testing.assert_allclose([result["per_class_ap"][k] for k in (1, 2, 3)],
                               expected["per_class_ap"], rtol=1e-9)
