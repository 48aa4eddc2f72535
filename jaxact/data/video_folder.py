"""Class-per-folder videos (`data.name='video_folder'`), decoded once into an array_record cache.

Layout (`data.root`; the label of a clip is the name of its folder, class names are the sorted
folder names):

  ROOT/CLASS/NAME.mp4         a video (anything FFmpeg decodes), or a .npy / .npz frame array
  ROOT/CLASS/NAME/0001.jpg    a frame folder: images sorted by name (.jpg .jpeg .png .bmp)

Splits come from split files in `data.split_dir`, or without them from a hash of the clip paths:

  ucf     trainlistNN.txt, testlistNN.txt (UCF101): one `CLASS/NAME.avi [LABEL]` per line; a
          listed video that is not there but whose frame folder `CLASS/NAME` is, means that folder
  hmdb    CLASS_test_splitN.txt (HMDB51), one per class: `NAME.avi FLAG` per line, FLAG 1 train,
          2 test, 0 unused
  (none)  per class, the clips ordered by a hash of CLASS/NAME; the first `test_fraction` of them
          (at least one, and not all, of a class of two or more) test, the rest train. Stable:
          the same files always split the same way, whatever order the file system lists them in

Conversion: every clip under ROOT is decoded once (`decode_clip`): resampled in time to
`data.fps` (frame i of a stream at r fps shows time [i / r, (i + 1) / r); output frame k is the
frame showing at time k / fps, so a 30 fps and a 25 fps video of one length give the same number
of frames; 0 keeps every frame), cut to the first `max_frames`, resized so its short side is
`short_side` (aspect kept). Frame folders and arrays (and videos that declare no frame rate) play
at `data.frame_fps`. The frames go to `CACHE/clips-HASH.array_record` (one record per clip,
`record_bytes`), in the order of `meta.json`, which holds the class names, the settings and each
clip's frame count, size and source frame rate. A clip that cannot be decoded is skipped and
reported (`video_io.Problem`), as are split-file rows naming no clip and stray files in a class
folder. The cache is checked against each clip's size and modification time on every start: a
change re-decodes the changed clips only (a change of the decode settings: all of them); a split
change decodes nothing. meta.json is written last, through a rename: an interrupted conversion
leaves the old cache (or none), never half of one.
"""

from __future__ import annotations

import collections
import dataclasses
import fractions
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures

import filelock
import numpy as np
from absl import logging

from jaxact import console, files
from jaxact.data import pipeline, video_io

META = "meta.json"
VERSION = 1  # of the cache layout; another version is rebuilt
CLIP_EXTENSIONS = video_io.VIDEO_EXTENSIONS + video_io.ARRAY_EXTENSIONS
SCHEMES = ("ucf", "hmdb")
# One record per chunk, so random access reads one clip; zstd stores real video in about 2/3 of
# its raw frames' bytes, losslessly.
_RECORD_OPTIONS = "group_size:1,zstd:3"


# ----------------------------------------------------------------------------- decoding


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """How a clip becomes stored frames; a change rebuilds the cache."""

    fps: float = 10.0  # frames per second kept (resampled by time); 0: every frame
    frame_fps: float = 25.0  # the frame rate of frame folders and frame arrays
    short_side: int = 64  # frames are resized so that their short side is this (aspect kept)
    max_frames: int = 0  # the first this many frames of a clip (after resampling); 0: all

    def __post_init__(self):
        if not 0 <= self.fps < float("inf"):
            raise ValueError(f"fps={self.fps}: expected >= 0 (0: every frame)")
        if not 0 < self.frame_fps < float("inf"):
            raise ValueError(f"frame_fps={self.frame_fps}: expected > 0")
        if self.short_side < 1:
            raise ValueError(f"short_side={self.short_side}: expected >= 1")
        if self.max_frames < 0:
            raise ValueError(f"max_frames={self.max_frames}: expected >= 0 (0: all)")


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) with the shorter of the two equal to `short_side` and the aspect ratio kept."""
    scale = short_side / min(height, width)
    return (short_side if height <= width else max(1, round(height * scale)),
            short_side if width < height else max(1, round(width * scale)))


def _rate(fps: float) -> fractions.Fraction:
    return fractions.Fraction(fps).limit_denominator(1001)  # 29.97 is 30000/1001 exactly


def resample_indices(num_frames: int, source_fps: float, fps: float) -> np.ndarray:
    """Source frame of each output frame: int64 `[K]`, `K = ceil(num_frames * fps / source_fps)`.
    Output frame k is the source frame showing at time k / fps: `floor(k * source_fps / fps)`
    (exact for rational rates such as 30000/1001). `fps=0`: every frame."""
    if not fps:
        return np.arange(num_frames)
    step = _rate(source_fps) / _rate(fps)  # source frames per output frame
    count = -(-num_frames // step)  # ceil: the last output time before the source ends
    return np.array([k * step.numerator // step.denominator for k in range(int(count))],
                    np.int64)


def resample(frames: Iterable[np.ndarray], source_fps: float, fps: float,
             max_frames: int = 0) -> Iterator[np.ndarray]:
    """`resample_indices` over a stream of frames (a frame shown at several output times
    repeats), stopping after `max_frames` (0: none) without reading further."""
    step = _rate(source_fps) / _rate(fps) if fps else fractions.Fraction(1)
    k = 0
    for i, frame in enumerate(frames):
        while k * step < i + 1:  # output time k / fps falls inside frame i
            if max_frames and k >= max_frames:
                return
            yield frame
            k += 1


def _probe(path: str) -> tuple[int, int, float | None]:
    """(height, width, average frame rate or None) of a video file's first video stream."""
    av = video_io._import_av()
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise video_io.BadInputError(path, "no video stream")
            stream = container.streams.video[0]
            height, width = stream.codec_context.height, stream.codec_context.width
            rate = float(stream.average_rate) if stream.average_rate else None
    except video_io.BadInputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise video_io.BadInputError(path, f"cannot open ({type(e).__name__}: {e}); truncated "
                                           "or corrupt?") from e
    if not height or not width:
        raise video_io.BadInputError(path, f"video stream of size {height}x{width}")
    return height, width, rate


def decode_clip(path: str, settings: DecodeSettings) -> tuple[np.ndarray, float]:
    """(uint8 frames `[T, H, W, 3]`, source frame rate) of a video file, frame array or frame
    folder, resampled, cut and resized by `settings` (module docstring). Videos are streamed
    (and resized by FFmpeg's scaler) and stop being read after `max_frames`; folders and arrays
    are resized after resampling (`resize`, as `video_io.read_video` resizes arrays). A video
    that declares no frame rate plays at `frame_fps` too. A bad clip raises
    `video_io.BadInputError` naming the file (or the folder's bad image)."""
    if not os.path.exists(path):
        raise video_io.MissingInputError(path, "no such file or frame folder")
    video = os.path.isfile(path) and path.lower().endswith(video_io.VIDEO_EXTENSIONS)
    if video:
        if os.path.getsize(path) == 0:
            raise video_io.BadInputError(path, "empty file (0 bytes)")
        height, width, rate = _probe(path)
        source_fps = rate or settings.frame_fps
        size = resized_shape(height, width, settings.short_side)
    else:
        source_fps, size = settings.frame_fps, None
    stream = video_io.iter_frames(path, size)
    try:
        kept = list(resample(stream, source_fps, settings.fps, settings.max_frames))
    finally:
        stream.close()  # stopped at max_frames: close the container now
    frames = np.stack(kept)
    if size is None:
        frames = resize(frames, resized_shape(*frames.shape[1:3], settings.short_side))
    return frames, source_fps


_RESIZE_CHUNK = 16


def resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`video_io._resize` of uint8 `[T, H, W, 3]` to `size` (frame by frame, so equal to it), in
    chunks of 16 frames (the last padded): one shape per frame size, so clips of every length
    share JAX's compiled resize instead of compiling one each (~0.5 s)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    pad = -len(frames) % _RESIZE_CHUNK
    padded = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    chunks = [video_io._resize(padded[i:i + _RESIZE_CHUNK], size)
              for i in range(0, len(padded), _RESIZE_CHUNK)]
    return np.concatenate(chunks)[:len(frames)]


# ----------------------------------------------------------------------------- records


def record_bytes(video: np.ndarray, label: int, path: str) -> bytes:
    """One cache record: npz bytes of `video` uint8 `[T, H, W, 3]`, `label` int64 and `path`
    (the clip relative to the root, '/'-separated); no pickles."""
    buffer = io.BytesIO()
    np.savez(buffer, video=video, label=np.int64(label), path=np.str_(path))
    return buffer.getvalue()


def parse_record(raw: bytes) -> dict:
    """`record_bytes` -> `{"video": uint8 [T, H, W, 3], "label": int, "path": str}`."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        return {"video": data["video"], "label": int(data["label"]), "path": str(data["path"])}


class FolderRecords:
    """Random access to the clips `indices` of a cache's record file: `{"video": uint8
    [T, H, W, 3] (the short side at `short_side`, the long one varies), "label": int, "boxes":
    f32 [T, 4] zeros, "path": str}`; `paths` are the clips, relative to the root."""

    def __init__(self, record_file: str, indices: list[int], paths: list[str]):
        from array_record.python import array_record_data_source

        self.record_file, self.indices, self.paths = record_file, indices, paths
        self._source = array_record_data_source.ArrayRecordDataSource([record_file])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        record = parse_record(self._source[self.indices[i]])
        zeros = np.zeros((len(record["video"]), 4), np.float32)
        return {**record, "boxes": zeros}


# ----------------------------------------------------------------------------- the folder


def _signature(path: str) -> str:
    """Changes when a clip's file, or a frame folder's list of files or any of them, changes."""
    def stamp(st) -> str:
        return f"{st.st_size}:{st.st_mtime_ns}"

    if not os.path.isdir(path):
        return stamp(os.stat(path))
    with os.scandir(path) as entries:
        listing = sorted(f"{e.name}|{stamp(e.stat())}" for e in entries)
    return hashlib.sha1("\n".join(listing).encode()).hexdigest()[:16]


def find_clips(root: str, exclude: Iterable[str] = ()) -> tuple[list[str], dict[str, str],
                                                                  list[video_io.Problem]]:
    """(class names, `{CLASS/NAME: signature}` of the clips in scan order, problems).

    Classes are ROOT's sub-folders (sorted; hidden ones and the absolute paths `exclude`, such
    as a split or cache folder inside ROOT, left out). A clip is a file with a video or array
    extension, or a sub-folder (frames) of a class folder; any other file in a class folder, and
    a video directly in ROOT, is a problem. Hidden files are ignored.
    """
    if not os.path.isdir(root):
        raise video_io.MissingInputError(root, "no such folder (data.root: one sub-folder of "
                                               "clips per class)")
    exclude = {os.path.realpath(p) for p in exclude if p}
    names, clips, problems = [], {}, []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if entry.name.lower().endswith(CLIP_EXTENSIONS):
                problems.append(video_io.Problem(entry.path, "not in a class folder; expected "
                                                             "ROOT/CLASS/NAME"))
            continue
        if os.path.realpath(entry.path) in exclude:
            continue
        names.append(entry.name)
        for clip in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if clip.name.startswith("."):
                continue
            if clip.is_dir() or clip.name.lower().endswith(CLIP_EXTENSIONS):
                try:
                    clips[f"{entry.name}/{clip.name}"] = _signature(clip.path)
                except OSError as e:  # a dangling link, a file gone meanwhile
                    problems.append(video_io.Problem(clip.path, f"cannot read ({e})"))
            else:
                problems.append(video_io.Problem(
                    clip.path, f"not a clip: expected a video ({', '.join(CLIP_EXTENSIONS)}) "
                               "or a folder of frames"))
    if not names:
        raise video_io.BadInputError(root, "no class folders; expected ROOT/CLASS/NAME.mp4 or "
                                           "ROOT/CLASS/NAME/FRAME.jpg")
    return names, clips, problems


def _ordered_map(fn: Callable, items: list, workers: int) -> Iterator:
    """`map(fn, items)` on `workers` threads (0: here), in order, with at most 2 x `workers`
    results waiting, so that decoded clips never pile up in memory."""
    if workers <= 0:
        yield from map(fn, items)
        return
    pool = futures.ThreadPoolExecutor(workers)
    pending = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


def _decode_or_problem(path: str, settings: DecodeSettings):
    """`decode_clip`'s result, or the `video_io.Problem` of why the clip is bad."""
    try:
        return decode_clip(path, settings)
    except video_io.BadInputError as e:
        return e.problem
    except ImportError:
        raise  # a missing library is the environment's fault, not the clip's
    except Exception as e:  # one odd file must not stop the conversion
        logging.warning("unexpected error decoding %s", path, exc_info=True)
        return video_io.Problem(path, f"unexpected {type(e).__name__}: {e}")


def load_cache(cache_dir: str) -> dict | None:
    """The cache's meta.json, or None where there is none of this `VERSION` (or it is
    unreadable, or its record file is gone)."""
    try:
        with open(os.path.join(cache_dir, META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get("version") != VERSION or not os.path.isfile(
            os.path.join(cache_dir, meta.get("record_file", ""))):
        return None
    return meta


def convert(root: str, cache_dir: str, class_names: list[str], clips: dict[str, str],
            settings: DecodeSettings, workers: int = 4) -> dict:
    """The up-to-date cache of `clips` (`find_clips`) in `cache_dir`: its meta.json as a dict.

    Nothing is decoded when the cache matches the clips, classes and settings; otherwise the
    clips whose signature changed (all of them when the settings did) are decoded on `workers`
    threads under a progress bar, and unchanged ones copied from the old records. One process
    converts at a time (a file lock); the others then find the cache up to date.
    meta.json: `version`, `settings`, `class_names`, `root`, `record_file`, `clips` (one per
    record: `path`, `label`, `frames`, `height`, `width`, `source_fps`, `signature`) and `bad`
    (`path`, `signature` and `problem`, a `video_io.Problem` as a dict). Paths are relative to
    the root, '/'-separated.
    """
    from array_record.python import array_record_data_source

    os.makedirs(cache_dir, exist_ok=True)
    wanted = {"settings": dataclasses.asdict(settings), "class_names": class_names}
    with filelock.FileLock(os.path.join(cache_dir, ".lock")):
        old = load_cache(cache_dir)
        if old is not None and all(old[k] == v for k, v in wanted.items()) and clips == {
                c["path"]: c["signature"] for c in old["clips"] + old["bad"]}:
            return old  # bad clips are decoded again only when something else changes
        reuse = {}  # clip -> (old record, its label) of the clips that did not change
        if old is not None and old["settings"] == wanted["settings"]:
            records = array_record_data_source.ArrayRecordDataSource(
                [os.path.join(cache_dir, old["record_file"])])
            reuse = {c["path"]: (records, i, c) for i, c in enumerate(old["clips"])
                     if clips.get(c["path"]) == c["signature"]}
        for name in os.listdir(cache_dir):  # what an interrupted conversion left
            if name.startswith(".clips-"):
                os.remove(os.path.join(cache_dir, name))
        digest = hashlib.sha1(json.dumps([wanted, clips], sort_keys=True).encode()).hexdigest()
        record_file = f"clips-{digest[:16]}.array_record"
        console.say(f"video folder {root}: decoding {len(clips) - len(reuse)} of {len(clips)} "
                    f"clips into {cache_dir}" + (f" (keeping {len(reuse)})" if reuse else ""))
        good, bad = _write_records(os.path.join(cache_dir, record_file), root, clips, class_names,
                                   settings, reuse, workers)
        meta = {"version": VERSION, **wanted, "root": root, "record_file": record_file,
                "clips": good, "bad": bad}
        files.write_json(os.path.join(cache_dir, META), meta, indent=1)  # the commit point
        for name in os.listdir(cache_dir):
            if name.startswith("clips-") and name != record_file:
                os.remove(os.path.join(cache_dir, name))
        console.say(f"video folder: stored {len(good)} of {len(clips)} clips"
                    + (f"; {len(bad)} did not decode" if bad else ""))
    return meta


def _write_records(path: str, root: str, clips: dict[str, str], class_names: list[str],
                   settings: DecodeSettings, reuse: dict, workers: int
                   ) -> tuple[list[dict], list[dict]]:
    """Writes the record file `path` (through a temporary file and a rename) of `clips`, in
    order: decoded, or copied from `reuse` (`{clip: (records, index, meta entry)}`). Returns
    meta.json's `clips` and `bad` entries."""
    labels = {name: i for i, name in enumerate(class_names)}

    def decode(clip: str):
        if clip in reuse:
            return None
        return _decode_or_problem(os.path.join(root, *clip.split("/")), settings)

    good, bad = [], []
    with files.array_record_writer(path, _RECORD_OPTIONS) as writer, \
            console.bar(len(clips) - len(reuse), "decoding clips", unit="clip") as progress:
        for clip, out in zip(clips, _ordered_map(decode, list(clips), workers), strict=True):
            label, entry = labels[clip.split("/")[0]], {"path": clip,
                                                        "signature": clips[clip]}
            if clip in reuse:  # unchanged: the old record, relabelled if classes moved
                records, index, entry = reuse[clip]
                raw = records[index]
                if entry["label"] != label:
                    raw = record_bytes(parse_record(raw)["video"], label, clip)
                writer.write(raw)
                good.append({**entry, "label": label})
                continue
            progress.update(1)
            if isinstance(out, video_io.Problem):  # the file, or a bad frame in it
                problem = out._replace(path=os.path.relpath(out.path, root))
                bad.append({**entry, "problem": problem._asdict()})
                continue
            frames, source_fps = out
            writer.write(record_bytes(frames, label, clip))
            good.append({**entry, "label": label, "frames": len(frames),
                         "height": frames.shape[1], "width": frames.shape[2],
                         "source_fps": source_fps})
    return good, bad


# ----------------------------------------------------------------------------- splits


def detect_scheme(split_dir: str, number: int) -> str:
    """'ucf' or 'hmdb': which split files `split_dir` holds for split `number`."""
    if os.path.isfile(os.path.join(split_dir, f"trainlist{number:02d}.txt")):
        return "ucf"
    if os.path.isdir(split_dir) and any(name.endswith(f"_test_split{number}.txt")
                                        for name in os.listdir(split_dir)):
        return "hmdb"
    raise video_io.MissingInputError(
        split_dir, f"no split files for split {number}: expected trainlist{number:02d}.txt and "
                   f"testlist{number:02d}.txt (UCF101) or CLASS_test_split{number}.txt (HMDB51)")


def _lines(path: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line, whitespace-separated fields) of each non-blank line of a text file."""
    if not os.path.isfile(path):
        raise video_io.MissingInputError(path, "no such split file")
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for row, line in enumerate(f, 1):
            if fields := line.split():
                yield row, fields


def read_split_files(split_dir: str, scheme: str, number: int, class_names: list[str]
                     ) -> tuple[dict[str, list[tuple[str, str, int]]], list[video_io.Problem]]:
    """`{"train": [(CLASS/NAME, split file, row)], "test": [...]}` in file order, and a
    `video_io.Problem` per malformed row (or split file of an unknown class). Paths use '/'."""
    if not os.path.isdir(split_dir):
        raise video_io.MissingInputError(split_dir, "no such folder (data.split_dir)")
    members, problems = {"train": [], "test": []}, []
    if scheme == "ucf":
        for split, name in (("train", "trainlist"), ("test", "testlist")):
            path = os.path.join(split_dir, f"{name}{number:02d}.txt")
            for row, fields in _lines(path):
                clip = fields[0].replace("\\", "/").strip("/")
                if len(fields) > 2 or "/" not in clip:
                    problems.append(video_io.Problem(
                        path, f"{' '.join(fields)!r}: expected CLASS/NAME.avi [LABEL]", row,
                        split=split))
                    continue
                members[split].append((clip, path, row))
        return members, problems
    suffix = f"_test_split{number}.txt"
    names = sorted(n for n in os.listdir(split_dir) if n.endswith(suffix))
    if not names:
        raise video_io.MissingInputError(split_dir, f"no CLASS{suffix} files (HMDB51 splits)")
    for name in names:
        path, label = os.path.join(split_dir, name), name[:-len(suffix)]
        if label not in class_names:
            problems.append(video_io.Problem(path, f"class {label!r} has no folder in data.root"))
            continue
        for row, fields in _lines(path):
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                problems.append(video_io.Problem(
                    path, f"{' '.join(fields)!r}: expected NAME.avi FLAG, FLAG 1 (train), 2 (test) "
                          "or 0 (unused)", row, "flag" if len(fields) == 2 else None))
            elif fields[1] != "0":
                split = "train" if fields[1] == "1" else "test"
                members[split].append((f"{label}/{fields[0]}", path, row))
    return members, problems


def hashed_split(clips: Iterable[str], test_fraction: float) -> dict[str, list[str]]:
    """`{"train": [...], "test": [...]}` of CLASS/NAME paths (in the given order): per class,
    the clips ordered by a hash of their path, the first `round(test_fraction * n)` of them
    (at least 1, at most n - 1, none of a class of one) test."""
    by_class = collections.defaultdict(list)
    for clip in clips:
        by_class[clip.split("/")[0]].append(clip)
    test = set()
    for members in by_class.values():
        if len(members) < 2:
            continue
        ranked = sorted(members, key=lambda c: hashlib.sha1(c.encode()).hexdigest())
        test.update(ranked[:min(len(members) - 1, max(1, round(test_fraction * len(members))))])
    return {"train": [c for c in clips if c not in test], "test": [c for c in clips if c in test]}


# ----------------------------------------------------------------------------- the dataset


@dataclasses.dataclass(frozen=True)
class SquareCrop:
    """`transform`'s output `video` `[T, H, W, C]` cropped to `[T, size, size, C]`: at a random
    place in training (after the transform's own draws), else in the centre."""

    transform: Callable[[dict, np.random.Generator], dict]
    size: int
    train: bool

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        out = self.transform(record, rng)
        video = out["video"]
        spare = np.array(video.shape[1:3]) - self.size
        if min(spare) < 0:
            raise ValueError(f"frames of {video.shape[1:3]} are smaller than the crop "
                             f"{self.size}x{self.size}")
        y, x = (rng.integers(spare + 1) if self.train else spare // 2)
        out["video"] = np.ascontiguousarray(video[:, y:y + self.size, x:x + self.size])
        return out


class VideoFolder:
    """Clips in class folders under `data.root`, decoded once into an array_record cache
    (module docstring: layout, split files, conversion).

    Config fields (`data`): `root`; `split_dir` ('' : a hashed split, `test_fraction` test),
    `split_scheme` ('ucf', 'hmdb' or '' to detect), `split_number`; `fps`, `frame_fps`,
    `short_side`, `max_frames` (`DecodeSettings`); `crop_size` (the square the transform cuts;
    0: `short_side`); `cache_dir` ('' : DATA_DIR/video_folder/NAME-HASH), `decode_workers`;
    and the clip transform's `num_frames`, `min_fraction`, `train_observation`, `flip_prob`.

    Class names are the folder names (saved in the cache's meta.json). Splits: "train" and
    "test". `problems` (stray files, bad split rows, listed clips that are missing, clips that
    do not decode: one per split-file row naming them) and `num_checked` go to
    WORKDIR/bad_inputs.json.
    """

    SPLITS = ("train", "test")

    def __init__(self, config):
        self.config = config
        if not config.root:
            raise ValueError("data.root is not set: pass --config.data.root=FOLDER (one "
                             "sub-folder of clips per class)")
        try:
            self.settings = DecodeSettings(fps=float(config.fps),
                                           frame_fps=float(config.frame_fps),
                                           short_side=int(config.short_side),
                                           max_frames=int(config.max_frames))
        except ValueError as e:  # name the config field
            raise ValueError(f"data.{e}") from e
        self.crop_size = int(config.crop_size) or self.settings.short_side
        if not 1 <= self.crop_size <= self.settings.short_side:
            raise ValueError(f"data.crop_size={config.crop_size}: expected 1 to data.short_side="
                             f"{self.settings.short_side} (0: short_side)")
        if config.split_scheme not in ("", *SCHEMES):
            raise ValueError(f"data.split_scheme={config.split_scheme!r}: expected one of "
                             f"{('', *SCHEMES)} ('': detect from the files in data.split_dir)")
        if not config.split_dir and not 0 < config.test_fraction < 1:
            raise ValueError(f"data.test_fraction={config.test_fraction}: expected in (0, 1)")
        root = os.path.abspath(os.path.expanduser(config.root))
        split_dir = config.split_dir and os.path.abspath(os.path.expanduser(config.split_dir))
        self.cache_dir = os.path.abspath(os.path.expanduser(config.cache_dir or os.path.join(
            config.data_dir, "video_folder",
            f"{os.path.basename(root)}-{hashlib.sha1(root.encode()).hexdigest()[:8]}")))
        scheme = ""
        if split_dir:
            scheme = config.split_scheme or detect_scheme(split_dir, config.split_number)
        self.class_names, clips, scan_problems = find_clips(root, (split_dir, self.cache_dir))
        self.meta = convert(root, self.cache_dir, self.class_names, clips, self.settings,
                            config.decode_workers)
        self.description = f"video_folder:{root}" + (
            f"|{scheme} split {config.split_number}" if scheme else "")
        if scheme:
            members, split_problems = read_split_files(split_dir, scheme, config.split_number,
                                                       self.class_names)
        else:
            split_problems = []
            members = {split: [(clip, None, None) for clip in paths]
                       for split, paths in hashed_split(list(clips), config.test_fraction).items()}
        self.problems = scan_problems + split_problems
        self.num_checked = len(clips) + len(scan_problems) + len(split_problems)

        record_file = os.path.join(self.cache_dir, self.meta["record_file"])
        index = {c["path"]: i for i, c in enumerate(self.meta["clips"])}
        bad = {}  # clip -> its problem, the path made absolute again
        for b in self.meta["bad"]:
            problem = video_io.Problem(**b["problem"])
            bad[b["path"]] = problem._replace(path=os.path.join(root, problem.path))
        listed, self._records = set(), {}
        for split in self.SPLITS:
            indices, paths, problems = [], [], []
            for clip, list_file, row in members[split]:
                clip = _resolve(clip, clips)
                listed.add(clip)
                where = {"split": split, "list_file": list_file, "row": row}
                if clip in index:
                    indices.append(index[clip])
                    paths.append(clip)
                elif clip in bad:  # once per row that lists it
                    problems.append(bad[clip]._replace(**where))
                else:
                    self.num_checked += 1
                    problems.append(video_io.Problem(os.path.join(root, *clip.split("/")),
                                                     "no such file or frame folder", **where))
            self.problems += problems
            if not indices:
                raise ValueError(f"data.root={root}: no usable {split} clip; "
                                 + video_io.summarize(problems, len(problems)))
            self._records[split] = FolderRecords(record_file, indices, paths)
        self.problems += [p for clip, p in bad.items() if clip not in listed]
        (logging.warning if self.problems else logging.info)(
            "%s", video_io.summarize(self.problems, self.num_checked))
        trained = {self.meta["clips"][i]["label"] for i in self._records["train"].indices}
        if missing := [name for i, name in enumerate(self.class_names) if i not in trained]:
            logging.warning("classes with no usable training clip: %s", missing)

    def source(self, split: str) -> FolderRecords:
        if split not in self._records:
            raise ValueError(f"split {split!r}: a video folder has only {list(self.SPLITS)}")
        return self._records[split]

    @property
    def flip_permutation(self) -> np.ndarray:
        return np.arange(len(self.class_names))  # a mirrored action clip keeps its label

    def transform(self, train: bool, fraction: float = 1.0, view=pipeline.CENTRE_VIEW):
        from jaxact.data import sources  # sources registers this module: not at the top

        return sources.user_clip_transform(
            self.config, train, fraction, view,
            inner=lambda base: SquareCrop(base, self.crop_size, train))

    def read_clip(self, path: str) -> dict:
        """A user's clip (video, frame array or frame folder) decoded as the cache's clips are."""
        from jaxact.data import sources

        return sources.clip_record(decode_clip(path, self.settings)[0], 0)


def _resolve(clip: str, clips: dict[str, str]) -> str:
    """A split file's CLASS/NAME.avi, or its frame folder CLASS/NAME where only that exists."""
    if clip in clips:
        return clip
    stem = os.path.splitext(clip)[0]
    return stem if stem in clips else clip
