"""AVA-style frame-level mean average precision (numpy, host side).

Follows the protocol of the official AVA evaluation (the Pascal VOC evaluator of the
TensorFlow object-detection metrics): per class, detections in each keyframe are taken in
descending score order; a detection is a true positive if its highest-IoU ground-truth box
of that class has IoU >= threshold and has not been claimed yet, otherwise a false
positive. AP is the all-point interpolated area under the monotone precision envelope.

Class filtering (the 60-class AVA subset) and excluded timestamps are the caller's job. The other
rules of the official AVA script are options of `frame_map`, off by default: `top_k_per_keyframe`,
`drop_invalid_boxes` and `keyframes_without_gt`; `jaxact.evaluation.ava` evaluates AVA CSV files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def average_precision(scores, is_true_positive, num_gt: int) -> float:
    """All-point interpolated (VOC 2010+) average precision.

    Args:
      scores: ``[K]`` detection scores.
      is_true_positive: ``[K]`` bool, whether each detection is a true positive.
      num_gt: number of ground-truth instances (the recall denominator).

    Returns:
      AP in ``[0, 1]``; ``nan`` when ``num_gt == 0``; ``0.0`` with no detections. Ties in
      score keep their input order (stable sort).
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    tp = np.asarray(is_true_positive, bool).reshape(-1)
    if scores.shape != tp.shape:
        raise ValueError(f"scores {scores.shape} and is_true_positive {tp.shape} differ")
    if num_gt <= 0:
        return float("nan")
    if scores.size == 0:
        return 0.0
    if tp.sum() > num_gt:
        raise ValueError(f"{tp.sum()} true positives but only {num_gt} ground-truth boxes")
    order = np.argsort(-scores, kind="stable")
    tp_cum = np.cumsum(tp[order])
    precision = tp_cum / np.arange(1, len(order) + 1)
    recall = tp_cum / num_gt
    # Precision envelope: best precision at any recall >= this one.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    # Area under the step function: each recall increase is weighted by the envelope there.
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(recall_steps * envelope))


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a [N, 4]`` and ``b [M, 4]`` -> ``[N, M]`` (0 where union is 0)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match_voc(iou: np.ndarray, scores: np.ndarray, gt_of_class: np.ndarray, thr: float):
    """Official protocol for all classes of one keyframe at once.

    Only a detection's best-overlapping GT of the class counts, even if already claimed, so
    each GT goes to the highest-scoring detection for which it is the best match.

    Args:
      iou: ``[N, M]`` detection x GT IoU.
      scores: ``[N, C]`` detection scores.
      gt_of_class: ``[M, C]`` bool, GT box ``m`` carries class ``c``.
      thr: IoU threshold.

    Returns:
      ``[N, C]`` bool true-positive flags.
    """
    n, m = iou.shape
    num_classes = scores.shape[1]
    is_tp = np.zeros((n, num_classes), bool)
    if n == 0 or m == 0:
        return is_tp
    # -1 hides other classes' GT from the argmax; IoU is never negative.
    cls_iou = np.where(gt_of_class.T[:, None, :], iou[None], -1.0)  # [C, N, M]
    best = np.argmax(cls_iou, axis=2)  # [C, N]
    best_iou = np.take_along_axis(cls_iou, best[..., None], axis=2)[..., 0]
    order = np.argsort(-scores.T, axis=1, kind="stable")  # [C, N], best score first
    best = np.take_along_axis(best, order, axis=1)
    hit = np.take_along_axis(best_iou, order, axis=1) >= thr
    # Flattened row-major, entries run class by class in score order, so the first
    # occurrence of each (class, GT) key is the detection that claims that GT.
    keys = (np.arange(num_classes)[:, None] * m + best)[hit]
    _, first = np.unique(keys, return_index=True)
    cls, rank = np.divmod(np.flatnonzero(hit)[first], n)
    is_tp[order[cls, rank], cls] = True
    return is_tp


def _match_greedy(iou: np.ndarray, scores: np.ndarray, gt_of_class: np.ndarray, thr: float):
    """Greedy variant, same shapes as ``_match_voc``: a detection whose best GT is taken
    falls back to the best-overlapping unclaimed GT of the class above the threshold."""
    n, m = iou.shape
    is_tp = np.zeros((n, scores.shape[1]), bool)
    if n == 0 or m == 0:
        return is_tp
    for c in np.flatnonzero(gt_of_class.any(axis=0)):
        cls_iou = np.where(gt_of_class[None, :, c], iou, -1.0)
        claimed = np.zeros(m, bool)
        order = np.argsort(-scores[:, c], kind="stable")
        for i in order[cls_iou[order].max(axis=1) >= thr]:
            free_iou = np.where(claimed, -1.0, cls_iou[i])
            j = int(np.argmax(free_iou))
            if free_iou[j] >= thr:
                is_tp[i, c] = claimed[j] = True
    return is_tp


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """bool ``[N, C]``: the ``k`` highest of ``scores [N, C]``; ties keep the lower (box, class)."""
    keep = np.zeros(scores.size, bool)
    keep[np.argsort(-scores.reshape(-1), kind="stable")[:k]] = True
    return keep.reshape(scores.shape)


def frame_map(
    detections: Sequence[dict[str, Any]],
    ground_truth: Sequence[dict[str, Any]],
    num_classes: int,
    iou_threshold: float = 0.5,
    matching: str = "voc",
    top_k_per_keyframe: int | None = None,
    drop_invalid_boxes: bool = False,
    keyframes_without_gt: str = "false_positive",
) -> dict[str, Any]:
    """Frame-level mAP over keyframes.

    Args:
      detections: one dict per keyframe with ``"boxes"`` ``[N, 4]`` normalised xyxy,
        ``"scores"`` ``[N, C]`` per-class scores and ``"person_scores"`` ``[N]``. Every box
        is a candidate for every class, with that class's score.
      ground_truth: one dict per keyframe (same order) with ``"boxes"`` ``[M, 4]`` and
        ``"labels"`` ``[M, C]`` multi-hot actions.
      num_classes: ``C``.
      iou_threshold: minimum IoU for a true positive.
      matching: ``"voc"`` (official AVA / Pascal: a detection whose best-overlapping GT is
        already claimed is a false positive) or ``"greedy"`` (it takes the best-overlapping
        unclaimed GT above the threshold instead).
      top_k_per_keyframe: keep only the ``k`` highest (box, class) scores of each keyframe (the
        official AVA script: 50; ties at the k-th score keep the lower box, then class, index);
        None keeps all. Dropped pairs neither count nor claim ground truth.
      drop_invalid_boxes: drop boxes with x1 >= x2 or y1 >= y2 (after the top k, as the official
        script does), for the classes and the person AP.
      keyframes_without_gt: ``"false_positive"`` (the official: detections on a keyframe with
        no labelled GT box count as false positives) or ``"ignore"`` (such keyframes are skipped,
        person AP included).

    Returns:
      ``{"map": float, "per_class_ap": [C] float (nan for classes without GT),
      "person_ap": float}``; ``map`` is the mean over classes with ground truth (nan if
      none), ``person_ap`` is class-agnostic AP of ``person_scores`` against all GT boxes.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection frames vs {len(ground_truth)} GT frames")
    matchers = {"voc": _match_voc, "greedy": _match_greedy}
    if matching not in matchers:
        raise ValueError(f"unknown matching {matching!r}")
    match = matchers[matching]
    if keyframes_without_gt not in ("false_positive", "ignore"):
        raise ValueError(f"unknown keyframes_without_gt {keyframes_without_gt!r}")

    all_scores, all_tp, all_kept = [], [], []  # per keyframe: [N, C] scores, TP and kept flags
    num_gt = np.zeros(num_classes, np.int64)
    person_scores, person_tp, num_person_gt = [], [], 0

    for det, gt in zip(detections, ground_truth, strict=True):
        det_boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
        n = len(det_boxes)
        scores = np.asarray(det["scores"], np.float64).reshape(n, num_classes)
        p_scores = np.asarray(det["person_scores"], np.float64).reshape(n)
        gt_boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(gt["labels"]).reshape(len(gt_boxes), num_classes) > 0
        if keyframes_without_gt == "ignore" and not labels.any():
            continue

        kept = _top_k(scores, top_k_per_keyframe) if top_k_per_keyframe is not None else (
            np.ones(scores.shape, bool))
        valid = np.ones(n, bool)
        if drop_invalid_boxes:
            valid = (det_boxes[:, 0] < det_boxes[:, 2]) & (det_boxes[:, 1] < det_boxes[:, 3])
            kept &= valid[:, None]
        iou = _iou_matrix(det_boxes, gt_boxes)
        # Dropped pairs are matched last (-inf), so they take no GT from a kept one.
        # Classes without GT in this keyframe leave all their detections as FPs.
        all_tp.append(match(iou, np.where(kept, scores, -np.inf), labels, iou_threshold) & kept)
        all_scores.append(scores)
        all_kept.append(kept)
        num_gt += labels.sum(axis=0)

        person_scores.append(p_scores[valid])
        everyone = np.ones((len(gt_boxes), 1), bool)
        person_tp.append(match(iou[valid], p_scores[valid, None], everyone, iou_threshold)[:, 0])
        num_person_gt += len(gt_boxes)

    scores = np.concatenate(all_scores) if all_scores else np.zeros((0, num_classes))
    tp = np.concatenate(all_tp) if all_tp else np.zeros((0, num_classes), bool)
    kept = np.concatenate(all_kept) if all_kept else np.zeros((0, num_classes), bool)
    per_class_ap = np.full(num_classes, np.nan)
    for c in np.flatnonzero(num_gt > 0):
        k = kept[:, c]
        per_class_ap[c] = average_precision(scores[k, c], tp[k, c], int(num_gt[c]))
    has_gt = ~np.isnan(per_class_ap)
    mean_ap = float(per_class_ap[has_gt].mean()) if has_gt.any() else float("nan")
    person_ap = average_precision(
        np.concatenate(person_scores) if person_scores else np.zeros(0),
        np.concatenate(person_tp) if person_tp else np.zeros(0, bool),
        num_person_gt,
    )
    return {"map": mean_ap, "per_class_ap": per_class_ap, "person_ap": person_ap}
