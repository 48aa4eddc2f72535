"""Tests for long synthetic classroom lessons (jaxact.data.lessons, scripts/make_lesson.py)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxact.data import classroom, lessons, video_io

SIT, RAISE, STAND, WRITE, TURN = (
    classroom.BEHAVIOURS.index(name)
    for name in ("sit", "raise_hand", "stand", "write", "turn_to_neighbour")
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = lessons.LessonConfig(seconds=3.0, resolution=96)


@pytest.fixture(scope="module")
def lesson():
    return lessons.render_lesson(0, SHORT)


@pytest.fixture(scope="module")
def long_truths():
    # Ground truth alone (no pixels) is cheap enough for minute-long lessons.
    return [lessons.render_lesson(seed, lessons.LessonConfig(), video=False) for seed in range(6)]


def _equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_determinism_and_prefix(lesson):
    _equal(lessons.render_lesson(0, SHORT), lesson)
    other = lessons.render_lesson(1, SHORT)
    assert other["video"].tobytes() != lesson["video"].tobytes()
    # The frame iterator gives the same frames; a shorter lesson is the start of a longer one.
    np.testing.assert_array_equal(np.stack(list(lessons.iter_lesson_frames(0, SHORT))), lesson["video"])
    short = lessons.render_lesson(0, lessons.LessonConfig(seconds=2.0, resolution=96))
    for key in ("video", "boxes", "visible", "actions", "times"):
        np.testing.assert_array_equal(short[key], lesson[key][:16], err_msg=key)
    # Ground truth alone is the same as with the video.
    truth = lessons.render_lesson(0, SHORT, video=False)
    assert "video" not in truth
    _equal(truth, {k: v for k, v in lesson.items() if k != "video"})


def test_shapes(lesson):
    t_len, num = 24, lesson["num_people"]
    assert SHORT.min_people <= num <= SHORT.max_people
    assert lesson["video"].dtype == np.uint8 and lesson["video"].shape == (t_len, 96, 96, 3)
    assert lesson["boxes"].dtype == np.float32 and lesson["boxes"].shape == (t_len, num, 4)
    assert lesson["visible"].dtype == bool and lesson["visible"].shape == (t_len, num)
    assert lesson["actions"].dtype == np.uint8 and lesson["actions"].shape == (t_len, num, 5)
    np.testing.assert_array_equal(lesson["person_ids"], np.arange(num))
    assert lesson["seats"].shape == (num, 2) and lesson["fps"] == 8
    np.testing.assert_allclose(lesson["times"], np.arange(t_len) / 8)


def test_constraints_and_boxes(long_truths):
    for truth in long_truths:
        actions, vis, boxes = truth["actions"], truth["visible"], truth["boxes"]
        np.testing.assert_array_equal(actions[..., SIT] + actions[..., STAND], 1)
        assert not np.any(actions[..., WRITE] & actions[..., STAND])
        assert not np.any(actions[..., WRITE] & (actions[..., RAISE] | actions[..., TURN]))
        assert np.isnan(boxes[~vis]).all() and not np.isnan(boxes[vis]).any()
        assert vis.mean() > 0.9  # occlusion is occasional
        seen = boxes[vis]
        assert seen.min() >= 0 and seen.max() <= 1
        assert np.all(seen[:, 2] > seen[:, 0]) and np.all(seen[:, 3] > seen[:, 1])


def test_seats(long_truths):
    for truth in long_truths:
        seats, boxes = truth["seats"], truth["boxes"]
        assert len({tuple(s) for s in seats.tolist()}) == len(seats)
        assert seats.min() == 1
        bottom = np.nanmedian(boxes[..., 3], axis=0)  # [P] box bottom y
        centre = np.nanmedian(boxes[..., 0] + boxes[..., 2], axis=0)
        rows = np.unique(seats[:, 0])
        np.testing.assert_array_equal(rows, np.arange(1, len(rows) + 1))
        # Row 1 is the front: lowest in the image; column 1 the leftmost.
        row_bottom = [bottom[seats[:, 0] == r].mean() for r in rows]
        assert np.all(np.diff(row_bottom) < 0), row_bottom
        for r in rows:
            in_row = np.flatnonzero(seats[:, 0] == r)
            order = in_row[np.argsort(seats[in_row, 1])]
            np.testing.assert_array_equal(seats[order, 1], np.arange(1, len(in_row) + 1))
            assert np.all(np.diff(centre[order]) > 0)


def test_behaviours_change(long_truths):
    raises = stops = 0
    for truth in long_truths:
        up = truth["actions"][..., RAISE].astype(int)
        raises += (np.diff(up, axis=0) == 1).sum()
        stops += (np.diff(up, axis=0) == -1).sum()
        assert truth["actions"][..., STAND].any() and truth["actions"][..., WRITE].any()
    people = sum(t["num_people"] for t in long_truths)
    assert raises >= people and stops >= people  # over a minute: well over one raise each


def test_rates_match_the_documented_ones():
    cfg = lessons.LessonConfig()
    states = lessons._sample_states(np.random.default_rng(0), cfg, 240 + 960, 500)[240:]
    minutes = 500 * 2.0
    expected = {  # (fraction of time, starts per student-minute), module docstring
        "stand": (0.09, 0.9), "raise": (0.20, 3.3), "write": (0.30, 2.2), "turn": (0.11, 2.6)}
    for i, (name, (frac, per_min)) in enumerate(expected.items()):
        s = states[..., i]
        starts = (s[1:] & ~s[:-1]).sum() / minutes
        assert abs(s.mean() - frac) < 0.25 * frac, (name, s.mean())
        assert abs(starts - per_min) < 0.25 * per_min, (name, starts)
    raise_seconds = states[..., 1].sum() / (states[1:, :, 1] & ~states[:-1, :, 1]).sum() / cfg.fps
    assert 2.0 < raise_seconds < 6.0


def test_mp4_round_trip(tmp_path, lesson):
    out = lessons.write_lesson(0, SHORT, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["ground_truth.json", "lesson.mp4"]  # no temp files
    frames = video_io.read_video(out["video"])
    assert frames.shape == lesson["video"].shape
    assert video_io.frame_rate(out["video"]) == 8
    err = np.abs(frames.astype(np.float32) - lesson["video"]).mean(axis=(1, 2, 3))
    assert err.max() < 10, err  # lossy codec plus the pixel noise it smooths away

    with open(out["ground_truth"]) as f:
        truth = json.load(f)
    assert truth["num_frames"] == len(truth["frames"]) == 24 and truth["fps"] == 8
    assert truth["behaviours"] == list(classroom.BEHAVIOURS)
    assert [p["id"] for p in truth["people"]] == lesson["person_ids"].tolist()
    assert [p["seat"] for p in truth["people"]] == lesson["seats"].tolist()
    for t, frame in enumerate(truth["frames"]):
        assert frame["time"] == pytest.approx(lesson["times"][t])
        ids = [p["id"] for p in frame["people"]]
        assert ids == np.flatnonzero(lesson["visible"][t]).tolist()
        for p in frame["people"]:
            np.testing.assert_allclose(p["box"], lesson["boxes"][t, p["id"]], atol=1e-6)
            names = [classroom.BEHAVIOURS[a] for a in np.flatnonzero(lesson["actions"][t, p["id"]])]
            assert p["behaviours"] == names
            assert p["seat"] == lesson["seats"][p["id"]].tolist()


def test_failed_write_leaves_no_stale_ground_truth(tmp_path, monkeypatch):
    (tmp_path / "ground_truth.json").write_text("{}")  # from an earlier lesson

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(video_io, "write_video", crash)
    with pytest.raises(OSError):
        lessons.write_lesson(0, lessons.LessonConfig(seconds=1.0, resolution=64), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_bad_config():
    with pytest.raises(ValueError):
        lessons.render_lesson(0, lessons.LessonConfig(seconds=0.01))
    with pytest.raises(ValueError):
        lessons.render_lesson(0, lessons.LessonConfig(min_people=5, max_people=4))


@pytest.mark.parametrize("entry", [["scripts/make_lesson.py"], ["-m", "scripts.make_lesson"]])
def test_script(tmp_path, entry):
    out = subprocess.run(
        [sys.executable, *entry, "--seed=2", "--seconds=2", "--resolution=64", f"--out={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    assert "16 frames" in out.stdout and "people" in out.stdout, out.stdout
    assert video_io.read_video(str(tmp_path / "lesson.mp4")).shape == (16, 64, 64, 3)
    with open(tmp_path / "ground_truth.json") as f:
        assert json.load(f)["num_frames"] == 16


def test_training_clip_is_the_lesson_at_its_keyframe():
    config = lessons.LessonConfig(seconds=2.0, resolution=96)
    clip = lessons.render_clip(3, config)
    truth = lessons.render_lesson(3, config)
    reference = classroom.render_clip(3, classroom.ClassroomConfig(resolution=96))
    assert clip.keys() == reference.keys()
    for key in clip:
        assert np.asarray(clip[key]).dtype == np.asarray(reference[key]).dtype, key
    key = clip["keyframe"]
    assert key == 8 and clip["video"].shape == (16, 96, 96, 3)
    np.testing.assert_array_equal(clip["video"], truth["video"])
    seen = np.flatnonzero(truth["visible"][key])
    assert clip["num_people"] == len(seen) and clip["person_ids"].tolist() == list(range(len(seen)))
    np.testing.assert_array_equal(clip["boxes"], truth["boxes"][key, seen])
    np.testing.assert_array_equal(clip["actions"], truth["actions"][key, seen])
    # owner == p covers exactly the box of row p, as in classroom clips.
    for p in range(clip["num_people"]):
        ys, xs = np.nonzero(clip["owner"] == p)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == (clip["boxes"][p] * 96).tolist()
    assert clip["owner"].min() >= -1 and clip["owner"].max() == clip["num_people"] - 1
    track = clip["track_boxes"]
    assert track.shape == (16, len(seen), 4) and not np.isnan(track).any()
    shown = truth["visible"][:, seen]
    np.testing.assert_array_equal(track[shown], truth["boxes"][:, seen][shown])
    _equal(lessons.render_clip(3, config), clip)


def test_lessons_builder_config_renders_lesson_clips():
    from jaxact.data import builders

    preset = builders.Classroom.preset("lessons")
    assert builders.Classroom.frame_shape("lessons") == (128, 128, 3)
    assert builders.Classroom.max_people("lessons") == preset.render.max_people == 12
    assert preset.render.num_frames == 16
    key, example = builders._render_classroom(("train", 5, preset.render))
    clip = lessons.render_clip(builders.example_seed("train", 5), preset.render)
    assert key == "train_000005"
    np.testing.assert_array_equal(example["video"], clip["video"])
    np.testing.assert_array_equal(example["actions"], clip["actions"])
    assert example["owner"].dtype == np.int16 and example["person_ids"].dtype == np.int64


def test_crowded_lessons_builder_config_fills_the_room():
    from jaxact.data import builders

    preset = builders.Classroom.preset("lessons_crowded")
    assert preset.render == dataclasses.replace(builders.Classroom.preset("lessons").render,
                                                min_people=10)
    sizes = {lessons.render_lesson(seed, preset.render, video=False)["num_people"]
             for seed in range(8)}
    assert sizes <= {10, 11, 12} and len(sizes) > 1
