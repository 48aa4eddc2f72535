"""Behaviour distribution maps of a keyframe from per-actor RoI bin maps (numpy, host side).

The detector predicts per actor (query) ``n`` a box (normalised xyxy), a person score and per-bin
behaviour logits ``map_logits`` ``[N, S, S, A + 1]`` (channel 0 = no behaviour; the ``S x S`` bins
are laid over the box row-major, y then x, as RoIAlign pools them). This module turns them into a
keyframe map and scores it against a label image:

* `softmax`: logits -> per-bin distributions ``q`` ``[N, S, S, A + 1]``.
* `paste_maps`: pastes every actor's ``q`` into an ``[H, W]`` canvas -> ``[H, W, A + 1]``
  probabilities, per pixel or per grid cell (``cell``). The rule, in full:

  1. Only actors with person score ``s > score_threshold`` take part (and only they occlude).
  2. An actor covers the pixels whose centres ``((j + 0.5) / W, (i + 0.5) / H)`` fall in its box,
     half-open: ``x0 <= x < x1`` and ``y0 <= y < y1`` (boxes sharing an edge never share a pixel;
     the parts of a box outside the image cover nothing).
  3. Resampling is *nearest bin*: a covered pixel takes the distribution of the bin that holds
     its centre, bin ``floor((y - y0) / (y1 - y0) * S)`` (clipped to ``[0, S - 1]``), likewise in
     x. Bins stay hard-edged, as the label image is; bilinear blending would smear a behaviour
     across bin (and, near the box edge, actor) boundaries.
  4. Occlusion: at a pixel covered by several actors the front-most alone counts, the one with
     the largest ``y2`` (lowest box bottom: nearer the camera in a scene seen from the front);
     ties go to the higher person score, then to the lower index.
  5. The winner's distribution is weighted by its person score ``s`` (clipped to ``[0, 1]``) and
     the rest goes to "no behaviour": ``p = s * q + (1 - s) * e_0``. Pixels no actor covers are
     ``e_0``. So every pixel sums to 1, and an actor with ``s < 0.5`` never wins the argmax.
  6. ``cell > 1``: the probabilities are averaged over ``cell x cell`` blocks from the top-left
     corner and every pixel of a block holds the block's mean (the map keeps its ``[H, W]``
     size, so it is scored against the same label image); where ``H`` or ``W`` is not a multiple
     of ``cell`` the last row / column of blocks is smaller and averages only its own pixels.

* `behaviour_map`: ``[H, W, A + 1]`` -> single-channel ``[H, W]`` argmax (ties: lower channel).
* `IoUAccumulator`: per-behaviour pixel intersection / union summed over many keyframes ->
  ``map_miou``, ``per_class_map_iou`` and ``background_iou`` for results.json.
* `pixel_shares`: share of pixels per behaviour in a single-channel map (console line).
* `plot_behaviour_maps`: keyframes with the predicted and the true map overlaid side by side.

Per keyframe ``b`` of a batch, an evaluator does::

    probs = paste_maps(softmax(out["map_logits"][b]), boxes[b], person_scores[b], H, W,
                       score_threshold=..., cell=...)
    accumulator.add(behaviour_map(probs), label_image[b])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

NONE = "none"  # name of channel 0 ("no behaviour") in `pixel_shares` and legends


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``logits`` (e.g. ``map_logits`` ``[N, S, S, A + 1]``) over
    ``axis``, as float32 of the same shape. Accepts any array-like (a bfloat16 device array too);
    computed in float64 after subtracting the maximum, so large logits never overflow."""
    x = np.asarray(logits, np.float64)
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(np.float32)


def _centres(n: int) -> np.ndarray:
    """Normalised pixel-centre coordinates ``[n]`` of an axis of ``n`` pixels."""
    return (np.arange(n, dtype=np.float64) + 0.5) / n


def _bins(centres: np.ndarray, lo: float, hi: float, size: int) -> np.ndarray:
    """Index of the bin (of ``size`` over ``[lo, hi)``) holding each of ``centres``."""
    idx = np.floor((centres - lo) / (hi - lo) * size)
    return np.clip(idx, 0, size - 1).astype(np.int64)


def cell_average(probs, cell: int) -> np.ndarray:
    """Means of ``probs`` ``[H, W, C]`` over ``cell x cell`` blocks from the top-left corner,
    broadcast back to ``[H, W, C]`` (every pixel of a block holds the block's mean); the last,
    partial row / column of blocks averages only its own pixels. ``cell == 1`` returns a copy."""
    probs = np.asarray(probs)
    if cell < 1:
        raise ValueError(f"cell must be a positive int, got {cell}")
    if probs.ndim != 3:
        raise ValueError(f"cell_average needs [H, W, C] probabilities, got shape {probs.shape}")
    if cell == 1:
        return probs.copy()
    h, w = probs.shape[:2]
    ys, xs = np.arange(0, h, cell), np.arange(0, w, cell)
    sizes_y = np.diff(np.append(ys, h))
    sizes_x = np.diff(np.append(xs, w))
    sums = np.add.reduceat(np.add.reduceat(probs.astype(np.float64), ys, axis=0), xs, axis=1)
    means = sums / (sizes_y[:, None, None] * sizes_x[None, :, None])
    return np.repeat(np.repeat(means, sizes_y, axis=0), sizes_x, axis=1).astype(probs.dtype)


def paste_maps(map_probs, boxes, person_scores, height: int, width: int,
               score_threshold: float = 0.0, cell: int = 1, return_owner: bool = False):
    """Pastes every actor's per-bin behaviour distribution into an ``[H, W]`` keyframe canvas.

    The rule (nearest-bin resampling, front-most = largest ``y2`` wins, ``p = s q + (1 - s) e_0``,
    grid-cell averaging) is spelled out in the module docstring.

    Args:
      map_probs: ``[N, S, S, A + 1]`` non-negative per-bin distributions (``softmax`` of
        ``map_logits``), bins row-major y then x over the box; each bin is renormalised to sum
        to 1 (a softmax output passes unchanged; an all-zero bin counts as "no behaviour").
      boxes: ``[N, 4]`` normalised xyxy boxes. Boxes with non-finite coordinates, or empty once
        reduced to pixel centres, cover nothing.
      person_scores: ``[N]`` person scores in ``[0, 1]`` (clipped).
      height: ``H`` of the canvas (the label image's).
      width: ``W`` of the canvas.
      score_threshold: actors with a score ``<=`` this take no part (not even as occluders).
      cell: ``1`` for a per-pixel map, ``> 1`` for a grid-cell map (block means, see
        `cell_average`).
      return_owner: also return who is where (a subject-aware map).

    Returns:
      float32 ``[H, W, A + 1]`` probabilities summing to 1 at every pixel; with
      ``return_owner``, also int64 ``[H, W]``: the index of the actor whose distribution the
      pixel holds (rule 4's winner; per pixel even when ``cell > 1``), -1 where nobody is.
    """
    q = np.asarray(map_probs, np.float64)
    if q.ndim != 4 or q.shape[1] != q.shape[2] or q.shape[-1] < 1:
        raise ValueError(f"map_probs must be [N, S, S, A + 1], got shape {q.shape}")
    n, s_bins, _, channels = q.shape
    boxes = np.asarray(boxes, np.float64).reshape(n, 4)
    scores = np.asarray(person_scores, np.float64).reshape(n)
    if height < 1 or width < 1:
        raise ValueError(f"canvas must be at least 1 x 1, got {height} x {width}")
    if cell < 1:
        raise ValueError(f"cell must be a positive int, got {cell}")
    if (q < 0).any():
        raise ValueError("map_probs must be non-negative (pass softmax(map_logits))")
    e0 = np.zeros(channels)
    e0[0] = 1.0
    total = q.sum(axis=-1, keepdims=True)
    q = np.where(total > 0, q / np.where(total > 0, total, 1.0), e0)

    cy, cx = _centres(height), _centres(width)
    owner = np.full((height, width), -1, np.int64)
    bin_y = np.zeros((height, width), np.int64)
    bin_x = np.zeros((height, width), np.int64)
    take = np.flatnonzero(np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
                          & (scores > score_threshold))
    # Painter's algorithm: back to front, so the front-most actor is painted last. Ascending
    # (y2, score, -index): the largest y2, then the higher score, then the lower index wins.
    order = take[np.lexsort((-take, scores[take], boxes[take, 3]))]
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        r0, r1 = np.searchsorted(cy, [y0, y1])  # rows with y0 <= centre < y1
        c0, c1 = np.searchsorted(cx, [x0, x1])
        if r1 <= r0 or c1 <= c0:
            continue
        owner[r0:r1, c0:c1] = i
        bin_y[r0:r1, c0:c1] = _bins(cy[r0:r1], y0, y1, s_bins)[:, None]
        bin_x[r0:r1, c0:c1] = _bins(cx[c0:c1], x0, x1, s_bins)[None, :]

    probs = np.broadcast_to(e0, (height, width, channels)).copy()
    covered = owner >= 0
    who = owner[covered]
    weight = np.clip(scores[who], 0.0, 1.0)[:, None]
    probs[covered] = weight * q[who, bin_y[covered], bin_x[covered]] + (1.0 - weight) * e0
    if cell > 1:
        probs = cell_average(probs, cell)
    return (probs.astype(np.float32), owner) if return_owner else probs.astype(np.float32)


def behaviour_map(probs) -> np.ndarray:
    """Single-channel behaviour map: the argmax over the channels of ``probs`` ``[H, W, A + 1]``
    -> int32 ``[H, W]`` (0 = no behaviour, ``a`` = behaviour ``a``); ties go to the lower channel,
    so an exact tie with "no behaviour" reads as no behaviour."""
    return np.argmax(np.asarray(probs), axis=-1).astype(np.int32)


# ----------------------------------------------------------------------------- metric


class IoUAccumulator:
    """Per-behaviour pixel IoU of single-channel maps, summed over many keyframes.

    Holds a ``[A + 1, A + 1]`` pixel confusion matrix (rows true, columns predicted; int64), so
    IoU of class ``c`` is ``intersection_c / union_c`` with intersection = pixels both call
    ``c`` and union = pixels either calls ``c``, over all keyframes added (not a mean of
    per-image IoUs). Accumulators of different shards combine with `merge`.

    ``map_miou`` is the mean over behaviours ``1..A`` whose union is non-empty; channel 0 (no
    behaviour) is left out of the mean, since it covers most of a keyframe and would dominate
    it, and reported on its own as ``background_iou``.
    """

    def __init__(self, num_behaviours: int, ignore_index: int | None = None):
        """``num_behaviours``: A. ``ignore_index``: a label-image value (e.g. 255) whose pixels
        are left out of both prediction and truth, or None."""
        if num_behaviours < 1:
            raise ValueError(f"num_behaviours must be >= 1, got {num_behaviours}")
        self.num_behaviours = num_behaviours
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_behaviours + 1, num_behaviours + 1), np.int64)

    def add(self, pred_single, true_single) -> None:
        """Adds one keyframe: predicted and true single-channel maps, both int ``[H, W]`` with
        values in ``0..A`` (the truth may also hold ``ignore_index``)."""
        pred = np.asarray(pred_single)
        true = np.asarray(true_single)
        if pred.shape != true.shape:
            raise ValueError(f"predicted map {pred.shape} and true map {true.shape} differ")
        pred, true = pred.reshape(-1).astype(np.int64), true.reshape(-1).astype(np.int64)
        if self.ignore_index is not None:
            keep = true != self.ignore_index
            pred, true = pred[keep], true[keep]
        k = self.num_behaviours + 1
        for name, values in (("predicted", pred), ("true", true)):
            if values.size and (values.min() < 0 or values.max() >= k):
                raise ValueError(f"{name} map has values outside 0..{k - 1}: "
                                 f"[{values.min()}, {values.max()}]")
        self.confusion += np.bincount(true * k + pred, minlength=k * k).reshape(k, k)

    def merge(self, other: IoUAccumulator) -> IoUAccumulator:
        """Adds ``other``'s counts into this accumulator (e.g. another host's); returns self."""
        if other.confusion.shape != self.confusion.shape:
            raise ValueError("accumulators count different numbers of behaviours")
        self.confusion += other.confusion
        return self

    @property
    def intersection(self) -> np.ndarray:
        """``[A + 1]`` pixels both maps give to each channel."""
        return np.diag(self.confusion).copy()

    @property
    def union(self) -> np.ndarray:
        """``[A + 1]`` pixels either map gives to each channel."""
        return self.confusion.sum(axis=0) + self.confusion.sum(axis=1) - np.diag(self.confusion)

    def iou(self) -> np.ndarray:
        """``[A + 1]`` float64 IoU per channel (channel 0 = no behaviour); nan where the union
        is empty (the channel appears in neither map)."""
        inter, union = self.intersection, self.union
        return np.divide(inter, union, out=np.full(len(union), np.nan), where=union > 0)

    def result(self, class_names: Sequence[str]) -> dict:
        """``{"map_miou": float | None, "per_class_map_iou": {name: float | None},
        "background_iou": float | None}`` for the A behaviour ``class_names`` (channel ``a`` is
        ``class_names[a - 1]``). None (JSON null) stands for a class absent from both maps, and
        ``map_miou`` is None when every behaviour is."""
        if len(class_names) != self.num_behaviours:
            raise ValueError(f"{len(class_names)} class names for {self.num_behaviours} "
                             "behaviours")
        iou = self.iou()
        as_json = lambda v: None if np.isnan(v) else float(v)
        behaviours = iou[1:]
        valid = ~np.isnan(behaviours)
        return {
            "map_miou": float(behaviours[valid].mean()) if valid.any() else None,
            "per_class_map_iou": {name: as_json(v) for name, v in zip(class_names, behaviours,
                                                                      strict=True)},
            "background_iou": as_json(iou[0]),
        }


def pixel_shares(single, class_names: Sequence[str]) -> dict[str, float]:
    """Share of all pixels of a single-channel map ``[H, W]`` (values ``0..A``) per behaviour:
    ``{"none": share of 0, class_names[a - 1]: share of a, ...}``; the shares sum to 1 (all
    zeros for an empty map)."""
    single = np.asarray(single).reshape(-1).astype(np.int64)
    k = len(class_names) + 1
    if single.size and (single.min() < 0 or single.max() >= k):
        raise ValueError(f"map has values outside 0..{k - 1}: [{single.min()}, {single.max()}]")
    counts = np.bincount(single, minlength=k)
    shares = counts / max(single.size, 1)
    return {name: float(v) for name, v in zip((NONE, *class_names), shares, strict=True)}


# ----------------------------------------------------------------------------- plot


def behaviour_colours(num_behaviours: int) -> np.ndarray:
    """Fixed RGBA colours ``[A + 1, 4]`` (floats in [0, 1]): row 0 (no behaviour) is fully
    transparent, behaviour ``a`` gets tab10 colour ``a - 1`` (tab20 above 10 behaviours, an
    evenly spaced hsv wheel above 20), the same in every panel and run."""
    from matplotlib import colormaps

    if num_behaviours <= 10:
        colours = colormaps["tab10"](np.arange(num_behaviours))
    elif num_behaviours <= 20:
        colours = colormaps["tab20"](np.arange(num_behaviours))
    else:
        colours = colormaps["hsv"](np.arange(num_behaviours) / num_behaviours)
    return np.concatenate([np.zeros((1, 4)), np.asarray(colours, np.float64)], axis=0)


def plot_behaviour_maps(images, predicted, true, class_names: Sequence[str],
                        path: str | None = None, columns: int = 2, alpha: float = 0.55,
                        titles: Sequence[str] | None = None) -> Figure:
    """Keyframes with the predicted behaviour map overlaid beside the true one.

    Per keyframe two panels, "predicted" then "true", each the keyframe with its map overlaid
    at ``alpha`` in a fixed colour per behaviour (`behaviour_colours`; no behaviour is left
    uncoloured); one legend for the whole figure names the behaviours. A map of another size
    than its keyframe (e.g. a coarser grid) is stretched over it.

    Args:
      images: list of uint8 keyframes ``[H, W, 3]`` (or ``[H, W]`` grey).
      predicted: list of int single-channel maps ``[h, w]`` (values ``0..A``).
      true: list of int label images ``[h, w]`` (values ``0..A``; anything else is not drawn).
      class_names: the A behaviour names (channel ``a`` is ``class_names[a - 1]``).
      path: output .png, or None to only return the figure.
      columns: keyframes (panel pairs) per row.
      alpha: opacity of the overlaid maps.
      titles: optional caption per keyframe (e.g. a clip id), put before "predicted" / "true".
    """
    from matplotlib.patches import Patch

    if not len(images) == len(predicted) == len(true):
        raise ValueError(f"{len(images)} images, {len(predicted)} predicted and {len(true)} true "
                         "maps")
    num = len(class_names)
    colours = behaviour_colours(num)
    n = max(len(images), 1)
    cols = min(max(columns, 1), n)
    rows = -(-n // cols)
    aspect = 1.0
    if len(images):
        h0, w0 = np.asarray(images[0]).shape[:2]
        aspect = min(max(h0 / max(w0, 1), 0.3), 3.0)
    panel = 2.6  # inches per panel's width
    legend_cols = min(num, 6)
    legend_h = 0.3 + 0.22 * -(-num // max(legend_cols, 1))  # inches
    fig = Figure(figsize=(panel * 2 * cols, (panel * aspect + 0.3) * rows + legend_h))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (image, maps) in enumerate(zip(images, zip(predicted, true, strict=True),
                                          strict=True)):
        image = np.asarray(image)
        h, w = image.shape[:2]
        caption = f"{titles[k]}: " if titles is not None else ""
        for j, (single, label) in enumerate(zip(maps, ("predicted", "true"), strict=True)):
            ax = axes[k // cols, 2 * (k % cols) + j]
            ax.imshow(image, extent=(0, w, h, 0), cmap="gray" if image.ndim == 2 else None,
                      interpolation="nearest")
            single = np.asarray(single).astype(np.int64)
            inside = (single >= 0) & (single <= num)
            rgba = colours[np.where(inside, single, 0)]
            rgba[..., 3] *= alpha
            ax.imshow(rgba, extent=(0, w, h, 0), interpolation="nearest")
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_title(caption + label, fontsize=8, pad=2)
    handles = [Patch(facecolor=colours[a], edgecolor="none", label=name)
               for a, name in enumerate(class_names, start=1)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=8,
                   frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
