"""Tests for jaxact.ops.roi_align against hand-computed values and a slow numpy reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxact.ops.roi_align import roi_align, roi_align_video


def _ref_bilinear(feat, y, x):
    """Detectron2 bilinear_interpolate for one point, written out directly."""
    h, w = feat.shape[:2]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(feat.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * feat[y0, x0]
        + hy * lx * feat[y0, x1]
        + ly * hx * feat[y1, x0]
        + ly * lx * feat[y1, x1]
    )


def _ref_roi_align(feat, boxes, size, ratio, aligned, scale=1.0):
    """Slow loop implementation of RoIAlign; ``feat`` [H, W, C], ``boxes`` [N, 4] -> [N,S,S,C]."""
    feat = np.asarray(feat, np.float64)
    out = np.zeros((len(boxes), size, size, feat.shape[2]))
    off = 0.5 if aligned else 0.0
    for n, (bx0, by0, bx1, by1) in enumerate(np.asarray(boxes, np.float64)):
        x0, y0 = bx0 * scale - off, by0 * scale - off
        bw, bh = bx1 * scale - off - x0, by1 * scale - off - y0
        if not aligned:
            bw, bh = max(bw, 1.0), max(bh, 1.0)
        for py in range(size):
            for px in range(size):
                acc = np.zeros(feat.shape[2])
                for iy in range(ratio):
                    y = y0 + py * bh / size + (iy + 0.5) * bh / size / ratio
                    for ix in range(ratio):
                        x = x0 + px * bw / size + (ix + 0.5) * bw / size / ratio
                        acc += _ref_bilinear(feat, y, x)
                out[n, py, px] = acc / (ratio * ratio)
    return out


def _ramp(h, w):
    """Two channels: f0 = 2x + 3y + 1 and f1 = -x + 0.5y, x/y = column/row index. [H, W, 2]."""
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([2.0 * x + 3.0 * y + 1.0, -1.0 * x + 0.5 * y], axis=-1).astype(np.float32)


def test_constant_map():
    feat = jnp.full((9, 11, 3), 2.5, jnp.float32)
    boxes = jnp.array([[1.0, 1.0, 8.0, 6.0], [0.5, 0.5, 10.5, 8.5], [3.2, 2.1, 3.9, 2.8]])
    for aligned in (True, False):
        out = roi_align(feat, boxes, output_size=4, sampling_ratio=2, aligned=aligned)
        chex.assert_shape(out, (3, 4, 4, 3))
        np.testing.assert_allclose(out, 2.5, rtol=1e-6)


@pytest.mark.parametrize("aligned", [True, False])
def test_linear_ramp_is_exact_at_bin_centres(aligned):
    feat = _ramp(8, 10)
    box = jnp.array([[2.0, 1.5, 6.0, 5.5]])
    out = np.asarray(
        roi_align(jnp.asarray(feat), box, output_size=2, sampling_ratio=2, aligned=aligned)
    )
    if aligned:
        # x: start 2.0 - 0.5 = 1.5, width 4, two bins of 2 -> centres 2.5, 4.5.
        # y: start 1.5 - 0.5 = 1.0, height 4 -> centres 2.0, 4.0.
        xc, yc = [2.5, 4.5], [2.0, 4.0]
    else:
        # x: start 2.0, width 4 -> centres 3.0, 5.0; y: start 1.5 -> centres 2.5, 4.5.
        xc, yc = [3.0, 5.0], [2.5, 4.5]
    for i, y in enumerate(yc):
        for j, x in enumerate(xc):
            np.testing.assert_allclose(out[0, i, j], [2 * x + 3 * y + 1, -x + 0.5 * y], rtol=1e-6)


def test_normalized_boxes_and_spatial_scale():
    feat = _ramp(8, 10)
    # Normalised box (0.2, 0.25, 0.6, 0.75) on a 10 x 8 map == pixel box (2, 2, 6, 6).
    norm = roi_align(
        jnp.asarray(feat), jnp.array([[0.2, 0.25, 0.6, 0.75]]), 1, sampling_ratio=2, normalized=True
    )
    # Aligned: start 1.5, width 4 -> single bin centre at 3.5 in both axes.
    np.testing.assert_allclose(norm[0, 0, 0], [2 * 3.5 + 3 * 3.5 + 1, -3.5 + 0.5 * 3.5], rtol=1e-6)
    # Image-pixel box at stride 4 gives the same feature-map box.
    scaled = roi_align(
        jnp.asarray(feat),
        jnp.array([[8.0, 8.0, 24.0, 24.0]]),
        1,
        sampling_ratio=2,
        spatial_scale=0.25,
    )
    np.testing.assert_allclose(scaled, norm, rtol=1e-6)


def test_edge_rules_by_hand():
    # One sample per box (S=1, ratio=1, aligned=False): the sample sits at the box centre.
    feat = _ramp(4, 4)[..., :1]  # f = 2x + 3y + 1
    boxes = jnp.array(
        [
            [3.0, 1.0, 4.0, 2.0],  # x = 3.5 in (W-1, W]: clamps to x = 3 -> 2*3 + 3*1.5 + 1
            [4.0, 1.0, 5.0, 2.0],  # x = 4.5 > W: contributes 0
            [-1.0, 1.0, 0.0, 2.0],  # x = -0.5 in [-1, 0): clamps to x = 0 -> 3*1.5 + 1
            [-2.0, 1.0, -1.0, 2.0],  # x = -1.5 < -1: contributes 0
            [1.0, 3.0, 2.0, 5.0],  # y = 4.0 == H: still valid, clamps to y = 3 -> 2*1.5+9+1
            [1.0, 1.0, 1.4, 1.2],  # legacy mode forces 1 x 1: sample (1.5, 1.5) -> 3 + 4.5 + 1
        ]
    )
    out = roi_align(jnp.asarray(feat), boxes, 1, sampling_ratio=1, aligned=False)
    np.testing.assert_allclose(out[:, 0, 0, 0], [11.5, 0.0, 5.5, 0.0, 13.0, 8.5], rtol=1e-6)


@pytest.mark.parametrize(
    "aligned,ratio,scale", [(True, 2, 1.0), (False, 2, 1.0), (True, 1, 0.5), (False, 3, 0.25)]
)
def test_matches_numpy_reference(aligned, ratio, scale):
    rng = np.random.default_rng(ratio + 10 * int(aligned))
    h, w, c = 7, 9, 3
    feat = rng.normal(size=(h, w, c)).astype(np.float32)
    # Boxes in feature pixels, many partly or fully outside the map, some tiny / inverted.
    xy0 = rng.uniform(-4, 11, size=(24, 2))
    wh = rng.uniform(-0.5, 8, size=(24, 2))
    boxes = (np.concatenate([xy0, xy0 + wh], axis=1) / scale).astype(np.float32)
    fn = jax.jit(roi_align, static_argnames=("output_size", "sampling_ratio", "aligned"))
    out = fn(
        jnp.asarray(feat),
        jnp.asarray(boxes),
        output_size=3,
        sampling_ratio=ratio,
        aligned=aligned,
        spatial_scale=scale,
    )
    ref = _ref_roi_align(feat, boxes, 3, ratio, aligned, scale)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_gradient_wrt_features():
    rng = np.random.default_rng(0)
    feat = jnp.asarray(rng.normal(size=(5, 6, 2)).astype(np.float32))
    boxes = jnp.array([[0.5, 0.2, 4.0, 3.5], [-1.0, 2.0, 7.0, 6.0]])
    f = lambda x: roi_align(x, boxes, 2, sampling_ratio=2)
    check_grads(f, (feat,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
    # Every sample of box 0 is in range, so each bin's weights sum to 1: the gradient of the
    # summed output has total mass #bins * #channels = 4 * 2.
    g = jax.grad(lambda x: jnp.sum(f(x)[0]))(feat)
    np.testing.assert_allclose(jnp.sum(g), 8.0, rtol=1e-6)


def test_bfloat16_features_keep_dtype():
    feat = jnp.asarray(_ramp(8, 10)).astype(jnp.bfloat16)
    out = roi_align(feat, jnp.array([[2.0, 1.5, 6.0, 5.5]]), 2)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out[0, 0, 0].astype(np.float32), [12.0, -1.5], rtol=1e-2)


def test_invalid_sampling_ratio():
    with pytest.raises(ValueError):
        roi_align(jnp.zeros((4, 4, 1)), jnp.zeros((1, 4)), 2, sampling_ratio=0)


def test_roi_align_video_matches_per_frame():
    rng = np.random.default_rng(1)
    b, t, h, w, c, n, s = 2, 3, 6, 8, 4, 5, 2
    feat = jnp.asarray(rng.normal(size=(b, t, h, w, c)).astype(np.float32))
    xy0 = rng.uniform(-0.1, 0.8, size=(b, n, 2))
    boxes = jnp.asarray(
        np.concatenate([xy0, xy0 + rng.uniform(0.05, 0.5, (b, n, 2))], -1), jnp.float32
    )
    out = jax.jit(roi_align_video, static_argnums=(2, 3, 4))(feat, boxes, s, 2, True)
    chex.assert_shape(out, (b, n, t, s, s, c))
    for bi in range(b):
        for ti in range(t):
            ref = _ref_roi_align(
                np.asarray(feat[bi, ti]), np.asarray(boxes[bi]) * [w, h, w, h], s, 2, True
            )
            np.testing.assert_allclose(out[bi, :, ti], ref, rtol=1e-5, atol=1e-5)
