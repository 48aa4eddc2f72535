"""Tests for jaxact.evaluation.behaviour_maps: hand-built canvases, a per-pixel loop reference,
exact IoU numbers and the plot file."""

import os

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxact.evaluation.behaviour_maps import (
    IoUAccumulator,
    behaviour_colours,
    behaviour_map,
    cell_average,
    paste_maps,
    pixel_shares,
    plot_behaviour_maps,
    softmax,
)

NAMES = ["sit", "raise_hand", "stand", "write", "turn_to_neighbour"]


def onehot(c, channels):
    v = np.zeros(channels)
    v[c] = 1.0
    return v


def uniform_map(distribution, s=3):
    """``[1, s, s, C]``: the same distribution in every bin."""
    return np.broadcast_to(np.asarray(distribution, np.float64), (1, s, s, len(distribution)))


def pixel_box(x0, y0, x1, y1, h, w):
    """Normalised xyxy of a box given in pixel-corner coordinates of an ``h x w`` canvas."""
    return np.array([x0 / w, y0 / h, x1 / w, y1 / h])


def reference_paste(q, boxes, scores, h, w, thr=0.0):
    """The rule written pixel by pixel: covering actors by centre, front-most by (y2, score,
    -index), nearest bin by the centre's position in the box, p = s q + (1 - s) e0."""
    n, s, _, c = q.shape
    e0 = onehot(0, c)
    out = np.zeros((h, w, c))
    for i in range(h):
        for j in range(w):
            y, x = (i + 0.5) / h, (j + 0.5) / w
            cover = [k for k in range(n) if scores[k] > thr
                     and boxes[k, 0] <= x < boxes[k, 2] and boxes[k, 1] <= y < boxes[k, 3]]
            if not cover:
                out[i, j] = e0
                continue
            k = max(cover, key=lambda k: (boxes[k, 3], scores[k], -k))
            x0, y0, x1, y1 = boxes[k]
            by = min(int((y - y0) / (y1 - y0) * s), s - 1)
            bx = min(int((x - x0) / (x1 - x0) * s), s - 1)
            out[i, j] = scores[k] * q[k, by, bx] + (1 - scores[k]) * e0
    return out


def random_actors(rng, n=6, s=3, a=5, spread=1.2):
    q = softmax(rng.normal(0, 2, (n, s, s, a + 1)))
    xy0 = rng.uniform(-0.1, 0.8, (n, 2))
    wh = rng.uniform(0.05, 0.5, (n, 2)) * spread
    boxes = np.concatenate([xy0, xy0 + wh], axis=1)
    scores = rng.uniform(0, 1, n)
    return q, boxes, scores


# ----------------------------------------------------------------------------- softmax


def test_softmax_matches_definition_and_is_stable():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (2, 3, 3, 6))
    ref = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    out = softmax(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
    big = softmax(np.array([1000.0, 1000.0, -1000.0]))
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big, [0.5, 0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(softmax(x, axis=0).sum(0), 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------- paste_maps


@pytest.mark.parametrize("cell", [1, 3, 4])
def test_pasted_maps_sum_to_one(cell):
    rng = np.random.default_rng(1)
    q, boxes, scores = random_actors(rng, n=8)
    probs = paste_maps(q, boxes, scores, 22, 30, cell=cell)
    assert probs.shape == (22, 30, 6) and probs.dtype == np.float32
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)


def test_single_actor_covers_exactly_its_box():
    h, w, channels = 10, 12, 4
    q = uniform_map(onehot(2, channels))
    # Pixel-corner box x in [2, 7), y in [3, 8): pixel centres j + 0.5 in it are j = 2..6, i = 3..7.
    probs = paste_maps(q, pixel_box(2, 3, 7, 8, h, w)[None], [1.0], h, w)
    expected = np.zeros((h, w), np.int32)
    expected[3:8, 2:7] = 2
    np.testing.assert_array_equal(behaviour_map(probs), expected)
    np.testing.assert_array_equal(probs[expected == 2], np.tile(onehot(2, channels), (25, 1)))
    np.testing.assert_array_equal(probs[expected == 0], np.tile(onehot(0, channels), (95, 1)))
    # Off the pixel grid: a pixel counts when its centre is inside ([x0, x1) half-open).
    probs = paste_maps(q, pixel_box(2.4, 2.6, 7.6, 8.4, h, w)[None], [1.0], h, w)
    expected = np.zeros((h, w), np.int32)
    expected[3:8, 2:8] = 2  # rows: centre 2.5 < 2.6 and 8.5 >= 8.4 are out; cols 2.5..7.5 in
    np.testing.assert_array_equal(behaviour_map(probs), expected)
    # A box running off the canvas covers only the pixels inside it.
    probs = paste_maps(q, np.array([[-0.5, 0.6, 0.25, 1.7]]), [1.0], h, w)
    expected = np.zeros((h, w), np.int32)
    expected[6:, :3] = 2
    np.testing.assert_array_equal(behaviour_map(probs), expected)


def test_adjacent_boxes_share_no_pixel():
    h, w = 6, 8
    q = np.stack([uniform_map(onehot(1, 3))[0], uniform_map(onehot(2, 3))[0]])
    boxes = np.stack([pixel_box(0, 0, 4, 6, h, w), pixel_box(4, 0, 8, 6, h, w)])
    single = behaviour_map(paste_maps(q, boxes, [1.0, 1.0], h, w))
    np.testing.assert_array_equal(single[:, :4], 1)
    np.testing.assert_array_equal(single[:, 4:], 2)


def test_quadrants_land_in_the_right_quadrants():
    h, w, channels = 12, 16, 5
    q = np.zeros((1, 2, 2, channels))
    q[0, 0, 0, 1] = q[0, 0, 1, 2] = q[0, 1, 0, 3] = q[0, 1, 1, 4] = 1.0  # row-major y then x
    probs = paste_maps(q, pixel_box(4, 2, 12, 10, h, w)[None], [1.0], h, w)
    expected = np.zeros((h, w), np.int32)
    expected[2:6, 4:8] = 1  # top left
    expected[2:6, 8:12] = 2  # top right
    expected[6:10, 4:8] = 3  # bottom left
    expected[6:10, 8:12] = 4  # bottom right
    np.testing.assert_array_equal(behaviour_map(probs), expected)


def test_nearest_bin_resampling_of_a_3x3_map_over_an_uneven_box():
    h, w, s = 7, 5, 3
    q = np.zeros((1, s, s, s * s + 1))
    for by in range(s):
        for bx in range(s):
            q[0, by, bx, 1 + by * s + bx] = 1.0
    single = behaviour_map(paste_maps(q, np.array([[0.0, 0.0, 1.0, 1.0]]), [1.0], h, w))
    # Rows: centres (i + 0.5) / 7 -> bin floor(3 (i + 0.5) / 7) = 0,0,1,1,1,2,2.
    # Cols: centres (j + 0.5) / 5 -> bin floor(3 (j + 0.5) / 5) = 0,0,1,2,2.
    rows, cols = np.array([0, 0, 1, 1, 1, 2, 2]), np.array([0, 0, 1, 2, 2])
    np.testing.assert_array_equal(single, 1 + rows[:, None] * s + cols[None, :])


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_overlap_front_most_wins_regardless_of_order(order):
    h, w, channels = 10, 10, 4
    back = (pixel_box(1, 0, 7, 6, h, w), onehot(1, channels), 0.95)  # higher score, y2 = 0.6
    front = (pixel_box(3, 3, 9, 9, h, w), onehot(2, channels), 0.7)  # y2 = 0.9: front-most
    actors = [(back, front)[k] for k in order]
    boxes = np.stack([a[0] for a in actors])
    q = np.stack([uniform_map(a[1])[0] for a in actors])
    scores = np.array([a[2] for a in actors])
    single = behaviour_map(paste_maps(q, boxes, scores, h, w))
    expected = np.zeros((h, w), np.int32)
    expected[0:6, 1:7] = 1
    expected[3:9, 3:9] = 2  # the overlap [3:6, 3:7] goes to the front actor
    np.testing.assert_array_equal(single, expected)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_overlap_ties_in_y2_go_to_the_higher_score(order):
    h, w, channels = 8, 8, 3
    a = (pixel_box(0, 2, 5, 8, h, w), onehot(1, channels), 0.6)
    b = (pixel_box(3, 4, 8, 8, h, w), onehot(2, channels), 0.9)
    actors = [(a, b)[k] for k in order]
    q = np.stack([uniform_map(x[1])[0] for x in actors])
    probs = paste_maps(q, np.stack([x[0] for x in actors]), [x[2] for x in actors], h, w)
    np.testing.assert_allclose(probs[5, 4], 0.9 * onehot(2, channels) + 0.1 * onehot(0, channels),
                               atol=1e-7)
    np.testing.assert_allclose(probs[5, 1], 0.6 * onehot(1, channels) + 0.4 * onehot(0, channels),
                               atol=1e-7)


def test_score_weighting_and_threshold():
    h, w, channels = 6, 6, 4
    q = np.array([0.1, 0.2, 0.3, 0.4])
    box = pixel_box(1, 1, 5, 5, h, w)
    probs = paste_maps(uniform_map(q), box[None], [0.3], h, w)
    np.testing.assert_allclose(probs[1:5, 1:5], np.broadcast_to(0.3 * q + 0.7 * onehot(0, 4),
                                                                (4, 4, 4)), atol=1e-7)
    np.testing.assert_array_equal(probs[0], np.tile(onehot(0, channels), (w, 1)))
    # At or below the threshold an actor takes no part, not even as an occluder.
    front = pixel_box(0, 0, 6, 6, h, w)  # y2 = 1: would hide the first actor
    q2 = np.concatenate([uniform_map(q), uniform_map(onehot(3, 4))])
    probs = paste_maps(q2, np.stack([box, front]), [0.3, 0.25], h, w, score_threshold=0.25)
    np.testing.assert_allclose(probs[2, 2], 0.3 * q + 0.7 * onehot(0, 4), atol=1e-7)
    np.testing.assert_array_equal(probs[0, 0], onehot(0, channels))
    # Scores are clipped to [0, 1]; unnormalised bins are renormalised.
    probs = paste_maps(uniform_map(2 * q), box[None], [1.5], h, w)
    np.testing.assert_allclose(probs[2, 2], q, atol=1e-7)


def test_no_actors_and_degenerate_boxes_give_background():
    h, w = 4, 5
    probs = paste_maps(np.zeros((0, 2, 2, 3)), np.zeros((0, 4)), np.zeros(0), h, w)
    np.testing.assert_array_equal(probs, np.broadcast_to(onehot(0, 3), (h, w, 3)))
    boxes = np.array([[0.5, 0.5, 0.5, 0.9], [0.6, 0.2, 0.2, 0.8], [np.nan, 0, 1, 1]])
    q = np.broadcast_to(onehot(1, 3), (3, 2, 2, 3))
    probs = paste_maps(q, boxes, [1.0, 1.0, 1.0], h, w)
    np.testing.assert_array_equal(behaviour_map(probs), 0)


def test_matches_per_pixel_reference():
    rng = np.random.default_rng(2)
    for seed in range(4):
        q, boxes, scores = random_actors(np.random.default_rng(seed), n=7, s=4)
        boxes[1, 3] = boxes[2, 3]  # a tie in y2
        h, w = int(rng.integers(5, 20)), int(rng.integers(5, 20))
        probs = paste_maps(q, boxes, scores, h, w, score_threshold=0.2)
        ref = reference_paste(np.asarray(q, np.float64), boxes, scores, h, w, thr=0.2)
        np.testing.assert_allclose(probs, ref, atol=1e-6)


# ----------------------------------------------------------------------------- grid cells


@pytest.mark.parametrize("shape,cell", [((12, 16), 4), ((10, 13), 4), ((9, 7), 3), ((5, 5), 8)])
def test_cell_averaging_equals_block_means(shape, cell):
    h, w = shape
    q, boxes, scores = random_actors(np.random.default_rng(3), n=6)
    pixel = paste_maps(q, boxes, scores, h, w)
    grid = paste_maps(q, boxes, scores, h, w, cell=cell)
    assert grid.shape == pixel.shape
    ref = np.empty_like(pixel)
    for y in range(0, h, cell):
        for x in range(0, w, cell):
            block = pixel[y:y + cell, x:x + cell]
            ref[y:y + cell, x:x + cell] = block.reshape(-1, block.shape[-1]).mean(0)
    np.testing.assert_allclose(grid, ref, atol=1e-6)
    np.testing.assert_allclose(cell_average(pixel, cell), ref, atol=1e-6)
    np.testing.assert_allclose(grid.sum(-1), 1.0, atol=1e-6)


def test_cell_average_hand_built():
    probs = np.zeros((2, 3, 2))
    probs[..., 0] = [[1, 0, 1], [1, 1, 0]]
    probs[..., 1] = 1 - probs[..., 0]
    out = cell_average(probs, 2)
    np.testing.assert_allclose(out[..., 1], [[0.25, 0.25, 0.5], [0.25, 0.25, 0.5]])
    with pytest.raises(ValueError):
        cell_average(probs, 0)


# ----------------------------------------------------------------------------- IoU


def test_behaviour_map_argmax_ties_to_lower_channel():
    probs = np.array([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]])
    out = behaviour_map(probs)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[0, 2]])


def test_iou_accumulator_exact_numbers():
    names = ["a", "b", "c"]
    acc = IoUAccumulator(3)
    acc.add([[0, 1, 1, 2], [0, 0, 2, 2]], [[0, 1, 2, 2], [1, 0, 2, 0]])
    # a: pred {(0,1),(0,2)}, true {(0,1),(1,0)} -> 1 / 3. b: 2 / 4. c: absent. none: 2 / 4.
    np.testing.assert_array_equal(acc.intersection, [2, 1, 2, 0])
    np.testing.assert_array_equal(acc.union, [4, 3, 4, 0])
    r = acc.result(names)
    assert r["per_class_map_iou"]["a"] == pytest.approx(1 / 3)
    assert r["per_class_map_iou"]["b"] == pytest.approx(0.5)
    assert r["per_class_map_iou"]["c"] is None
    assert r["map_miou"] == pytest.approx(5 / 12)
    assert r["background_iou"] == pytest.approx(0.5)
    # Counts are summed over keyframes (not a mean of per-keyframe IoUs).
    acc.add([[3, 3]], [[3, 0]])  # c: 1 / 2; none: +0 / +1
    r = acc.result(names)
    assert r["per_class_map_iou"]["c"] == pytest.approx(0.5)
    assert r["map_miou"] == pytest.approx((1 / 3 + 0.5 + 0.5) / 3)
    assert r["background_iou"] == pytest.approx(2 / 5)
    assert set(r) == {"map_miou", "per_class_map_iou", "background_iou"}


def test_iou_accumulator_absent_classes_and_merge():
    acc = IoUAccumulator(2)
    acc.add(np.zeros((3, 3), int), np.zeros((3, 3), int))
    r = acc.result(["x", "y"])
    assert r == {"map_miou": None, "per_class_map_iou": {"x": None, "y": None},
                 "background_iou": 1.0}
    empty = IoUAccumulator(2).result(["x", "y"])
    assert empty["map_miou"] is None and empty["background_iou"] is None
    other = IoUAccumulator(2)
    other.add([[1, 2]], [[1, 1]])
    acc.merge(other)
    r = acc.result(["x", "y"])
    assert r["per_class_map_iou"] == {"x": 0.5, "y": 0.0}
    assert r["map_miou"] == pytest.approx(0.25)


def test_iou_accumulator_ignore_index_and_bad_input():
    acc = IoUAccumulator(2, ignore_index=255)
    acc.add([[1, 2, 0]], [[1, 255, 0]])
    assert acc.result(["x", "y"]) == {"map_miou": 1.0, "per_class_map_iou": {"x": 1.0, "y": None},
                                      "background_iou": 1.0}
    with pytest.raises(ValueError):
        IoUAccumulator(2).add([[3]], [[0]])
    with pytest.raises(ValueError):
        IoUAccumulator(2).add([[0, 1]], [[0]])
    with pytest.raises(ValueError):
        IoUAccumulator(2).result(["x"])


def test_end_to_end_perfect_prediction_scores_one():
    h, w = 12, 16
    logits = np.full((2, 2, 2, 4), -20.0)
    logits[0, ..., 1] = 20.0
    logits[1, ..., 3] = 20.0
    boxes = np.stack([pixel_box(0, 0, 8, 8, h, w), pixel_box(8, 4, 16, 12, h, w)])
    single = behaviour_map(paste_maps(softmax(logits), boxes, [0.99, 0.9], h, w))
    label = np.zeros((h, w), np.int32)
    label[0:8, 0:8] = 1
    label[4:12, 8:16] = 3
    acc = IoUAccumulator(3)
    acc.add(single, label)
    assert acc.result(["a", "b", "c"]) == {
        "map_miou": 1.0, "per_class_map_iou": {"a": 1.0, "b": None, "c": 1.0},
        "background_iou": 1.0}


# ----------------------------------------------------------------------------- shares, plot


def test_pixel_shares():
    single = np.array([[0, 1, 1, 5], [0, 0, 3, 1]])
    shares = pixel_shares(single, NAMES)
    assert list(shares) == ["none", *NAMES]
    assert shares == {"none": 3 / 8, "sit": 3 / 8, "raise_hand": 0.0, "stand": 1 / 8,
                      "write": 0.0, "turn_to_neighbour": 1 / 8}
    assert sum(shares.values()) == pytest.approx(1.0)
    rng = np.random.default_rng(4)
    assert sum(pixel_shares(rng.integers(0, 6, (17, 23)), NAMES).values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        pixel_shares([[6]], NAMES)


def test_behaviour_colours():
    for a in (3, 12, 25):
        colours = behaviour_colours(a)
        assert colours.shape == (a + 1, 4)
        assert colours[0, 3] == 0 and (colours[1:, 3] > 0).all()
        assert len({tuple(c) for c in colours[1:]}) == a  # distinct


def test_plot_writes_png(tmp_path):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    true = [rng.integers(0, 6, (48, 64)) for _ in range(3)]
    predicted = [rng.integers(0, 6, (48, 64)), rng.integers(0, 6, (12, 16)),  # coarser grid
                 np.zeros((48, 64), int)]
    path = str(tmp_path / "behaviour_maps.png")
    fig = plot_behaviour_maps(images, predicted, true, NAMES, path, columns=2,
                              titles=["clip a", "clip b", "clip c"])
    assert isinstance(fig, Figure)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 1000
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["clip a: predicted", "clip a: true", "clip b: predicted", "clip b: true",
                      "clip c: predicted", "clip c: true"]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == NAMES
    width, height = fig.get_size_inches()
    assert 4 < width < 16 and 2 < height < 16
    assert plot_behaviour_maps(images[:1], predicted[:1], true[:1], NAMES).get_size_inches()[0] < 8
    with pytest.raises(ValueError):
        plot_behaviour_maps(images, predicted[:2], true, NAMES)
