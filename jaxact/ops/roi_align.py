"""RoIAlign (Detectron2 / torchvision semantics) in pure JAX.

Each of the ``S x S`` output bins of a box averages ``sampling_ratio x sampling_ratio``
bilinearly interpolated samples placed at the centres of a regular sub-grid of the bin.
Sampling follows the Detectron2 kernel exactly:

* ``aligned=True`` shifts box coordinates by -0.5 so that pixel ``i`` has its centre at
  ``i + 0.5`` in box coordinates (the half-pixel convention); ``aligned=False`` keeps the
  legacy behaviour, including forcing boxes to be at least 1 x 1.
* A sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` contributes 0 (but still
  counts in the average). Otherwise negative coordinates clamp to 0 and coordinates at
  or past the last pixel clamp to ``H - 1`` / ``W - 1``.

Only a static, positive ``sampling_ratio`` is supported: the adaptive mode of
torchvision (``sampling_ratio <= 0``, ``ceil(bin_size)`` samples per box) needs
data-dependent shapes.

The implementation gathers feature rows and columns separately: bilinear weights and the
validity test factorise over ``y`` and ``x``, so the ``y`` interpolation (and the mean
over ``y`` samples) is done on whole rows before the ``x`` gather. Everything is
vectorised over boxes, jittable and differentiable with respect to the features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _axis_weights(coords: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Interpolation taps along one axis.

    Args:
      coords: ``[...]`` sample coordinates in pixel units (pixel centres at integers).
      size: length of the feature axis.

    Returns:
      ``(index [..., 2], weight [..., 2])``: low/high neighbour indices and their weights,
      with weight 0 for samples outside ``[-1, size]``.
    """
    valid = (coords >= -1.0) & (coords <= size)
    c = jnp.maximum(coords, 0.0)
    low = jnp.floor(c).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    c = jnp.where(at_edge, low.astype(c.dtype), c)
    frac = c - low
    weight = jnp.stack([1.0 - frac, frac], axis=-1) * valid[..., None]
    return jnp.stack([low, high], axis=-1), weight


def _sample_coords(start, length, output_size: int, sampling_ratio: int):
    """Sample positions ``[N, S, sampling_ratio]`` for boxes spanning ``[start, start+length]``."""
    bin_size = length / output_size
    bins = jnp.arange(output_size, dtype=start.dtype)
    sub = (jnp.arange(sampling_ratio, dtype=start.dtype) + 0.5) / sampling_ratio
    offsets = bins[:, None] + sub[None, :]
    return start[:, None, None] + offsets[None] * bin_size[:, None, None]


def roi_align(
    features: jax.Array,
    boxes: jax.Array,
    output_size: int,
    sampling_ratio: int = 2,
    aligned: bool = True,
    spatial_scale: float = 1.0,
    normalized: bool = False,
) -> jax.Array:
    """RoIAlign of boxes on one feature map.

    Args:
      features: ``[H, W, C]`` feature map.
      boxes: ``[N, 4]`` xyxy boxes. In input-pixel units (multiplied by ``spatial_scale``
        to get feature-map pixels) or, with ``normalized=True``, in ``[0, 1]`` units of
        the feature map (multiplied by ``W``/``H``, then by ``spatial_scale``).
      output_size: static ``S``; each box is pooled to ``S x S`` bins.
      sampling_ratio: static positive number of samples per bin along each axis.
      aligned: use the half-pixel offset (Detectron2 ``aligned=True``).
      spatial_scale: scale from box units to feature-map pixels.
      normalized: whether ``boxes`` are normalised to the feature map size.

    Returns:
      ``[N, S, S, C]`` pooled features, in the dtype of ``features``.
    """
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be a positive int, got {sampling_ratio}")
    if output_size <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    height, width, _ = features.shape
    dtype = jnp.result_type(features.dtype, jnp.float32)
    boxes = boxes.astype(dtype)
    if normalized:
        boxes = boxes * jnp.array([width, height, width, height], dtype)
    offset = 0.5 if aligned else 0.0
    boxes = boxes * spatial_scale - offset
    x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)
    box_w, box_h = x1 - x0, y1 - y0
    if not aligned:
        # Legacy mode: malformed / tiny boxes are forced to 1 x 1 pixels.
        box_w, box_h = jnp.maximum(box_w, 1.0), jnp.maximum(box_h, 1.0)

    ys = _sample_coords(y0, box_h, output_size, sampling_ratio)  # [N, S, r]
    xs = _sample_coords(x0, box_w, output_size, sampling_ratio)  # [N, S, r]
    y_idx, y_w = _axis_weights(ys, height)  # [N, S, r, 2]
    x_idx, x_w = _axis_weights(xs, width)
    # Fold the 1 / r^2 averaging into the weights.
    y_w = (y_w / sampling_ratio).astype(dtype)
    x_w = (x_w / sampling_ratio).astype(dtype)

    # y pass: [N, S, r, 2, W, C] row gathers, reduced over (r, 2) -> [N, S, W, C]. Gathers
    # stay in the feature dtype (e.g. bf16); the einsum accumulates in ``dtype``.
    rows = jnp.einsum("nsrk,nsrkwc->nswc", y_w, features[y_idx], preferred_element_type=dtype)
    # x pass: gather columns of each box's rows -> [N, S_y, S_x, r, 2, C].
    n = boxes.shape[0]
    cols = rows[
        jnp.arange(n)[:, None, None, None, None],
        jnp.arange(output_size)[None, :, None, None, None],
        x_idx[:, None],
    ]
    out = jnp.einsum("nxrk,nyxrkc->nyxc", x_w, cols, preferred_element_type=dtype)
    return out.astype(features.dtype)


def roi_align_video(
    features: jax.Array,
    boxes: jax.Array,
    output_size: int,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> jax.Array:
    """RoIAlign of the same boxes on every frame of a batch of clips.

    Args:
      features: ``[B, T, H, W, C]`` per-frame feature maps.
      boxes: ``[B, N, 4]`` normalised xyxy boxes (``[0, 1]`` of the frame).
      output_size: static ``S``.
      sampling_ratio: static positive samples per bin along each axis.
      aligned: half-pixel offset (see ``roi_align``).

    Returns:
      ``[B, N, T, S, S, C]``.
    """
    b, t, h, w, c = features.shape
    # Frames share the sampling grid, so fold time into channels: one gather per box.
    folded = jnp.transpose(features, (0, 2, 3, 1, 4)).reshape(b, h, w, t * c)
    pool = lambda f, bx: roi_align(
        f, bx, output_size, sampling_ratio, aligned=aligned, normalized=True
    )
    out = jax.vmap(pool)(folded, boxes)  # [B, N, S, S, T * C]
    n = boxes.shape[1]
    out = out.reshape(b, n, output_size, output_size, t, c)
    return jnp.transpose(out, (0, 1, 4, 2, 3, 5))
