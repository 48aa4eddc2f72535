"""Tests for jaxact.evaluation.frame_map: hand-computed APs and a slow loop reference."""

import numpy as np
import pytest

from jaxact.evaluation.frame_map import average_precision, frame_map


def _voc_ap_reference(scores, tp, num_gt):
    """VOC all-point AP written the classic way: padded recall/precision, backward max."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    tp = np.asarray(tp, float)[order]
    tp_cum, fp_cum = np.cumsum(tp), np.cumsum(1 - tp)
    rec = np.concatenate([[0.0], tp_cum / num_gt, [1.0]])
    prec = np.concatenate([[0.0], tp_cum / np.maximum(tp_cum + fp_cum, 1e-12), [0.0]])
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    idx = np.flatnonzero(rec[1:] != rec[:-1]) + 1
    return float(np.sum((rec[idx] - rec[idx - 1]) * prec[idx]))


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _frame_map_reference(dets, gts, num_classes, thr, greedy=False):
    """Per-class AP with plain Python loops (official protocol, or the greedy variant)."""
    aps = []
    for c in range(num_classes):
        scores, tps, num_gt = [], [], 0
        for det, gt in zip(dets, gts, strict=True):
            gt_boxes = [b for b, lab in zip(gt["boxes"], gt["labels"], strict=True) if lab[c]]
            num_gt += len(gt_boxes)
            claimed = [False] * len(gt_boxes)
            for i in sorted(range(len(det["boxes"])), key=lambda k: -det["scores"][k][c]):
                tp = False
                if gt_boxes:
                    ious = [_iou(det["boxes"][i], g) for g in gt_boxes]
                    if greedy:
                        ious = [
                            -1.0 if taken else v for v, taken in zip(ious, claimed, strict=True)
                        ]
                    j = int(np.argmax(ious))
                    if ious[j] >= thr and not claimed[j]:
                        claimed[j] = tp = True
                scores.append(det["scores"][i][c])
                tps.append(tp)
        aps.append(_voc_ap_reference(scores, tps, num_gt) if num_gt else np.nan)
    return np.array(aps)


def test_average_precision_by_hand():
    # Sorted: TP, FP, TP with 2 GT. precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # Envelope at the recall steps: 1 (first TP) and 2/3 (last TP): AP = 0.5 * 1 + 0.5 * 2/3.
    assert average_precision([0.9, 0.8, 0.7], [True, False, True], 2) == pytest.approx(5 / 6)
    # Same detections in scrambled order give the same AP.
    assert average_precision([0.7, 0.9, 0.8], [True, True, False], 2) == pytest.approx(5 / 6)
    # FP, TP, TP with 3 GT: precision 0, 1/2, 2/3; recall 0, 1/3, 2/3; envelope 2/3 at both
    # steps: AP = (1/3 + 1/3) * 2/3 = 4/9 (recall never reaches 1).
    assert average_precision([0.9, 0.8, 0.7], [False, True, True], 3) == pytest.approx(4 / 9)
    # Envelope lifts an early dip: TP, FP, FP, TP, TP with 3 GT.
    # precision 1, 1/2, 1/3, 1/2, 3/5 -> envelope at steps 1, 3/5, 3/5: AP = (1 + 6/5) / 3.
    ap = average_precision([5, 4, 3, 2, 1], [1, 0, 0, 1, 1], 3)
    assert ap == pytest.approx((1 + 3 / 5 + 3 / 5) / 3)


def test_average_precision_edge_cases():
    assert np.isnan(average_precision([0.5], [False], 0))
    assert average_precision([], [], 4) == 0.0
    assert average_precision([0.3, 0.2], [False, False], 1) == 0.0
    assert average_precision([0.3, 0.2], [True, True], 2) == 1.0
    with pytest.raises(ValueError):
        average_precision([0.3, 0.2], [True, True], 1)


def test_average_precision_matches_classic_voc_code():
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(1, 40))
        scores = np.round(rng.uniform(size=k), 1)  # rounding creates score ties
        tp = rng.uniform(size=k) < 0.4
        num_gt = int(tp.sum() + rng.integers(0, 5)) or 1
        assert average_precision(scores, tp, num_gt) == pytest.approx(
            _voc_ap_reference(scores, tp, num_gt)
        )


def _det(boxes, scores, person=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    scores = np.asarray(scores, float)
    person = scores.max(axis=1) if person is None else np.asarray(person, float)
    return {"boxes": boxes, "scores": scores, "person_scores": person}


def _gt(boxes, labels):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.asarray(labels)}


A = [0.1, 0.1, 0.4, 0.5]
B = [0.5, 0.2, 0.9, 0.9]


def test_perfect_detections():
    gts = [_gt([A, B], [[1, 0, 1], [0, 1, 0]]), _gt([B], [[1, 1, 0]])]
    dets = [
        _det([A, B], [[0.9, 0.1, 0.8], [0.2, 0.7, 0.1]]),
        _det([B], [[0.6, 0.9, 0.05]]),
    ]
    out = frame_map(dets, gts, num_classes=3)
    np.testing.assert_allclose(out["per_class_ap"], [1.0, 1.0, 1.0])
    assert out["map"] == 1.0 and out["person_ap"] == 1.0


def test_no_detections():
    gts = [_gt([A], [[1, 0]]), _gt([B], [[0, 1]])]
    dets = [_det(np.zeros((0, 4)), np.zeros((0, 2))) for _ in gts]
    out = frame_map(dets, gts, num_classes=2)
    np.testing.assert_array_equal(out["per_class_ap"], [0.0, 0.0])
    assert out["map"] == 0.0 and out["person_ap"] == 0.0


def test_duplicates_are_false_positives():
    # Frame 1 has GT A, frame 2 has GT B (class 0). A is detected twice (0.9 and 0.8).
    gts = [_gt([A], [[1]]), _gt([B], [[1]])]
    dets = [_det([A, A], [[0.9], [0.8]]), _det([B], [[0.7]])]
    # Sorted: TP (0.9), FP duplicate (0.8), TP (0.7) -> AP = 0.5 * 1 + 0.5 * 2/3.
    out = frame_map(dets, gts, num_classes=1)
    assert out["per_class_ap"][0] == pytest.approx(5 / 6)
    assert out["person_ap"] == pytest.approx(5 / 6)


def test_classes_without_gt_are_nan_and_excluded():
    gts = [_gt([A], [[1, 0, 0]]), _gt([B], [[0, 0, 1]])]
    # Class 1 has no GT anywhere but confident detections; class 2's detection is a miss.
    dets = [_det([A], [[0.9, 0.9, 0.0]]), _det([A], [[0.1, 0.9, 0.9]])]
    out = frame_map(dets, gts, num_classes=3)
    assert out["per_class_ap"][0] == 1.0
    assert np.isnan(out["per_class_ap"][1])
    assert out["per_class_ap"][2] == 0.0
    assert out["map"] == pytest.approx(0.5)  # mean of 1.0 and 0.0 only


def test_iou_threshold():
    gt = _gt([[0.0, 0.0, 0.5, 0.5]], [[1]])
    # Intersection 0.5 x 0.2 = 0.1, union 0.25 + 0.1 - 0.1 = 0.25 -> IoU 0.4.
    det = _det([[0.0, 0.0, 0.5, 0.2]], [[0.9]])
    assert frame_map([det], [gt], 1)["map"] == 0.0
    assert frame_map([det], [gt], 1, iou_threshold=0.4)["map"] == 1.0
    assert frame_map([det], [gt], 1, iou_threshold=0.41)["map"] == 0.0


def test_voc_vs_greedy_matching():
    g1, g2 = [0.0, 0.0, 0.4, 0.4], [0.1, 0.0, 0.5, 0.4]
    # d2 overlaps g1 best (inter 0.36*0.4=0.144, union 0.176 -> 0.82) but also g2
    # (inter 0.34*0.4=0.136, union 0.184 -> 0.74).
    d1, d2 = g1, [0.04, 0.0, 0.44, 0.4]
    gts = [_gt([g1, g2], [[1], [1]])]
    dets = [_det([d1, d2], [[0.9], [0.8]])]
    # VOC: g1 is taken by d1, so d2 is a FP: TP, FP with 2 GT -> AP 0.5.
    assert frame_map(dets, gts, 1)["map"] == pytest.approx(0.5)
    # Greedy: d2 falls back to g2 -> both TP -> AP 1.
    assert frame_map(dets, gts, 1, matching="greedy")["map"] == pytest.approx(1.0)


def test_person_ap_is_class_agnostic():
    # The second GT box has no action labels but is still a person to detect.
    gts = [_gt([A, B], [[1, 0], [0, 0]])]
    dets = [_det([A, [0.0, 0.8, 0.1, 0.9]], [[0.9, 0.1], [0.1, 0.1]], person=[0.95, 0.9])]
    out = frame_map(dets, gts, num_classes=2)
    # Person: TP (A), FP (box misses B); 2 GT -> AP 0.5 * 1.
    assert out["person_ap"] == pytest.approx(0.5)
    assert out["per_class_ap"][0] == 1.0 and np.isnan(out["per_class_ap"][1])


def test_matches_loop_reference_on_random_data():
    rng = np.random.default_rng(1)
    num_classes, dets, gts = 4, [], []
    for _ in range(25):
        m = int(rng.integers(0, 4))
        gt_xy = rng.uniform(0, 0.6, (m, 2))
        gt_boxes = np.concatenate([gt_xy, gt_xy + rng.uniform(0.1, 0.4, (m, 2))], 1)
        gts.append(_gt(gt_boxes, rng.uniform(size=(m, num_classes)) < 0.4))
        # Detections: jittered copies of GT (some duplicated) plus random boxes.
        jitter = gt_boxes[rng.integers(0, m, 2 * m)] if m else np.zeros((0, 4))
        jitter = jitter + rng.normal(0, 0.04, jitter.shape)
        rand_xy = rng.uniform(0, 0.6, (3, 2))
        rand = np.concatenate([rand_xy, rand_xy + rng.uniform(0.1, 0.4, (3, 2))], 1)
        boxes = np.concatenate([jitter, rand])
        dets.append(_det(boxes, np.round(rng.uniform(size=(len(boxes), num_classes)), 2)))
    for thr, matching in [(0.3, "voc"), (0.5, "voc"), (0.3, "greedy"), (0.5, "greedy")]:
        out = frame_map(dets, gts, num_classes, iou_threshold=thr, matching=matching)
        ref = _frame_map_reference(dets, gts, num_classes, thr, greedy=matching == "greedy")
        np.testing.assert_allclose(out["per_class_ap"], ref, rtol=1e-12)
        assert out["map"] == pytest.approx(np.nanmean(ref))


def test_input_validation():
    with pytest.raises(ValueError):
        frame_map([_det([A], [[0.5]])], [], 1)
    with pytest.raises(ValueError):
        frame_map([_det([A], [[0.5]])], [_gt([A], [[1]])], 1, matching="coco")


@pytest.mark.parametrize("without_gt", ["false_positive", "ignore"])
def test_ava_options_match_the_ava_evaluator(without_gt):
    """top_k_per_keyframe=50, drop_invalid_boxes and keyframes_without_gt give the numbers of
    jaxact.evaluation.ava (the official AVA rules) on the same detections written as AVA rows."""
    from jaxact.evaluation import ava

    rng = np.random.default_rng(2)
    num_classes, dets, gts = 6, [], []
    gt_rows, det_rows = [], []  # video_id, timestamp, box, action_id, person_id / score
    for t in range(40):
        m = int(rng.integers(0, 5))
        gt_xy = rng.uniform(0, 0.6, (m, 2))
        gt_boxes = np.concatenate([gt_xy, gt_xy + rng.uniform(0.1, 0.4, (m, 2))], 1)
        labels = rng.uniform(size=(m, num_classes)) < (0.4 if t % 5 else 0.0)  # some unlabelled
        gts.append(_gt(gt_boxes, labels))
        jitter = gt_boxes[rng.integers(0, m, 3 * m)] if m else np.zeros((0, 4))
        rand_xy = rng.uniform(0, 0.6, (6, 2))
        boxes = np.concatenate([jitter + rng.normal(0, 0.04, jitter.shape),
                                np.concatenate([rand_xy, rand_xy + rng.uniform(0.1, 0.4, (6, 2))], 1)])
        boxes[rng.uniform(size=len(boxes)) < 0.1, 2] = 0.0  # invalid: x2 <= x1
        scores = rng.uniform(size=(len(boxes), num_classes))  # no ties: the top 50 is unambiguous
        dets.append(_det(boxes, scores))
        gt_rows += [("v", t, *gt_boxes[j], c + 1, j) for j, c in np.argwhere(labels)]
        det_rows += [("v", t, *boxes[j], c + 1, scores[j, c])
                     for j in range(len(boxes)) for c in range(num_classes)]
    rows = lambda r: ava.Rows(np.array([x[0] for x in r], object), np.array([x[1] for x in r]),
                              np.array([x[2:6] for x in r], float), np.array([x[6] for x in r]),
                              np.array([x[7] for x in r], float))
    expected = ava.evaluate(rows(gt_rows), rows(det_rows), range(1, num_classes + 1),
                            keyframes_without_gt=without_gt)
    out = frame_map(dets, gts, num_classes, top_k_per_keyframe=50, drop_invalid_boxes=True,
                    keyframes_without_gt=without_gt)
    np.testing.assert_allclose(out["per_class_ap"], list(expected["per_class_ap"].values()),
                               rtol=1e-12)
    assert out["map"] == pytest.approx(expected["map"], rel=1e-12)
    # Without the options the same data scores differently (the rules matter here).
    assert frame_map(dets, gts, num_classes)["map"] != pytest.approx(out["map"], rel=1e-6)
