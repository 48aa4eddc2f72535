"""Ragged-sequence npz reader, joint features / augmentations, and the memory classifier on
per-frame vectors (JHMDB joints when ../shared/data is present, files written here otherwise)."""

import dataclasses
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


def test_shear_is_an_affine_map_drawn_after_the_others():
    clip = np.random.default_rng(2).normal(size=(8, 15, 2)).astype(np.float32)
    record = {"video": clip, "label": 0}
    plain = make_transform(rotation_degrees=30.0, scale_range=0.2)(record,
                                                                   np.random.default_rng(5))
    sheared = make_transform(rotation_degrees=30.0, scale_range=0.2, shear_range=0.4)(
        record, np.random.default_rng(5))
    rng = np.random.default_rng(5)  # replay: mirror, rotation, scale, then the two shears
    rng.random(), rng.uniform(), rng.uniform()
    a, b = rng.uniform(-0.4, 0.4, size=2)
    x = plain["video"].reshape(8, 15, 2)
    centre = x.mean(axis=(0, 1))
    expected = (x - centre) @ np.array([[1.0, b], [a, 1.0]]) + centre
    np.testing.assert_allclose(sheared["video"].reshape(8, 15, 2), expected, atol=1e-4)
    assert abs(a) > 1e-3 and abs(b) > 1e-3  # not the identity


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
    with pytest.raises(ValueError, match=r"data.features=\('coords', 'distances', 'motion', "
                                         r"'motion2', 'bones', 'angles'\) needs joints "
                                         r".*vectors.npz has frames of shape \[24\]"):
        sources.RaggedNpzSequences(config.data)
    config.data.features = ()
    config.data.mirror_prob = 0.5
    with pytest.raises(ValueError, match=r"mirror_prob need 2-D joints.*vectors.npz.*\[24\]"):
        sources.RaggedNpzSequences(config.data)
    config.data.scale_range = config.data.rotation_degrees = config.data.mirror_prob = 0.0
    config.data.shear_range = 0.3  # alone, it needs joints too
    with pytest.raises(ValueError, match=r"shear_range / mirror_prob need 2-D joints.*vectors.npz"):
        sources.RaggedNpzSequences(config.data)
    config.data.shear_range = 0.0
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


# ----------------------------------------------------------------------------- validation part


def test_validation_rows_are_class_stratified_and_deterministic():
    # a: 5 clips, b: 2, c: 1, d: 10, interleaved. At 0.4 each class holds out
    # min(floor(0.4 n + 0.5), n - 1): a 2, b 1, c 0 (one clip stays in training), d 4.
    labels = np.array(["a", "d", "b", "a", "d", "c", "a", "d", "b", "a", "d", "a"]
                      + ["d"] * 6)
    held = sequences.validation_rows(labels, 0.4, seed=3)
    counts = {name: int(held[labels == name].sum()) for name in "abcd"}
    assert counts == {"a": 2, "b": 1, "c": 0, "d": 4}
    np.testing.assert_array_equal(sequences.validation_rows(labels, 0.4, seed=3), held)
    draws = {tuple(np.flatnonzero(sequences.validation_rows(labels, 0.4, s))) for s in range(8)}
    assert len(draws) > 1  # the seed picks the clips
    # Rounding half up, and every class keeps one training clip however large the fraction.
    assert int(sequences.validation_rows(np.array(["a"] * 10), 0.25, 0).sum()) == 3  # 2.5 -> 3
    assert int(sequences.validation_rows(np.array(["a"] * 10), 0.24, 0).sum()) == 2
    most = sequences.validation_rows(labels, 0.99, 0)
    assert {name: int((~most)[labels == name].sum()) for name in "abcd"} == dict.fromkeys("abcd", 1)
    assert not sequences.validation_rows(labels, 0.0, 0).any()
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=f"data.validation_fraction must be in \\[0, 1\\), "
                                             f"got {bad}"):
            sequences.validation_rows(labels, bad, 0)


def constant_clips_npz(path, labels, lengths, frame_shape=(15, 2)):
    """Clip i's frames are all `i` (so each clip is recognisable wherever it ends up)."""
    frames = np.concatenate([np.full((n, *frame_shape), i, np.float32)
                             for i, n in enumerate(lengths)])
    np.savez(path, frames=frames, lengths=np.array(lengths), labels=np.array(labels))
    return str(path)


def plain_config(tmp_path, labels, lengths):
    """jhmdb_memory's smoke config on constant clips, features off, no augmentation."""
    config = jhmdb_memory.get_config("smoke")
    config.data.train_path = constant_clips_npz(tmp_path / "train.npz", labels, lengths)
    config.data.test_path = constant_clips_npz(tmp_path / "test.npz", labels[:2], lengths[:2])
    config.data.features = ()
    config.data.scale_range = config.data.rotation_degrees = config.data.mirror_prob = 0.0
    config.data.crop_min = 1.0
    return config


def test_validation_part_is_carved_out_of_train(tmp_path):
    from jaxact.data import sources

    labels = ["a", "b", "a", "b", "a", "b", "a", "c"]
    lengths = [3, 4, 5, 6, 7, 8, 9, 2]
    config = plain_config(tmp_path, labels, lengths)
    with pytest.raises(ValueError, match="split 'validation'.*data.validation_fraction > 0 or "
                                         "data.validation_path"):
        sources.RaggedNpzSequences(config.data).source("validation")
    config.data.validation_fraction, config.data.validation_seed = 0.5, 7
    data = sources.RaggedNpzSequences(config.data)
    train, val = data.source("train"), data.source("validation")
    held = sequences.validation_rows(np.array(labels), 0.5, 7)
    # a: 4 clips -> 2 held out; b: 3 -> floor(2.0) = 2; c: 1 -> 0.
    assert int(held.sum()) == 4 and len(val) == 4 and len(train) == 4
    for source, rows in ((val, np.flatnonzero(held)), (train, np.flatnonzero(~held))):
        for k, row in enumerate(rows):  # file order kept; frames, lengths and labels move along
            record = source[k]
            np.testing.assert_array_equal(record["video"],
                                          np.full((lengths[row], 15, 2), row, np.float32))
            assert data.class_names[record["label"]] == labels[row]
    assert data.class_names == ["a", "b", "c"] and len(data.source("test")) == 2
    assert "validation: 0.5 of train, seed 7" in data.description
    # Standardisation: statistics of the remaining training clips only. A constant clip i
    # resampled to num_frames frames gives the value i everywhere.
    kept = np.flatnonzero(~held).astype(np.float64)
    np.testing.assert_allclose(data.mean, np.full(30, kept.mean()), rtol=1e-6)
    np.testing.assert_allclose(data.std, np.full(30, kept.std()), rtol=1e-5)
    assert not np.isclose(kept.mean(), np.arange(8).mean())  # the full file would differ here
    # Another seed, other clips; no class can spare a clip: an error naming the field.
    config.data.validation_seed = 8
    other = sources.RaggedNpzSequences(config.data).source("validation")
    assert len(other) == 4
    config.data.train_path = constant_clips_npz(tmp_path / "singles.npz", ["a", "b"], [3, 4])
    config.data.test_path = config.data.train_path
    with pytest.raises(ValueError, match="data.validation_fraction=0.5: leaves no validation "
                                         "clip in .*singles.npz"):
        sources.RaggedNpzSequences(config.data)


def test_validation_part_by_shared_clips(tmp_path):
    from jaxact.data import sources

    labels = ["a", "b", "a", "b", "a", "c"]
    lengths = [3, 4, 5, 6, 7, 2]
    config = plain_config(tmp_path, labels, lengths)
    # Another file holding clips 1 and 4 of the train file (same values and lengths), one clip
    # of the same values but another length, and one the train file does not have.
    other = np.concatenate([np.full((4, 15, 2), 1), np.full((7, 15, 2), 4),
                            np.full((3, 15, 2), 2), np.full((5, 15, 2), 99)]).astype(np.float32)
    np.savez(tmp_path / "other.npz", frames=other, lengths=np.array([4, 7, 3, 5]),
             labels=np.array(["b", "a", "a", "a"]))
    config.data.validation_path = str(tmp_path / "other.npz")
    data = sources.RaggedNpzSequences(config.data)
    train, val = data.source("train"), data.source("validation")
    for source, rows in ((val, [1, 4]), (train, [0, 2, 3, 5])):
        assert len(source) == len(rows)
        for k, row in enumerate(rows):
            np.testing.assert_array_equal(source[k]["video"],
                                          np.full((lengths[row], 15, 2), row, np.float32))
    assert "validation: clips shared with" in data.description
    kept = np.array([0, 2, 3, 5], np.float64)  # statistics from the remaining clips alone
    np.testing.assert_allclose(data.mean, np.full(30, kept.mean()), rtol=1e-6)
    # Both ways of picking a part at once, no shared clip, or a class emptied: named errors.
    config.data.validation_fraction = 0.5
    with pytest.raises(ValueError, match="data.validation_fraction=0.5 and data.validation_path"):
        sources.RaggedNpzSequences(config.data)
    config.data.validation_fraction = 0.0
    np.savez(tmp_path / "none.npz", frames=np.full((5, 15, 2), 99, np.float32),
             lengths=np.array([5]), labels=np.array(["a"]))
    config.data.validation_path = str(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="none.npz: none of its 1 clips is a clip of"):
        sources.RaggedNpzSequences(config.data)
    np.savez(tmp_path / "all_c.npz", frames=np.full((2, 15, 2), 5, np.float32),
             lengths=np.array([2]), labels=np.array(["c"]))
    config.data.validation_path = str(tmp_path / "all_c.npz")
    with pytest.raises(ValueError, match=r"all_c.npz: holds every clip of class\(es\) \['c'\]"):
        sources.RaggedNpzSequences(config.data)


# ----------------------------------------------------------------------------- new features


def test_motion2_is_the_displacement_over_two_frames():
    x = np.array([[0, 0], [1, 0], [3, 1], [6, 3], [6, 5]], np.float32)[:, None, :]  # [5, 1, 2]
    out = sequences.joint_features(x, ("motion2",))
    np.testing.assert_array_equal(out, [[0, 0], [1, 0], [3, 1], [5, 3], [3, 4]])
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(6, 15, 2)).astype(np.float32)
    old = ("coords", "distances", "motion")
    every = sequences.joint_features(joints, sequences.FEATURES, "jhmdb")
    assert every.shape == (6, 30 + 105 + 30 + 30 + 2 * 14 + 2 * 17)
    np.testing.assert_array_equal(every[:, :165], sequences.joint_features(joints, old))
    np.testing.assert_array_equal(sequences.joint_features(joints, old[::-1]),
                                  sequences.joint_features(joints, old))  # FEATURES order


N = sequences.JHMDB_JOINTS.index


def test_jhmdb_bones_and_angles_lists():
    names = [(sequences.JHMDB_JOINTS[a], sequences.JHMDB_JOINTS[b])
             for a, b in sequences.bone_indices("jhmdb")]
    assert names == list(sequences.JHMDB_BONES) and len(names) == 14
    joints = {j for bone in names for j in bone}
    assert joints == set(sequences.JHMDB_JOINTS)  # a tree over all 15 joints
    perm = sequences.mirror_permutation(sequences.JHMDB_JOINTS)
    bones = {tuple(b) for b in sequences.bone_indices("jhmdb").tolist()}
    assert {(int(perm[a]), int(perm[b])) for a, b in bones} == bones  # mirror-symmetric
    angle = [tuple(sequences.JHMDB_JOINTS[i] for i in t) for t in sequences.angle_indices("jhmdb")]
    expected = [("neck", "face", "belly"), ("neck", "face", "right_shoulder"),
                ("neck", "face", "left_shoulder"), ("neck", "belly", "right_shoulder"),
                ("neck", "belly", "left_shoulder"), ("neck", "right_shoulder", "left_shoulder"),
                ("belly", "neck", "right_hip"), ("belly", "neck", "left_hip"),
                ("belly", "right_hip", "left_hip"),
                ("right_shoulder", "neck", "right_elbow"), ("left_shoulder", "neck", "left_elbow"),
                ("right_hip", "belly", "right_knee"), ("left_hip", "belly", "left_knee"),
                ("right_elbow", "right_shoulder", "right_wrist"),
                ("left_elbow", "left_shoulder", "left_wrist"),
                ("right_knee", "right_hip", "right_ankle"), ("left_knee", "left_hip", "left_ankle")]
    assert angle == expected


def t_pose():
    """A hand-placed JHMDB pose [15, 2] (x right, y up)."""
    pose = {"neck": (0, 0), "face": (0, 1), "belly": (0, -2), "right_shoulder": (-1, 0),
            "left_shoulder": (1, 0), "right_elbow": (-1, -3), "left_elbow": (3, 0),
            "right_wrist": (-4, -7), "left_wrist": (3, 2), "right_hip": (-1, -2),
            "left_hip": (1, -2), "right_knee": (-1, -4), "left_knee": (2, -3),
            "right_ankle": (-1, -6), "left_ankle": (2, -6)}
    return np.array([pose[name] for name in sequences.JHMDB_JOINTS], np.float32)


def test_bones_and_angles_by_hand():
    pose = t_pose()
    bones = sequences.joint_features(pose[None], ("bones",), "jhmdb").reshape(14, 2)
    by_name = dict(zip(sequences.JHMDB_BONES, bones, strict=True))
    np.testing.assert_allclose(by_name["neck", "face"], [0, 1])
    np.testing.assert_allclose(by_name["neck", "belly"], [0, -1])
    np.testing.assert_allclose(by_name["right_elbow", "right_wrist"], [-0.6, -0.8])  # (-3, -4)/5
    np.testing.assert_allclose(by_name["left_hip", "left_knee"], np.array([1, -1]) / np.sqrt(2),
                               rtol=1e-6)
    angles = sequences.joint_features(pose[None], ("angles",), "jhmdb").reshape(17, 2)
    by_joints = {tuple(sequences.JHMDB_JOINTS[i] for i in t): a
                 for t, a in zip(sequences.angle_indices("jhmdb"), angles, strict=True)}
    # (cos, sin) of the angle turning bone j->a onto bone j->b, counter-clockwise positive.
    np.testing.assert_allclose(by_joints["neck", "face", "belly"], [-1, 0], atol=1e-6)
    np.testing.assert_allclose(by_joints["neck", "face", "right_shoulder"], [0, 1], atol=1e-6)
    np.testing.assert_allclose(by_joints["neck", "face", "left_shoulder"], [0, -1], atol=1e-6)
    np.testing.assert_allclose(by_joints["left_elbow", "left_shoulder", "left_wrist"], [0, -1],
                               atol=1e-6)  # from (-2, 0) to (0, 2): clockwise
    np.testing.assert_allclose(by_joints["right_elbow", "right_shoulder", "right_wrist"],
                               [-0.8, 0.6], atol=1e-6)  # from (0, 3) to (-3, -4)/5
    # Against atan2 of every angle, on random poses; invariant to translation, rotation, scale.
    rng = np.random.default_rng(1)
    joints = rng.normal(size=(4, 15, 2)).astype(np.float32)
    out = sequences.joint_features(joints, ("angles",), "jhmdb").reshape(4, 17, 2)
    for k, (j, a, b) in enumerate(sequences.angle_indices("jhmdb")):
        u, v = joints[:, a] - joints[:, j], joints[:, b] - joints[:, j]
        theta = np.arctan2(v[:, 1], v[:, 0]) - np.arctan2(u[:, 1], u[:, 0])
        np.testing.assert_allclose(out[:, k], np.stack([np.cos(theta), np.sin(theta)], -1),
                                   atol=1e-5)
    c, s = np.cos(0.9), np.sin(0.9)
    moved = 2.5 * joints @ np.array([[c, s], [-s, c]], np.float32) + np.array([4, -1], np.float32)
    np.testing.assert_allclose(sequences.joint_features(moved, ("angles",), "jhmdb"),
                               out.reshape(4, -1), atol=1e-5)
    np.testing.assert_allclose(sequences.joint_features(3 * joints + 1, ("bones",), "jhmdb"),
                               sequences.joint_features(joints, ("bones",), "jhmdb"), atol=1e-5)
    flat = np.zeros((1, 15, 2), np.float32)  # zero-length bones: zeros, not NaN
    assert np.all(sequences.joint_features(flat, ("bones", "angles"), "jhmdb") == 0)


def test_skeleton_features_need_a_joint_order_and_2d_joints(tmp_path):
    from jaxact.data import sources

    with pytest.raises(ValueError, match=r"data.features=\('coords', 'bones'\) \(with bones\) "
                                         r"needs .*data.joint_order.*got data.joint_order=''"):
        sequences.SequenceTransform(num_frames=4, train=False, features=("coords", "bones"))
    with pytest.raises(ValueError, match=r"with angles.*\[15, 2\] per frame.*the clip.*\[15, 3\]"):
        sequences.joint_features(np.zeros((3, 15, 3), np.float32), ("angles",), "jhmdb")
    with pytest.raises(ValueError, match="data.joint_order=''"):
        sequences.joint_features(np.zeros((3, 15, 2), np.float32), ("bones",))
    with pytest.raises(ValueError, match=r"\[15, 2\] per frame.*skel.npz.*\[14, 2\]"):
        sequences.check_frame_shape((14, 2), ("bones",), False, "skel.npz", joint_order="jhmdb")
    sequences.check_frame_shape((14, 2), ("motion2",), False, "skel.npz")  # no skeleton needed
    config = jhmdb_memory.get_config("smoke")
    config.data.train_path = write_npz(tmp_path / "xyz.npz", [5, 6], ["a", "b"],
                                       frame_shape=(15, 3))
    config.data.test_path = config.data.train_path
    config.data.scale_range = config.data.rotation_degrees = config.data.mirror_prob = 0.0
    config.data.features = ("coords", "angles")
    with pytest.raises(ValueError, match=r"data.features=.*angles.*\[15, 2\].*xyz.npz.*\[15, 3\]"):
        sources.RaggedNpzSequences(config.data)
    config.data.features = ("coords", "motion2")  # 3-D joints suit the other features
    data = sources.RaggedNpzSequences(config.data)
    assert data.transform(False)(data.source("train")[0], None)["video"].shape == (8, 90)


# ----------------------------------------------------------------------------- mirrored view


def test_mirror_joints_by_hand():
    frames = np.zeros((2, 15, 2), np.float32)
    frames[:, N("right_wrist")] = [[1, 2], [3, 4]]
    frames[:, N("left_wrist")] = [[5, 6], [7, 8]]
    frames[:, N("neck")] = [[30, 1], [30, 1]]
    cx = frames[..., 0].mean()  # (1 + 3 + 5 + 7 + 60) / 30
    out = sequences.mirror_joints(frames, "jhmdb")
    np.testing.assert_allclose(out[:, N("left_wrist")], [[2 * cx - 1, 2], [2 * cx - 3, 4]],
                               rtol=1e-6)
    np.testing.assert_allclose(out[:, N("right_wrist")], [[2 * cx - 5, 6], [2 * cx - 7, 8]],
                               rtol=1e-6)
    np.testing.assert_allclose(out[:, N("neck")], [[2 * cx - 30, 1]] * 2, rtol=1e-6)
    np.testing.assert_allclose(out[:, N("belly")], [[2 * cx, 0]] * 2, rtol=1e-6)
    np.testing.assert_allclose(sequences.mirror_joints(out, "jhmdb"), frames, atol=1e-5)
    with pytest.raises(ValueError, match="data.joint_order='jhmdb'.*\\(2, 14, 2\\)"):
        sequences.mirror_joints(frames[:, :14], "jhmdb")


def test_flip_view_mirrors_joints_and_keeps_the_label(tmp_path):
    from jaxact.data import pipeline, sources

    config = jhmdb_memory.get_config("smoke")
    config.data.train_path = write_npz(tmp_path / "j.npz", [8, 8], ["a", "b"])
    config.data.test_path = config.data.train_path
    config.data.features, config.data.standardize = (), False
    data = sources.RaggedNpzSequences(config.data)
    views = pipeline.eval_views(1, True)
    assert [v.flip for v in views] == [False, True]
    record = data.source("test")[1]
    clip = record["video"]  # 8 frames, num_frames 8: resampling keeps them as they are
    plain = data.transform(False, view=views[0])(record, None)
    flipped = data.transform(False, view=views[1])(record, None)
    np.testing.assert_allclose(plain["video"].reshape(8, 15, 2), clip, atol=1e-6)
    perm = sequences.mirror_permutation(sequences.JHMDB_JOINTS)
    mirrored = flipped["video"].reshape(8, 15, 2)
    np.testing.assert_allclose(mirrored[:, perm, 0], 2 * clip[..., 0].mean() - clip[..., 0],
                               atol=1e-5)
    np.testing.assert_allclose(mirrored[:, perm, 1], clip[..., 1], atol=1e-6)
    assert flipped["label"] == plain["label"] == 1
    assert data.flip_permutation.tolist() == [0, 1]
    # The training mirror (mirror_prob=1, nothing else) gives the same clip.
    train = make_transform(mirror_prob=1.0)(record, np.random.default_rng(0))["video"]
    np.testing.assert_allclose(train, flipped["video"], atol=1e-5)
    # Features of the mirrored view: those of the mirrored joints.
    config.data.features = sequences.FEATURES
    data = sources.RaggedNpzSequences(config.data)
    np.testing.assert_allclose(
        data.transform(False, view=views[1])(record, None)["video"],
        sequences.joint_features(mirrored, sequences.FEATURES, "jhmdb"), atol=1e-5)
    # Other temporal views still fail; a mirror without a skeleton fails naming both fields.
    with pytest.raises(ValueError, match="eval.temporal_views=1"):
        data.transform(False, view=pipeline.View(0.25, False))
    config.data.features, config.data.mirror_prob, config.data.joint_order = (), 0.0, ""
    data = sources.RaggedNpzSequences(config.data)
    data.transform(False)  # the centre view needs no skeleton
    with pytest.raises(ValueError, match="eval.flip_view=True needs the skeleton of "
                                         "data.joint_order.*got data.joint_order=''"):
        data.transform(False, view=views[1])
    config.data.joint_order, config.data.scale_range, config.data.rotation_degrees = "jhmdb", 0, 0
    config.data.train_path = write_npz(tmp_path / "v.npz", [5, 6], ["a", "b"], frame_shape=(24,))
    config.data.test_path = config.data.train_path
    with pytest.raises(ValueError, match=r"eval.flip_view=True needs 2-D joints \[15, 2\].*v.npz"):
        sources.RaggedNpzSequences(config.data).transform(False, view=views[1])


@pytest.mark.slow  # ~33 s of a worker; the mirrored view and the split have unit tests here
def test_memory_classifier_on_a_validation_part_with_the_mirrored_view(tmp_path):
    """Smoke run: trained on 3/4 of the train file, reported on the held-out rest under the
    centre and mirrored views, with every joint feature."""
    config = jhmdb_memory.get_config("smoke")
    config.data.train_path = synthetic_joint_split(tmp_path / "train.npz", 8, 0)
    config.data.test_path = synthetic_joint_split(tmp_path / "test.npz", 2, 1)
    config.data.validation_fraction = 0.25
    config.data.features = sequences.FEATURES
    config.eval.split = "validation"
    config.eval.flip_view = True
    exp = classifier.Experiment(config, str(tmp_path / "run"))
    assert len(exp.data.source("train")) == 18 and len(exp.data.source("validation")) == 6
    results = exp.train_and_evaluate()
    assert results["split"] == "validation" and results["num_examples"] == 6
    assert results["eval_views"] == 2


def test_a_missing_evaluation_split_fails_before_training(tmp_path):
    config = jhmdb_memory.get_config("smoke")
    config.data.train_path = synthetic_joint_split(tmp_path / "train.npz", 8, 0)
    config.data.test_path = synthetic_joint_split(tmp_path / "test.npz", 2, 1)
    config.eval.split = "validation"  # no data.validation_fraction: no such split
    with pytest.raises(ValueError, match=r"eval.split='validation'.*data.validation_fraction"):
        classifier.Experiment(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_batched_features_equal_per_clip_features():
    """joint_features over [B, T, J, 2] equals it clip by clip; the loader, which samples per
    clip and computes features per batch, yields exactly the per-clip transform's batches."""
    from jaxact.data import pipeline

    rng = np.random.default_rng(3)
    clips = [rng.normal(size=(int(n), 15, 2)).astype(np.float32) for n in rng.integers(6, 20, 10)]
    feats = tuple(sequences.FEATURES)
    batch = np.stack([sequences.resample(c, 8, 0.0, len(c) - 1.0) for c in clips])
    np.testing.assert_array_equal(
        sequences.joint_features(batch, feats, "jhmdb"),
        np.stack([sequences.joint_features(b, feats, "jhmdb") for b in batch]))
    source = [{"video": c, "label": i % 3} for i, c in enumerate(clips)]
    for train in (True, False):
        transform = sequences.SequenceTransform(
            num_frames=8, train=train, min_fraction=0.5, crop_min=0.7, scale_range=0.2,
            rotation_degrees=20, mirror_prob=0.5, joint_order="jhmdb", features=feats,
            mean=np.full(1, 0.5, np.float32), std=np.full(1, 2.0, np.float32))
        def per_clip(record, rng, transform=transform):  # the whole transform, clip by clip
            return transform(record, rng)

        loaders = [pipeline.make_loader(source, fn, global_batch_size=4, seed=1, train=train,
                                        num_threads=0, process_index=0, process_count=1)
                   for fn in (transform, per_clip)]
        for _ in range(3):
            a, b = (next(loader) for loader in loaders)
            width = sequences.joint_features(batch[0], feats, "jhmdb").shape[-1]
            assert a.keys() == b.keys() and a["video"].shape == (4, 8, width)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)



def test_person_scale_makes_near_and_far_people_alike():
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(6, 15, 2)).astype(np.float32)
    spread = joints - joints.mean(axis=1, keepdims=True)
    expected = np.mean([np.sqrt(np.mean(np.sum(f**2, axis=-1))) for f in spread])
    assert sequences.person_scale(joints) == pytest.approx(expected, rel=1e-6)
    assert sequences.person_scale(np.ones((3, 15, 2), np.float32)) == 1.0  # nothing to divide
    transform = sequences.SequenceTransform(num_frames=6, train=False, joint_order="jhmdb",
                                            features=sequences.FEATURES, normalize_scale=True)
    near = transform({"video": joints, "label": 0}, None)["video"]
    far = transform({"video": 0.25 * joints + 3.0, "label": 0}, None)["video"]  # smaller, moved
    np.testing.assert_allclose(near, far, rtol=1e-4, atol=1e-5)
    plain = dataclasses.replace(transform, normalize_scale=False)
    assert not np.allclose(plain({"video": joints, "label": 0}, None)["video"],
                           plain({"video": 0.25 * joints + 3.0, "label": 0}, None)["video"])
    with pytest.raises(ValueError, match="data.normalize_scale needs 2-D joints"):
        sequences.check_frame_shape((24,), (), False, "x.npz", normalize_scale=True)
