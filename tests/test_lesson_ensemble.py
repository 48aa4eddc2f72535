"""Detections of several detectors fused per clip (`jaxact.analysis.ensemble`), on hand-built
detections, and the checks of `analyze.ensemble_with` before anything is restored."""

import json
import os

import numpy as np
import pytest

from configs import classroom_detector, maneuvers_memory
from jaxact.analysis.ensemble import fuse_detections
from jaxact.analysis.tracking import iou_matrix
from jaxact.train import detector


def _member(boxes, person, behaviours, maps=None):
    """One clip's detections: `behaviours` are probabilities given a person."""
    person = np.asarray(person, np.float32)
    out = {"boxes": np.asarray(boxes, np.float32)[None],
           "person_scores": person[None],
           "action_scores": (person[:, None] * np.asarray(behaviours, np.float32))[None]}
    if maps is not None:
        out["map_probs"] = np.asarray(maps, np.float32)[None]
    return out


LEFT, RIGHT, FAR = [0.1, 0.1, 0.3, 0.5], [0.6, 0.1, 0.8, 0.5], [0.4, 0.6, 0.5, 0.9]


def test_the_pairing_iou_by_hand():
    a = np.array([[0, 0, 2, 2], [0, 0, 0, 0]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 7, 1, 0], [0, 0, 0]], rtol=1e-6)


def test_one_member_is_itself_sorted():
    m = _member([LEFT, RIGHT], [0.3, 0.9], [[0.5, 0.1], [0.2, 0.8]])
    out = fuse_detections([m])
    np.testing.assert_allclose(out["person_scores"][0], [0.9, 0.3])
    np.testing.assert_allclose(out["boxes"][0], [RIGHT, LEFT])
    np.testing.assert_allclose(out["action_scores"][0], m["action_scores"][0, ::-1], rtol=1e-6)


def test_pairs_are_averaged_and_a_lone_detection_keeps_half_its_score():
    shifted = [v + 0.02 for v in LEFT]  # IoU with LEFT about 0.78
    a = _member([LEFT, FAR], [0.8, 0.6], [[0.9, 0.1], [0.4, 0.4]])
    b = _member([RIGHT, shifted], [0.7, 0.6], [[0.2, 0.6], [0.5, 0.3]])
    out = fuse_detections([a, b])
    assert out["boxes"].shape == (1, 4, 4) and out["action_scores"].shape == (1, 4, 2)
    # LEFT pairs with its shifted copy; FAR and RIGHT stand alone.
    np.testing.assert_allclose(out["person_scores"][0], [0.7, 0.35, 0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["boxes"][0, 0], (np.array(LEFT) + shifted) / 2, rtol=1e-6)
    np.testing.assert_allclose(out["boxes"][0, 1:3], [RIGHT, FAR], rtol=1e-6)
    np.testing.assert_array_equal(out["boxes"][0, 3], 0.0)  # an unused place
    # Behaviour probabilities given a person: averaged over the members that saw the person,
    # then scaled by the fused person score.
    given = np.array([[0.7, 0.2], [0.2, 0.6], [0.4, 0.4], [0.0, 0.0]])
    np.testing.assert_allclose(out["action_scores"][0], given * out["person_scores"][0][:, None],
                               rtol=1e-5, atol=1e-7)


def test_below_the_iou_threshold_nothing_pairs():
    a = _member([LEFT], [0.8], [[1.0]])
    b = _member([[0.2, 0.1, 0.4, 0.5]], [0.8], [[0.0]])  # IoU 1/3 with LEFT
    np.testing.assert_allclose(fuse_detections([a, b])["person_scores"][0], [0.4, 0.4])
    np.testing.assert_allclose(fuse_detections([a, b], iou_threshold=0.3)["person_scores"][0],
                               [0.8, 0.0])


def test_three_members_and_maps():
    maps = lambda v: np.full((1, 2, 2, 3), v)  # noqa: E731
    members = [_member([LEFT], [0.9], [[0.6]], maps(0.1)),
               _member([FAR], [0.3], [[0.9]], maps(0.7)),
               _member([[v + 0.01 for v in LEFT]], [0.6], [[0.0]], maps(0.4))]
    out = fuse_detections(members)
    assert out["map_probs"].shape == (1, 3, 2, 2, 3)
    np.testing.assert_allclose(out["person_scores"][0], [0.5, 0.1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["action_scores"][0, :2, 0], [0.5 * 0.3, 0.1 * 0.9],
                               rtol=1e-5)
    np.testing.assert_allclose(out["map_probs"][0, 0], 0.25, rtol=1e-6)  # (0.1 + 0.4) / 2
    np.testing.assert_allclose(out["map_probs"][0, 1], 0.7, rtol=1e-6)


def test_identical_members_change_nothing_but_the_padding():
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 0.5, (3, 5, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.1, 0.4, (3, 5, 2))], -1).astype(np.float32)
    person = rng.uniform(0, 1, (3, 5)).astype(np.float32)
    single = {"boxes": boxes, "person_scores": person,
              "action_scores": person[..., None] * rng.uniform(0, 1, (3, 5, 4)).astype(np.float32)}
    out = fuse_detections([single, single])
    for row in range(3):
        order = np.argsort(-person[row], kind="stable")
        np.testing.assert_allclose(out["person_scores"][row, :5], person[row, order], rtol=1e-6)
        np.testing.assert_allclose(out["boxes"][row, :5], boxes[row, order], rtol=1e-6)
        np.testing.assert_allclose(out["action_scores"][row, :5],
                                   single["action_scores"][row, order], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(out["person_scores"][row, 5:], 0.0)


def test_bad_members_are_refused():
    a = _member([LEFT], [0.8], [[1.0, 0.0]])
    with pytest.raises(ValueError, match="at least one"):
        fuse_detections([])
    with pytest.raises(ValueError, match="member 1: action_scores"):
        fuse_detections([a, _member([LEFT], [0.8], [[1.0]])])
    with pytest.raises(ValueError, match="map_probs"):
        fuse_detections([a, _member([LEFT], [0.8], [[1.0, 0.0]], np.zeros((1, 2, 2, 3)))])


# ----------------------------------------------------------------------------- analyze.ensemble_with


def _write_run(workdir, config):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(json.loads(config.to_json_best_effort()), f)


def test_ensemble_runs_are_checked_before_anything_is_restored(tmp_path):
    config = classroom_detector.get_config("smoke")
    config.data.data_dir = str(tmp_path / "tfds")
    run = detector.Experiment(config, str(tmp_path / "run"))
    assert run.ensemble_members() == []

    def fails(other, match):
        run.config.analyze.ensemble_with = other
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            run.ensemble_members()

    fails(str(tmp_path / "nowhere"), "analyze.ensemble_with=.*no config.json")
    fails(f" , {tmp_path / 'run'}", "analyze.ensemble_with=.*that is this run")
    _write_run(str(tmp_path / "memory"), maneuvers_memory.get_config("smoke"))
    fails(str(tmp_path / "memory"), "'memory_classifier' run, not an action_detector one")
    longer = classroom_detector.get_config("smoke")
    longer.data.num_frames += 2
    _write_run(str(tmp_path / "longer"), longer)
    fails(str(tmp_path / "longer"), "its data.num_frames=6, this run's 4; members must see")
    same = classroom_detector.get_config("smoke")
    same.data.data_dir = config.data.data_dir
    _write_run(str(tmp_path / "same"), same)
    run.config.analyze.ensemble_with = f"{tmp_path / 'same'}, "
    members = run.ensemble_members()
    assert [m.workdir for m in members] == [str(tmp_path / "same")]
