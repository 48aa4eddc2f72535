"""Tests for jaxact.ops.boxes against hand-computed values and invariants."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxact.ops import boxes as B


def _random_boxes(rng, n):
    xy = rng.uniform(0, 0.8, size=(n, 2))
    wh = rng.uniform(0.01, 0.5, size=(n, 2))
    return jnp.asarray(np.concatenate([xy, xy + wh], axis=-1), jnp.float32)


def test_format_conversions():
    xyxy = jnp.array([[0.1, 0.2, 0.5, 0.8]])
    # cx = (0.1 + 0.5) / 2, cy = (0.2 + 0.8) / 2, w = 0.4, h = 0.6
    np.testing.assert_allclose(B.xyxy_to_cxcywh(xyxy), [[0.3, 0.5, 0.4, 0.6]], rtol=1e-6)
    np.testing.assert_allclose(
        B.cxcywh_to_xyxy(jnp.array([0.3, 0.5, 0.4, 0.6])), [0.1, 0.2, 0.5, 0.8], rtol=1e-6
    )
    boxes = _random_boxes(np.random.default_rng(0), 10).reshape(2, 5, 4)
    np.testing.assert_allclose(B.cxcywh_to_xyxy(B.xyxy_to_cxcywh(boxes)), boxes, atol=1e-6)


def test_area_and_clip():
    boxes = jnp.array([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 4.0], [2.0, 2.0, 1.0, 3.0]])
    # 2 * 3 = 6; zero width -> 0; inverted x -> treated as empty.
    np.testing.assert_allclose(B.box_area(boxes), [6.0, 0.0, 0.0])
    np.testing.assert_allclose(
        B.clip_boxes(jnp.array([-0.2, 0.3, 1.4, 0.9])), [0.0, 0.3, 1.0, 0.9], rtol=1e-6
    )
    np.testing.assert_allclose(
        B.clip_boxes(jnp.array([-3.0, 5.0, 12.0, 7.0]), 0, 10), [0.0, 5.0, 10.0, 7.0]
    )


def test_pairwise_iou_giou_hand_computed():
    a = jnp.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = jnp.array([[1.0, 1.0, 3.0, 3.0], [3.0, 0.0, 4.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    iou, union = B.pairwise_iou(a, b)
    giou = B.pairwise_giou(a, b)
    chex.assert_shape([iou, union, giou], (2, 3))
    # a0 vs b0: inter 1x1 = 1, union 4 + 4 - 1 = 7, enclosing [0,0,3,3] = 9.
    # a0 vs b1: disjoint, union 4 + 1 = 5, enclosing [0,0,4,2] = 8.
    # a0 vs b2: identical, union 4, enclosing 4.
    # a1 vs b0: touching at a corner, inter 0, union 1 + 4 = 5, enclosing [0,0,3,3] = 9.
    # a1 vs b1: disjoint, union 2, enclosing [0,0,4,1] = 4.
    # a1 vs b2: a1 inside b2, inter 1, union 4, enclosing 4.
    expected_union = [[7, 5, 4], [5, 2, 4]]
    expected_iou = [[1 / 7, 0, 1], [0, 0, 1 / 4]]
    expected_giou = [
        [1 / 7 - (9 - 7) / 9, 0 - (8 - 5) / 8, 1.0],
        [0 - (9 - 5) / 9, 0 - (4 - 2) / 4, 1 / 4],
    ]
    np.testing.assert_allclose(union, expected_union, rtol=1e-6)
    np.testing.assert_allclose(iou, expected_iou, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(giou, expected_giou, rtol=1e-5, atol=1e-7)


def test_elementwise_matches_pairwise_diagonal_and_broadcasts():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 6), _random_boxes(rng, 6)
    iou, _ = B.pairwise_iou(a, b)
    np.testing.assert_allclose(B.elementwise_iou(a, b), jnp.diag(iou), rtol=1e-6)
    np.testing.assert_allclose(B.elementwise_giou(a, b), jnp.diag(B.pairwise_giou(a, b)), rtol=1e-6)
    # Leading dims broadcast: [2, 1, 4] with [3, 4] -> [2, 3].
    chex.assert_shape(B.elementwise_giou(a[:2, None], b[:3]), (2, 3))
    # Batched pairwise: [2, 3, 4] x [2, 5, 4] -> [2, 3, 5].
    chex.assert_shape(
        B.pairwise_giou(
            _random_boxes(rng, 6).reshape(2, 3, 4), _random_boxes(rng, 10).reshape(2, 5, 4)
        ),
        (2, 3, 5),
    )


def test_invariants_on_random_boxes():
    rng = np.random.default_rng(2)
    a, b = _random_boxes(rng, 40), _random_boxes(rng, 30)
    iou, _ = B.pairwise_iou(a, b)
    giou = B.pairwise_giou(a, b)
    # Symmetry.
    np.testing.assert_allclose(iou, B.pairwise_iou(b, a)[0].T, rtol=1e-6)
    np.testing.assert_allclose(giou, B.pairwise_giou(b, a).T, rtol=1e-6)
    # Ranges and ordering: GIoU <= IoU, IoU in [0, 1], GIoU in [-1, 1].
    assert jnp.all((iou >= 0) & (iou <= 1))
    assert jnp.all((giou >= -1) & (giou <= 1))
    assert jnp.all(giou <= iou + 1e-6)
    # Self-IoU is 1.
    np.testing.assert_allclose(jnp.diag(B.pairwise_iou(a, a)[0]), 1.0, rtol=1e-5)


def test_giou_equals_iou_when_contained():
    rng = np.random.default_rng(3)
    outer = _random_boxes(rng, 20)
    # Shrink each box towards its centre by a random factor: inner lies inside outer.
    cxcywh = B.xyxy_to_cxcywh(outer)
    inner = B.cxcywh_to_xyxy(
        cxcywh
        * jnp.asarray(
            np.concatenate([np.ones((20, 2)), rng.uniform(0.1, 1.0, (20, 2))], -1), jnp.float32
        )
    )
    np.testing.assert_allclose(
        B.elementwise_giou(outer, inner), B.elementwise_iou(outer, inner), rtol=1e-5
    )
    # IoU of nested boxes = area ratio.
    np.testing.assert_allclose(
        B.elementwise_iou(outer, inner), B.box_area(inner) / B.box_area(outer), rtol=1e-4
    )


def test_far_apart_giou_tends_to_minus_one():
    a = jnp.array([0.0, 0.0, 1e-3, 1e-3])
    b = jnp.array([0.999, 0.999, 1.0, 1.0])
    # union 2e-6, enclosing 1: GIoU = 0 - (1 - 2e-6) / 1.
    np.testing.assert_allclose(B.elementwise_giou(a, b), -1 + 2e-6, rtol=1e-5)


def test_degenerate_boxes_have_no_nans():
    point = jnp.array([[0.5, 0.5, 0.5, 0.5]])
    line = jnp.array([[0.2, 0.3, 0.2, 0.9]])
    box = jnp.array([[0.0, 0.0, 1.0, 1.0]])
    for a in (point, line):
        for b in (point, line, box):
            iou, union = B.pairwise_iou(a, b)
            giou = B.pairwise_giou(a, b)
            assert jnp.all(jnp.isfinite(iou)) and jnp.all(jnp.isfinite(giou))
            np.testing.assert_allclose(iou, 0.0, atol=1e-7)
    # point vs itself: everything is 0 / (0 + eps) = 0.
    np.testing.assert_allclose(B.pairwise_giou(point, point), 0.0, atol=1e-7)
    # point inside unit box: IoU 0, enclosing == union == 1, so GIoU 0.
    np.testing.assert_allclose(B.pairwise_giou(point, box), 0.0, atol=1e-6)

    # Gradients through degenerate boxes stay finite (jit as a DETR loss would be).
    loss = jax.jit(lambda p: jnp.sum(1 - B.elementwise_giou(p, point[0])))
    grads = jax.grad(loss)(jnp.concatenate([point, line, box]))
    assert jnp.all(jnp.isfinite(grads))
