"""Training on clip files listed in CSVs (`data.name="video_files"`): a corpus of good clips (frame
arrays of any size and channel layout, real mp4s) mixed with broken clips and rows. Every broken one
is reported by name (and CSV row), the loaders get exactly the good ones, and a run trains end to
end and writes bad_inputs.json."""

import json
import os
import types

import numpy as np
import pytest
from test_bad_input import CLIPS, av, encode, frames_rgb

from configs import video_files_memory
from jaxact.data import pipeline, sources, video_io
from jaxact.train import classifier

CLASSES = ("jump", "run", "wave")
SIZE = (32, 32)  # the smoke config's frame_size
FORMATS = {  # how a good clip is stored, and its (T, H, W); gray has fewer frames than num_frames
    "rgb": (lambda f: f, (10, 24, 40)),
    "gray": (lambda f: f[..., 0], (6, 32, 32)),
    "rgba": (lambda f: np.concatenate([f, np.full_like(f[..., :1], 255)], -1), (12, 40, 30)),
    "float01": (lambda f: f / 255.0, (9, 20, 20)),
}


def class_clip(k, t, h, w, seed=0):
    """uint8 `[t, h, w, 3]`: moving gradients, brightness set by the class `k` (0, 80, 160 + ...)."""
    return frames_rgb(t, h, w, seed) // 3 + np.uint8(80 * k)


def write_list(path, lines, header):
    """Writes CSV `lines` (text, tag); returns {1-based row: tag}."""
    text = ["path,label"] * header + [line for line, _ in lines]
    path.write_text("\n".join(text) + "\n")
    return {row: tag for row, (_, tag) in enumerate(lines, 1 + header)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The smoke config on this corpus, the good clips per split in list order (path, label, T,
    mean), the broken clips {path: (split, words of the reason)} and their rows {path: (list,
    row)}, the bad rows {(list, row): field} and the number of rows in both lists."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "clips").mkdir()
    good = {"train": [], "test": []}
    for i in range(12):
        k, fmt = i % 3, list(FORMATS)[i % 4]
        to_array, shape = FORMATS[fmt]
        frames = class_clip(k, *shape, seed=i)
        path = root / "clips" / f"{CLASSES[k]}_{i}_{fmt}.npy"
        np.save(path, to_array(frames))
        mean = frames[..., 0].mean() if fmt == "gray" else frames.mean()
        good["train" if i < 9 else "test"].append((str(path), CLASSES[k], shape[0], mean))
    for k, (h, w) in enumerate([(32, 48), (48, 64)]):
        frames = class_clip(k, 10, h, w, seed=20 + k)
        path = encode(root / "clips" / f"{CLASSES[k]}_video.mp4", frames)
        good["train"].append((path, CLASSES[k], 10, frames.mean()))

    mp4 = (root / "clips" / "jump_video.mp4").read_bytes()
    broken = {"train": {"missing.mp4": (None, "no such file"), "empty.npy": (b"", "empty file"),
                        "truncated.mp4": (mp4[:len(mp4) // 2], "cannot decode"),
                        "nan.npy": (np.full((8, 16, 16, 3), np.nan), "NaN")},
              "test": {"corrupt.mp4": (np.random.default_rng(0).bytes(3000), "cannot decode")}}
    bad_clips = {}
    for split, files in broken.items():
        for name, (data, words) in files.items():
            path = root / "clips" / name
            if isinstance(data, np.ndarray):
                np.save(path, data)
            elif data is not None:
                path.write_bytes(data)
            bad_clips[str(path)] = (split, words)

    lists = {split: root / f"{split}.csv" for split in good}
    bad_rows, clip_rows = {}, {}
    for split, header in (("train", True), ("test", False)):
        # Train rows are relative to the list's folder, test rows absolute.
        name = (lambda p: os.path.relpath(p, root)) if split == "train" else str
        lines = [(f"{name(p)},{label}", ("good", p)) for p, label, *_ in good[split]]
        lines += [(f"{name(p)},{CLASSES[0]}", ("clip", p)) for p, (s, _) in bad_clips.items()
                  if s == split]
        lines += {"train": [("clips/no_label.npy", "label"), (", run", "path")],
                  "test": [(f"{good['test'][0][0]},dance", "label"),  # not a train class
                           ("clips/a.npy,jump,extra", None)]}[split]
        lines = [(line, tag if isinstance(tag, tuple) else ("row", tag)) for line, tag in lines]
        lines = [lines[i] for i in np.random.default_rng(len(split)).permutation(len(lines))]
        rows = write_list(lists[split], lines, header)
        bad_rows.update({(str(lists[split]), row): tag[1] for row, tag in rows.items()
                         if tag[0] == "row"})
        clip_rows.update({tag[1]: (str(lists[split]), row) for row, tag in rows.items()
                          if tag[0] == "clip"})
        order = [tag[1] for _, tag in lines if tag[0] == "good"]  # good clips in list order
        good[split].sort(key=lambda item: order.index(item[0]))

    config = video_files_memory.get_config("smoke")
    config.data.train_list, config.data.test_list = map(str, lists.values())
    config.data.scan_workers = 2
    return types.SimpleNamespace(config=config, good=good, bad_clips=bad_clips, clip_rows=clip_rows,
                                 bad_rows=bad_rows,
                                 num_rows=sum(len(g) for g in good.values()) + len(bad_clips)
                                 + len(bad_rows))


@pytest.fixture(scope="module")
def dataset(corpus):
    return sources.make(corpus.config.data)


def test_bad_clips_and_rows_are_reported_by_name(corpus, dataset):
    assert dataset.class_names == sorted(CLASSES)
    by_clip = {p.path: p for p in dataset.problems if p.list_file is not None}
    by_row = {(p.path, p.row): p for p in dataset.problems if p.list_file is None}
    assert len(dataset.problems) == len(corpus.bad_clips) + len(corpus.bad_rows)
    assert dataset.num_checked == corpus.num_rows
    assert set(by_clip) == set(corpus.bad_clips)
    lists = {corpus.config.data.train_list: "train", corpus.config.data.test_list: "test"}
    for path, (split, words) in corpus.bad_clips.items():
        p = by_clip[path]
        assert words in p.reason and (p.list_file, p.row) == corpus.clip_rows[path]
        assert p.split == split and lists[p.list_file] == split
        assert str(p).startswith(f"{path} ({split} list {p.list_file}, row {p.row}): ")
    assert {key: p.field for key, p in by_row.items()} == corpus.bad_rows
    for (path, row), p in by_row.items():
        assert str(p).startswith(f"{path}: row {row}") and p.split == lists[path]
    unknown = [p for p in by_row.values() if "dance" in p.reason]
    assert len(unknown) == 1 and unknown[0].path == corpus.config.data.test_list


def test_sources_hold_exactly_the_good_clips(corpus, dataset):
    ids = {name: i for i, name in enumerate(dataset.class_names)}
    for split, good in corpus.good.items():
        src = dataset.source(split)
        assert src.rows == [(path, ids[label]) for path, label, *_ in good]
        for i, (path, label, length, mean) in enumerate(good):
            record = src[i]
            assert record["video"].shape == (length, *SIZE, 3), path
            assert record["video"].dtype == np.uint8 and record["label"] == ids[label]
            assert abs(record["video"].mean() - mean) < 4, path  # same picture, any storage
    with pytest.raises(ValueError, match="split 'validation'"):
        dataset.source("validation")


def test_transforms_give_fixed_shapes_and_mirror_keeps_labels(corpus, dataset):
    num_frames = corpus.config.data.num_frames
    src = dataset.source("train")
    for i in range(len(src)):  # the 6-frame gray clips too: short clips repeat frames
        example = dataset.transform(train=False)(src[i], None)
        assert example["video"].shape == (num_frames, *SIZE, 3) and example["label"] == src[i]["label"]
    train = dataset.transform(train=True)
    assert isinstance(train, sources.Mirror) and train.flip_prob == corpus.config.data.flip_prob
    # Label 1 is one that the manoeuvre flip (left <-> right) would change.
    record = next(src[i] for i in range(len(src)) if src[i]["label"] == 1)
    plain = train.transform(record, np.random.default_rng(0))
    mirrored = sources.Mirror(train.transform, 1.0)(record, np.random.default_rng(0))
    np.testing.assert_array_equal(mirrored["video"], plain["video"][:, :, ::-1])
    assert mirrored["label"] == plain["label"] == 1
    # A mirrored test view keeps the label too.
    centre = dataset.transform(train=False)(record, None)
    view = dataset.transform(False, view=pipeline.View(flip=True))(record, None)
    np.testing.assert_array_equal(view["video"], centre["video"][:, :, ::-1])
    assert view["label"] == 1
    np.testing.assert_array_equal(dataset.flip_permutation, np.arange(len(dataset.class_names)))


def test_read_clip_for_predict(corpus, dataset):
    mp4 = next(path for path, *_ in corpus.good["train"] if path.endswith(".mp4"))
    npy = corpus.good["test"][0][0]
    assert dataset.read_clip(mp4)["video"].shape == (10, *SIZE, 3)
    assert dataset.read_clip(npy)["video"].shape == (corpus.good["test"][0][2], *SIZE, 3)
    bad = next(p for p, (_, words) in corpus.bad_clips.items() if words == "NaN")
    with pytest.raises(ValueError, match="nan.npy"):
        dataset.read_clip(bad)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        dataset.read_clip(os.path.join(os.path.dirname(mp4), "missing.mp4"))


def test_read_clip_resizes_native_arrays(dataset, tmp_path):
    """An array at a video's native resolution is resized like the video, not rejected."""
    native = class_clip(1, 4, 240, 426)
    expected = video_io._resize(native, SIZE)
    for name, stored in (("native.npy", native), ("native01.npy", native / 255.0)):
        np.save(tmp_path / name, stored)
        np.testing.assert_array_equal(dataset.read_clip(str(tmp_path / name))["video"], expected)
    mp4 = encode(tmp_path / "native.mp4", native)
    assert np.abs(dataset.read_clip(mp4)["video"].astype(int) - expected).mean() < 4


def test_bad_inputs_json_names_split_and_row(tmp_path):
    """Each bad clip is reported once per list row it is on, with its split and row."""
    (tmp_path / "clips").mkdir()
    for name, k in (("a.npy", 0), ("b.npy", 1)):
        np.save(tmp_path / "clips" / name, class_clip(k, 6, 16, 16))
    (tmp_path / "clips" / "garbled.mp4").write_bytes(b"not a video" * 100)
    # Header on line 1; a blank line 4 is not a row but still counts as a line.
    (tmp_path / "train.csv").write_text("path,label\nclips/a.npy,jump\nclips/missing.mp4,jump\n\n"
                                        "clips/garbled.mp4,run\nclips/b.npy,run\n"
                                        "clips/garbled.mp4,jump\n")
    (tmp_path / "test.csv").write_text("clips/garbled.mp4,run\nclips/b.npy,run\n")
    config = video_files_memory.get_config("smoke")
    config.data.train_list = str(tmp_path / "train.csv")
    config.data.test_list = str(tmp_path / "test.csv")
    config.data.scan_workers = 0
    data = sources.make(config.data)
    assert data.source("train").rows == [(str(tmp_path / "clips" / "a.npy"), 0),
                                         (str(tmp_path / "clips" / "b.npy"), 1)]
    assert data.num_checked == 7

    with open(video_io.write_report(str(tmp_path / "workdir"), data.problems,
                                    data.num_checked)) as f:
        report = json.load(f)
    assert report["checked"] == 7 and report["skipped"] == 4
    found = [(os.path.basename(p["path"]), p["split"], os.path.basename(p["list_file"]), p["row"])
             for p in report["problems"]]
    assert found == [("missing.mp4", "train", "train.csv", 3),
                     ("garbled.mp4", "train", "train.csv", 5),
                     ("garbled.mp4", "train", "train.csv", 7),
                     ("garbled.mp4", "test", "test.csv", 1)]
    reasons = [p["reason"] for p in report["problems"]]
    assert reasons[0] == "no such file" and all("cannot decode" in r for r in reasons[1:])
    assert all(p["path"] == os.path.join(str(tmp_path), "clips", name)
               for p, (name, *_) in zip(report["problems"], found, strict=True))
    assert video_io.summarize(data.problems, 7).startswith(
        f"skipped 4 of 7 clips: {tmp_path}/clips/missing.mp4 (train list {tmp_path}/train.csv, "
        "row 3): no such file; ")


def test_list_mistakes_are_clear_errors(corpus, tmp_path):
    config = video_files_memory.get_config("smoke")
    with pytest.raises(ValueError, match=r"--config.data.train_list=PATH.csv"):
        sources.make(config.data)
    config.data.train_list = str(tmp_path / "nowhere.csv")
    config.data.test_list = corpus.config.data.test_list
    with pytest.raises(FileNotFoundError, match="nowhere.csv: no such clip list"):
        sources.make(config.data)
    (tmp_path / "header_only.csv").write_text("path,label\n\n")
    config.data.train_list = str(tmp_path / "header_only.csv")
    with pytest.raises(video_io.BadInputError, match="header_only.csv: lists no clips"):
        sources.make(config.data)
    # A split whose every clip is bad stops the run, naming the first few problems.
    one_good = [p for p, *_ in corpus.good["train"] if p.endswith(".npy")][:1]
    write_list(tmp_path / "train.csv", [(f"{one_good[0]},jump", None)], header=False)
    bad = [p for p, (split, _) in corpus.bad_clips.items() if split == "train"]
    write_list(tmp_path / "test.csv", [(f"{p},jump", None) for p in bad], header=True)
    config.data.train_list = str(tmp_path / "train.csv")
    config.data.test_list = str(tmp_path / "test.csv")
    with pytest.raises(ValueError, match=r"data.test_list=.*test.csv: no usable clip among its 4 "
                                         r"rows; skipped 4 of 4 clips: .*missing.mp4 \(test list "
                                         r".*test.csv, row 2\): no such file"):
        sources.make(config.data)


def test_train_and_evaluate_reports_bad_inputs(corpus, dataset, tmp_path, check_results):
    config = corpus.config.copy_and_resolve_references()
    config.baseline.enabled = False
    config.eval.observation_ratios = (1.0,)
    workdir = str(tmp_path)
    exp = classifier.Experiment(config, workdir)
    results = exp.train_and_evaluate()

    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved["dataset"].startswith("video_files:") and saved["class_names"] == sorted(CLASSES)
    assert saved["top1"] == results["top1"] and saved["num_examples"] == len(corpus.good["test"])
    check_results(exp, saved)  # the good test clips, each once, scored by the final checkpoint
    with open(os.path.join(workdir, "bad_inputs.json")) as f:
        report = json.load(f)
    assert report["checked"] == corpus.num_rows
    assert report["skipped"] == len(corpus.bad_clips) + len(corpus.bad_rows)
    assert report["problems"] == [p._asdict() for p in dataset.problems]


def smooth_frames(t, h, w):
    """uint8 `[t, h, w, 3]`: slow sinusoids drifting over time (what a codec keeps well)."""
    y, x = np.mgrid[:h, :w]
    phase = [np.stack([x / 9 + i / 3, y / 7, (x + y) / 11 - i / 4], -1) for i in range(t)]
    return np.rint(127.5 + 100 * np.sin(np.stack(phase))).astype(np.uint8)


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_write_video_round_trip(tmp_path, monkeypatch, codec):
    if codec == "mpeg4":  # the fallback of an FFmpeg without an H.264 encoder
        monkeypatch.setattr(video_io, "_video_codec", lambda av: "mpeg4")
    frames = smooth_frames(9, 48, 64)
    path = video_io.write_video(str(tmp_path / "out" / "nested" / "clip.mp4"), frames, fps=12.5)
    assert path == str(tmp_path / "out" / "nested" / "clip.mp4")
    assert os.listdir(tmp_path / "out" / "nested") == ["clip.mp4"]  # no temporary file left
    back = video_io.read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 10
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == ("h264" if codec == "h264" else "mpeg4")
        assert stream.average_rate == 12.5 and stream.codec_context.pix_fmt == "yuv420p"

    odd = smooth_frames(3, 33, 47)  # yuv420p needs even sizes: the last row / column repeats
    back = video_io.read_video(video_io.write_video(str(tmp_path / "odd.mp4"), odd))
    assert back.shape == (3, 34, 48, 3)
    padded = np.pad(odd, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    assert np.abs(back.astype(int) - padded).mean() < 10


def test_write_video_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    path = str(tmp_path / "clip.mp4")
    video_io.write_video(path, smooth_frames(4, 16, 16))
    before = open(path, "rb").read()
    calls = []

    def dies_on_third_frame(array, format):  # a kill mid-write, as far as the file can tell
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return from_ndarray(array, format=format)

    from_ndarray = av.VideoFrame.from_ndarray
    monkeypatch.setattr(av.VideoFrame, "from_ndarray", dies_on_third_frame)
    with pytest.raises(KeyboardInterrupt):
        video_io.write_video(path, smooth_frames(8, 32, 32))
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["clip.mp4"]
    monkeypatch.undo()
    for bad in (smooth_frames(2, 8, 8) / 255.0, smooth_frames(2, 8, 8)[..., 0],
                np.zeros((0, 8, 8, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"x.mp4: frames .* expected uint8 \[T>=1, H, W, 3\]"):
            video_io.write_video(str(tmp_path / "x.mp4"), bad)
    with pytest.raises(ValueError, match="fps=0"):
        video_io.write_video(str(tmp_path / "x.mp4"), smooth_frames(2, 8, 8), fps=0)
    assert not os.path.exists(tmp_path / "x.mp4")


REAL_CLIPS = {"kinetics_arm_wrestling.mp4": 280, "pool_cleaning.mp4": 300,
              "ucf101_apply_eye_makeup.avi": 164, "basketball.mp4": 300}  # frames


def test_real_clips_pass_the_scan(tmp_path):
    paths = [os.path.abspath(os.path.join(CLIPS, name)) for name in REAL_CLIPS]
    if not all(map(os.path.exists, paths)):
        pytest.skip(f"{CLIPS} not present (real data lives in ../shared/data)")
    config = video_files_memory.get_config()
    write_list(tmp_path / "train.csv", [(f"{p},{os.path.basename(p)[:5]}", None) for p in paths],
               header=True)
    write_list(tmp_path / "test.csv", [(f"{paths[2]},ucf10", None)], header=False)
    config.data.train_list = str(tmp_path / "train.csv")
    config.data.test_list = str(tmp_path / "test.csv")
    config.data.scan_workers = 2
    data = sources.make(config.data)
    assert data.problems == [] and data.num_checked == 5
    size = tuple(config.data.frame_size)
    src = data.source("train")
    for i, frames in enumerate(REAL_CLIPS.values()):
        video = src[i]["video"]
        assert video.shape == (frames, *size, 3) and video.dtype == np.uint8
        assert 10 < video.mean() < 245 and video.std() > 5  # a picture, not a blank
    example = data.transform(train=False)(data.source("test")[0], None)
    assert example["video"].shape == (config.data.num_frames, *size, 3)
