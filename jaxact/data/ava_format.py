"""AVA-format detection datasets (`data.name='ava_format'`), and the classroom data exported so.

Inputs, as AVA ships them and as UCF101-24, JHMDB, MultiSports or a user's own recordings can be
exported:
  annotation CSVs   one (person, action) per row: video_id, timestamp, x1, y1, x2, y2, action_id
                    [, person_id] (`jaxact.data.ava.read_ava_csv`); one CSV per split
  label map         `.pbtxt` (AVA's `item { name: "..." id: N }`) or a CSV `action_id, name`
                    (`jaxact.evaluation.ava.read_labelmap`); classes in file order
  excluded CSV      optional `video_id, timestamp` rows of keyframes to leave out
  frames            `FRAME_DIR/VIDEO_ID/img_00001.jpg ...` at `data.fps` (what AVA's preparation
                    scripts write), or the videos `VIDEO_DIR/VIDEO_ID.mp4` (.mkv, .webm, .avi,
                    ...; decoded with PyAV at the rate they declare)

A keyframe at `timestamp` (seconds, as AVA: `data.timestamp_unit='seconds'`) is frame
`round((timestamp - time_offset) * fps)` of its video, counting from 0 (file number
`first_frame` + that); with `timestamp_unit='frames'` (MultiSports-style) the timestamp minus
`time_offset` is the frame number itself. AVA's keyframes are at 1 Hz from second 902 of its
15-minute cuts starting at 900: `time_offset=900`.

Conversion: each split is read once into `CACHE/KEY/SPLIT.array_record` (one record per good
keyframe, `np.savez` bytes, no pickle) and `SPLIT.json` (class names, frame shape, the keyframes,
the problems, and a fingerprint of the inputs: paths, sizes and modification times of the CSVs
and the label map, of every video file or frame folder, and the conversion settings). A later
run with the same fingerprint reads the cache; a changed input or setting rebuilds it. Files are
written under temporary names and renamed, so an interrupted conversion leaves no half cache.
Records, in sorted (video_id, timestamp) order:

  video       uint8    [T, H, W, 3]  T = data.num_frames frames, data.frame_stride apart, centred
                                     on the keyframe (at T // 2); frames before the first or
                                     after the last frame of the video repeat the edge frame;
                                     resized to data.frame_size (aspect ratio not kept: boxes
                                     are normalized)
  keyframe    int64    T // 2
  boxes       float32  [P, 4]        xyxy normalized, as in the CSV
  actions     uint8    [P, A]        multi-hot, label-map order
  person_ids  int64    [P]           -1 where the CSV has no person_id column
  video_id    str, timestamp int64   the keyframe
  index       int64                  the record's row in its split (added when read)

Nothing good is dropped, nothing bad crashes the run: bad CSV rows (`read_ava_csv`), keyframes
whose frames are missing or unreadable, keyframes outside their video and video ids without
frames are skipped and reported (`problems`, written to WORKDIR/bad_inputs.json). A malformed
label map raises `BadInputError` naming its file and line.

`export_classroom` writes the built-in synthetic classroom data in this layout.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import filelock
import numpy as np
from absl import logging

from jaxact import console, files, settings
from jaxact.data import ava, pipeline, video_io

SPLIT_FIELDS = {"train": "train_csv", "validation": "validation_csv", "test": "test_csv"}
REQUIRED = ("train_csv", "test_csv", "label_map")
TIMESTAMP_UNITS = ("seconds", "frames")
CACHE_FORMATS = ("raw", "jpeg")
CACHE_VERSION = 1  # bump when the record layout changes: older caches are rebuilt
# The conversion settings that change records (the cache key and fingerprint hold them).
_CONVERSION_FIELDS = ("frame_template", "first_frame", "fps", "timestamp_unit", "time_offset",
                      "frame_size", "num_frames", "frame_stride", "cache_format", "jpeg_quality")


@dataclasses.dataclass(frozen=True)
class AvaFormatSettings:
    """The `data` section of an `ava_format` config (see configs/ava_detector.py)."""

    name: str = "ava_format"
    train_csv: str = ""
    validation_csv: str = ""
    test_csv: str = ""
    label_map: str = ""
    excluded_csv: str = ""
    frame_dir: str = ""
    frame_template: str = "img_{:05d}.jpg"
    first_frame: int = 1
    video_dir: str = ""
    fps: float = 30.0
    timestamp_unit: str = "seconds"
    time_offset: float = 0.0
    frame_size: tuple[int, int] = (256, 256)
    num_frames: int = 8
    frame_stride: int = 1
    max_people: int = 32
    flip_prob: float = 0.5
    cache_dir: str = ""
    cache_format: str = "jpeg"
    jpeg_quality: int = 90
    scan_workers: int = 4
    num_threads: int = 2
    prefetch: int = 4

    def __post_init__(self):
        for field in REQUIRED:
            if not getattr(self, field):
                raise ValueError(f"{field} is not set: pass --config.data.{field}=PATH "
                                 f"({_WHAT[field]})")
        if bool(self.frame_dir) == bool(self.video_dir):
            raise ValueError(f"frame_dir={self.frame_dir!r}, video_dir={self.video_dir!r}: set "
                             "exactly one (frame folders FRAME_DIR/VIDEO_ID/ or videos "
                             "VIDEO_DIR/VIDEO_ID.mp4)")
        if not self.cache_dir:
            raise ValueError("cache_dir is not set: the folder the converted splits go to")
        settings.check_choice(self.timestamp_unit, TIMESTAMP_UNITS, "timestamp_unit")
        settings.check_choice(self.cache_format, CACHE_FORMATS, "cache_format")
        settings.check_positive(self, "fps", "num_frames", "frame_stride", "max_people",
                                "scan_workers")
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame_size={self.frame_size}: expected (height, width) >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality}: expected 1..100")
        if self.first_frame < 0:
            raise ValueError(f"first_frame={self.first_frame}: expected >= 0")
        _template_parts(self.frame_template)

    def path(self, field: str) -> str:
        """`field`'s path, user-expanded and absolute ('' stays '')."""
        value = getattr(self, field)
        return os.path.abspath(os.path.expanduser(value)) if value else ""

    @property
    def splits(self) -> dict[str, str]:
        """`{split: CSV path}` of the splits that have a CSV."""
        return {s: self.path(f) for s, f in SPLIT_FIELDS.items() if getattr(self, f)}


_WHAT = {"train_csv": "AVA-format CSV of the training keyframes",
         "test_csv": "AVA-format CSV of the keyframes results.json reports; AVA: its val CSV",
         "label_map": "the label map, .pbtxt as AVA ships it or a CSV of action_id,name"}


def _template_parts(template: str) -> tuple[str, str]:
    """(prefix, suffix) around the one frame-number field of `template`."""
    prefix, brace, rest = template.partition("{")
    spec, close, suffix = rest.partition("}")
    try:
        template.format(1)
    except (IndexError, KeyError, ValueError) as e:
        raise ValueError(f"frame_template={template!r}: not a format string of one frame "
                         f"number ({e})") from e
    if not brace or not close or "{" in suffix or os.sep in template:
        raise ValueError(f"frame_template={template!r}: expected one file name with one "
                         "'{...}' field for the frame number, e.g. 'img_{:05d}.jpg'")
    return prefix, suffix


# ----------------------------------------------------------------------------- annotations


@dataclasses.dataclass(frozen=True)
class Annotations:
    """One split's CSV read and validated."""

    keyframes: dict  # (video_id, timestamp) -> ava.Keyframe, sorted
    problems: list  # video_io.Problem, with the split
    num_rows: int  # non-blank lines of the CSV


def read_label_map(path: str) -> tuple[list[int], list[str]]:
    """(action ids, class names) in label-map order; `BadInputError` naming the file and line of
    a malformed one."""
    from jaxact.evaluation.ava import read_labelmap  # evaluation imports data: import late

    labels = read_labelmap(path)
    return list(labels), list(labels.values())


def _stat(path: str) -> list:
    """(size, mtime in ns) of a file, (None, mtime) of a folder, None when absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [None if os.path.isdir(path) else st.st_size, st.st_mtime_ns]


def read_split(csv_path: str, action_ids: Sequence[int], excluded_path: str,
               split: str) -> Annotations:
    """The split's CSV through `ava.read_ava_csv` (memoized on the files' sizes and times, since
    validation and the dataset both read it)."""
    key = (csv_path, json.dumps(_stat(csv_path)), tuple(action_ids), excluded_path,
           json.dumps(_stat(excluded_path)) if excluded_path else "", split)
    return _read_split(*key)


@functools.lru_cache(maxsize=16)
def _read_split(csv_path, _csv_stat, action_ids, excluded_path, _excluded_stat, split):
    keyframes, problems = ava.read_ava_csv(csv_path, list(action_ids), excluded_path or None)
    rows = sum(1 for line in ava.read_bytes(csv_path).splitlines() if line.strip())
    return Annotations(keyframes, [p._replace(split=split) for p in problems], rows)


# ----------------------------------------------------------------------------- frames


@dataclasses.dataclass
class _Job:
    """One keyframe to convert: its annotation and its window of frame indices (from 0)."""

    keyframe: ava.Keyframe
    frame: int  # the keyframe's frame index
    window: np.ndarray  # int64 [T]; clamped at 0, not yet at the video's end


def frame_index(timestamp: int, fps: float, s: AvaFormatSettings) -> int:
    """The 0-based frame index of a keyframe at `timestamp` in a video of `fps` frames/s."""
    if s.timestamp_unit == "frames":
        return int(round(timestamp - s.time_offset)) - s.first_frame
    return math.floor((timestamp - s.time_offset) * fps + 0.5)  # round half up


def _jobs(keyframes: Sequence[ava.Keyframe], fps: float, s: AvaFormatSettings, source: str,
          split: str, csv_path: str):
    """(jobs sorted by frame, problems of keyframes before the video's first frame)."""
    jobs, problems = [], []
    offsets = (np.arange(s.num_frames) - s.num_frames // 2) * s.frame_stride
    for kf in keyframes:
        frame = frame_index(kf.timestamp, fps, s)
        if frame < 0:
            problems.append(_keyframe_problem(source, kf, f"is frame {frame}, before the video's "
                                              "first frame (check data.time_offset)", split,
                                              csv_path))
            continue
        jobs.append(_Job(kf, frame, np.maximum(frame + offsets, 0)))
    return sorted(jobs, key=lambda j: j.frame), problems


def _keyframe_problem(path: str, kf: ava.Keyframe, reason: str, split: str,
                      csv_path: str) -> video_io.Problem:
    return video_io.Problem(path, f"keyframe {kf.video_id},{kf.timestamp} {reason}; skipped",
                            split=split, list_file=csv_path)


def _resize_image(image, size: tuple[int, int]) -> np.ndarray:
    """PIL image -> uint8 RGB `[H, W, 3]` at `size` (bilinear, antialiased when shrinking)."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(image)


def read_image(path: str, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB `[H, W, 3]` of an image file resized to `size`; `BadInputError` naming it."""
    from PIL import Image

    if not os.path.exists(path):
        raise video_io.MissingInputError(path, "missing frame file")
    try:
        with Image.open(path) as image:
            return _resize_image(image, size)
    except (OSError, ValueError, SyntaxError) as e:
        raise video_io.BadInputError(path, f"unreadable image ({type(e).__name__}: {e})") from e


def frame_numbers(folder: str, template: str) -> list[int]:
    """Frame numbers of the files in `folder` named by `template`, sorted."""
    prefix, suffix = _template_parts(template)
    numbers = []
    for name in os.listdir(folder):
        middle = name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]
        if name.startswith(prefix) and name.endswith(suffix) and middle.isdigit():
            numbers.append(int(middle))
    return sorted(numbers)


def _folder_records(folder: str, numbers: list[int], jobs: list[_Job], s: AvaFormatSettings,
                    split: str, csv_path: str
                    ) -> Iterator[tuple[_Job, np.ndarray | video_io.Problem]]:
    """(job, frames uint8 [T, H, W, 3] or the problem that skips it) of a frame folder whose
    files have the frame `numbers` (sorted; the last one ends the video). Each file is read once
    however many windows hold it."""
    length = numbers[-1] - s.first_frame + 1
    cache: dict[int, np.ndarray] = {}
    for n, job in enumerate(jobs):
        name = s.frame_template.format(s.first_frame + job.frame)
        if job.frame >= length:
            last = s.frame_template.format(numbers[-1])
            yield job, _keyframe_problem(os.path.join(folder, name), job.keyframe,
                                         f"is frame file {name}, past the video's last one "
                                         f"({last})", split, csv_path)
            continue
        window = [int(i) for i in np.minimum(job.window, length - 1)]
        try:
            for i in window:
                if i not in cache:
                    path = os.path.join(folder, s.frame_template.format(s.first_frame + i))
                    cache[i] = read_image(path, s.frame_size)
        except video_io.BadInputError as e:
            yield job, _keyframe_problem(e.path, job.keyframe, f"needs it: {e.reason}", split,
                                         csv_path)
        else:
            yield job, np.stack([cache[i] for i in window])
        if n + 1 < len(jobs):  # frames no later window needs
            first = int(jobs[n + 1].window[0])
            for i in [i for i in cache if i < first]:
                del cache[i]


def find_video(video_dir: str, video_id: str) -> str | None:
    """`VIDEO_DIR/VIDEO_ID.EXT` for the first video extension present, else None."""
    for ext in video_io.VIDEO_EXTENSIONS:
        path = os.path.join(video_dir, video_id + ext)
        if os.path.isfile(path):
            return path
    return None


def _video_records(path: str, jobs: list[_Job], s: AvaFormatSettings, split: str,
                   csv_path: str) -> Iterator[tuple[_Job, np.ndarray | video_io.Problem]]:
    """As `_folder_records` for a video file, decoded once, front to back: a keyframe's frames
    are kept from the first of its window until it is assembled, so memory holds about one
    window whatever the video's length."""
    av = video_io._import_av()
    height, width = s.frame_size
    needed = {int(i) for job in jobs for i in job.window}
    cache: dict[int, np.ndarray] = {}
    pending = list(jobs)  # sorted by frame, so by the window's last frame too
    count, last, expected = 0, None, 0
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise video_io.BadInputError(path, "no video stream")
            stream = container.streams.video[0]
            expected = stream.frames  # 0 when the container does not say
            for frame in container.decode(stream):
                i, count, last = count, count + 1, frame
                if i in needed:
                    cache[i] = frame.to_ndarray(format="rgb24", height=height, width=width)
                while pending and int(pending[0].window[-1]) <= i:
                    job = pending.pop(0)
                    yield job, np.stack([cache[int(k)] for k in job.window])
                    first = int(pending[0].window[0]) if pending else i + 1
                    for k in [k for k in cache if k < first]:
                        del cache[k]
                if not pending:
                    return
    except video_io.BadInputError as e:
        reason = e.reason
    except (av.error.FFmpegError, OSError, EOFError, ValueError) as e:
        reason = f"cannot decode frame {count} ({type(e).__name__}: {e}); truncated or corrupt?"
    else:
        reason = None
        if expected and count < expected - max(1, int(0.01 * expected)):  # as video_io's check
            reason = f"decoded {count} of the {expected} frames its header lists; truncated?"
    for job in pending:  # after the last frame decoded
        if reason is not None:
            yield job, _keyframe_problem(path, job.keyframe, f"not read: {reason}", split,
                                         csv_path)
        elif job.frame >= count:
            yield job, _keyframe_problem(path, job.keyframe, f"is frame {job.frame}, past the "
                                         f"video's last frame ({count - 1})", split, csv_path)
        else:  # the window runs past the end: repeat the last frame
            cache[count - 1] = last.to_ndarray(format="rgb24", height=height, width=width)
            yield job, np.stack([cache[min(int(k), count - 1)] for k in job.window])


def convert_video(video_id: str, keyframes: Sequence[ava.Keyframe], s: AvaFormatSettings,
                  split: str, csv_path: str) -> tuple[list[bytes], list[ava.Keyframe],
                                                      list[video_io.Problem]]:
    """The records (serialized) of one video's keyframes, the keyframes they hold (in time
    order), and the problems of those skipped: one per keyframe, or one for the whole video
    when it has no frames at all."""

    def no_frames(path: str, what: str):
        reason = (f"{what} for video_id '{video_id}' of {os.path.basename(csv_path)}: its "
                  f"{len(keyframes)} keyframe(s) skipped")
        return [], [], [video_io.Problem(path, reason, split=split, list_file=csv_path)]

    if s.frame_dir:
        source, fps = os.path.join(s.path("frame_dir"), video_id), s.fps
        if not os.path.isdir(source):
            return no_frames(source, "no frame folder")
        numbers = frame_numbers(source, s.frame_template)
        if not numbers:
            return no_frames(source, f"no frame files ({s.frame_template.format(s.first_frame)}"
                                     ", ...) in the frame folder")
    else:
        source = find_video(s.path("video_dir"), video_id)
        if source is None:
            return no_frames(os.path.join(s.path("video_dir"), video_id + ".mp4"),
                             f"no video file ({', '.join(video_io.VIDEO_EXTENSIONS)})")
        try:
            fps = video_io.frame_rate(source, s.fps)
        except video_io.BadInputError as e:
            return no_frames(source, e.reason)
    jobs, problems = _jobs(keyframes, fps, s, source, split, csv_path)
    if s.frame_dir:
        read = _folder_records(source, numbers, jobs, s, split, csv_path)
    else:
        read = _video_records(source, jobs, s, split, csv_path)
    records, kept = [], []
    for job, frames in read:  # in time order
        if isinstance(frames, video_io.Problem):
            problems.append(frames)
            continue
        kf = job.keyframe
        records.append(encode_record({
            "video": frames, "keyframe": np.int64(s.num_frames // 2), "boxes": kf.boxes,
            "actions": kf.actions, "person_ids": kf.person_ids,
            "video_id": np.str_(kf.video_id), "timestamp": np.int64(kf.timestamp)},
            s.cache_format, s.jpeg_quality))
        kept.append(kf)
    return records, kept, problems


# ----------------------------------------------------------------------------- records


def encode_record(record: dict, cache_format: str = "raw", quality: int = 90) -> bytes:
    """A record -> `np.savez` bytes (no pickle); 'jpeg' stores the frames as JPEG files (4:4:4,
    `quality`; several times smaller, lossy), 'raw' as they are."""
    arrays = {k: np.asarray(v) for k, v in record.items()}
    if cache_format == "jpeg":
        from PIL import Image

        blobs = []
        for frame in arrays.pop("video"):
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="JPEG", quality=quality, subsampling=0)
            blobs.append(buffer.getvalue())
        arrays["jpeg"] = np.frombuffer(b"".join(blobs), np.uint8)
        arrays["jpeg_sizes"] = np.array([len(b) for b in blobs], np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_record(data: bytes) -> dict:
    """`encode_record`'s bytes -> the record (`video` uint8 `[T, H, W, 3]`, ...)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        record = {k: z[k] for k in z.files}
    if "jpeg" in record:
        from PIL import Image

        blob, sizes = record.pop("jpeg").tobytes(), record.pop("jpeg_sizes")
        ends = np.cumsum(sizes)
        record["video"] = np.stack([np.asarray(Image.open(io.BytesIO(blob[e - n:e])).convert("RGB"))
                                    for e, n in zip(ends, sizes, strict=True)])
    record["video_id"] = str(record["video_id"])
    return record


class Records:
    """Random access to one converted split: `decode_record`s with their `index`."""

    def __init__(self, path: str, count: int):
        from array_record.python import array_record_data_source

        self.path, self.count = path, count
        self._source = array_record_data_source.ArrayRecordDataSource(path)
        if len(self._source) != count:
            raise ValueError(f"{path}: {len(self._source)} records, its .json says {count}")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        return {**decode_record(self._source[int(i)]), "index": np.int64(i)}


def _ordered_map(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """`map(fn, items)` in order on `workers` threads, at most 2 * workers items ahead (decoding
    releases the GIL; a bounded window keeps memory bounded)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures, it = [], iter(items)
        for item in it:
            futures.append(pool.submit(fn, item))
            if len(futures) >= 2 * workers:
                yield futures.pop(0).result()
        for future in futures:
            yield future.result()


def _write_split(path: str, jobs: Iterable, total: int, desc: str):
    """Writes the records of `jobs` (each `(records, keyframes, problems)`) to `path` through a
    temporary file; returns (keyframes kept, problems)."""
    kept, problems = [], []
    with files.array_record_writer(path) as writer, \
            console.bar(total, desc, unit="keyframe") as progress:
        for records, keyframes, bad in jobs:
            for record in records:
                writer.write(record)
            kept += keyframes
            problems += bad
            progress.update(len(keyframes) + len(bad))
    return kept, problems


# ----------------------------------------------------------------------------- the dataset


class AvaFormat:
    """A detection dataset from AVA-format annotations and frames (module docstring), converted
    once per split into `data.cache_dir`. `problems` lists every bad row and skipped keyframe of
    every split (the excluded CSV's once), out of `num_checked` CSV rows plus keyframes."""

    def __init__(self, config):
        self.config = config
        self.settings = s = settings.from_section(AvaFormatSettings, config, "data")
        spec = self.spec(config)  # reads the label map and the CSVs, checks max_people
        self.action_ids, self.class_names = read_label_map(s.path("label_map"))
        self.max_people = spec.max_people
        self.frame_shape = spec.frame_shape
        self.description = f"ava_format:{s.path('train_csv')}|{s.path('test_csv')}"
        self.cache = os.path.join(os.path.expanduser(s.cache_dir), self.cache_key(s))
        os.makedirs(self.cache, exist_ok=True)
        self.problems, self.num_checked = [], 0
        self._records, self._keyframes = {}, {}
        excluded = s.path("excluded_csv")
        for n, (split, csv_path) in enumerate(s.splits.items()):
            meta = self._prepare(split, csv_path)
            problems = [video_io.Problem(**p) for p in meta["problems"]]
            # Every split's reading of the excluded CSV finds the same problems: keep one copy.
            self.problems += [p for p in problems if n == 0 or not excluded or p.path != excluded]
            self.num_checked += meta["num_rows"] + meta["num_keyframes"]
            if not meta["keyframes"]:
                raise ValueError(f"data.{SPLIT_FIELDS[split]}={csv_path}: no usable keyframe; "
                                 + video_io.summarize(problems, meta["num_rows"]
                                                      + meta["num_keyframes"], "rows + keyframes"))
            self._keyframes[split] = [tuple(k) for k in meta["keyframes"]]
            self._records[split] = Records(os.path.join(self.cache, f"{split}.array_record"),
                                           len(meta["keyframes"]))

    @classmethod
    def spec(cls, config):
        """Class names (label map), max_people (the most people of any keyframe of any split's
        CSV) and frame shape; decodes no frame. Fails naming the field when a path is unset, the
        file when it is missing or malformed, and data.max_people when a keyframe holds more."""
        from jaxact.data import sources

        s = settings.from_section(AvaFormatSettings, config, "data")
        action_ids, class_names = read_label_map(s.path("label_map"))
        most, where = 0, None
        for split, csv_path in s.splits.items():
            annotations = read_split(csv_path, action_ids, s.path("excluded_csv"), split)
            for key, kf in annotations.keyframes.items():
                if len(kf.person_ids) > most:
                    most, where = len(kf.person_ids), (csv_path, key)
        if most > s.max_people:
            raise ValueError(f"data.max_people={s.max_people}: {where[0]} has {most} people at "
                             f"keyframe {where[1][0]},{where[1][1]}; raise data.max_people (and "
                             "model.num_queries, at least as many)")
        return sources.DetectionSpec(class_names=tuple(class_names), max_people=max(most, 1),
                                     frame_shape=(*s.frame_size, 3))

    @staticmethod
    def cache_key(s: AvaFormatSettings) -> str:
        """The folder of one dataset in the cache: its input paths and conversion settings."""
        identity = {"paths": [s.path(f) for f in (*SPLIT_FIELDS.values(), "label_map",
                                                  "excluded_csv", "frame_dir", "video_dir")],
                    **{f: getattr(s, f) for f in _CONVERSION_FIELDS}}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprint(self, split: str, csv_path: str, video_ids: Iterable[str]) -> str:
        """Of everything a split's records come from: the cache key, the size and modification
        time of the CSVs, the label map and every video file (frame folder: its modification
        time, which adding or removing a frame changes), and the record layout version."""
        s = self.settings
        if s.frame_dir:
            videos = {v: _stat(os.path.join(s.path("frame_dir"), v)) for v in video_ids}
        else:
            videos = {v: _stat(find_video(s.path("video_dir"), v) or "") for v in video_ids}
        inputs = {"version": CACHE_VERSION, "key": self.cache_key(s), "split": split,
                  "files": {p: _stat(p) for p in (csv_path, s.path("label_map"),
                                                   s.path("excluded_csv")) if p},
                  "videos": videos}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()

    def _prepare(self, split: str, csv_path: str) -> dict:
        """The split's meta (`SPLIT.json`), converting the split first unless the cache holds
        it with the same fingerprint."""
        s = self.settings
        annotations = read_split(csv_path, self.action_ids, s.path("excluded_csv"), split)
        by_video = {}
        for kf in annotations.keyframes.values():
            by_video.setdefault(kf.video_id, []).append(kf)
        fingerprint = self.fingerprint(split, csv_path, by_video)
        meta_path = os.path.join(self.cache, f"{split}.json")
        records_path = os.path.join(self.cache, f"{split}.array_record")
        # Processes sharing the cache (hosts, test workers): one converts, the others wait.
        with filelock.FileLock(os.path.join(self.cache, f"{split}.lock")):
            meta = _read_meta(meta_path)
            if meta.get("fingerprint") == fingerprint and os.path.exists(records_path):
                logging.info("%s: converted records in %s", csv_path, self.cache)
                return meta
            if os.path.exists(meta_path):  # the records are about to change
                os.remove(meta_path)
            console.say(f"converting {csv_path} ({len(annotations.keyframes)} keyframes of "
                        f"{len(by_video)} videos) into {self.cache}")

            def convert(item):
                return convert_video(*item, s, split, csv_path)

            kept, problems = _write_split(records_path, _ordered_map(
                convert, sorted(by_video.items()), s.scan_workers), len(annotations.keyframes),
                f"convert {split}")
            problems = annotations.problems + problems
            meta = {"version": CACHE_VERSION, "fingerprint": fingerprint, "csv": csv_path,
                    "class_names": self.class_names, "frame_shape": list(self.frame_shape),
                    "num_frames": s.num_frames, "num_rows": annotations.num_rows,
                    "num_keyframes": len(annotations.keyframes),
                    "keyframes": [[k.video_id, k.timestamp] for k in kept],
                    "problems": [p._asdict() for p in problems]}
            files.write_json(meta_path, meta)  # last: its fingerprint marks a finished split
        checked = annotations.num_rows + len(annotations.keyframes)
        (logging.warning if problems else logging.info)(
            "%s: %d of %d keyframes converted; %s", csv_path, len(kept),
            len(annotations.keyframes), video_io.summarize(problems, checked, "rows + keyframes"))
        return meta

    def source(self, split: str) -> Records:
        if split not in self._records:
            raise ValueError(f"split {split!r}: data.{SPLIT_FIELDS.get(split, split)} is not set; "
                             f"this dataset has {sorted(self._records)}")
        return self._records[split]

    def keyframe_ids(self, split: str) -> list[tuple[str, int]]:
        """`(video_id, timestamp)` of each record of `split`, by `index`: the detector's AVA
        CSVs name the real keyframes."""
        self.source(split)
        return self._keyframes[split]

    def transform(self, train: bool) -> pipeline.KeyframeTransform:
        c = self.settings
        # Records hold the strided window already: stride 1 here.
        return pipeline.KeyframeTransform(num_frames=c.num_frames, max_people=c.max_people,
                                          train=train, stride=1, flip_prob=c.flip_prob)

    def read_clip(self, path: str) -> np.ndarray:
        """uint8 frames `[T, H, W, 3]` of a user's clip file, at `frame_shape`."""
        return video_io.read_video(path, size=self.frame_shape[:2])


def _read_meta(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------- export


def _float32_text(value) -> str:
    """The shortest decimal that reads back as the same float32."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


def export_classroom(out_dir: str, builder_config: str = "tiny", num_clips: int | None = None,
                     splits: Sequence[str] = ("train", "validation", "test"),
                     write_frames: bool = True, write_videos: bool = True,
                     jpeg_quality: int = 95) -> dict:
    """Writes the synthetic classroom clips of `builder_config` in AVA format:

      OUT/frames/VIDEO_ID/img_00001.jpg ...    every frame (write_frames)
      OUT/videos/VIDEO_ID.mp4                  the same frames as a video (write_videos)
      OUT/annotations/SPLIT.csv                video_id, timestamp, x1, y1, x2, y2, action_id,
                                               person_id per (person, action) of each keyframe
      OUT/annotations/labelmap.pbtxt           the behaviours, ids 1..A
      OUT/annotations/excluded_timestamps.csv  empty: nothing excluded

    One video per clip, VIDEO_ID = SPLIT_INDEX (the clips of `builders.load("classroom",
    builder_config, ...)`, rendered directly), with its keyframe (frame T // 2) at second 1:
    the frame rate is T // 2 frames per second (4 for `tiny` and `small`, 8 for `default`).
    Boxes are written as the shortest decimals that read back as the same float32, so the
    round trip is exact. `num_clips` caps the clips per split (None: the preset's sizes).
    Returns the paths, the fps, the clip counts and the config overrides that train on it.
    """
    from jaxact.data import builders, classroom
    from jaxact.evaluation.ava import write_labelmap

    preset = builders.Classroom.preset(builder_config)
    render = preset.render
    keyframe = render.num_frames // 2
    if keyframe < 1:
        raise ValueError(f"classroom/{builder_config}: {render.num_frames} frames per clip, "
                         "too few for a keyframe at second 1")
    fps = keyframe
    out = {"frames": os.path.join(out_dir, "frames"), "videos": os.path.join(out_dir, "videos"),
           "annotations": os.path.join(out_dir, "annotations")}
    os.makedirs(out["annotations"], exist_ok=True)
    out["label_map"] = write_labelmap(os.path.join(out["annotations"], "labelmap.pbtxt"),
                                      classroom.BEHAVIOURS)
    out["excluded_csv"] = files.write_atomic(
        os.path.join(out["annotations"], "excluded_timestamps.csv"), lambda f: None)
    counts = {}
    for split in splits:
        size = getattr(preset, f"num_{split}")
        count = size if num_clips is None else min(num_clips, size)
        rows = []
        for index in console.track(range(count), f"export {split}", unit="clip"):
            video_id = f"{split}_{index:06d}"
            clip = classroom.render_clip(builders.example_seed(split, index), render)
            if clip["keyframe"] != keyframe:
                raise AssertionError(f"{video_id}: keyframe {clip['keyframe']} != {keyframe}")
            frames = clip["video"]
            if write_frames:
                _write_frames(os.path.join(out["frames"], video_id), frames, jpeg_quality)
            if write_videos:
                video_io.write_video(os.path.join(out["videos"], f"{video_id}.mp4"), frames, fps)
            for box, actions, person in zip(clip["boxes"], clip["actions"], clip["person_ids"],
                                            strict=True):
                coords = ",".join(_float32_text(v) for v in box)
                rows += [f"{video_id},1,{coords},{a + 1},{int(person)}\n"
                         for a in np.flatnonzero(actions)]
        out[f"{split}_csv"] = files.write_atomic(
            os.path.join(out["annotations"], f"{split}.csv"),
            lambda f, rows=rows: f.writelines(rows), binary=False)
        counts[split] = count
    out.update(fps=fps, num_clips=counts, frame_size=(render.resolution, render.resolution))
    out["overrides"] = {
        **{f"data.{split}_csv": out[f"{split}_csv"] for split in splits},
        "data.label_map": out["label_map"], "data.excluded_csv": out["excluded_csv"],
        "data.frame_dir" if write_frames else "data.video_dir":
            out["frames"] if write_frames else out["videos"],
        "data.fps": float(fps), "data.frame_size": out["frame_size"]}
    return out


def _write_frames(folder: str, frames: np.ndarray, quality: int) -> None:
    """uint8 `[T, H, W, 3]` -> FOLDER/img_00001.jpg ... (each written atomically)."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(frames):
        files.write_atomic(os.path.join(folder, f"img_{t + 1:05d}.jpg"),
                           lambda f, frame=frame: Image.fromarray(frame).save(
                               f, format="JPEG", quality=quality, subsampling=0))  # 4:4:4
