"""Tests for the synthetic classroom renderer (jaxact.data.classroom)."""


import numpy as np
import pytest

from jaxact.data import classroom as c

SIT, RAISE, STAND, WRITE, TURN = (
    c.BEHAVIOURS.index(name) for name in ("sit", "raise_hand", "stand", "write", "turn_to_neighbour")
)


@pytest.fixture(scope="module")
def clips():
    return [c.render_clip(seed) for seed in range(50)]


def test_determinism():
    a, b = c.render_clip(5), c.render_clip(5)
    for key in ("video", "boxes", "track_boxes", "actions", "person_ids", "owner"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert a["num_people"] == b["num_people"]
    other = c.render_clip(6)
    assert other["video"].tobytes() != a["video"].tobytes()


def test_shapes_and_dtypes(clips):
    cfg = c.ClassroomConfig()
    t_len, res = cfg.num_frames, cfg.resolution
    for clip in clips:
        num = clip["num_people"]
        assert cfg.min_people <= num <= cfg.max_people
        assert clip["video"].dtype == np.uint8 and clip["video"].shape == (t_len, res, res, 3)
        assert clip["keyframe"] == t_len // 2
        assert clip["person_ids"].dtype == np.int32 and clip["person_ids"].shape == (num,)
        assert len(np.unique(clip["person_ids"])) == num
        assert clip["boxes"].dtype == np.float32 and clip["boxes"].shape == (num, 4)
        assert clip["track_boxes"].dtype == np.float32
        assert clip["track_boxes"].shape == (t_len, num, 4)
        np.testing.assert_array_equal(clip["boxes"], clip["track_boxes"][clip["keyframe"]])
        assert clip["actions"].dtype == np.uint8 and clip["actions"].shape == (num, 5)
        assert clip["owner"].dtype == np.int16 and clip["owner"].shape == (res, res)


def test_boxes_well_formed(clips):
    for clip in clips:
        boxes = clip["track_boxes"]
        assert boxes.min() >= 0.0 and boxes.max() <= 1.0
        assert np.all(boxes[..., 2] > boxes[..., 0]) and np.all(boxes[..., 3] > boxes[..., 1])
        # People are at least a few pixels in size at the keyframe.
        size = (clip["boxes"][:, 2:] - clip["boxes"][:, :2]) * 128
        assert size.min() >= 4


def test_label_constraints(clips):
    for clip in clips:
        actions = clip["actions"]
        assert set(np.unique(actions)) <= {0, 1}
        np.testing.assert_array_equal(actions[:, SIT] + actions[:, STAND], 1)
        assert np.all(actions[:, SIT][actions[:, WRITE] == 1] == 1)


def test_every_behaviour_is_common(clips):
    actions = np.concatenate([clip["actions"] for clip in clips])
    freq = actions.mean(axis=0)
    assert np.all(freq >= 0.15), dict(zip(c.BEHAVIOURS, freq, strict=True))
    # Multi-label combinations occur.
    assert np.any(actions[:, SIT] & actions[:, RAISE])
    assert np.any(actions[:, STAND] & actions[:, RAISE])
    assert np.any(actions[:, SIT] & actions[:, WRITE])


def test_standing_people_are_taller(clips):
    # Within a clip people in the same row have similar sizes; standing ones show more of their
    # body above the desk. Compare mean visible box heights over all clips.
    stand_h, sit_h = [], []
    for clip in clips:
        height = clip["boxes"][:, 3] - clip["boxes"][:, 1]
        width = clip["boxes"][:, 2] - clip["boxes"][:, 0]
        ratio = height / width
        stand_h += list(ratio[clip["actions"][:, STAND] == 1])
        sit_h += list(ratio[(clip["actions"][:, SIT] == 1) & (clip["actions"][:, RAISE] == 0)])
    assert np.mean(stand_h) > np.mean(sit_h)


def test_state_machine():
    rng = np.random.default_rng(0)
    t_len, keyframe = 16, 8
    states = c._sample_states(rng, t_len, keyframe, 2000)  # [T, P, 4] stand/raise/write/turn
    stand, raise_, write, turn = np.moveaxis(states, -1, 0)
    assert not np.any(write & stand) and not np.any(write & (raise_ | turn))
    # Keyframe states are held over the easing window, so the keyframe pose is fully realised.
    for t in range(keyframe - 2, keyframe + 2):
        np.testing.assert_array_equal(states[t], states[keyframe])
    changed = np.any(states != states[keyframe], axis=(0, 2))
    assert 0.4 < changed.mean() < 0.95  # states change within many (not all) clips


def test_people_count_range():
    cfg = c.ClassroomConfig(min_people=12, max_people=12, num_frames=4)
    clip = c.render_clip(0, cfg)
    assert clip["num_people"] == 12 and clip["video"].shape[0] == 4 and clip["keyframe"] == 2
    cfg = c.ClassroomConfig(min_people=2, max_people=2, resolution=64)
    clip = c.render_clip(1, cfg)
    assert clip["num_people"] == 2 and clip["video"].shape[1:] == (64, 64, 3)


def test_video_changes_over_time(clips):
    # Noise alone differs per frame; people's poses change in some clips too.
    moved = 0
    for clip in clips[:10]:
        tb = clip["track_boxes"]
        moved += np.any(np.abs(tb - tb[clip["keyframe"]]) > 1e-6)
    assert moved >= 3


def _owner_boxes(owner, num):
    """Pixel boxes (first column, first row, last column + 1, last row + 1) of each person's
    owned keyframe pixels, the renderer's box convention."""
    out = np.zeros((num, 4), np.float32)
    for p in range(num):
        rows, cols = np.nonzero(owner == p)
        out[p] = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
    return out


def _check_owner(clip, res):
    owner, num = clip["owner"], clip["num_people"]
    assert owner.min() >= -1 and owner.max() < num
    assert (owner == -1).any()  # background and desks
    for p in range(num):
        assert (owner == p).any(), p
    np.testing.assert_array_equal(_owner_boxes(owner, num), clip["boxes"] * res)


def test_owner_matches_the_boxes(clips):
    for clip in clips:
        _check_owner(clip, c.ClassroomConfig().resolution)


def test_owner_of_a_tiny_clip_is_deterministic_and_matches_the_boxes():
    cfg = c.ClassroomConfig(resolution=64, num_frames=8)  # the builder's 'tiny' preset
    for seed in range(20):
        clip = c.render_clip(seed, cfg)
        _check_owner(clip, cfg.resolution)
        np.testing.assert_array_equal(c.render_clip(seed, cfg)["owner"], clip["owner"])
    assert not np.array_equal(c.render_clip(0, cfg)["owner"], c.render_clip(1, cfg)["owner"])
