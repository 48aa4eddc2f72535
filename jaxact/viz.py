"""Plots written next to results: confusion matrix, early-prediction curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(cm: np.ndarray, class_names, path: str) -> None:
    """Row-normalised confusion matrix `[C, C]` (rows true, columns predicted) with counts."""
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(class_names), 0.6 + 0.8 * len(class_names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    for i, j in np.ndindex(cm.shape):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_early_prediction(curves: dict, path: str) -> None:
    """`curves`: method -> {ratio (str or float): top-1}; one line per method."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, curve in curves.items():
        if not curve:
            continue
        ratios = sorted(curve, key=float)
        ax.plot([float(r) for r in ratios], [curve[r] for r in ratios], marker="o", label=method)
    ax.set_xlabel("observed fraction of the clip")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
