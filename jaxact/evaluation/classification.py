"""Classification metrics over numpy predictions."""

from __future__ import annotations

import numpy as np
from scipy import stats


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


def paired_comparison(correct_a, correct_b) -> dict:
    """Two classifiers on the same examples (`[N]` bool each, row i = example i in both): the
    examples only one of them gets right and the exact McNemar p-value, a two-sided binomial test
    of those discordant counts (1.0 when there are none). Accuracies that differ by a few
    examples are chance unless p is small."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_comparison needs two [N] arrays of the same examples, got "
                         f"shapes {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    discordant = only_a + only_b
    p = stats.binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "mcnemar_p": float(p)}
