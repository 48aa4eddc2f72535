"""Plots written next to results: confusion matrix, early-prediction curves."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

# Figures are plain `Figure` objects saved to files: no pyplot state and no global backend
# switch, so importing this module never changes a notebook's inline backend.


def _figure(rows: int = 1, cols: int = 1, **kwargs):
    fig = Figure(figsize=kwargs.pop("figsize"))
    return fig, fig.subplots(rows, cols, **kwargs)


def plot_confusion_matrix(cm: np.ndarray, class_names, path: str) -> None:
    """Row-normalised confusion matrix `[C, C]` (rows true, columns predicted) with counts."""
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = _figure(figsize=(1.0 + 0.8 * len(class_names), 0.6 + 0.8 * len(class_names)))
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


def plot_early_prediction(curves: dict, path: str) -> None:
    """`curves`: method -> {ratio (str or float): top-1}; one line per method."""
    fig, ax = _figure(figsize=(5, 3.5))
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


def plot_detections(images, detections, ground_truth, class_names, path: str,
                    score_threshold: float = 0.5, top_k: int = 2, columns: int = 3) -> None:
    """A grid of keyframes with predicted boxes (red, person score > `score_threshold`, labelled
    with the score and the `top_k` best actions) and true boxes (green, dashed).

    Args:
      images: list of uint8 keyframes `[H, W, 3]`.
      detections: per image, `boxes` `[N, 4]` normalized xyxy, `person_scores` `[N]` and
        `scores` `[N, A]` per-action scores (the `frame_map` detection format).
      ground_truth: per image, `boxes` `[M, 4]` normalized xyxy.
      class_names: the A action names.
      path: output .png.
    """
    import matplotlib.patches as patches

    n = max(len(images), 1)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = _figure(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, det, gt in zip(axes.ravel(), images, detections, ground_truth, strict=False):
        h, w = image.shape[:2]
        ax.imshow(image)
        scale = np.array([w, h, w, h], np.float64)
        for x0, y0, x1, y1 in np.asarray(gt["boxes"], np.float64).reshape(-1, 4) * scale:
            ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                           edgecolor="lime", linestyle="--", linewidth=1.0))
        person = np.asarray(det["person_scores"], np.float64)
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4) * scale
        action = np.asarray(det["scores"], np.float64)
        for i in np.flatnonzero(person > score_threshold):
            x0, y0, x1, y1 = boxes[i]
            ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                           edgecolor="red", linewidth=1.2))
            best = np.argsort(-action[i], kind="stable")[:top_k]
            label = f"{person[i]:.2f} " + ", ".join(class_names[a] for a in best)
            ax.text(x0, y0 - 1, label, color="white", fontsize=5, va="bottom",
                    bbox=dict(facecolor="red", alpha=0.6, pad=0.5, linewidth=0))
    fig.suptitle(f"red: predicted (person score > {score_threshold:g}, top actions), "
                 "green dashed: ground truth", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
