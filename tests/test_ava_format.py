"""AVA-format detection data (`jaxact.data.ava_format`): the classroom clips exported as JPEG frame
folders, MP4s, CSVs and a pbtxt, read back exactly (frame counts, frames, boxes, labels, person
ids), converted once and cached, bad inputs reported and skipped, and a tiny detector trained on
them end to end."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import ava_detector
from jaxact.data import ava, ava_format, builders, classroom, pipeline, sources, video_io

NUM_CLIPS = 8  # per split: one batch of the smoke config
SPLITS = ("train", "validation", "test")
RENDER = builders.Classroom.preset("tiny").render  # 8 frames at 64 px, keyframe 4


def rendered(split: str, index: int) -> dict:
    """The classroom clip the export wrote as SPLIT_INDEX (an independent render)."""
    return classroom.render_clip(builders.example_seed(split, index), RENDER)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return ava_format.export_classroom(str(tmp_path_factory.mktemp("ava")), "tiny", NUM_CLIPS)


def data_config(out: dict, cache: str, source: str = "frames", **fields):
    """The `data` section of `ava_detector.py:smoke` on the exported files."""
    config = ava_detector.get_config("smoke").data
    config.train_csv, config.test_csv = out["train_csv"], out["test_csv"]
    config.validation_csv = out["validation_csv"]
    config.label_map, config.excluded_csv = out["label_map"], out["excluded_csv"]
    config.frame_dir = out["frames"] if source == "frames" else ""
    config.video_dir = out["videos"] if source == "videos" else ""
    config.fps, config.cache_dir, config.scan_workers = float(out["fps"]), cache, 2
    config.update(fields)
    return config


def read_jpeg(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------------------- the export


def test_export_writes_the_ava_layout_exactly(exported):
    out = exported
    assert out["fps"] == 4 and out["num_clips"] == dict.fromkeys(SPLITS, NUM_CLIPS)
    from jaxact.evaluation.ava import read_labelmap

    assert read_labelmap(out["label_map"]) == dict(enumerate(classroom.BEHAVIOURS, start=1))
    assert os.path.getsize(out["excluded_csv"]) == 0
    for split in SPLITS:
        keyframes, problems = ava.read_ava_csv(out[f"{split}_csv"], len(classroom.BEHAVIOURS))
        assert problems == [] and len(keyframes) == NUM_CLIPS
        for index in range(NUM_CLIPS):
            video_id, clip = f"{split}_{index:06d}", rendered(split, index)
            kf = keyframes[(video_id, 1)]  # the keyframe, frame 4, at second 1 at 4 fps
            np.testing.assert_array_equal(kf.boxes, clip["boxes"])  # float32, bit for bit
            np.testing.assert_array_equal(kf.actions, clip["actions"])
            np.testing.assert_array_equal(kf.person_ids, clip["person_ids"])
            folder = os.path.join(out["frames"], video_id)
            assert sorted(os.listdir(folder)) == [f"img_{t:05d}.jpg" for t in range(1, 9)]
            jpegs = np.stack([read_jpeg(os.path.join(folder, f"img_{t:05d}.jpg"))
                              for t in range(1, 9)])
            error = np.abs(jpegs.astype(int) - clip["video"])
            assert error.mean() < 3.0, error.mean()  # JPEG quality 95
            if index < 2:  # decoding MP4s is the slow part
                mp4 = os.path.join(out["videos"], f"{video_id}.mp4")
                frames = video_io.read_video(mp4)
                assert frames.shape == clip["video"].shape  # every frame, none added
                assert video_io.frame_rate(mp4) == 4.0
                assert np.abs(frames.astype(int) - clip["video"]).mean() < 6.0  # H.264, 4:2:0


# ----------------------------------------------------------------------------- reading back


@pytest.fixture(scope="module")
def frames_data(exported, tmp_path_factory):
    return sources.make(data_config(exported, str(tmp_path_factory.mktemp("cache"))),
                        "detection")


@pytest.mark.parametrize("source", ["frames", "videos"])
@pytest.mark.parametrize(("num_frames", "stride"), [(4, 1), (8, 2)])
def test_records_hold_the_windows_boxes_labels_and_ids_exactly(exported, tmp_path, source,
                                                               num_frames, stride):
    data = sources.make(data_config(exported, str(tmp_path), source, num_frames=num_frames,
                                    frame_stride=stride), "detection")
    assert isinstance(data, ava_format.AvaFormat) and data.problems == []
    assert data.class_names == list(classroom.BEHAVIOURS)
    assert data.frame_shape == (64, 64, 3) and data.num_checked > 0
    # The window of the pipeline's own sampler: (8, 2) runs past both ends of the 8-frame clips
    # (frames 0, 0, 0, 2, 4, 6, 7, 7).
    window = pipeline.keyframe_window_indices(RENDER.num_frames, 4, num_frames, stride)
    for split in ("train", "test"):
        records = data.source(split)
        assert len(records) == NUM_CLIPS
        assert data.keyframe_ids(split) == [(f"{split}_{i:06d}", 1) for i in range(NUM_CLIPS)]
        for index in range(NUM_CLIPS):
            record, clip = records[index], rendered(split, index)
            video_id = f"{split}_{index:06d}"
            assert (record["video_id"], int(record["timestamp"])) == (video_id, 1)
            assert int(record["index"]) == index and int(record["keyframe"]) == num_frames // 2
            np.testing.assert_array_equal(record["boxes"], clip["boxes"])
            np.testing.assert_array_equal(record["actions"], clip["actions"])
            np.testing.assert_array_equal(record["person_ids"], clip["person_ids"])
            if source == "frames":  # the JPEG files' pixels, exactly
                folder = os.path.join(exported["frames"], video_id)
                expected = np.stack([read_jpeg(os.path.join(folder, f"img_{t + 1:05d}.jpg"))
                                     for t in window])
            else:  # the decoded video's frames, exactly
                decoded = video_io.read_video(os.path.join(exported["videos"], f"{video_id}.mp4"),
                                              size=(64, 64))
                expected = decoded[window]
            np.testing.assert_array_equal(record["video"], expected)
            assert np.abs(record["video"].astype(int) - clip["video"][window]).mean() < 6.0
    with pytest.raises(ValueError, match="split 'nope'"):
        data.source("nope")


def test_transform_gives_fixed_shape_examples_with_their_index(frames_data):
    record = frames_data.source("test")[3]
    example = frames_data.transform(train=False)(record, None)
    people = len(record["boxes"])
    assert example["video"].shape == (4, 64, 64, 3) and example["boxes"].shape == (12, 4)
    assert example["person_mask"].sum() == people and int(example["index"]) == 3
    np.testing.assert_array_equal(example["boxes"][:people], record["boxes"])
    np.testing.assert_array_equal(example["person_ids"][people:], -1)


def test_jpeg_cache_is_close_and_smaller(exported, frames_data, tmp_path):
    jpeg = sources.make(data_config(exported, str(tmp_path), cache_format="jpeg"), "detection")
    raw_record, jpeg_record = frames_data.source("test")[0], jpeg.source("test")[0]
    for key in ("boxes", "actions", "person_ids", "timestamp"):
        np.testing.assert_array_equal(jpeg_record[key], raw_record[key])
    assert np.abs(jpeg_record["video"].astype(int) - raw_record["video"]).mean() < 4.0
    size = {name: os.path.getsize(os.path.join(d.cache, "test.array_record"))
            for name, d in (("raw", frames_data), ("jpeg", jpeg))}
    assert size["jpeg"] < size["raw"] / 2, size


def test_frame_size_resizes_and_frames_unit_reads_frame_numbers(exported, tmp_path):
    # MultiSports-style timestamps: the keyframe's frame number (file img_00005.jpg).
    csv = tmp_path / "frames_unit.csv"
    rows = open(exported["test_csv"]).read().replace(",1,", ",5,")
    csv.write_text(rows)
    data = sources.make(data_config(exported, str(tmp_path / "cache"), test_csv=str(csv),
                                    timestamp_unit="frames", frame_size=(32, 48)), "detection")
    assert data.frame_shape == (32, 48, 3)
    record = data.source("test")[0]
    assert record["video"].shape == (4, 32, 48, 3) and int(record["timestamp"]) == 5
    reference = sources.make(data_config(exported, str(tmp_path / "cache")), "detection")
    small = np.asarray(Image.fromarray(reference.source("test")[0]["video"][2]).resize(
        (48, 32), Image.BILINEAR))
    np.testing.assert_array_equal(record["video"][2], small)  # the same keyframe, resized


# ----------------------------------------------------------------------------- the cache


def test_cache_is_reused_and_rebuilt_when_an_input_or_setting_changes(exported, tmp_path,
                                                                      monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(os.path.dirname(exported["train_csv"]), work / "annotations")
    out = {**exported, **{k: str(work / "annotations" / os.path.basename(exported[k]))
                          for k in ("train_csv", "validation_csv", "test_csv", "label_map",
                                    "excluded_csv")}}
    config = data_config(out, str(tmp_path / "cache"))
    first = sources.make(config, "detection")
    converted = []
    convert = ava_format.convert_video
    monkeypatch.setattr(ava_format, "convert_video",
                        lambda video_id, *a: converted.append(video_id) or convert(video_id, *a))
    again = sources.make(config, "detection")  # nothing converted: read from the cache
    assert converted == [] and again.cache == first.cache
    np.testing.assert_array_equal(again.source("test")[5]["video"], first.source("test")[5]["video"])
    # A changed CSV converts its split again (and only that one).
    test_csv = out["test_csv"]
    lines = open(test_csv).read().splitlines(keepends=True)
    with open(test_csv, "w") as f:
        f.writelines(line for line in lines if not line.startswith("test_000007,"))
    changed = sources.make(config, "detection")
    assert sorted(set(converted)) == [f"test_{i:06d}" for i in range(7)]
    assert len(changed.source("test")) == 7 and len(changed.source("train")) == NUM_CLIPS
    # A changed frame folder converts again.
    converted.clear()
    os.utime(os.path.join(out["frames"], "train_000002"), ns=(1, 1))
    sources.make(config, "detection")
    assert sorted(set(converted)) == [f"train_{i:06d}" for i in range(NUM_CLIPS)]
    # Another conversion setting: another cache folder; loader settings share the folder.
    assert sources.make(data_config(out, str(tmp_path / "cache"), num_frames=2),
                        "detection").cache != first.cache
    converted.clear()
    assert sources.make(data_config(out, str(tmp_path / "cache"), max_people=20, flip_prob=0.0),
                        "detection").cache == first.cache
    assert converted == []
    # An interrupted conversion leaves the previous cache untouched.
    os.utime(test_csv, ns=(2, 2))
    monkeypatch.setattr(ava_format, "convert_video", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        sources.make(config, "detection")
    left = sorted(name for name in os.listdir(first.cache) if not name.endswith(".lock"))
    assert left == ["test.array_record", "train.array_record", "train.json",
                    "validation.array_record", "validation.json"]  # test.json: gone, rebuilt next


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def broken(exported, tmp_path_factory):
    """A copy of the export with one of every kind of bad input; returns (data, files)."""
    root = tmp_path_factory.mktemp("broken")
    frames = root / "frames"
    for i in range(4):
        shutil.copytree(os.path.join(exported["frames"], f"train_{i:06d}"),
                        frames / f"train_{i:06d}")
    os.remove(frames / "train_000001" / "img_00003.jpg")  # inside keyframe 1's window
    (frames / "train_000002" / "img_00006.jpg").write_bytes(b"not a jpeg")
    (frames / "empty_video").mkdir()
    lines = open(exported["train_csv"]).read().splitlines()
    rows = [line for line in lines if line.split(",")[0] in
            {f"train_{i:06d}" for i in range(4)}]
    first_row = rows[0].split(",")
    extra = [
        ",".join(first_row[:6] + ["9", first_row[7]]),  # an action id outside the label map
        ",".join(["train_000003", "0"] + first_row[2:]),  # second 0: the window clamps at 0
        ",".join(["train_000003", "2"] + first_row[2:]),  # second 2 = frame 8: past the end
        ",".join(["train_000003", "3"] + first_row[2:]),  # excluded
        ",".join(["no_such_video", "1"] + first_row[2:]),
        ",".join(["empty_video", "1"] + first_row[2:]),
        "train_000000,1,0.5,0.5,0.4,0.6,1,7",  # an inverted box
    ]
    csv = root / "train.csv"
    csv.write_text("\n".join(rows + extra) + "\n")
    excluded = root / "excluded.csv"
    excluded.write_text("train_000003,3\nbad row\n")
    out = {**exported, "train_csv": str(csv), "excluded_csv": str(excluded),
           "frames": str(frames)}
    config = data_config(out, str(root / "cache"))
    config.validation_csv = ""
    config.test_csv = str(csv)  # every problem twice, one per split; the excluded CSV's once
    return sources.make(config, "detection"), {"csv": str(csv), "frames": str(frames),
                                                 "excluded": str(excluded), "config": config}


def test_bad_inputs_are_reported_and_skipped_and_the_good_kept(broken):
    data, where = broken
    frames, csv = where["frames"], where["csv"]
    train = [p for p in data.problems if p.split == "train"]
    by_text = "\n".join(str(p) for p in train)
    expected = [  # (path, row, field, reason pattern)
        (csv, len(open(csv).read().splitlines()) - 6, "action_id", "9 is outside"),
        (csv, len(open(csv).read().splitlines()), "x2", "empty or inverted"),
        (where["excluded"], 2, None, "1 fields, expected 2"),
        (os.path.join(frames, "train_000001", "img_00003.jpg"), None, None,
         "keyframe train_000001,1 needs it: missing frame file; skipped"),
        (os.path.join(frames, "train_000002", "img_00006.jpg"), None, None,
         "keyframe train_000002,1 needs it: unreadable image"),
        (os.path.join(frames, "train_000003", "img_00009.jpg"), None, None,
         r"keyframe train_000003,2 is frame file img_00009.jpg, past the video's last one "
         r"\(img_00008.jpg\)"),
        (os.path.join(frames, "no_such_video"), None, None,
         "no frame folder for video_id 'no_such_video' of train.csv: its 1 keyframe"),
        (os.path.join(frames, "empty_video"), None, None,
         r"no frame files \(img_00001.jpg, ...\) in the frame folder"),
    ]
    import re

    for path, row, field, reason in expected:
        found = [p for p in train if p.path == path and p.row == row and p.field == field
                 and re.search(reason, p.reason)]
        assert len(found) == 1, (path, reason, by_text)
    assert len(train) == len(expected), by_text
    # Test: the same problems but the excluded CSV's (reported once).
    assert len([p for p in data.problems if p.split == "test"]) == len(expected) - 1
    # Nothing good dropped: train_000000, train_000003 at seconds 0 and 1.
    ids = data.keyframe_ids("train")
    assert ids == [("train_000000", 1), ("train_000003", 0), ("train_000003", 1)]
    record = data.source("train")[1]  # second 0: frame 0, the window clamped at the start
    folder = os.path.join(frames, "train_000003")
    np.testing.assert_array_equal(record["video"], np.stack(
        [read_jpeg(os.path.join(folder, f"img_{n:05d}.jpg")) for n in (1, 1, 1, 2)]))
    # train_000000 keeps every person, the one with the unknown action with its other actions.
    reference = rendered("train", 0)
    np.testing.assert_array_equal(data.source("train")[0]["boxes"], reference["boxes"])
    np.testing.assert_array_equal(data.source("train")[0]["actions"], reference["actions"])


def test_bad_inputs_reach_bad_inputs_json(broken, tmp_path):
    data, _ = broken
    path = video_io.write_report(str(tmp_path), data.problems, data.num_checked)
    report = json.load(open(path))
    assert report["skipped"] == len(data.problems) and report["checked"] == data.num_checked
    assert {p["split"] for p in report["problems"]} == {"train", "test"}


def test_videos_that_are_missing_or_corrupt_are_reported(exported, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(os.path.join(exported["videos"], "test_000000.mp4"), videos)
    good = open(os.path.join(exported["videos"], "test_000001.mp4"), "rb").read()
    (videos / "test_000001.mp4").write_bytes(good[:len(good) // 3])  # truncated
    (videos / "test_000002.mp4").write_bytes(b"\x00" * 100)  # corrupt
    rows = [r for r in open(exported["test_csv"]).read().splitlines()
            if r.split(",")[0] in ("test_000000", "test_000001", "test_000002", "test_000003")]
    csv = tmp_path / "test.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = {**exported, "test_csv": str(csv), "train_csv": str(csv), "videos": str(videos)}
    config = data_config(out, str(tmp_path / "cache"), "videos", validation_csv="")
    data = sources.make(config, "detection")
    assert data.keyframe_ids("test") == [("test_000000", 1)]
    problems = {os.path.basename(p.path): p.reason for p in data.problems if p.split == "test"}
    assert set(problems) == {"test_000001.mp4", "test_000002.mp4", "test_000003.mp4"}, problems
    assert problems["test_000003.mp4"].startswith("no video file (.mp4")


@pytest.mark.parametrize(("text", "match"), [
    ('item {\n  name: "sit"\n  id: 1\n}\nitem {\n  name: "stand"\n', r"labelmap.pbtxt: row 6: "
                                                                    "file ends where"),
    ('item {\n  name: "sit"\n  id: 0\n}\n', r"labelmap.pbtxt: row 3, field 'id': '0' is not"),
    ('item {\n  name: "sit"\n  id: 1\n}\nitem {\n  name: "x"\n  id: 1\n}\n', "id 1 repeats"),
    ("itme {}\n", r"row 1: unknown block 'itme'"),
])
def test_malformed_label_map_fails_naming_file_and_line(exported, tmp_path, text, match):
    path = tmp_path / "labelmap.pbtxt"
    path.write_text(text)
    config = data_config(exported, str(tmp_path / "cache"), label_map=str(path))
    for check in (sources.detection_spec, lambda c: sources.make(c, "detection")):
        with pytest.raises(video_io.BadInputError, match=match):
            check(config)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("fields", "match"), [
    ({"train_csv": ""}, r"data.train_csv is not set: pass --config.data.train_csv=PATH"),
    ({"label_map": ""}, r"data.label_map is not set"),
    ({"video_dir": "/videos"}, r"data.frame_dir=.*video_dir='/videos': set exactly one"),
    ({"frame_dir": ""}, r"set exactly one"),
    ({"timestamp_unit": "hours"}, r"data.timestamp_unit='hours': expected one of"),
    ({"frame_template": "img.jpg"}, r"data.frame_template='img.jpg'"),
    ({"max_people": 3}, r"data.max_people=3: .*train.csv has \d+ people at keyframe "
                        r"train_0000\d\d,1; raise"),
    ({"frame_sizes": (4, 4)}, r"unknown field\(s\) \['data.frame_sizes'\]"),
])
def test_config_mistakes_fail_naming_the_field_before_any_conversion(exported, tmp_path, fields,
                                                                      match):
    config = data_config(exported, str(tmp_path / "cache"))
    if "frame_sizes" in fields:
        config.frame_sizes = fields.pop("frame_sizes")
    config.update(fields)
    with pytest.raises(ValueError, match=match):
        sources.detection_spec(config)
    assert not (tmp_path / "cache").exists()


def test_spec_reads_annotations_only(exported, tmp_path):
    config = data_config(exported, str(tmp_path / "cache"), frame_dir=str(tmp_path / "none"))
    spec = sources.detection_spec(config)
    assert spec.class_names == classroom.BEHAVIOURS and spec.frame_shape == (64, 64, 3)
    most = max(len(rendered(s, i)["boxes"]) for s in SPLITS for i in range(NUM_CLIPS))
    assert spec.max_people == most
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- training


@pytest.mark.slow  # ~40 s of a worker; loading the converted data is tested above
def test_tiny_detector_trains_on_ava_format_data_end_to_end(exported, tmp_path, monkeypatch):
    import jax

    from jaxact.evaluation import ava as ava_eval
    from jaxact.train import detector, parallel

    # One device: the same program, without the per-device copies that cost a checkpoint of the
    # 8 simulated devices seconds (the 8-device path is the classroom tests').
    make_mesh = parallel.make_mesh
    monkeypatch.setattr(parallel, "make_mesh", lambda: make_mesh(jax.devices()[:1]))

    # One bad training row: it is reported in bad_inputs.json and the rest trains.
    csv = tmp_path / "train.csv"
    csv.write_text(open(exported["train_csv"]).read() + "train_000000,1,0.1,0.1,0.2,0.2,6,99\n")
    # The pooled head: the smallest program to compile (the data path is what this tests).
    config = ava_detector.get_config("smoke,fusion=pooled")
    config.data = data_config({**exported, "train_csv": str(csv)}, str(tmp_path / "cache"))
    config.train.num_steps, config.train.checkpoint_every, config.train.log_every = 2, 2, 1
    config.eval.plot_num_clips = 1
    workdir = str(tmp_path / "run")
    results = detector.Experiment(config, workdir).train_and_evaluate()
    saved = json.load(open(os.path.join(workdir, "results.json")))
    assert saved == results and 0.0 <= saved["frame_map"] <= 1.0
    assert saved["num_clips"] == NUM_CLIPS and saved["config_name"] == "ava_detector:smoke,fusion=pooled"
    assert list(saved["per_class_ap"]) == list(classroom.BEHAVIOURS)
    report = json.load(open(os.path.join(workdir, "bad_inputs.json")))
    assert report["skipped"] == 1 and report["problems"][0]["field"] == "action_id"
    # The AVA CSVs name the real keyframes, and the ground truth is the test CSV's.
    truth = ava_eval.read_csv(os.path.join(workdir, "groundtruth.csv"), detections=False)
    original = ava_eval.read_csv(exported["test_csv"], detections=False)
    key = lambda rows: sorted(zip(rows.video_ids, rows.timestamps, map(tuple, np.round(
        rows.boxes, 6)), rows.actions, strict=True))
    assert key(truth) == key(original)
    detections = ava_eval.read_csv(os.path.join(workdir, "detections.csv"), detections=True)
    assert set(zip(detections.video_ids, detections.timestamps, strict=True)) == {
        (f"test_{i:06d}", 1) for i in range(NUM_CLIPS)}
    official = ava_eval.evaluate_files(*(os.path.join(workdir, name) for name in (
        "labelmap.pbtxt", "groundtruth.csv", "detections.csv")))
    assert 0.0 <= official["map"] <= 1.0
