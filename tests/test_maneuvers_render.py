"""Tests for the synthetic manoeuvre renderer (jaxact.data.maneuvers)."""


import numpy as np
import pytest

from jaxact.data import maneuvers as m
from jaxact.data import pipeline

RES = 64
NO_JITTER = m.ManeuverConfig(jitter_px=0.0)
SEEDS = range(6)


def _centres(boxes):
    """[T, 4] normalized boxes -> [T, 2] centres in pixels."""
    return np.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], -1) * RES / 2


def _label(name):
    return m.MANEUVERS.index(name)


def test_determinism():
    a, b = m.render_clip(11, 3), m.render_clip(11, 3)
    assert a["video"].tobytes() == b["video"].tobytes()
    assert a["boxes"].tobytes() == b["boxes"].tobytes()
    assert (a["onset"], a["length"], a["label"]) == (b["onset"], b["length"], b["label"])
    c = m.render_clip(12, 3)
    assert c["video"].shape != a["video"].shape or not np.array_equal(c["video"], a["video"])


@pytest.mark.parametrize("label", range(len(m.MANEUVERS)))
def test_shapes_and_ranges(label):
    cfg = m.ManeuverConfig()
    for seed in SEEDS:
        clip = m.render_clip(seed, label)
        t_len = clip["length"]
        assert cfg.min_frames <= t_len <= cfg.max_frames
        assert clip["video"].dtype == np.uint8 and clip["video"].shape == (t_len, RES, RES, 3)
        boxes = clip["boxes"]
        assert boxes.dtype == np.float32 and boxes.shape == (t_len, 4)
        assert boxes.min() >= 0.0 and boxes.max() <= 1.0
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert clip["label"] == label and isinstance(clip["onset"], int)
        assert 0.28 <= clip["onset"] / t_len <= 0.52


def test_pre_onset_frames_identical_across_labels():
    # All randomness is drawn label-independently, so nothing before the onset reveals the label.
    clips = [m.render_clip(7, label) for label in range(len(m.MANEUVERS))]
    onset = clips[0]["onset"]
    for clip in clips[1:]:
        assert clip["onset"] == onset and clip["length"] == clips[0]["length"]
        assert np.array_equal(clip["video"][:onset], clips[0]["video"][:onset])
        assert np.array_equal(clip["boxes"][:onset], clips[0]["boxes"][:onset])
        assert not np.array_equal(clip["boxes"][onset:], clips[0]["boxes"][onset:])


@pytest.mark.parametrize("label", range(len(m.MANEUVERS)))
def test_pre_onset_is_straight_up(label):
    for seed in SEEDS:
        clip = m.render_clip(seed, label, NO_JITTER)
        centre = _centres(clip["boxes"][: clip["onset"]])
        assert np.ptp(centre[:, 0]) < 1e-3
        assert np.all(np.diff(centre[:, 1]) < 0)
        # With the default jitter the centre only wobbles by the jitter amplitude.
        jittered = _centres(m.render_clip(seed, label)["boxes"][: clip["onset"]])
        assert np.abs(jittered[:, 0] - centre[0, 0]).max() <= 1.0 + 1e-3


def _onset_and_end(seed, name):
    clip = m.render_clip(seed, _label(name), NO_JITTER)
    centre = _centres(clip["boxes"])
    boxes = clip["boxes"] * RES
    return clip, centre[clip["onset"] - 1], centre, boxes[-1]


@pytest.mark.parametrize("seed", SEEDS)
def test_post_onset_motion(seed):
    _, start, centre, _ = _onset_and_end(seed, "straight")
    assert abs(centre[-1, 0] - start[0]) < 0.5 and centre[-1, 1] < start[1] - 5

    for name, sign in (("turn_left", -1), ("turn_right", 1)):
        _, start, centre, last = _onset_and_end(seed, name)
        assert sign * (centre[-1, 0] - start[0]) > 6
        assert last[2] - last[0] > last[3] - last[1]  # heading turned by 90 degrees

    for name, sign in (("lane_change_left", -1), ("lane_change_right", 1)):
        _, start, centre, last = _onset_and_end(seed, name)
        shift = sign * (centre[-1, 0] - start[0])
        assert 6.0 <= shift <= 7.7  # exactly one lane (lane widths are 6.4-7.6 px at 64 px)
        assert last[3] - last[1] > last[2] - last[0]  # heading kept

    _, start, centre, _ = _onset_and_end(seed, "u_turn")
    assert centre[-1, 0] < start[0] - 4
    assert centre[-1, 1] > centre[-2, 1]  # driving downward at the end


@pytest.mark.parametrize("seed", SEEDS)
def test_manoeuvre_departs_quickly(seed):
    straight = _centres(m.render_clip(seed, 0, NO_JITTER)["boxes"])
    for label in range(1, len(m.MANEUVERS)):
        clip = m.render_clip(seed, label, NO_JITTER)
        t = min(clip["onset"] + 10, clip["length"] - 1)
        assert np.hypot(*(_centres(clip["boxes"])[t] - straight[t])) >= 6.0


def test_flip_permutation():
    perm = m.FLIP_PERMUTATION
    assert perm.shape == (6,) and np.array_equal(perm[perm], np.arange(6))
    swap = {"left": "right", "right": "left"}
    for i, name in enumerate(m.MANEUVERS):
        mirrored = "_".join(swap.get(part, part) for part in name.split("_"))
        assert m.MANEUVERS[perm[i]] == mirrored


def test_flipped_turn_looks_like_opposite_turn():
    clip = m.render_clip(3, _label("turn_left"), NO_JITTER)
    centre = _centres(pipeline.flip_boxes(clip["boxes"]))  # the training flip's boxes
    assert centre[-1, 0] > centre[clip["onset"] - 1, 0] + 6  # now heading to the image right
    mirrored = clip["video"][:, :, ::-1]
    assert mirrored.shape == clip["video"].shape


def test_invalid_label():
    with pytest.raises(ValueError):
        m.render_clip(0, len(m.MANEUVERS))


def test_other_resolution():
    clip = m.render_clip(1, _label("turn_right"), m.ManeuverConfig(resolution=96))
    assert clip["video"].shape[1:] == (96, 96, 3)
    assert np.all(clip["boxes"][:, 2] > clip["boxes"][:, 0])
