"""Bounding-box utilities in pure ``jnp``.

Boxes are ``[..., 4]`` arrays, either ``xyxy`` (``x1, y1, x2, y2``) or ``cxcywh``
(centre, width, height). Every function broadcasts over leading dimensions. Boxes with
``x2 < x1`` or ``y2 < y1`` are treated as having zero area, and a small ``eps`` in every
denominator keeps degenerate (zero-area) boxes from producing NaN values or gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Keeps 0 / 0 finite for degenerate boxes while biasing IoU by < 1e-5 (relative) even for
# tiny normalised boxes (1e-2 x 1e-2 has area 1e-4); 1e-7 would bias those by ~1e-3.
DEFAULT_EPS = 1e-9


def cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` (x1, y1, x2, y2)."""
    cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
    """``[..., 4]`` (x1, y1, x2, y2) -> ``[..., 4]`` (cx, cy, w, h)."""
    x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([0.5 * (x1 + x2), 0.5 * (y1 + y2), x2 - x1, y2 - y1], axis=-1)


def box_area(boxes: jax.Array) -> jax.Array:
    """Area of ``[..., 4]`` xyxy boxes -> ``[...]``; inverted boxes have area 0."""
    w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def clip_boxes(boxes: jax.Array, lo: float = 0.0, hi: float = 1.0) -> jax.Array:
    """Clips every coordinate of ``[..., 4]`` boxes into ``[lo, hi]``."""
    return jnp.clip(boxes, lo, hi)


def _overlap_terms(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Intersection, union and enclosing-box area of broadcastable ``[..., 4]`` boxes."""
    lt = jnp.maximum(a[..., :2], b[..., :2])
    rb = jnp.minimum(a[..., 2:], b[..., 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    enc_lt = jnp.minimum(a[..., :2], b[..., :2])
    enc_rb = jnp.maximum(a[..., 2:], b[..., 2:])
    enc_wh = jnp.maximum(enc_rb - enc_lt, 0.0)
    enclosing = enc_wh[..., 0] * enc_wh[..., 1]
    return inter, union, enclosing


def _giou_from_terms(inter, union, enclosing, eps):
    iou = inter / (union + eps)
    return iou - (enclosing - union) / (enclosing + eps)


def elementwise_iou(a: jax.Array, b: jax.Array, eps: float = DEFAULT_EPS) -> jax.Array:
    """IoU of broadcastable xyxy boxes ``a [..., 4]`` and ``b [..., 4]`` -> ``[...]``."""
    inter, union, _ = _overlap_terms(a, b)
    return inter / (union + eps)


def elementwise_giou(a: jax.Array, b: jax.Array, eps: float = DEFAULT_EPS) -> jax.Array:
    """Generalized IoU of broadcastable xyxy boxes ``[..., 4]`` -> ``[...]`` in ``[-1, 1]``."""
    return _giou_from_terms(*_overlap_terms(a, b), eps)


def pairwise_iou(
    a: jax.Array, b: jax.Array, eps: float = DEFAULT_EPS
) -> tuple[jax.Array, jax.Array]:
    """All-pairs IoU of xyxy boxes.

    Args:
      a: ``[..., N, 4]`` boxes.
      b: ``[..., M, 4]`` boxes (leading dims broadcast against ``a``'s).
      eps: added to the union so zero-area pairs give IoU 0 rather than NaN.

    Returns:
      ``(iou, union)``, both ``[..., N, M]``.
    """
    inter, union, _ = _overlap_terms(a[..., :, None, :], b[..., None, :, :])
    return inter / (union + eps), union


def pairwise_giou(a: jax.Array, b: jax.Array, eps: float = DEFAULT_EPS) -> jax.Array:
    """All-pairs generalized IoU of xyxy ``a [..., N, 4]``, ``b [..., M, 4]`` -> ``[..., N, M]``.

    GIoU = IoU - (|C| - |A u B|) / |C| with C the smallest enclosing box; it lies in
    ``[-1, 1]`` and equals IoU whenever one box contains the other.
    """
    return _giou_from_terms(*_overlap_terms(a[..., :, None, :], b[..., None, :, :]), eps)
