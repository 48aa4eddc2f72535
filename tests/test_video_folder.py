"""Video folders (`data.name="video_folder"`): rendered manoeuvre clips stored as mp4s at several
frame rates, a .npy array and JPEG frame folders, one folder per class, with UCF101- and
HMDB51-style split files and broken files among them. The cache holds exactly the frames that
decoding each file directly gives, bad files are reported by name (and split-file row) and
skipped, the cache is reused and rebuilt only where something changed, and a tiny classifier
trains on the folder end to end."""

import json
import os
import shutil
import types

import numpy as np
import pytest
from PIL import Image
from test_video_files import REAL_CLIPS

from configs import video_folder_memory
from jaxact.data import maneuvers, pipeline, sources, video_folder, video_io
from jaxact.train import classifier

CLASSES = ("straight", "turn_left", "u_turn")  # manoeuvres, and the class folders
# The smoke config's short side and crop (the training then compiles what test_video_files's
# does: the session's compilation cache serves both), and the test's frame rates.
SHORT, CROP = 36, 32
FPS, FRAME_FPS = 10.0, 20.0
MP4_RATES = (30.0, 25.0, 15.0, 12.5)  # frame rates of the mp4 clips, cycled
CLIPS_PER_CLASS = 6
UCF_TEST = {1: (4, 5), 2: (0, 1)}  # clip numbers that testlistNN.txt lists, per split number


def clip_name(k: int, i: int) -> str:
    """Class `k`'s clip `i`: mp4s, one .npy (turn_left 5) and frame folders (u_turn)."""
    if k == 2:
        return f"u{i}"
    return f"{CLASSES[k][0]}{i}." + ("npy" if (k, i) == (1, 5) else "mp4")


def write_lines(path, lines) -> dict:
    """Writes `lines` (text, tag) to `path`; returns {tag: 1-based row} of the tagged ones."""
    path.write_text("".join(f"{text}\n" for text, _ in lines))
    return {tag: row for row, (_, tag) in enumerate(lines, 1) if tag is not None}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """ROOT/CLASS/clips, split files (ROOT/../ucf, ROOT/../hmdb) and what a reader must find:
    the good clips {CLASS/NAME: (source frames [T, H, W, 3], frame rate)}, the bad files and
    the rows of the split files."""
    base = tmp_path_factory.mktemp("video_folder")
    root = base / "root"
    render = maneuvers.ManeuverConfig(min_frames=16, max_frames=24, max_distractors=0,
                                      noise_std=0.0, jitter_px=0.0)
    good = {}
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(CLIPS_PER_CLASS):
            frames = maneuvers.render_clip(10 * k + i, maneuvers.MANEUVERS.index(name),
                                           render)["video"]
            clip = clip_name(k, i)
            path = root / name / clip
            if k == 2:  # portrait JPEG frame folders: the width is the short side
                frames = frames[:, :, 8:56]
                path.mkdir()
                for t, frame in enumerate(frames):
                    Image.fromarray(frame).save(path / f"{t + 1:04d}.jpg", quality=95)
                rate = FRAME_FPS
            elif clip.endswith(".npy"):
                frames = frames[:, 8:56]
                np.save(path, frames)
                rate = FRAME_FPS
            else:  # landscape mp4s at several frame rates
                frames, rate = frames[:, 8:56], MP4_RATES[(k + i) % len(MP4_RATES)]
                video_io.write_video(str(path), frames, fps=rate)
            good[f"{name}/{clip}"] = (frames, rate)
    # One second at 30 fps and at 25 fps: the same 10 frames at 10 fps.
    for name, rate in (("straight/same_30.mp4", 30), ("straight/same_25.mp4", 25)):
        frames = np.repeat(good["straight/s0.mp4"][0][:1], rate, axis=0)
        good[name] = (frames, float(rate))
        video_io.write_video(str(root / name), frames, fps=rate)

    mp4 = (root / "straight" / "s0.mp4").read_bytes()
    (root / "straight" / "empty.mp4").write_bytes(b"")
    (root / "turn_left" / "truncated.mp4").write_bytes(mp4[:len(mp4) // 2])
    shutil.copytree(root / "u_turn" / "u0", root / "u_turn" / "broken")
    (root / "u_turn" / "broken" / "0003.jpg").write_bytes(b"\xff\xd8 not a jpeg" * 20)
    (root / "straight" / "notes.txt").write_text("not a clip\n")
    (root / "loose.mp4").write_bytes(mp4)
    bad = {"straight/empty.mp4": ("straight/empty.mp4", "empty file (0 bytes)"),
           "turn_left/truncated.mp4": ("turn_left/truncated.mp4", "truncated or corrupt"),
           "u_turn/broken": ("u_turn/broken/0003.jpg", "unreadable image")}
    stray = {str(root / "straight" / "notes.txt"): "not a clip",
             str(root / "loose.mp4"): "not in a class folder"}

    # UCF101: CLASS/NAME.avi [LABEL]; frame folders are listed as the videos they came from.
    ucf = base / "ucf"
    ucf.mkdir()

    def listed(k, i):
        return f"{CLASSES[k]}/{clip_name(k, i)}" + (".avi" if k == 2 else "")

    ucf_rows, ucf_members = {}, {}
    for number, test in UCF_TEST.items():
        train = [(f"{listed(k, i)} {k + 1}", ("good", k, i)) for k in range(3)
                 for i in range(CLIPS_PER_CLASS) if i not in test]
        train.insert(3, ("straight/same_30.mp4 1", ("good", "straight/same_30.mp4")))
        train.insert(5, ("straight/empty.mp4 1", ("bad", "straight/empty.mp4")))
        train.append(("u_turn/broken.avi 3", ("bad", "u_turn/broken")))
        train.append(("straight/s0.mp4 1 extra", ("row", "three fields")))
        train.append(("no_class_folder.avi", ("row", "no class")))
        tests = [(listed(k, i), ("good", k, i)) for k in (2, 1, 0) for i in test]
        tests.insert(1, ("straight/same_25.mp4", ("good", "straight/same_25.mp4")))
        tests.insert(2, ("turn_left/truncated.mp4", ("bad", "turn_left/truncated.mp4")))
        tests.append(("straight/missing.mp4", ("missing", "straight/missing.mp4")))
        for split, lines in (("train", train), ("test", tests)):
            ucf_rows[number, split] = write_lines(ucf / f"{split}list{number:02d}.txt", lines)
            ucf_members[number, split] = [
                f"{CLASSES[tag[1]]}/{clip_name(*tag[1:])}" if len(tag) == 3 else tag[1]
                for _, tag in lines if tag[0] == "good"]
    (ucf / "classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(CLASSES)))

    # HMDB51: CLASS_test_split1.txt, NAME FLAG (1 train, 2 test, 0 unused).
    hmdb = base / "hmdb"
    hmdb.mkdir()
    flags = {0: "1", 1: "1", 2: "1", 3: "2", 4: "2", 5: "0"}
    hmdb_rows = {}
    for k, name in enumerate(CLASSES):
        lines = [(f"{clip_name(k, i)} {flags[i]} ", f"{name}/{clip_name(k, i)}")
                 for i in range(CLIPS_PER_CLASS)]
        if k == 0:
            lines += [("empty.mp4 1", "straight/empty.mp4"), ("s0.mp4 7", "flag")]
        hmdb_rows[name] = write_lines(hmdb / f"{name}_test_split1.txt", lines)
    (hmdb / "ghost_test_split1.txt").write_text("g0.avi 1\n")
    hmdb_members = {split: [f"{c}/{clip_name(k, i)}" for k, c in enumerate(CLASSES)
                            for i in range(CLIPS_PER_CLASS) if flags[i] == flag]
                    for split, flag in (("train", "1"), ("test", "2"))}

    config = video_folder_memory.get_config("smoke")
    data = config.data
    data.root, data.split_dir, data.cache_dir = str(root), str(ucf), str(base / "cache")
    data.fps, data.frame_fps = FPS, FRAME_FPS
    assert (data.short_side, data.crop_size) == (SHORT, CROP)
    data.decode_workers = 2
    return types.SimpleNamespace(base=base, root=root, ucf=ucf, hmdb=hmdb, config=config,
                                 good=good, bad=bad, stray=stray, ucf_rows=ucf_rows,
                                 ucf_members=ucf_members, hmdb_rows=hmdb_rows,
                                 hmdb_members=hmdb_members)


@pytest.fixture(scope="module")
def dataset(folder):
    return sources.make(folder.config.data)


def with_data(folder, **fields):
    """The fixture's config with some `data` fields changed."""
    config = folder.config.copy_and_resolve_references()
    config.data.update(fields)
    return config


def reference(root, clip: str, rate: float) -> np.ndarray:
    """The stored frames of `clip`, computed without the converter: the whole file decoded at
    once (`read_video`, FFmpeg's scaler) or the images read with PIL, the frames showing at
    times k / FPS picked, and arrays / images resized one by one with `video_io._resize`."""
    path = os.path.join(root, clip)
    if clip.endswith(".mp4"):
        with video_io._import_av().open(path) as container:
            stream = container.streams.video[0]
            h, w = stream.codec_context.height, stream.codec_context.width
            assert float(stream.average_rate) == rate
        frames = video_io.read_video(path, size=video_folder.resized_shape(h, w, SHORT))
        return frames[video_folder.resample_indices(len(frames), rate, FPS)]
    if clip.endswith(".npy"):
        frames = np.load(path)
    else:
        frames = np.stack([np.asarray(Image.open(os.path.join(path, f)).convert("RGB"))
                           for f in sorted(os.listdir(path))])
    frames = frames[video_folder.resample_indices(len(frames), FRAME_FPS, FPS)]
    size = video_folder.resized_shape(*frames.shape[1:3], SHORT)
    return np.concatenate([video_io._resize(frame[None], size) for frame in frames])


def test_resampling_by_time():
    # 30 fps -> 10 fps: every third frame; 25 -> 10: the frame showing at 0, 0.1, 0.2 s ...
    np.testing.assert_array_equal(video_folder.resample_indices(9, 30, 10), [0, 3, 6])
    np.testing.assert_array_equal(video_folder.resample_indices(10, 25, 10), [0, 2, 5, 7])
    np.testing.assert_array_equal(video_folder.resample_indices(4, 5, 10),
                                  [0, 0, 1, 1, 2, 2, 3, 3])  # slower sources repeat frames
    np.testing.assert_array_equal(video_folder.resample_indices(5, 30, 0), np.arange(5))
    # NTSC 29.97 fps is 30000/1001 exactly: 300 frames last 10.01 s, 101 frames at 10 fps.
    ntsc = video_folder.resample_indices(300, 30000 / 1001, 10)
    assert len(ntsc) == 101 and ntsc[-1] == 299 and ntsc[100] == int(100 * 3 * 1000 / 1001)
    for length, source, fps in ((30, 30, 10), (25, 25, 10), (97, 29.97, 7.5), (13, 12.5, 25)):
        expected = video_folder.resample_indices(length, source, fps)
        np.testing.assert_array_equal(expected, np.floor(
            np.arange(len(expected)) * source / fps + 1e-9).astype(int))
        assert len(expected) == np.ceil(length * fps / source - 1e-9)
        streamed = list(video_folder.resample(iter(range(length)), source, fps))
        np.testing.assert_array_equal(streamed, expected)
        capped = list(video_folder.resample(iter(range(length)), source, fps, max_frames=3))
        np.testing.assert_array_equal(capped, expected[:3])
    assert video_folder.resized_shape(48, 64, 24) == (24, 32)
    assert video_folder.resized_shape(64, 48, 24) == (32, 24)
    assert video_folder.resized_shape(240, 426, 36) == (36, 64)


def test_records_round_trip_exactly(folder, dataset):
    assert dataset.class_names == sorted(CLASSES)
    with open(os.path.join(folder.config.data.cache_dir, "meta.json")) as f:
        assert json.load(f)["class_names"] == sorted(CLASSES)  # saved with the dataset
    for split in ("train", "test"):
        src = dataset.source(split)
        assert src.paths == folder.ucf_members[1, split]
        assert len(src) == len(src.paths)
        for i, clip in enumerate(src.paths):
            source, rate = folder.good[clip]
            record = src[i]
            expected = reference(folder.root, clip, rate)
            assert record["path"] == clip and record["label"] == CLASSES.index(clip.split("/")[0])
            assert record["video"].dtype == np.uint8
            np.testing.assert_array_equal(record["video"], expected, err_msg=clip)
            # Frames at 10 fps: ceil(seconds * 10) of them, short side SHORT.
            assert len(record["video"]) == np.ceil(len(source) * FPS / rate - 1e-9)
            assert min(record["video"].shape[1:3]) == SHORT
            np.testing.assert_array_equal(record["boxes"], np.zeros((len(expected), 4)))
            # The picture is the clip's own (mp4s are lossy: close, not equal).
            shown = source[video_folder.resample_indices(len(source), rate, FPS)]
            resized = video_folder.resize(shown, record["video"].shape[1:3])
            assert np.abs(record["video"].astype(int) - resized).mean() < 6, clip
    same = {c: dataset.source(s)[dataset.source(s).paths.index(c)]["video"]
            for s, c in (("train", "straight/same_30.mp4"), ("test", "straight/same_25.mp4"))}
    assert [len(v) for v in same.values()] == [10, 10]  # one second either way
    with pytest.raises(ValueError, match="split 'validation'"):
        dataset.source("validation")


def test_bad_files_and_rows_are_reported_and_skipped(folder, dataset):
    ucf = {split: str(folder.ucf / f"{split}list01.txt") for split in ("train", "test")}
    found = {}
    for p in dataset.problems:
        found.setdefault(p.path, []).append(p)
    # Files that are no clips, by name, with no split.
    for path, words in folder.stray.items():
        (p,) = found.pop(path)
        assert words in p.reason and p.split is None and str(p).startswith(f"{path}: ")
    # Bad clips, once per split-file row that lists them, naming the file (or its bad frame).
    for clip, (file, words) in folder.bad.items():
        (p,) = found.pop(str(folder.root / file))
        split = "test" if "truncated" in clip else "train"
        assert words in p.reason and (p.split, p.list_file) == (split, ucf[split])
        assert p.row == folder.ucf_rows[1, split]["bad", clip]
        assert str(p).startswith(f"{folder.root / file} ({split} list {ucf[split]}, row {p.row})")
    (p,) = found.pop(str(folder.root / "straight" / "missing.mp4"))
    assert p.reason == "no such file or frame folder" and p.list_file == ucf["test"]
    assert p.row == folder.ucf_rows[1, "test"]["missing", "straight/missing.mp4"]
    # Malformed rows: the split file and its line.
    rows = found.pop(ucf["train"])
    assert [(p.row, p.split) for p in rows] == [(row, "train") for tag, row in
                                                folder.ucf_rows[1, "train"].items()
                                                if tag[0] == "row"]
    assert "expected CLASS/NAME.avi [LABEL]" in rows[0].reason
    assert not found
    clips_on_disk = len(folder.good) + len(folder.bad)
    assert dataset.num_checked == clips_on_disk + len(folder.stray) + 2 + 1
    assert not any(p.path.startswith(str(folder.root / "u_turn" / "u")) for p in dataset.problems)


def test_transforms_crop_fixed_squares_and_mirror_keeps_labels(folder, dataset):
    num_frames = folder.config.data.num_frames
    src = dataset.source("train")
    record = src[src.paths.index("u_turn/u0")]  # portrait: 48 x 36
    assert record["video"].shape[1:3] == (48, 36)
    centre = dataset.transform(train=False)(record, None)
    assert centre["video"].shape == (num_frames, CROP, CROP, 3) and centre["label"] == 2
    full = pipeline.ClipTransform(num_frames, train=False, flip_prob=0.0)(record, None)
    np.testing.assert_array_equal(centre["video"], full["video"][:, 8:40, 2:34])
    mirrored = dataset.transform(False, view=pipeline.View(flip=True))(record, None)
    np.testing.assert_array_equal(mirrored["video"], centre["video"][:, :, ::-1])
    assert mirrored["label"] == 2
    train = dataset.transform(train=True)
    rng = np.random.default_rng(0)
    crops = {tuple(train(src[i], rng)["video"].shape) for i in range(len(src)) for _ in range(2)}
    assert crops == {(num_frames, CROP, CROP, 3)}
    with pytest.raises(ValueError, match="crop_size=40: expected 1 to data.short_side=36"):
        sources.make(with_data(folder, crop_size=40).data)


def test_read_clip_decodes_like_the_cache(folder, dataset):
    src = dataset.source("test")
    for clip in ("u_turn/u4", "turn_left/t5.npy", "straight/same_25.mp4"):
        record = src[src.paths.index(clip)]
        read = dataset.read_clip(str(folder.root / clip))
        np.testing.assert_array_equal(read["video"], record["video"])
    with pytest.raises(video_io.BadInputError, match="empty.mp4: empty file"):
        dataset.read_clip(str(folder.root / "straight" / "empty.mp4"))


def test_hmdb_splits_reuse_the_decoded_clips(folder, dataset, monkeypatch):
    decoded = []
    monkeypatch.setattr(video_folder, "decode_clip", lambda path, _: decoded.append(path))
    hmdb = sources.make(with_data(folder, split_dir=str(folder.hmdb)).data)
    assert decoded == []  # the cache serves every split
    assert hmdb.description.endswith("|hmdb split 1")
    for split, members in folder.hmdb_members.items():
        assert hmdb.source(split).paths == members  # flag 0 (unused) in neither
    by_file = {}  # by the split file of the row, else by the file
    for p in hmdb.problems:
        by_file.setdefault(os.path.basename(p.list_file or p.path), []).append(p)
    (ghost,) = by_file.pop("ghost_test_split1.txt")
    assert "class 'ghost' has no folder" in ghost.reason
    (empty, flag) = sorted(by_file.pop("straight_test_split1.txt"), key=lambda p: p.row)
    assert (flag.field, flag.row) == ("flag", folder.hmdb_rows["straight"]["flag"])
    assert "FLAG 1 (train), 2 (test) or 0 (unused)" in flag.reason
    assert (empty.path, empty.row, empty.split) == (
        str(folder.root / "straight" / "empty.mp4"),
        folder.hmdb_rows["straight"]["straight/empty.mp4"], "train")
    # Bad clips that no row lists (and stray files) are reported once each, with no split.
    assert set(by_file) == {"truncated.mp4", "0003.jpg", "notes.txt", "loose.mp4"}
    assert all(len(v) == 1 and v[0].split is None for v in by_file.values())
    # Split 2 of the UCF lists: another partition of the same clips.
    ucf2 = sources.make(with_data(folder, split_number=2).data)
    assert ucf2.source("test").paths == folder.ucf_members[2, "test"] and decoded == []


def test_hashed_split_without_split_files(folder, dataset, monkeypatch):
    decoded = []
    monkeypatch.setattr(video_folder, "decode_clip", lambda path, _: decoded.append(path))
    data = sources.make(with_data(folder, split_dir="", test_fraction=0.3).data)
    assert decoded == []  # served from the cache
    train, test = data.source("train").paths, data.source("test").paths
    assert sorted(train + test) == sorted(folder.good) and not set(train) & set(test)
    for name in CLASSES:
        members = [c for c in folder.good if c.startswith(name + "/")]
        tested = [c for c in test if c.startswith(name + "/")]
        # (Bad clips take part in the split too, so that the split does not depend on them.)
        assert 1 <= len(tested) < len(members)
    assert video_folder.hashed_split(list(reversed(folder.good)), 0.3) == {
        s: list(reversed(v)) for s, v in video_folder.hashed_split(list(folder.good), 0.3).items()}
    bad = {os.path.relpath(p.path, folder.root): p.split for p in data.problems
           if p.split is not None}
    assert set(bad) == {"straight/empty.mp4", "turn_left/truncated.mp4", "u_turn/broken/0003.jpg"}


def test_cache_is_reused_and_rebuilt_only_where_needed(folder, tmp_path, monkeypatch):
    # A moved dataset keeps its cache: the records hold paths relative to the root.
    root, cache = tmp_path / "moved", tmp_path / "cache"
    shutil.copytree(folder.root, root)
    shutil.copytree(folder.config.data.cache_dir, cache)
    decoded = []
    decode = video_folder.decode_clip

    def counting(path, settings):
        decoded.append(os.path.relpath(path, root))
        if len(decoded) == interrupt_at:
            raise KeyboardInterrupt
        return decode(path, settings)

    interrupt_at = 0
    monkeypatch.setattr(video_folder, "decode_clip", counting)
    config = with_data(folder, root=str(root), cache_dir=str(cache), decode_workers=0)
    first = sources.make(config.data)
    assert decoded == []
    bad = {"straight/empty.mp4", "turn_left/truncated.mp4", "u_turn/broken"}  # always retried

    # One changed clip: only it (and the bad ones) are decoded again.
    frames = folder.good["straight/s2.mp4"][0][::-1]
    video_io.write_video(str(root / "straight" / "s2.mp4"), frames, fps=15)
    changed = sources.make(config.data)
    assert set(decoded) == {"straight/s2.mp4"} | bad
    record = changed.source("train")[changed.source("train").paths.index("straight/s2.mp4")]
    assert len(record["video"]) == np.ceil(len(frames) * FPS / 15 - 1e-9)
    assert [f for f in os.listdir(cache) if f.endswith(".array_record")] == [
        changed.meta["record_file"]]  # the old record file is gone

    # A new class shifts the labels: reused records are relabelled, only the new clip decoded.
    decoded.clear()
    (root / "a_new_class").mkdir()
    shutil.copy(root / "straight" / "s0.mp4", root / "a_new_class" / "n0.mp4")
    relabelled = sources.make(with_data(folder, root=str(root), cache_dir=str(cache),
                                        decode_workers=0, split_dir="").data)
    assert set(decoded) == {"a_new_class/n0.mp4"} | bad
    assert relabelled.class_names == ["a_new_class", *sorted(CLASSES)]
    for split in ("train", "test"):
        src = relabelled.source(split)
        for i, clip in enumerate(src.paths):
            assert src[i]["label"] == relabelled.class_names.index(clip.split("/")[0]), clip
    shutil.rmtree(root / "a_new_class")

    # An interrupted conversion (new settings) leaves the old cache whole and no litter.
    decoded.clear()
    sources.make(config.data)  # back to the three classes
    meta = (cache / "meta.json").read_bytes()
    listing = sorted(os.listdir(cache))
    decoded.clear()
    interrupt_at = 4
    with pytest.raises(KeyboardInterrupt):
        sources.make(with_data(folder, root=str(root), cache_dir=str(cache), decode_workers=0,
                               fps=5.0).data)
    assert (cache / "meta.json").read_bytes() == meta and sorted(os.listdir(cache)) == listing
    interrupt_at = 0
    decoded.clear()
    again = sources.make(config.data)
    assert decoded == [] and again.source("test").paths == first.source("test").paths

    # New settings decode everything.
    slower = sources.make(with_data(folder, root=str(root), cache_dir=str(cache),
                                    decode_workers=0, fps=5.0, max_frames=4).data)
    assert len(decoded) == len(folder.good) + len(bad)
    assert all(len(slower.source("train")[i]["video"]) <= 4 for i in range(3))


def test_setup_mistakes_are_clear_errors(folder, tmp_path):
    config = video_folder_memory.get_config("smoke")
    with pytest.raises(ValueError, match=r"data.root is not set: pass --config.data.root=FOLDER"):
        sources.make(config.data)
    config.data.root, config.data.cache_dir = str(tmp_path / "nowhere"), str(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such folder \(data.root"):
        sources.make(config.data)
    checks = {"split_number": (3, r"ucf: no split files for split 3: expected trainlist03.txt"),
              "split_scheme": ("kinetics", r"data.split_scheme='kinetics'"),
              "fps": (-1.0, r"fps=-1.0: expected >= 0")}
    for field, (value, match) in checks.items():
        with pytest.raises(ValueError, match=match):
            sources.make(with_data(folder, **{field: value}).data)
    empty = tmp_path / "empty_root"
    (empty / "only_class").mkdir(parents=True)
    with pytest.raises(ValueError, match="no usable train clip"):
        sources.make(with_data(folder, root=str(empty), split_dir="",
                               cache_dir=str(tmp_path / "c2")).data)


def test_tiny_classifier_trains_on_the_folder(folder, dataset, tmp_path, check_results):
    config = folder.config.copy_and_resolve_references()
    config.baseline.enabled = False
    config.eval.observation_ratios = (1.0,)
    workdir = str(tmp_path)
    exp = classifier.Experiment(config, workdir)
    results = exp.train_and_evaluate()

    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved["dataset"] == f"video_folder:{folder.root}|ucf split 1"
    assert saved["class_names"] == sorted(CLASSES) and saved["top1"] == results["top1"]
    assert saved["num_examples"] == len(folder.ucf_members[1, "test"])
    check_results(exp, saved)
    with open(os.path.join(workdir, "bad_inputs.json")) as f:
        report = json.load(f)
    assert report["checked"] == dataset.num_checked
    assert report["problems"] == [p._asdict() for p in dataset.problems]


def test_real_clips(tmp_path):
    from test_bad_input import CLIPS

    paths = {name: os.path.abspath(os.path.join(CLIPS, name)) for name in REAL_CLIPS}
    if not all(map(os.path.exists, paths.values())):
        pytest.skip(f"{CLIPS} not present (real data lives in ../shared/data)")
    for name, path in paths.items():
        label = "ucf" if name.startswith("ucf") else "other"
        (tmp_path / "root" / label).mkdir(parents=True, exist_ok=True)
        os.symlink(path, tmp_path / "root" / label / name)
    config = video_folder_memory.get_config("tiny")
    config.data.root, config.data.cache_dir = str(tmp_path / "root"), str(tmp_path / "cache")
    config.data.decode_workers = 2
    config.data.test_fraction = 0.5
    data = sources.make(config.data)
    assert data.problems == [] and data.class_names == ["other", "ucf"]
    rates = {"kinetics_arm_wrestling.mp4": 28, "pool_cleaning.mp4": 30,
             "ucf101_apply_eye_makeup.avi": 25, "basketball.mp4": 30000 / 1001}
    for clip in data.meta["clips"]:
        name = clip["path"].split("/")[1]
        assert clip["source_fps"] == pytest.approx(rates[name])
        assert clip["frames"] == np.ceil(REAL_CLIPS[name] * 10 / rates[name] - 1e-9)
        assert min(clip["height"], clip["width"]) == config.data.short_side
    src = data.source("train")
    (i,) = [i for i, c in enumerate(src.paths) if c.startswith("ucf/")]
    frames = video_io.read_video(paths["ucf101_apply_eye_makeup.avi"], size=(36, 48))
    np.testing.assert_array_equal(src[i]["video"],
                                  frames[video_folder.resample_indices(164, 25, 10)])
