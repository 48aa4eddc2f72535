"""Dataset registries by task: names, builder configs and detection metadata checked before any
generation; the built-in datasets give the transforms the experiments used to build themselves."""

import re

import ml_collections
import numpy as np
import pytest

from jaxact.data import builders, classroom, maneuvers, pipeline, sources, video_io

# Small splits of the tiny presets, so that the module renders a few clips only.
SMALL = {"num_train": 4, "num_validation": 1, "num_test": 2}


def _data_config(name, data_dir, **fields):
    """A `data` section like those of configs/classroom_detector.py and maneuvers_memory.py."""
    config = ml_collections.ConfigDict({
        "name": name, "builder_config": "tiny", "data_dir": str(data_dir), "num_frames": 4,
        "flip_prob": 0.5, "num_threads": 2, "prefetch": 4})
    if name == "classroom":
        config.update(frame_stride=1, max_people=12)
    else:
        config.update(min_fraction=1.0)
    config.update(fields)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A fresh directory; `builders.load` gives the tiny presets with `SMALL` splits there."""
    load = builders.load
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builders, "load",
                   lambda name, config_name, data_dir, overrides=None:
                   load(name, config_name, data_dir, {**SMALL, **(overrides or {})}))
        yield tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def keyframe_videos(data_dir):
    return sources.make(_data_config("classroom", data_dir), "detection")


def test_registries_by_task():
    assert set(sources.CLASSIFICATION_DATASETS) == {"maneuvers", "ragged_npz", "video_files",
                                                     "video_folder"}
    assert set(sources.DETECTION_DATASETS) == {"ava_format", "classroom"}
    assert sources.DETECTION_DATASETS["classroom"] is sources.KeyframeVideos
    assert sources.REGISTRIES == {"classification": sources.CLASSIFICATION_DATASETS,
                                  "detection": sources.DETECTION_DATASETS}
    # Every built-in TFDS builder is a dataset of one task.
    tfds_names = {name for registry in sources.REGISTRIES.values() for name in registry}
    assert set(builders.BUILDERS) <= tfds_names


@pytest.mark.parametrize(("name", "task", "allowed"), [
    ("classroom", "classification", "['maneuvers', 'ragged_npz', 'video_files', 'video_folder']"),
    ("kinetics", "classification", "['maneuvers', 'ragged_npz', 'video_files', 'video_folder']"),
    ("maneuvers", "detection", "['ava_format', 'classroom']"),
    ("video_files", "detection", "['ava_format', 'classroom']"),
])
def test_unknown_name_for_a_task_fails_naming_it(name, task, allowed, tmp_path):
    config = _data_config(name, tmp_path / "tfds")
    with pytest.raises(ValueError, match=rf"data.name='{name}': {task} needs .*"
                                         rf"expected one of {re.escape(allowed)}"):
        sources.make(config, task)
    if task == "detection":
        with pytest.raises(ValueError, match=f"data.name='{name}'"):
            sources.detection_spec(config)
    assert not (tmp_path / "tfds").exists()


def test_unknown_task():
    with pytest.raises(ValueError, match="task='tracking'.*'classification', 'detection'"):
        sources.make(_data_config("classroom", "/nonexistent"), "tracking")


def test_unknown_builder_config_fails_before_generation(tmp_path):
    config = _data_config("classroom", tmp_path / "tfds", builder_config="huge")
    for check in (sources.detection_spec, sources.detection_max_people,
                  lambda c: sources.make(c, "detection")):
        with pytest.raises(ValueError, match=r"data.builder_config='huge': expected one of "
                                             r"\['default', 'lessons', 'lessons_crowded', "
                                             r"'small', 'tiny'\]"):
            check(config)
    assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("builder_config", ["tiny", "default"])
def test_detection_spec_is_the_renderers(builder_config, tmp_path):
    config = _data_config("classroom", tmp_path / "tfds", builder_config=builder_config)
    spec = sources.detection_spec(config)
    render = {c.name: c.render for c in builders.Classroom.BUILDER_CONFIGS}[builder_config]
    assert spec.max_people == render.max_people == sources.detection_max_people(config)
    assert spec.frame_shape == (render.resolution, render.resolution, 3)
    assert spec.class_names == classroom.BEHAVIOURS
    if builder_config == "default":
        assert spec.max_people == classroom.ClassroomConfig().max_people
    assert not (tmp_path / "tfds").exists()  # metadata only


def test_keyframe_videos_interface(keyframe_videos, data_dir):
    data = keyframe_videos
    assert data.class_names == list(classroom.BEHAVIOURS)
    assert data.description == "classroom/tiny"
    assert data.frame_shape == (64, 64, 3) == sources.detection_spec(data.config).frame_shape
    assert data.max_people == 12
    assert len(data.source("train")) == SMALL["num_train"]
    assert len(data.source("test")) == SMALL["num_test"]
    people = max(len(data.source(s)[i]["boxes"]) for s in ("train", "test")
                 for i in range(len(data.source(s))))
    assert 2 <= people <= data.max_people


@pytest.mark.parametrize("train", [True, False])
def test_keyframe_transform_is_the_configured_one(keyframe_videos, train):
    c = keyframe_videos.config
    transform = keyframe_videos.transform(train=train)
    direct = pipeline.KeyframeTransform(num_frames=c.num_frames, max_people=c.max_people,
                                        train=train, stride=c.frame_stride, flip_prob=c.flip_prob)
    assert transform == direct
    record = keyframe_videos.source("train")[0]
    for seed in range(4):  # train: flipped and unflipped clips
        a = transform(record, np.random.default_rng(seed) if train else None)
        b = direct(record, np.random.default_rng(seed) if train else None)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def native_frames(t=5, h=240, w=426):
    """A smooth moving pattern at a phone video's native resolution: uint8 `[t, h, w, 3]`."""
    y, x = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]
    frames = [np.stack([x + 0.1 * i, y, (x + y) / 2], -1) for i in range(t)]
    return np.rint(255 * (0.5 + 0.5 * np.sin(np.pi * np.stack(frames)))).astype(np.uint8)


def test_keyframe_read_clip(keyframe_videos, tmp_path):
    video = keyframe_videos.source("test")[0]["video"]
    np.savez(tmp_path / "clip.npz", video=video)
    for name, stored in (("clip.npy", video), ("float01.npy", video / 255.0),
                         ("float255.npy", video.astype(np.float32))):
        np.save(tmp_path / name, stored)
    for name in ("clip.npz", "clip.npy", "float01.npy", "float255.npy"):
        frames = keyframe_videos.read_clip(str(tmp_path / name))
        assert frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, video)  # floats: the same frames, not near-black
    np.save(tmp_path / "bad.npy", np.zeros((4, 7, 7, 2), np.uint8))
    with pytest.raises(video_io.BadInputError, match=r"bad.npy: field 'video': shape \(4, 7, 7, 2\)"
                                                     r": 2 channels"):
        keyframe_videos.read_clip(str(tmp_path / "bad.npy"))
    np.save(tmp_path / "bright.npy", video.astype(np.float32) + 256)
    found = rf"values in \[{int(video.min()) + 256}, {int(video.max()) + 256}\], expected \[0, 255\]"
    with pytest.raises(ValueError, match=rf"bright.npy: field 'video': {found}"):
        keyframe_videos.read_clip(str(tmp_path / "bright.npy"))
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        keyframe_videos.read_clip(str(tmp_path / "missing.npy"))


def test_read_clip_resizes_arrays_like_videos(keyframe_videos, data_dir, tmp_path):
    """A frame array at native resolution is resized to the training resolution, as the same
    video as an .mp4 is: by `video_io._resize`, and to (nearly) the frames of the video."""
    native = native_frames()
    np.save(tmp_path / "native.npy", native)
    np.save(tmp_path / "native01.npy", native.astype(np.float32) / 255)
    expected = video_io._resize(native, (64, 64))
    assert expected.shape == (5, 64, 64, 3)
    maneuvers = sources.make(_data_config("maneuvers", data_dir))
    for name in ("native.npy", "native01.npy"):
        path = str(tmp_path / name)
        np.testing.assert_array_equal(sources.read_frames(path, (64, 64, 3)), expected)
        np.testing.assert_array_equal(keyframe_videos.read_clip(path), expected)
        np.testing.assert_array_equal(maneuvers.read_clip(path)["video"], expected)
    with pytest.raises(ValueError, match=r"frame_shape=\(64, 64\): expected \(H, W, 3\)"):
        sources.read_frames(str(tmp_path / "native.npy"), (64, 64))

    from test_bad_input import encode  # skips without PyAV

    mp4 = encode(tmp_path / "native.mp4", native)
    from_video = keyframe_videos.read_clip(mp4)
    assert from_video.shape == expected.shape
    assert np.abs(from_video.astype(int) - expected).mean() < 4  # lossy codec, other scaler


def test_read_frames_resizes_videos(tmp_path):
    from test_bad_input import encode, frames_rgb  # skips without PyAV

    path = encode(tmp_path / "clip.mp4", frames_rgb(t=5, h=32, w=48))
    out = sources.read_frames(path, (16, 16, 3))
    assert out.shape == (5, 16, 16, 3) and out.dtype == np.uint8


def test_maneuvers_state_their_mirror_permutation(data_dir):
    data = sources.make(_data_config("maneuvers", data_dir, min_fraction=0.5))
    assert isinstance(data, sources.SyntheticVideos)
    np.testing.assert_array_equal(data.flip_permutation, builders.Maneuvers.FLIP_PERMUTATION)
    for train in (True, False):
        transform = data.transform(train, 0.5, pipeline.View(0.25, flip=True))
        assert transform == pipeline.ClipTransform(
            num_frames=4, train=train, fraction=0.5, min_fraction=0.5, flip_prob=0.5,
            view=pipeline.View(0.25, flip=True), flip_permutation=(0, 2, 1, 4, 3, 5))
    boxed = sources.make(_data_config("maneuvers", data_dir, target_crop=8, target_only=True,
                                      target_track=True, stabilize_track=True))
    assert boxed.transform(False) == pipeline.ClipTransform(
        num_frames=4, train=False, flip_prob=0.5, flip_permutation=(0, 2, 1, 4, 3, 5),
        target_crop=8, target_track=True, stabilize_track=True, target_only=True)
    source = data.source("train")
    record = next(source[i] for i in range(len(source)) if source[i]["label"] == 1)  # turn_left
    mirrored = data.transform(False, view=pipeline.View(flip=True))(record, None)
    assert mirrored["label"] == 2  # turn_right


def test_extra_train_clips_continue_the_train_seed_stream(data_dir):
    plain = sources.make(_data_config("maneuvers", data_dir))
    more = sources.make(_data_config("maneuvers", data_dir, extra_train_clips=2))
    stored, train = plain.source("train"), more.source("train")
    assert len(train) == len(stored) + 2 and more.source("train") is train  # rendered once
    np.testing.assert_array_equal(train[0]["video"], stored[0]["video"])
    np.testing.assert_array_equal(train[-1]["video"], train[len(stored) + 1]["video"])
    render = more.builder.builder_config.render
    for index in (len(stored), len(stored) + 1):  # as a larger split would hold them
        clip = maneuvers.render_clip(builders.example_seed("train", index), index % 6, render)
        np.testing.assert_array_equal(train[index]["video"], clip["video"])
        np.testing.assert_array_equal(train[index]["boxes"], clip["boxes"])
        assert train[index]["label"] == clip["label"]
    with pytest.raises(IndexError):
        train[len(train)]
    assert len(more.source("test")) == len(plain.source("test"))
    with pytest.raises(ValueError, match="data.extra_train_clips must be >= 0"):
        sources.make(_data_config("maneuvers", data_dir, extra_train_clips=-1))
