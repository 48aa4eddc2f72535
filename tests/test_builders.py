"""TFDS builders: both datasets build without TensorFlow, deterministically, with the right shapes."""

import hashlib
import pathlib
import re
import subprocess
import sys

import chex
import numpy as np
import pytest

from jaxact.data import builders, classroom, maneuvers, pipeline


def _digests(builder) -> dict:
    root = pathlib.Path(builder.data_dir)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*.array_record*"))}


@pytest.mark.parametrize("name", ["maneuvers", "classroom"])
def test_tiny_build_is_byte_identical(name, tmp_path):
    a = builders.make_builder(name, "tiny", str(tmp_path / "a"), num_train=6, num_validation=2,
                              num_test=2)
    b = builders.make_builder(name, "tiny", str(tmp_path / "b"), num_train=6, num_validation=2,
                              num_test=2)
    for builder in (a, b):
        builder.download_and_prepare(file_format="array_record")
    digests = _digests(a)
    assert len(digests) == 3 and digests == _digests(b)
    assert "tensorflow" not in sys.modules


def test_splits_use_disjoint_seeds():
    seeds = {split: {builders.example_seed(split, i) for i in range(500)}
             for split in builders.SPLIT_IDS}
    assert not seeds["train"] & seeds["test"] and not seeds["train"] & seeds["validation"]


def test_maneuvers_records_and_pipeline_shapes(tmp_path):
    builder = builders.make_builder("maneuvers", "tiny", str(tmp_path), num_train=12,
                                    num_validation=2, num_test=2)
    builder.download_and_prepare(file_format="array_record")
    source = builder.as_data_source("train")
    assert len(source) == 12
    labels = sorted(int(source[i]["label"]) for i in range(12))
    assert labels == sorted(list(range(6)) * 2)  # balanced: label = index % 6
    record = source[0]
    length = record["video"].shape[0]
    chex.assert_shape([record["video"], record["boxes"]], [(length, 64, 64, 3), (length, 4)])
    assert 0 < record["onset"] < length == record["length"]
    transform = pipeline.ClipTransform(
        num_frames=8, train=True, flip_permutation=tuple(builders.Maneuvers.FLIP_PERMUTATION))
    loader = pipeline.make_loader(source, transform, global_batch_size=4, seed=0, train=True,
                                  process_index=0, process_count=1)
    batch = next(loader)
    chex.assert_shape([batch["video"], batch["label"], batch["boxes"]],
                      [(4, 8, 64, 64, 3), (4,), (4, 8, 4)])
    assert np.all(batch["label"] < len(maneuvers.MANEUVERS))


def test_rendered_examples_are_the_prepared_split_and_extend_it(tmp_path):
    builder = builders.make_builder("maneuvers", "tiny", str(tmp_path), num_train=2,
                                    num_validation=3, num_test=2)
    builder.download_and_prepare(file_format="array_record")
    source = builder.as_data_source("validation")

    def digest(video):
        return hashlib.sha256(np.ascontiguousarray(video).tobytes()).hexdigest()

    prepared = {digest(source[i]["video"]): int(source[i]["label"]) for i in range(3)}
    rendered = list(builder.render_examples("validation", range(5)))
    assert [key for key, _ in rendered] == [f"validation_{i:06d}" for i in range(5)]
    assert {digest(r["video"]): int(r["label"]) for _, r in rendered[:3]} == prepared
    assert not {digest(r["video"]) for _, r in rendered[3:]} & set(prepared)
    assert [int(r["label"]) for _, r in rendered] == [i % len(maneuvers.MANEUVERS) for i in range(5)]


def test_classroom_records_and_keyframe_pipeline(tmp_path):
    builder = builders.make_builder("classroom", "tiny", str(tmp_path), num_train=4,
                                    num_validation=1, num_test=1)
    builder.download_and_prepare(file_format="array_record")
    source = builder.as_data_source("train")
    record = source[0]
    people = record["boxes"].shape[0]
    chex.assert_shape([record["video"], record["actions"], record["track_boxes"]],
                      [(8, 64, 64, 3), (people, 5), (8, people, 4)])
    assert 2 <= people <= 12 and len(set(record["person_ids"].tolist())) == people
    # The owner map is stored as rendered (records are shuffled: match them by their video) and
    # indexes the stored person rows.
    assert record["owner"].dtype == np.int16 and record["owner"].shape == (64, 64)
    assert record["owner"].min() == -1 and record["owner"].max() == people - 1
    rendered = {r["video"].tobytes(): r for _, r in builder.render_examples("train", range(4))}
    for i in range(4):
        stored = source[i]
        np.testing.assert_array_equal(stored["owner"], rendered[stored["video"].tobytes()]["owner"])
    loader = pipeline.make_loader(
        source, pipeline.KeyframeTransform(num_frames=4, max_people=12, train=False),
        global_batch_size=2, seed=0, train=False, process_index=0, process_count=1)
    batch = next(loader)
    chex.assert_shape([batch["video"], batch["boxes"], batch["person_mask"], batch["owner"]],
                      [(2, 4, 64, 64, 3), (2, 12, 4), (2, 12), (2, 64, 64)])
    assert batch["owner"].dtype == np.int32


def test_classroom_version_bump_rebuilds_stale_data(tmp_path):
    """1.1.0 added `owner`: a 1.0.0 cache (no owner) is never read as the current version."""
    builder = builders.make_builder("classroom", "tiny", str(tmp_path), num_train=2,
                                    num_validation=1, num_test=1)
    assert str(builder.version) == "1.1.0" and "1.1.0" in builder.RELEASE_NOTES
    assert pathlib.Path(builder.data_dir).name == "1.1.0"
    assert builder.info.features["owner"].shape == (64, 64)


def test_maneuvers_version_bump_stores_raw_video(tmp_path):
    """1.1.0 stores the video as raw bytes: a 1.0.0 (zlib) cache is never read as it; the clips
    are the renderer's, byte for byte."""
    builder = builders.make_builder("maneuvers", "tiny", str(tmp_path), num_train=2,
                                    num_validation=1, num_test=1)
    assert str(builder.version) == "1.1.0" and "1.1.0" in builder.RELEASE_NOTES
    assert pathlib.Path(builder.data_dir).name == "1.1.0"
    assert builder.info.features["video"].to_json_content().encoding == "bytes"
    builder.download_and_prepare(file_format="array_record")
    record = builder.as_data_source("train")[1]
    clip = maneuvers.render_clip(builders.example_seed("train", 1), 1,
                                 builder.builder_config.render)
    np.testing.assert_array_equal(record["video"], clip["video"])


@pytest.mark.parametrize("name", ["maneuvers", "classroom"])
def test_metadata_matches_the_prepared_dataset(name, tmp_path):
    """The builders' declared metadata (generates nothing) is what their data holds."""
    cls = builders.BUILDERS[name]
    for config in cls.BUILDER_CONFIGS:
        assert cls.preset(config.name) is config
        r = config.render.resolution
        assert cls.frame_shape(config.name) == (r, r, 3)
    builder = builders.make_builder(name, "tiny", str(tmp_path), num_train=2, num_validation=1,
                                    num_test=1)
    assert tuple(builder.info.features["video"].shape[1:]) == cls.frame_shape("tiny")
    names = ", ".join(repr(n) for n in sorted(c.name for c in cls.BUILDER_CONFIGS))
    with pytest.raises(ValueError, match=r"data.builder_config='huge': .*" + re.escape(f"[{names}]")):
        cls.preset("huge")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_declared_flip_permutations():
    perm = builders.Maneuvers.FLIP_PERMUTATION
    np.testing.assert_array_equal(perm, maneuvers.FLIP_PERMUTATION)
    assert np.array_equal(perm[perm], np.arange(len(builders.Maneuvers.CLASS_NAMES)))
    assert builders.Classroom.FLIP_PERMUTATION is None  # every behaviour is mirror-symmetric


def test_classroom_max_people_is_the_renderers():
    for config in builders.Classroom.BUILDER_CONFIGS:
        assert builders.Classroom.max_people(config.name) == config.render.max_people
    assert builders.Classroom.max_people("default") == classroom.ClassroomConfig().max_people
    with pytest.raises(ValueError, match="data.builder_config='huge'"):
        builders.Classroom.max_people("huge")


def test_bad_names_are_reported():
    with pytest.raises(ValueError, match="data.name"):
        builders.make_builder("kinetics", "tiny", "/tmp/x")
    with pytest.raises(ValueError, match="data.builder_config"):
        builders.make_builder("maneuvers", "huge", "/tmp/x")
    with pytest.raises(ValueError, match="resolutoin"):
        builders.make_builder("maneuvers", "tiny", "/tmp/x", resolutoin=32)


def test_oversized_split_fails_before_rendering(monkeypatch):
    monkeypatch.setattr(builders.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="split 'train'.*num_train"):
        builders.make_builder("maneuvers", "default", "/tmp/x", num_train=3000)


def test_processes_sharing_a_data_dir_prepare_it_once(tmp_path):
    """Hosts of one job (or test workers) loading the same dataset into one empty directory."""
    script = ("import sys; from jaxact.data import builders; "
              "b = builders.load('maneuvers', 'tiny', sys.argv[1], "
              "{'num_train': 6, 'num_validation': 2, 'num_test': 2}); "
              "print(b.info.splits['train'].num_examples)")
    root = pathlib.Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert out.split()[-1] == "6"
    assert not list(tmp_path.rglob("incomplete*"))
