"""Ragged-sequence npz reader, joint features / augmentations, and the memory classifier on
per-frame vectors (JHMDB joints when ../shared/data is present, files written here otherwise)."""

import json
import os

import numpy as np
import pytest

from configs import jhmdb_memory
from jaxact.data import sequences
from jaxact.train import classifier

SPLIT1 = jhmdb_memory.split_paths(1)
needs_jhmdb = pytest.mark.skipif(not all(os.path.exists(p) for p in SPLIT1),
                                 reason="../shared/data/jhmdb_joints is absent")


def write_npz(path, clip_lengths, clip_labels, frame_shape=(15, 2), seed=0, **override):
    """Writes a ragged npz of random frames; `override` replaces (or with None, drops) a field."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(int(np.sum(clip_lengths)), *frame_shape)).astype(np.float32)
    arrays = {"frames": frames, "lengths": np.asarray(clip_lengths, np.int32),
              "labels": np.asarray(clip_labels)}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return str(path)


# ----------------------------------------------------------------------------- reader


@needs_jhmdb
def test_jhmdb_split1_counts():
    class_names, srcs = sequences.load_splits({"train": SPLIT1[0], "test": SPLIT1[1]})
    assert len(srcs["train"]) == 433 and len(srcs["test"]) == 176
    assert len(class_names) == 14 and class_names == sorted(class_names)
    assert class_names[0] == "catch" and class_names[-1] == "wave"
    record = srcs["train"][0]
    assert record["video"].shape[1:] == (15, 2) and 15 <= len(record["video"]) <= 40
    assert np.bincount(srcs["train"].label_ids, minlength=14).min() >= 1


def test_reader_roundtrip(tmp_path):
    path = write_npz(tmp_path / "ok.npz", [3, 5, 2], ["b", "a", "b"])
    seq = sequences.read_ragged_npz(path)
    with np.load(path) as data:
        np.testing.assert_array_equal(seq.clip(1), data["frames"][3:8])
        np.testing.assert_array_equal(seq.clip(2), data["frames"][8:10])
    names, srcs = sequences.load_splits({"train": path})
    assert names == ["a", "b"] and srcs["train"].label_ids.tolist() == [1, 0, 1]


@pytest.mark.parametrize("case, override, match", [
    ("lengths_sum", {"lengths": np.array([3, 5, 3], np.int32)}, "adds up to 11.*has 10"),
    ("nan", {"frames": np.full((10, 15, 2), np.nan, np.float32)}, "'frames' row 0 \\(clip 0\\)"),
    ("missing_labels", {"labels": None}, "missing field.*labels"),
    ("missing_frames", {"frames": None}, "missing field.*frames"),
    ("zero_length", {"lengths": np.array([0, 8, 2], np.int32)}, "'lengths' row 0"),
    ("row_mismatch", {"labels": np.array(["a", "b"])}, "'labels' has 2 rows"),
    ("float_lengths", {"lengths": np.array([3.0, 5.0, 2.0])}, "'lengths' must be int"),
    ("object_frames", {"frames": np.array(["x"] * 10)}, "'frames' must be numeric"),
])
def test_reader_rejects_broken_files(tmp_path, case, override, match):
    path = write_npz(tmp_path / f"{case}.npz", [3, 5, 2], ["a", "b", "a"], **override)
    with pytest.raises(ValueError, match=match) as err:
        sequences.read_ragged_npz(path)
    assert f"{case}.npz" in str(err.value)


def test_reader_rejects_nan_in_a_later_clip(tmp_path):
    frames = np.zeros((10, 15, 2), np.float32)
    frames[6, 3, 1] = np.inf
    path = write_npz(tmp_path / "inf.npz", [3, 5, 2], ["a", "b", "a"], frames=frames)
    with pytest.raises(ValueError, match="row 6 \\(clip 1\\)"):
        sequences.read_ragged_npz(path)


def test_reader_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        sequences.read_ragged_npz(str(tmp_path / "nope.npz"))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ValueError, match="corrupt.npz"):
        sequences.read_ragged_npz(str(corrupt))
    good = write_npz(tmp_path / "good.npz", [3, 5, 2], ["a", "b", "a"])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(good, "rb").read()[:300])
    with pytest.raises(ValueError, match="truncated.npz"):
        sequences.read_ragged_npz(str(truncated))


def test_unknown_test_labels_and_shape_mismatch(tmp_path):
    train = write_npz(tmp_path / "train.npz", [3, 5], ["a", "b"])
    test = write_npz(tmp_path / "test.npz", [2, 2, 2], ["a", "c", "d"])
    with pytest.raises(ValueError, match="test.npz.*\\['c', 'd'\\].*row 1.*train.npz"):
        sequences.load_splits({"train": train, "test": test})
    other = write_npz(tmp_path / "other.npz", [2], ["a"], frame_shape=(24,))
    with pytest.raises(ValueError, match="other.npz.*per-frame shape"):
        sequences.load_splits({"train": train, "test": other})


# ----------------------------------------------------------------------------- features


def test_resample_is_linear_interpolation():
    ramp = np.arange(5, dtype=np.float32)[:, None] * np.array([1.0, -2.0], np.float32)
    out = sequences.resample(ramp, 9, 0.0, 4.0)
    np.testing.assert_allclose(out[:, 0], np.linspace(0, 4, 9), atol=1e-6)
    np.testing.assert_allclose(out[:, 1], -2 * np.linspace(0, 4, 9), atol=1e-6)
    np.testing.assert_allclose(sequences.resample(ramp, 3, 1.0, 2.0)[:, 0], [1.0, 1.5, 2.0])
    single = sequences.resample(ramp[:1], 4, 0.0, 0.0)
    np.testing.assert_array_equal(single, np.repeat(ramp[:1], 4, axis=0))


def test_mirror_permutation_swaps_jhmdb_pairs():
    perm = sequences.mirror_permutation(sequences.JHMDB_JOINTS)
    assert perm.tolist() == [0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13]
    np.testing.assert_array_equal(perm[perm], np.arange(15))
    with pytest.raises(ValueError, match="left_hand"):
        sequences.mirror_permutation(("neck", "left_hand"))


def test_joint_features_shapes_and_invariances():
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(6, 15, 2)).astype(np.float32)
    feats = sequences.joint_features(joints, ("coords", "distances", "motion"))
    assert feats.shape == (6, 30 + 105 + 30)
    angle = 0.7
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]], np.float32)
    moved = joints @ rot + np.array([3.0, -1.0], np.float32)
    np.testing.assert_allclose(sequences.joint_features(moved, ("distances",)),
                               sequences.joint_features(joints, ("distances",)), atol=1e-5)
    np.testing.assert_allclose(sequences.joint_features(joints + 5.0, ("coords", "motion")),
                               sequences.joint_features(joints, ("coords", "motion")), atol=1e-5)
    assert np.all(sequences.joint_features(joints, ("motion",))[0] == 0)


def make_transform(**kw):
    defaults = dict(num_frames=8, train=True, joint_order="jhmdb", features=())
    return sequences.SequenceTransform(**{**defaults, **kw})


def test_mirror_augmentation_swaps_sides_and_flips_x():
    rng = np.random.default_rng(1)
    clip = rng.normal(size=(8, 15, 2)).astype(np.float32)
    out = make_transform(mirror_prob=1.0)({"video": clip, "label": 3}, rng)
    mirrored = out["video"].reshape(8, 15, 2)
    centre = clip.mean(axis=(0, 1))
    perm = sequences.mirror_permutation(sequences.JHMDB_JOINTS)
    np.testing.assert_allclose(mirrored[:, perm, 0], 2 * centre[0] - clip[..., 0], atol=1e-5)
    np.testing.assert_allclose(mirrored[:, perm, 1], clip[..., 1], atol=1e-5)
    assert out["label"] == 3


def test_rotation_and_scale_augmentation_keep_shape_up_to_scale():
    rng = np.random.default_rng(2)
    clip = rng.normal(size=(8, 15, 2)).astype(np.float32)
    out = make_transform(rotation_degrees=30.0, scale_range=0.2)({"video": clip, "label": 0}, rng)
    before = sequences.joint_features(clip, ("distances",))
    after = sequences.joint_features(out["video"].reshape(8, 15, 2), ("distances",))
    ratio = after / before
    assert 0.8 <= ratio.mean() <= 1.2 and not np.allclose(after, before)
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)  # a similarity transform


def test_eval_transform_observes_only_the_first_fraction():
    rng = np.random.default_rng(3)
    clip = rng.normal(size=(20, 15, 2)).astype(np.float32)
    changed = clip.copy()
    changed[10:] += 5.0
    transform = make_transform(train=False, fraction=0.5, features=("coords", "motion"))
    a = transform({"video": clip, "label": 0}, None)["video"]
    b = transform({"video": changed, "label": 0}, None)["video"]
    np.testing.assert_array_equal(a, b)
    full = make_transform(train=False, features=("coords",))
    assert not np.array_equal(full({"video": clip, "label": 0}, None)["video"],
                              full({"video": changed, "label": 0}, None)["video"])


def test_generic_vectors_need_no_joint_settings():
    clip = np.random.default_rng(4).normal(size=(11, 24)).astype(np.float32)
    out = sequences.SequenceTransform(num_frames=5, train=True, crop_min=0.5)(
        {"video": clip, "label": 1}, np.random.default_rng(0))
    assert out["video"].shape == (5, 24)
    with pytest.raises(ValueError, match="joint_order"):
        sequences.SequenceTransform(num_frames=5, train=True, mirror_prob=0.5)
    with pytest.raises(ValueError, match="data.features.*velocity"):
        sequences.SequenceTransform(num_frames=5, train=True, features=("velocity",))


def test_vectors_with_joint_features_fail_naming_the_field_and_file(tmp_path):
    """Frames of 24 plain values with the joint features of jhmdb_memory: one clear error before
    anything trains, not a numpy error inside a loader worker."""
    from jaxact.data import sources

    config = jhmdb_memory.get_config("smoke")
    config.data.train_path = write_npz(tmp_path / "vectors.npz", [5, 6], ["a", "b"],
                                       frame_shape=(24,))
    config.data.test_path = write_npz(tmp_path / "vectors_test.npz", [4], ["a"], frame_shape=(24,))
    with pytest.raises(ValueError, match=r"data.features=\('coords', 'distances', 'motion'\) "
                                         r"needs joints .*vectors.npz has frames of shape \[24\]"):
        sources.RaggedNpzSequences(config.data)
    config.data.features = ()
    config.data.mirror_prob = 0.5
    with pytest.raises(ValueError, match=r"mirror_prob need 2-D joints.*vectors.npz.*\[24\]"):
        sources.RaggedNpzSequences(config.data)
    config.data.scale_range = config.data.rotation_degrees = config.data.mirror_prob = 0.0
    assert sources.RaggedNpzSequences(config.data).source("train")[0]["video"].shape[1:] == (24,)
    with pytest.raises(ValueError, match="J >= 2"):
        sequences.check_frame_shape((1, 2), ("distances",), False, "one_joint.npz")


def test_train_observation_trains_on_a_fixed_first_part(tmp_path):
    """data.train_observation=0.3: every training clip is exactly its first 30 %; evaluation
    still observes what it is asked; random prefixes cannot be combined with it."""
    from jaxact.data import sources

    config = jhmdb_memory.get_config("smoke")
    time = np.repeat(np.arange(20.0, dtype=np.float32)[:, None, None], 15, 1).repeat(2, 2)
    np.savez(tmp_path / "t.npz", frames=np.concatenate([time, time]), lengths=np.array([20, 20]),
             labels=np.array(["a", "b"]))
    config.data.train_path = config.data.test_path = str(tmp_path / "t.npz")
    config.data.features, config.data.standardize = (), False
    config.data.scale_range = config.data.rotation_degrees = config.data.mirror_prob = 0.0
    config.data.crop_min, config.data.train_observation = 1.0, 0.3
    data = sources.RaggedNpzSequences(config.data)
    rng = np.random.default_rng(0)
    for _ in range(3):
        seen = data.transform(train=True)(data.source("train")[0], rng)["video"]
        np.testing.assert_allclose(seen.min(), 0.0)
        np.testing.assert_allclose(seen.max(), 0.3 * 20 - 1, rtol=1e-6)  # the first 6 frames
    evaluated = data.transform(train=False, fraction=0.5)(data.source("test")[0], rng)["video"]
    np.testing.assert_allclose(evaluated.max(), 0.5 * 20 - 1, rtol=1e-6)
    assert sources.observed_fractions(config.data, True, 1.0) == (0.3, 1.0)
    config.data.min_fraction = 0.5
    with pytest.raises(ValueError, match="train_observation=0.3 and data.min_fraction=0.5"):
        sources.observed_fractions(config.data, True, 1.0)
    config.data.min_fraction, config.data.train_observation = 1.0, 0.0
    with pytest.raises(ValueError, match="train_observation must be in"):
        sources.observed_fractions(config.data, False, 1.0)


# ----------------------------------------------------------------------------- end to end


def synthetic_joint_split(path, num_per_class, seed):
    """Three 'actions' that differ in how one wrist moves; 10-30 frames per clip.

    Every split shares one base pose (only the clips' noise and lengths follow `seed`), so a
    model trained on one split can be tested on another; clips are interleaved by class, so the
    first batches of the split (what fills the memory) hold every class."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).normal(size=(15, 2)).astype(np.float32)
    clips, labels = [], []
    for _ in range(num_per_class):
        for label, name in enumerate(("raise", "wave", "still")):
            t = np.linspace(0, 1, rng.integers(10, 31))[:, None]
            clip = np.repeat(base[None], len(t), axis=0) + 0.05 * rng.normal(size=(len(t), 15, 2))
            if label == 0:
                clip[:, 12, 1] += 2 * t[:, 0]
            elif label == 1:
                clip[:, 12, 0] += np.sin(12 * t[:, 0])
            clips.append(clip.astype(np.float32))
            labels.append(name)
    np.savez(path, frames=np.concatenate(clips), lengths=np.array([len(c) for c in clips]),
             labels=np.array(labels))
    return str(path)


def test_memory_classifier_on_vectors_end_to_end(tmp_path, check_results):
    config = jhmdb_memory.get_config("smoke")
    config.data.train_path = synthetic_joint_split(tmp_path / "train.npz", 16, 0)
    config.data.test_path = synthetic_joint_split(tmp_path / "test.npz", 8, 1)
    workdir = str(tmp_path / "run")
    exp = classifier.Experiment(config, workdir)
    results = exp.train_and_evaluate()
    assert "baseline_top1" in results and results["num_examples"] == 24
    assert set(results["early_prediction"]["memory"]) == {"0.2", "1.0"}
    check_results(exp, results)
    with open(os.path.join(workdir, "class_names.json")) as f:
        assert json.load(f) == ["raise", "still", "wave"]
    clip = np.random.default_rng(5).normal(size=(17, 15, 2)).astype(np.float32)
    np.save(tmp_path / "clip.npy", clip)
    out = exp.predict_video(str(tmp_path / "clip.npy"))
    assert out["class"] in ("raise", "still", "wave") and len(out["top_k"]) == 3
    assert sum(out["votes"].values()) == config.data.num_frames  # one view: each frame votes
    np.save(tmp_path / "bad.npy", clip[:, :7])
    with pytest.raises(ValueError, match="bad.npy.*\\[T>=1, 15, 2\\]"):
        exp.predict_video(str(tmp_path / "bad.npy"))
    # The same workdir with other classes must not be silently reinterpreted.
    config.data.train_path = write_npz(tmp_path / "other.npz", [12, 12], ["x", "y"])
    config.data.test_path = config.data.train_path
    with pytest.raises(ValueError, match="class_names.json"):
        classifier.Experiment(config, workdir).evaluate_from_checkpoint()
    # Linearly resampled sequences have one test view: more fail before any training.
    config.eval.temporal_views = 3
    with pytest.raises(ValueError, match="eval.temporal_views=1"):
        classifier.Experiment(config, str(tmp_path / "views"))
