"""Bad input, fuzz style: corpora of broken clips and annotation rows go through the loaders; each
broken one is reported by name, nothing raises, and every good one still arrives."""

import json
import os
import re

import numpy as np
import pytest

from jaxact.data import ava, sources, video_io
from jaxact.data.video_io import BadInputError

av = pytest.importorskip("av")

CLIPS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "clips")
T, H, W = 12, 32, 48


def frames_rgb(t=T, h=H, w=W, seed=0):
    """Smooth moving gradients plus a little noise: uint8 `[t, h, w, 3]`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    base = np.stack([(x * 5 + 10 * i) % 256 for i in range(t)])[..., None] + np.array([0, 60, 120])
    return np.clip(base + y[None, ..., None] + rng.integers(0, 8, (t, h, w, 3)), 0, 255).astype(np.uint8)


def encode(path, frames, codec="libx264", options=None):
    """Writes `frames` `[T, H, W, 3]` as a video (the container follows the extension)."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


# ----------------------------------------------------------------------------- read_video


@pytest.mark.parametrize("name, array, expected", [
    ("gray", lambda f: f[..., 0], lambda f: np.repeat(f[..., :1], 3, -1)),
    ("gray1", lambda f: f[..., :1], lambda f: np.repeat(f[..., :1], 3, -1)),
    ("rgba", lambda f: np.concatenate([f, f[..., :1]], -1), lambda f: f),
    ("float01", lambda f: f.astype(np.float32) / 255, lambda f: f),
    ("float255", lambda f: f.astype(np.float64), lambda f: f),
    ("int16", lambda f: f.astype(np.int16), lambda f: f),
])
def test_arrays_are_converted_to_rgb_uint8(tmp_path, name, array, expected):
    f = frames_rgb(t=4)
    path = str(tmp_path / f"{name}.npy")
    np.save(path, array(f))
    out = video_io.read_video(path)
    assert out.dtype == np.uint8 and out.shape == (4, H, W, 3)
    np.testing.assert_array_equal(out, expected(f))


# Every uint8 value, in the layout of a clip: `[2, 16, 16, 3]`.
ALL_VALUES = (np.arange(2 * 16 * 16 * 3) % 256).astype(np.uint8).reshape(2, 16, 16, 3)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("scale", ["01", "0255"])
def test_float_frames_read_exactly_like_uint8(tmp_path, dtype, scale):
    """The one value rule: `u8 / 255` and `u8` as floats both read back as exactly `u8`, by every
    reader, never as the near-black clip a cast would give."""
    for name, u8 in (("all", ALL_VALUES), ("dark", ALL_VALUES // 4)):  # dark: max 63 / 255 < 1
        stored = (u8 / 255.0 if scale == "01" else u8).astype(dtype)
        np.testing.assert_array_equal(video_io.to_uint8(stored, "x"), u8)
        path = str(tmp_path / f"{name}_{scale}.npy")
        np.save(path, stored)
        np.testing.assert_array_equal(video_io.read_video(path), u8)
        np.testing.assert_array_equal(sources.read_frames(path, (16, 16, 3)), u8)
    noisy = ALL_VALUES + np.random.default_rng(0).uniform(-0.45, 0.45, ALL_VALUES.shape)
    np.testing.assert_array_equal(video_io.to_uint8(np.clip(noisy, 0, 255), "x"), ALL_VALUES)


@pytest.mark.parametrize("name, values, found", [
    ("above_255", np.array([0.0, 12.5, 300.0]), "values in [0, 300]"),
    ("negative_01", np.array([-0.25, 0.5, 1.0]), "values in [-0.25, 1]"),
    ("negative_255", np.array([-3.0, 0.0, 200.0]), "values in [-3, 200]"),
    ("int_above", np.array([0, 7, 256], np.int16), "values in [0, 256]"),
    ("int_negative", np.array([-1, 0, 255], np.int32), "values in [-1, 255]"),
    ("nan", np.array([0.2, np.nan, 0.7]), "24 NaN or inf values (first in frame 0), finite values "
                                          "in [0.2, 0.7]"),
    ("inf", np.array([3.0, 250.0, np.inf]), "24 NaN or inf values (first in frame 0), finite "
                                            "values in [3, 250]"),
    ("all_nan", np.array([np.nan] * 3), "72 NaN or inf values (first in frame 0), no finite values"),
])
def test_out_of_range_values_raise_naming_file_and_range(tmp_path, name, values, found):
    frames = np.broadcast_to(values.reshape(1, 1, 3, 1), (2, 4, 3, 3)).copy()  # 24 of each value
    path = str(tmp_path / f"{name}.npy")
    np.save(path, frames)
    expected = re.escape(f"{path}: field 'video': {found}") + r".*expected .*\[0, 255\]"
    for read in (video_io.read_video, lambda p: sources.read_frames(p, (8, 8, 3)),
                 lambda p: video_io.to_uint8(frames, p)):
        with pytest.raises(BadInputError, match=expected):
            read(path)


def test_sizes_sampling_and_padding(tmp_path):
    odd = frames_rgb(t=9, h=33, w=47)
    np.savez(tmp_path / "odd.npz", frames=odd)
    path = str(tmp_path / "odd.npz")
    np.testing.assert_array_equal(video_io.read_video(path), odd)  # odd sizes are fine as they are
    resized = video_io.read_video(path, size=(16, 24))
    assert resized.shape == (9, 16, 24, 3) and resized.dtype == np.uint8
    assert abs(resized.astype(float).mean() - odd.astype(float).mean()) < 3
    np.testing.assert_array_equal(video_io.read_video(path, num_frames=5), odd[[0, 2, 4, 6, 8]])
    padded = video_io.read_video(path, num_frames=12, pad=True)
    np.testing.assert_array_equal(padded, np.concatenate([odd, odd[[8, 8, 8]]]))
    with pytest.raises(BadInputError, match=r"odd\.npz: 9 frames, fewer than the 12"):
        video_io.read_video(path, num_frames=12)

    video = encode(tmp_path / "clip.mp4", frames_rgb())
    decoded = video_io.read_video(video)
    assert decoded.shape == (T, H, W, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames_rgb()).mean() < 8  # lossy, but the same picture
    assert video_io.read_video(video, num_frames=4, size=(24, 40)).shape == (4, 24, 40, 3)


def test_sources_read_array_reads_videos(tmp_path):
    video = encode(tmp_path / "clip.avi", frames_rgb(), codec="mpeg4")
    assert sources.read_array(video).shape == (T, H, W, 3)
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        sources.read_array(str(tmp_path / "gone.mp4"))
    with pytest.raises(FileNotFoundError, match="gone.mp4"):  # a BadInputError is one too
        video_io.read_video(str(tmp_path / "gone.mp4"))


# ----------------------------------------------------------------------------- clip corpus


def build_clip_corpus(root):
    """Returns `(good items, {broken path: words its reason must contain}, mutants)`."""
    rng = np.random.default_rng(0)
    f = frames_rgb()
    good = [(encode(root / "good_x264.mp4", f), 0),
            (encode(root / "good_mpeg4.avi", f, codec="mpeg4"), 1)]
    arrays = {"good_rgb.npy": f, "good_gray.npy": f[..., 0], "good_rgba.npy": np.concatenate(
        [f, np.full_like(f[..., :1], 255)], -1), "good_odd.npy": frames_rgb(t=9, h=33, w=47),
        "good_float01.npy": f / 255.0}
    for name, array in arrays.items():
        np.save(root / name, array)
        good.append((str(root / name), 2))
    np.savez(root / "good_gray1.npz", frames=f[..., :1])
    np.savez(root / "good_float255.npz", video=f.astype(np.float32), other=np.zeros(3))
    good += [(str(root / "good_gray1.npz"), 3), (str(root / "good_float255.npz"), 4)]

    broken = {}

    def put(name, data, words):
        path = root / name
        if isinstance(data, np.ndarray):
            np.save(path, data)
        elif data is not None:
            path.write_bytes(data)
        broken[str(path)] = words

    mp4 = open(good[0][0], "rb").read()
    encode(root / "fast.mp4", f, codec="mpeg4", options={"movflags": "faststart"})
    fast = (root / "fast.mp4").read_bytes()
    os.remove(root / "fast.mp4")
    avi = open(good[1][0], "rb").read()
    npy = (root / "good_rgb.npy").read_bytes()
    put("missing.mp4", None, "no such file")
    put("empty.mp4", b"", "empty file")
    put("empty.npy", b"", "empty file")
    put("random.mp4", rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "cannot decode")
    put("text.avi", b"hello\n" * 50, "cannot decode")
    put("half.mp4", mp4[:len(mp4) // 2], "cannot decode")  # the index (moov) is at the end
    put("half_faststart.mp4", fast[:len(fast) // 2], "truncated")
    put("cut90_faststart.mp4", fast[:len(fast) * 9 // 10], "of the 12 frames its header lists")
    put("half.avi", avi[:len(avi) // 2], "truncated")
    put("nan.npy", np.where(np.arange(T)[:, None, None, None] == 5, np.nan, f / 255.0), "NaN")
    put("short.npy", f[:3], "3 frames, fewer than the 8")
    np.savez(root / "nokey.npz", x=f)
    broken[str(root / "nokey.npz")] = "no array named 'video' or 'frames'"
    put("flat.npy", f[0, :, :, 0], "expected [T, H, W, C]")
    put("one_frame.npy", f[0], "looks like one frame")
    put("channels_first.npy", f.transpose(0, 3, 1, 2), "channels first?")
    put("no_frames.npy", f[:0], "no pixels")
    put("bool.npy", f > 128, "dtype bool")
    put("too_bright.npy", f.astype(np.int16) + 100, "expected [0, 255]")
    put("cut.npy", npy[:len(npy) // 3], "not a readable .npy")
    put("random.npz", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), "not a .npz file")
    put("renamed.npy", (root / "good_gray1.npz").read_bytes(), "not a .npy file")
    put("notes.txt", b"not a clip", "unsupported extension")
    (root / "folder.mp4").mkdir()
    broken[str(root / "folder.mp4")] = "is a directory"

    # Seeded random damage whose outcome we do not predict: good or reported, never a crash.
    mutants = []
    for i in range(8):
        data = np.frombuffer([mp4, avi, npy][i % 3], np.uint8).copy()
        if i < 4:
            data[rng.integers(64, len(data), 24)] = rng.integers(0, 256, 24, dtype=np.uint8)
        else:
            data = data[:rng.integers(1, len(data))]
        path = root / f"mutant{i}{['.mp4', '.avi', '.npy'][i % 3]}"
        path.write_bytes(data.tobytes())
        mutants.append(str(path))
    return good, broken, mutants


def test_clip_corpus_through_scan_clips(tmp_path):
    good, broken, mutants = build_clip_corpus(tmp_path)
    items = good + [(path, 0) for path in broken] + [(path, 1) for path in mutants]
    items.append((good[2][0], 99))  # a good file under a class id that does not exist
    order = np.random.default_rng(1).permutation(len(items))
    items = [items[i] for i in order]

    kept, problems = video_io.scan_clips(items, num_frames=8, size=(H, W), num_classes=5,
                                         num_workers=2)

    reported = {}
    for problem in problems:
        assert problem.reason and problem.path in str(problem)
        reported.setdefault(problem.path, []).append(problem)
    for path, words in broken.items():
        assert path in reported, f"{path} not reported"
        assert words in reported[path][0].reason, (path, reported[path][0].reason)
    label_problems = [p for p in problems if p.field == "label"]
    assert len(label_problems) == 1 and "99" in label_problems[0].reason
    # Every good clip arrives, in the order given; every mutant is either kept or reported.
    assert [item for item in kept if item[0] not in mutants] == [
        item for item in items if item[0] not in broken and item[0] not in mutants and item[1] != 99]
    kept_paths = [item[0] for item in kept]
    for path in mutants:
        assert (path in kept_paths) != (path in reported), path
    assert len(kept) + len(problems) == len(items)

    for path, _ in kept:  # what was kept really reads, at the shape training asks for
        frames = video_io.read_video(path, num_frames=8, size=(H, W))
        assert frames.shape == (8, H, W, 3) and frames.dtype == np.uint8

    report = video_io.write_report(str(tmp_path / "workdir"), problems, checked=len(items))
    with open(report) as f:
        saved = json.load(f)
    assert saved["checked"] == len(items) and saved["skipped"] == len(problems)
    assert {p["path"] for p in saved["problems"]} == set(reported)
    summary = video_io.summarize(problems, len(items))
    assert summary.startswith(f"skipped {len(problems)} of {len(items)} clips: ")


def test_scan_clips_reports_each_row_and_reads_each_clip_once(tmp_path, monkeypatch):
    good = str(tmp_path / "good.npy")
    np.save(good, frames_rgb(t=3))
    bad = str(tmp_path / "cut.npy")
    (tmp_path / "cut.npy").write_bytes(open(good, "rb").read()[:100])
    reads = []
    read_video = video_io.read_video
    monkeypatch.setattr(video_io, "read_video", lambda path, **kw: reads.append(path) or
                        read_video(path, **kw))
    items = [(bad, 0, 2), (good, 1, 3), (bad, 1, 5), (good, 7, 6), (bad, 0, 9)]
    kept, problems = video_io.scan_clips(items, num_classes=2, split="test", list_file="list.csv",
                                         num_workers=2)
    assert kept == [(good, 1, 3)] and sorted(reads) == [bad, good]  # a clip is read once
    assert [(p.path, p.row, p.field, p.split, p.list_file) for p in problems] == [
        (bad, 2, None, "test", "list.csv"), (bad, 5, None, "test", "list.csv"),
        (good, 6, "label", "test", "list.csv"), (bad, 9, None, "test", "list.csv")]
    assert str(problems[0]).startswith(f"{bad} (test list list.csv, row 2): not a readable .npy")
    # Without rows (2-tuples) a problem names the clip alone, as before.
    _, problems = video_io.scan_clips([(bad, 0)], split="train")
    assert (problems[0].row, problems[0].list_file, problems[0].split) == (None, None, "train")
    assert str(problems[0]).startswith(f"{bad}: not a readable .npy")


# ----------------------------------------------------------------------------- CSV corpus


def good_rows(rng):
    """Consistent AVA rows: `[(fields, (video_id, timestamp), person_id, box, action_id)]`."""
    rows = []
    for video in ("vidA", "vid_B-2", "c"):
        for timestamp in rng.choice(np.arange(900, 920), 3, replace=False):
            for person in range(rng.integers(1, 4)):
                x1, y1 = rng.uniform(0, 0.6, 2).round(3)
                x2, y2 = (np.array([x1, y1]) + rng.uniform(0.05, 0.4, 2)).round(3)
                box = (float(x1), float(y1), float(x2), float(y2))
                for action in rng.choice(np.arange(2, 81), rng.integers(1, 4), replace=False):
                    fields = [video, f"{timestamp:04d}", *(f"{v:.3f}" for v in box), str(action),
                              str(person)]
                    rows.append((fields, (video, int(timestamp)), person, box, int(action)))
    return rows


def mutate(kind, fields, rng):
    """A bad copy of a good row's fields (every kind here makes the row bad)."""
    f = list(fields)
    if kind == "drop_field":  # ids >= 2 make every shift land on a bad value
        del f[rng.integers(0, 6)]
    elif kind == "insert_text":
        j = rng.integers(1, 8)
        f[j] = f[j][:1] + "x" + f[j][1:]
    elif kind == "swap_coordinates":
        j = rng.choice([2, 3])
        f[j], f[j + 2] = f[j + 2], f[j]
    elif kind == "coordinate_1.5":
        f[rng.integers(2, 6)] = "1.5"
    elif kind == "negative_id":
        f[rng.choice([6, 7])] = "-3"
    elif kind == "id_999":
        f[6] = "999"
    elif kind == "fractional_timestamp":
        f[1] += ".5"
    elif kind == "nan_coordinate":
        f[rng.integers(2, 6)] = "nan"
    elif kind == "extra_field":
        f.append("extra")
    elif kind == "another_box":
        f[2:6] = ["0.900", "0.900", "0.950", "0.990"]
    elif kind != "duplicate":
        raise ValueError(kind)
    return f


KINDS = ("drop_field", "insert_text", "swap_coordinates", "coordinate_1.5", "negative_id", "id_999",
         "fractional_timestamp", "nan_coordinate", "extra_field", "duplicate", "another_box")


def test_csv_corpus_every_bad_row_reported_every_good_row_kept(tmp_path):
    rng = np.random.default_rng(0)
    rows = good_rows(rng)
    lines = [(",".join(r[0]), None, i) for i, r in enumerate(rows)]  # (text, bad kind, good index)
    rng.shuffle(lines)
    for n in range(5 * len(KINDS)):
        kind = KINDS[n % len(KINDS)]
        src = int(rng.integers(len(rows)))
        fields, keyframe, person = rows[src][:3]
        # A bad row must come after what it copies: all of that person's rows for another box,
        # else the good row would be the one in conflict.
        after = [j for j, (_, bad, i) in enumerate(lines) if bad is None and (
            i == src or kind == "another_box" and rows[i][1:3] == (keyframe, person))]
        position = int(rng.integers(max(after) + 1, len(lines) + 1))
        lines.insert(position, (",".join(mutate(kind, fields, rng)), kind, src))
    lines.insert(int(rng.integers(len(lines))), ("", None, None))  # blank lines are no rows
    path = tmp_path / "fuzz.csv"
    path.write_text("\n".join(text for text, _, _ in lines) + "\n")

    annotations, problems = ava.read_ava_csv(str(path), actions=80)

    bad_rows = {number: kind for number, (_, kind, _) in enumerate(lines, 1) if kind}
    assert sorted(p.row for p in problems) == sorted(bad_rows), [
        (number, kind, lines[number - 1][0]) for number, kind in bad_rows.items()
        if number not in {p.row for p in problems}]
    for p in problems:
        assert p.path == str(path) and f"fuzz.csv: row {p.row}" in str(p)
        if bad_rows[p.row] == "duplicate":
            src_line = 1 + next(j for j, (_, bad, i) in enumerate(lines)
                                if bad is None and i == lines[p.row - 1][2])
            assert p.reason == f"duplicate of row {src_line}"
        if bad_rows[p.row] == "another_box":
            assert p.field == "person_id"

    # Expected output built independently from the good rows.
    expected = {}
    for _, keyframe, person, box, action in rows:
        entry = expected.setdefault(keyframe, {}).setdefault(person, (box, set()))
        entry[1].add(action)
    assert sorted(annotations) == sorted(expected)
    for keyframe, people in expected.items():
        kf = annotations[keyframe]
        assert sorted(kf.person_ids.tolist()) == sorted(people)
        for p, person in enumerate(kf.person_ids.tolist()):
            np.testing.assert_allclose(kf.boxes[p], people[person][0], atol=1e-6)
            assert set((np.flatnonzero(kf.actions[p]) + 1).tolist()) == people[person][1]
    with pytest.raises(BadInputError, match="fuzz.csv: row"):
        ava.read_ava_csv(str(path), actions=80, strict=True)


# ----------------------------------------------------------------------------- real clips


@pytest.mark.parametrize("name, shape", [
    ("kinetics_arm_wrestling.mp4", (280, 256, 340, 3)),
    ("pool_cleaning.mp4", (300, 256, 340, 3)),
    ("ucf101_apply_eye_makeup.avi", (164, 240, 320, 3)),
    ("basketball.mp4", (300, 240, 426, 3)),
])
def test_real_clips_decode(name, shape):
    path = os.path.join(CLIPS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (real data lives in ../shared/data)")
    frames = video_io.read_video(path, num_frames=16, size=(112, 112))
    assert frames.shape == (16, 112, 112, 3) and frames.dtype == np.uint8
    assert 10 < frames.mean() < 245 and frames.std() > 5  # a picture, not a blank
    if name.endswith(".avi"):  # one full-size decode is enough to check the native shape
        assert video_io.read_video(path).shape == shape
    else:
        with av.open(path) as container:
            stream = container.streams.video[0]
            assert (stream.frames, stream.height, stream.width) == shape[:3]
