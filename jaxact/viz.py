"""Pictures of results: confusion matrix, early-prediction curves, detections on keyframes, and
detections drawn into a video frame at its own resolution (`annotate_frame`, `save_image`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Figures are plain `Figure` objects, returned and saved only when a path is given: no pyplot
# state and no global backend switch, so importing this module never changes a notebook's inline
# backend, and a notebook shows a returned figure with `IPython.display.display(fig)`.

PREDICTED = "red"
TRUE = "lime"


def _figure(rows: int = 1, cols: int = 1, **kwargs):
    fig = Figure(figsize=kwargs.pop("figsize"))
    FigureCanvasAgg(fig)  # a renderer to measure text with (plot_detections), without pyplot
    return fig, fig.subplots(rows, cols, **kwargs)


def _save(fig: Figure, path: str | None, dpi: int) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def plot_confusion_matrix(cm: np.ndarray, class_names, path: str | None = None, *,
                          method: str | None = None, split: str | None = None,
                          accuracy: float | None = None) -> Figure:
    """Row-normalised confusion matrix `[C, C]` (rows true, columns predicted) with counts,
    titled with `method`, `split` and `accuracy` (default: the matrix's own top-1)."""
    cm = np.asarray(cm)
    total = int(cm.sum())
    if accuracy is None:
        accuracy = np.trace(cm) / max(total, 1)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = _figure(figsize=(1.4 + 0.8 * n, 1.0 + 0.8 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(n)
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    for i, j in np.ndindex(cm.shape):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    where = " on ".join(s for s in (method, split and f"{split} split") if s)
    ax.set_title(f"{where + ': ' if where else ''}top-1 {accuracy:.3f} ({total} clips)",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def plot_early_prediction(curves: dict, path: str | None = None, *,
                          num_classes: int | None = None,
                          full_clip: dict | None = None,
                          bayes_limit: dict | None = None) -> Figure:
    """`curves`: method -> {ratio (str or float): top-1}; one line per method, the chance level
    1 / `num_classes`, dashed in the method's colour `full_clip`: method -> top-1 on whole
    clips (the limit the curve heads for), and in black `bayes_limit` {ratio: top-1}, the
    data's own ceiling, where given."""
    full_clip = full_clip or {}
    fig, ax = _figure(figsize=(7.0, 3.6))
    if bayes_limit:
        ratios = sorted(bayes_limit, key=float)
        ax.plot([float(r) for r in ratios], [bayes_limit[r] for r in ratios], color="black",
                linewidth=2, alpha=0.7, label="Bayes limit")
    for method, curve in curves.items():
        if not curve:
            continue
        ratios = sorted(curve, key=float)
        (line,) = ax.plot([float(r) for r in ratios], [curve[r] for r in ratios], marker="o",
                          label=method)
        if full_clip.get(method) is not None:
            ax.axhline(full_clip[method], color=line.get_color(), linestyle="--", linewidth=1,
                       label=f"{method}, full clip ({full_clip[method]:.2f})")
    if num_classes:
        ax.axhline(1 / num_classes, color="grey", linestyle=":",
                   label=f"chance (1/{num_classes})")
    ax.set_xlabel("observed fraction of the clip")
    ax.set_ylabel("top-1 accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the lines
    fig.tight_layout()
    return _save(fig, path, dpi=100)


# ----------------------------------------------------------------------------- detections


def _place(box, size, placed: list, width: float, height: float, order=(0, 1, 2, 3)):
    """A free spot `(x0, y0, x1, y1)` for a `size` = (w, h) label of `box` (image pixels, y
    down), inside the image and off every rectangle of `placed`; None when there is none.

    Tried in `order` over: 0 above the box, 1 inside its top, 2 below it, 3 inside its bottom;
    each spot is shifted to stay within the image (a box at the top edge gets its label inside).
    """
    w, h = size
    x0, y0, x1, y1 = box
    x = min(max(x0, 0.0), max(width - w, 0.0))
    for k in order:
        y = (y0 - h, y0, y1, y1 - h)[k]
        y = min(max(y, 0.0), max(height - h, 0.0))
        spot = (x, y, x + w, y + h)
        if not any(spot[0] < p[2] and p[0] < spot[2] and spot[1] < p[3] and p[1] < spot[3]
                   for p in placed):
            return spot
    return None


def _top_actions(scores, class_names, top_k: int) -> list[tuple[str, float]]:
    best = np.argsort(-scores, kind="stable")[:top_k]
    return [(class_names[a], float(scores[a])) for a in best]


def _true_names(labels, index: int, class_names) -> list[str]:
    """Action names of true box `index`: `labels` is multi-hot `[M, A]`, or per box a name, an
    action index or a list of either."""
    if labels is None:
        return []
    arr = np.asarray(labels) if not isinstance(labels, list | tuple) else None
    if arr is not None and arr.ndim == 2 and arr.dtype.kind in "biuf":
        return [class_names[a] for a in np.flatnonzero(arr[index] > 0)]
    entry = labels[index]
    if isinstance(entry, str) or np.ndim(entry) == 0:
        entry = [entry]
    return [a if isinstance(a, str) else class_names[int(a)] for a in entry]


def _label(ax, renderer, text: str, box, placed: list, order, colour, text_colour, fontsize,
           to_image: float, width: int, height: int) -> bool:
    """Writes `text` on a `colour` background next to `box` (image pixels) at a free spot (see
    `_place`, which `placed` is updated for); False, writing nothing, where there is none."""
    pad = 0.15 * fontsize  # points
    artist = ax.text(0, 0, text, color=text_colour, fontsize=fontsize, va="top", ha="left",
                     bbox=dict(facecolor=colour, alpha=0.7, pad=pad, linewidth=0))
    pad *= renderer.points_to_pixels(1.0) * to_image  # -> image pixels
    size = artist.get_window_extent(renderer)
    spot = _place(box, (size.width * to_image + 2 * pad, size.height * to_image + 2 * pad),
                  placed, width, height, order)
    if spot is None:
        artist.remove()
        return False
    placed.append(spot)
    artist.set_position((spot[0] + pad, spot[1] + pad))
    return True


def plot_detections(images, detections, ground_truth, class_names, path: str | None = None,
                    score_threshold: float = 0.5, top_k: int = 2, columns: int = 3) -> Figure:
    """A grid of keyframes with predicted boxes (red, person score > `score_threshold`, labelled
    with the score and the `top_k` best actions) and true boxes (green, dashed, labelled with
    their actions when known).

    Labels stay inside the image and never overlap: most confident boxes first, each label above
    its box, else inside it or below (true boxes: below first); a label with no free spot is
    left out (its box stays) and counted in the panel's caption.

    Args:
      images: list of uint8 keyframes `[H, W, 3]`.
      detections: per image, `boxes` `[N, 4]` normalized xyxy, `person_scores` `[N]` and
        `scores` `[N, A]` per-action scores (the `frame_map` detection format).
      ground_truth: per image, `boxes` `[M, 4]` normalized xyxy and optionally `labels`:
        multi-hot `[M, A]` (the `frame_map` format) or per box an action name or index, or a
        list of them.
      class_names: the A action names.
      path: output .png, or None to only return the figure.
    """
    import matplotlib.patches as patches

    n = max(len(images), 1)
    cols = min(columns, n)
    rows = -(-n // cols)
    panel = 3.6  # inches
    fontsize = 0.022 * 72 * panel  # points: a fixed fraction of the shown image's width
    fig, axes = _figure(rows, cols, figsize=(panel * cols, panel * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    panels = []
    for ax, image, det, gt in zip(axes.ravel(), images, detections, ground_truth, strict=False):
        h, w = image.shape[:2]
        ax.imshow(image, extent=(0, w, h, 0))  # data = pixel-corner coordinates, as the boxes
        scale = np.array([w, h, w, h], np.float64)
        person = np.asarray(det["person_scores"], np.float64).reshape(-1)
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4) * scale
        action = np.asarray(det["scores"], np.float64).reshape(len(boxes), len(class_names))
        confident = [i for i in np.argsort(-person, kind="stable") if person[i] > score_threshold]
        true_boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4) * scale
        for (x0, y0, x1, y1), colour, style, width in (
                [(boxes[i], PREDICTED, "-", 1.2) for i in confident]
                + [(box, TRUE, "--", 1.0) for box in true_boxes]):
            ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                           edgecolor=colour, linestyle=style, linewidth=width))
        caption = f"{len(confident)} predicted, {len(true_boxes)} true"
        ax.set_title(caption, fontsize=7, pad=2)
        predicted = [(boxes[i], f"{person[i]:.2f} " + ", ".join(
            name for name, _ in _top_actions(action[i], class_names, top_k))) for i in confident]
        true = [(box, "+".join(_true_names(gt.get("labels"), j, class_names)))
                for j, box in enumerate(true_boxes)]
        panels.append((ax, w, h, predicted, [(b, t) for b, t in true if t], caption))
    fig.suptitle(f"red: predicted (person score > {score_threshold:g}, top actions), "
                 "green dashed: ground truth", fontsize=8)
    # Laid out before the labels: their sizes are measured on screen and converted to pixels of
    # the image, whose on-screen scale the layout fixes.
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    for ax, w, h, predicted, true, caption in panels:
        extent = ax.get_window_extent(renderer)
        to_image = max(w / extent.width, h / extent.height)  # image pixels per screen pixel
        placed, hidden = [], 0
        for box, text in predicted:
            hidden += not _label(ax, renderer, text, box, placed, (0, 1, 2, 3), PREDICTED, "white",
                                 fontsize, to_image, w, h)
        for box, text in true:  # below the box first: a predicted label sits above it
            hidden += not _label(ax, renderer, text, box, placed, (2, 3, 0, 1), TRUE, "black",
                                 fontsize, to_image, w, h)
        if hidden:
            ax.set_title(f"{caption} ({hidden} label{'s' * (hidden > 1)} left out: no room)",
                         fontsize=7, pad=2)
    return _save(fig, path, dpi=120)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def annotate_frame(frame, detections, class_names, score_threshold: float = 0.5,
                   top_k: int = 2, labels: Sequence[str] | None = None) -> np.ndarray:
    """`frame` uint8 `[H, W, 3]` with the predicted boxes of person score > `score_threshold`
    and their `top_k` actions and scores drawn in, at the frame's own resolution (for annotated
    PNGs and videos). Returns a uint8 `[H, W, 3]` copy; the frame itself is not modified.

    `detections`: `boxes` `[N, 4]` normalized xyxy, `person_scores` `[N]` and `scores` `[N, A]`
    (as for `plot_detections`). The action scores already include the person score, so the label
    lists only them. The text height is a fixed fraction of the frame's (at least 8 pixels);
    labels go above the box, else inside or below it, never over another label (most confident
    box first); one that fits nowhere is left out. `labels`: the text of each detection instead
    of its actions (e.g. a track's id, seat and decided behaviours); `scores` is then not needed.
    """
    from PIL import Image, ImageDraw

    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"annotate_frame needs an [H, W, 3] frame, got shape {frame.shape}")
    image = Image.fromarray(np.clip(np.round(frame), 0, 255).astype(np.uint8)
                            if frame.dtype != np.uint8 else frame)
    h, w = frame.shape[:2]
    person = np.asarray(detections["person_scores"], np.float64).reshape(-1)
    boxes = np.asarray(detections["boxes"], np.float64).reshape(-1, 4) * [w, h, w, h]
    if labels is None:
        action = np.asarray(detections["scores"], np.float64).reshape(len(boxes), len(class_names))
        labels = ["\n".join(f"{name} {score:.2f}"
                            for name, score in _top_actions(action[i], class_names, top_k))
                  for i in range(len(boxes))]
    elif len(labels) != len(boxes):
        raise ValueError(f"{len(labels)} labels for {len(boxes)} boxes")
    # Drawn on a transparent layer: label backgrounds let the scene show through.
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(max(8, round(min(h, w) / 20)))
    line = max(1, round(min(h, w) / 200))
    pad = max(1, line)
    colour = (230, 30, 30)
    confident = [i for i in np.argsort(-person, kind="stable") if person[i] > score_threshold]
    for i in confident:
        x0, y0, x1, y1 = boxes[i]
        draw.rectangle((x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)), outline=colour + (255,),
                       width=line)
    placed = []
    for i in confident:
        text = labels[i]
        if not text:
            continue
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=1)
        spot = _place(boxes[i], (right - left + 2 * pad, bottom - top + 2 * pad), placed, w, h)
        if spot is None:
            continue
        placed.append(spot)
        draw.rectangle(spot, fill=colour + (170,))
        draw.multiline_text((spot[0] + pad - left, spot[1] + pad - top), text,
                            fill=(255, 255, 255, 255), font=font, spacing=1)
    image = Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
    return np.array(image)


def save_image(image, path: str) -> None:
    """Writes a uint8 `[H, W, 3]` image (e.g. from `annotate_frame`) to `path` (.png, .jpg)."""
    from PIL import Image

    Image.fromarray(np.asarray(image, np.uint8)).save(path)
