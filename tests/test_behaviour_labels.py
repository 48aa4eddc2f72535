"""Per-pixel behaviour label images (jaxact.data.behaviour_labels) from owner maps."""

import ast
import pathlib

import numpy as np
import pytest

from jaxact.data import behaviour_labels as bl
from jaxact.data import classroom

NAMES = classroom.BEHAVIOURS  # ("sit", "raise_hand", "stand", "write", "turn_to_neighbour")
SIT, RAISE, STAND, WRITE, TURN = (NAMES.index(n) for n in
                                  ("sit", "raise_hand", "stand", "write", "turn_to_neighbour"))


def test_hand_built_label_maps():
    owner = np.array([[-1, 0, 0, -1, 2],
                      [1, 1, 0, -1, 2],
                      [1, -1, -1, 2, 2],
                      [-1, -1, 1, 2, -1]], np.int16)
    actions = np.zeros((3, 5), np.uint8)
    actions[0, [SIT, RAISE, TURN]] = 1  # multi-label: raise_hand wins
    actions[1, [STAND, TURN]] = 1  # turn_to_neighbour beats stand
    actions[2] = 0  # no behaviour: 0 in the single image, zeros in the multi-hot one
    multi_hot, single = bl.label_maps(owner, actions, NAMES)
    a0, a1, z = [1, 1, 0, 0, 1], [0, 0, 1, 0, 1], [0, 0, 0, 0, 0]
    expected = np.array([[z, a0, a0, z, z],
                         [a1, a1, a0, z, z],
                         [a1, z, z, z, z],
                         [z, z, a1, z, z]], np.uint8)
    r, t = 1 + RAISE, 1 + TURN
    expected_single = np.array([[0, r, r, 0, 0],
                                [t, t, r, 0, 0],
                                [t, 0, 0, 0, 0],
                                [0, 0, t, 0, 0]], np.int32)
    assert multi_hot.dtype == np.uint8 and multi_hot.shape == (4, 5, 5)
    assert single.dtype == np.int32 and single.shape == (4, 5)
    np.testing.assert_array_equal(multi_hot, expected)
    np.testing.assert_array_equal(single, expected_single)
    # Float actions (the transform's f32 rows, padded) give the same maps.
    padded = np.pad(actions.astype(np.float32), ((0, 4), (0, 0)))
    for got, want in zip(bl.label_maps(owner.astype(np.int32), padded, NAMES),
                         (expected, expected_single), strict=True):
        np.testing.assert_array_equal(got, want)


def test_priority_rule_over_every_pair():
    for hi, lo in zip(bl.PRIORITY, bl.PRIORITY[1:], strict=False):
        actions = np.zeros((1, 5))
        actions[0, [NAMES.index(hi), NAMES.index(lo)]] = 1
        assert bl.person_labels(actions, NAMES).tolist() == [1 + NAMES.index(hi)]
    assert set(bl.PRIORITY) == set(NAMES)


def test_priority_uses_names_not_indices():
    names = ("stand", "write", "raise_hand")  # another dataset's order and subset
    actions = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]])
    assert bl.person_labels(actions, names).tolist() == [3, 2, 1, 0]
    with pytest.raises(ValueError, match=r"\['dance'\].*not in the behaviour priority"):
        bl.label_maps(np.zeros((2, 2), int), np.zeros((1, 2)), ("sit", "dance"))


def test_batched_maps_equal_per_example_maps():
    rng = np.random.default_rng(0)
    owner = rng.integers(-1, 4, (3, 6, 7))
    actions = rng.integers(0, 2, (3, 4, 5)).astype(np.float32)
    multi_hot, single = bl.label_maps(owner, actions, NAMES)
    assert multi_hot.shape == (3, 6, 7, 5) and single.shape == (3, 6, 7)
    for i in range(3):
        one = bl.label_maps(owner[i], actions[i], NAMES)
        np.testing.assert_array_equal(multi_hot[i], one[0])
        np.testing.assert_array_equal(single[i], one[1])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"owner values \[-1, 3\] are not in \[-1, 2\)"):
        bl.label_maps(np.array([[-1, 3]]), np.zeros((2, 5)), NAMES)
    with pytest.raises(ValueError, match="leading"):
        bl.label_maps(np.zeros((2, 4, 4), int), np.zeros((3, 1, 5)), NAMES)
    with pytest.raises(ValueError, match="classes"):
        bl.label_maps(np.zeros((4, 4), int), np.zeros((1, 4)), NAMES)


def test_numpy_only():
    tree = ast.parse(pathlib.Path(bl.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in ("jax", "jaxact")}, imported


def test_hand_checked_generator_clip():
    """Seed 1 of the 'tiny' preset, checked by eye on the keyframe beside its owner and label
    images: seven students; the owner map covers exactly the visible figures (desks, paper and the
    room are -1), including the three raised hands above the heads."""
    cfg = classroom.ClassroomConfig(resolution=64, num_frames=8)
    clip = classroom.render_clip(1, cfg)
    owner, actions = clip["owner"], clip["actions"]
    assert clip["num_people"] == 7
    behaviours = [{NAMES[a] for a in np.nonzero(row)[0]} for row in actions]
    assert behaviours == [{"sit", "write"}, {"sit", "raise_hand", "turn_to_neighbour"},
                          {"raise_hand", "stand"}, {"stand", "turn_to_neighbour"},
                          {"sit", "write"}, {"sit", "raise_hand"}, {"sit", "raise_hand"}]
    # The single-label image by priority, per person (read off the label image by eye).
    expected = [WRITE, RAISE, RAISE, TURN, WRITE, RAISE, RAISE]
    multi_hot, single = bl.label_maps(owner, actions, NAMES)
    assert np.all(multi_hot[owner == -1] == 0) and np.all(single[owner == -1] == 0)
    for p in range(7):
        mask = owner == p
        assert mask.sum() >= 15, p  # every student is a figure of some size
        np.testing.assert_array_equal(multi_hot[mask], np.broadcast_to(actions[p], (mask.sum(), 5)))
        assert np.all(single[mask] == 1 + expected[p]), p
    # Person 2 stands with a raised hand: its top rows are the hand, above the head.
    rows = np.nonzero((owner == 2).any(axis=1))[0]
    assert rows.min() == round(clip["boxes"][2, 1] * 64) and rows.max() - rows.min() >= 12
    # Labelled pixels are people: every non-zero label pixel has an owner, and vice versa (each
    # classroom person sits or stands).
    np.testing.assert_array_equal(single > 0, owner >= 0)
