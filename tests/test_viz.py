"""The plots and `annotate_frame`: files written, titles, readable labels, pixels drawn."""

import importlib.util
import os

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxact import viz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["sit", "raise_hand", "stand", "write", "turn_to_neighbour"]


def assert_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def crowded(num_people=10, seed=0, size=(96, 128)):
    """A keyframe `[H, W, 3]` with `num_people` overlapping boxes in two rows, confident
    detections on them and multi-hot ground truth."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size + (3,), dtype=np.uint8)
    x0 = np.linspace(0.02, 0.8, num_people)
    y0 = np.where(np.arange(num_people) % 2, 0.35, 0.5)
    boxes = np.stack([x0, y0, x0 + 0.18, y0 + 0.4], 1).clip(0, 1)
    det = {"boxes": boxes + 0.01, "person_scores": rng.uniform(0.6, 1.0, num_people),
           "scores": rng.uniform(0, 1, (num_people, len(NAMES)))}
    labels = np.eye(len(NAMES), dtype=np.int32)[np.arange(num_people) % len(NAMES)]
    labels[:, 0] = 1
    return image, det, {"boxes": boxes, "labels": labels}


def test_confusion_matrix(tmp_path):
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    path = str(tmp_path / "cm.png")
    fig = viz.plot_confusion_matrix(cm, ["a", "b", "c"], path, method="memory classifier",
                                    split="test", accuracy=0.7125)
    assert_png(path)
    title = fig.axes[0].get_title()
    assert "0.713" in title and "memory classifier" in title and "test" in title, title
    # Without an accuracy, the matrix's own: 12 of 16 on the diagonal.
    assert "0.750" in viz.plot_confusion_matrix(cm, ["a", "b", "c"]).axes[0].get_title()


def test_early_prediction(tmp_path):
    curves = {"memory": {"0.2": 0.2, "0.5": 0.55, "1.0": 0.8}, "baseline": {}}
    path = str(tmp_path / "early.png")
    fig = viz.plot_early_prediction(curves, path, num_classes=6, full_clip={"memory": 0.83})
    assert_png(path)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert np.allclose(lines["chance (1/6)"].get_ydata(), 1 / 6)
    assert np.allclose(lines["memory, full clip (0.83)"].get_ydata(), 0.83)
    assert "baseline" not in lines  # no points, no line
    # Without the extras: the curves only.
    bare = viz.plot_early_prediction(curves)
    assert [line.get_label() for line in bare.axes[0].get_lines()] == ["memory"]


def test_detections_plot_labels_readable(tmp_path):
    frames = [crowded(seed=s) for s in range(4)]
    path = str(tmp_path / "det.png")
    fig = viz.plot_detections([f[0] for f in frames], [f[1] for f in frames],
                              [f[2] for f in frames], NAMES, path)
    assert_png(path)
    assert isinstance(fig, Figure)
    fig.canvas.draw()
    for ax in fig.axes:
        texts = ax.texts
        if not texts:
            continue
        # The ground truth is labelled with its action names, multi-hot [M, A].
        assert any(t.get_text().startswith("sit+") for t in texts)
        image = ax.get_images()[0].get_window_extent()
        boxes = [t.get_bbox_patch().get_window_extent() for t in texts]
        for i, a in enumerate(boxes):  # inside the image, off each other (1 px of rounding)
            assert (a.x0 >= image.x0 - 1 and a.x1 <= image.x1 + 1 and a.y0 >= image.y0 - 1
                    and a.y1 <= image.y1 + 1)
            for b in boxes[i + 1:]:
                assert (min(a.x1, b.x1) - max(a.x0, b.x0) <= 1
                        or min(a.y1, b.y1) - max(a.y0, b.y0) <= 1)


def test_detections_plot_ground_truth_label_forms():
    image, det, gt = crowded(num_people=2, size=(200, 300))
    det["person_scores"][:] = 0.1  # nothing predicted: only the true labels
    for labels in (["stand", ["write", 0]], [2, [3, 0]]):
        fig = viz.plot_detections([image], [det], [dict(gt, labels=labels)], NAMES)
        assert sorted(t.get_text() for t in fig.axes[0].texts) == ["stand", "write+sit"]
    unlabelled = viz.plot_detections([image], [det], [{"boxes": gt["boxes"]}], NAMES)
    assert not unlabelled.axes[0].texts


def test_annotate_frame_draws_confident_boxes():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    original = frame.copy()
    det = {"boxes": np.array([[0.25, 0.3, 0.6, 0.9], [0.7, 0.1, 0.9, 0.4]]),
           "person_scores": np.array([0.9, 0.2]),
           "scores": np.array([[0.1, 0.8, 0.3, 0.0, 0.0], [0.9, 0.0, 0.0, 0.0, 0.0]])}
    out = viz.annotate_frame(frame, det, NAMES)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(frame, original)  # a copy: the input is left alone
    changed = np.any(out != frame, axis=-1)
    # The confident box (x 40..96, y 36..108) is drawn; the unconfident one is not.
    assert changed[36:108, 40:96].any()
    assert not changed[14:46, 114:142].any()
    # The outline itself: its left edge is red.
    assert (out[50:100, 40, 0] > 200).all() and (out[50:100, 40, 1] < 60).all()


def test_annotate_frame_nothing_above_threshold():
    frame = np.full((64, 48, 3), 90, np.uint8)
    det = {"boxes": np.array([[0.1, 0.1, 0.9, 0.9]]), "person_scores": np.array([0.5]),
           "scores": np.ones((1, len(NAMES)))}
    out = viz.annotate_frame(frame, det, NAMES, score_threshold=0.5)  # not strictly above
    np.testing.assert_array_equal(out, frame)
    assert out is not frame and out.dtype == np.uint8
    empty = {"boxes": np.zeros((0, 4)), "person_scores": np.zeros(0),
             "scores": np.zeros((0, len(NAMES)))}
    np.testing.assert_array_equal(viz.annotate_frame(frame, empty, NAMES), frame)


def test_annotate_frame_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        viz.annotate_frame(np.zeros((8, 8), np.uint8), {}, NAMES)


def test_save_image(tmp_path):
    image, det, _ = crowded(num_people=3)
    path = str(tmp_path / "frame.png")
    viz.save_image(viz.annotate_frame(image, det, NAMES), path)
    assert_png(path)


def test_maneuvers_grid(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "visualize_datasets", os.path.join(ROOT, "scripts", "visualize_datasets.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = str(tmp_path / "maneuvers_grid.png")
    script.maneuvers_grid(path, per_maneuver=1, seed=0)
    assert_png(path)
