"""Classification metrics over numpy predictions."""

from __future__ import annotations

import numpy as np


def top1(pred, labels) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(labels))) if len(labels) else float("nan")


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """`[C, C]` counts; rows are true classes, columns predictions."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(pred)), 1)
    return cm


def mean_class_accuracy(pred, labels, num_classes: int) -> float:
    """Mean over classes present in `labels` of per-class recall."""
    cm = confusion_matrix(pred, labels, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def topk_accuracy(scores, labels, k: int) -> float:
    """Fraction of rows whose label is among the k highest `scores` `[N, C]`."""
    topk = np.argsort(-np.asarray(scores), axis=-1)[:, :k]
    return float(np.mean(np.any(topk == np.asarray(labels)[:, None], axis=-1)))


def summary(pred, labels, scores, num_classes: int) -> dict:
    return {
        "top1": top1(pred, labels),
        "mean_class_accuracy": mean_class_accuracy(pred, labels, num_classes),
        "top5_scores": topk_accuracy(scores, labels, min(5, num_classes)),
        "num_examples": int(len(labels)),
    }
