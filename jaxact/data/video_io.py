"""Reading clip files (video or frame arrays), writing videos, and screening clips for bad input.

Every failure that is the input's fault raises one exception type, `BadInputError`, whose message
names the file (and the row / field where there is one) and says what was expected. A loader that
trains on file lists calls `scan_clips` once up front: bad clips are counted, logged and written to
`WORKDIR/bad_inputs.json` (`write_report`), and the deterministic loader only ever sees good ones.
"""

from __future__ import annotations

import errno
import fractions
import os
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from typing import NamedTuple

import numpy as np
from absl import logging

from jaxact import files

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
ARRAY_EXTENSIONS = (".npy", ".npz")
ARRAY_KEYS = ("video", "frames")  # keys looked up in a .npz, in this order
_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK\x03\x04"}

# A container's own frame count may be off by a frame; more frames missing than this means the file
# was cut short (FFmpeg decodes what is there without complaint, so we have to check).
_TRUNCATION_SLACK = 0.01  # fraction of the header's count, at least 1 frame


class Problem(NamedTuple):
    """One bad input: `path`, `reason`, and where known the 1-based `row` and the `field`.

    `row` is a line of `path` itself, or, when `list_file` is set, the line of the clip list
    `list_file` that names the clip `path`; `split` ("train", "test", ...) is the split that list
    feeds. Built from up to four fields as before (the last two default to None); code that
    unpacks exactly four takes `problem[:4]`.
    """

    path: str
    reason: str
    row: int | None = None
    field: str | None = None
    split: str | None = None
    list_file: str | None = None

    def __str__(self) -> str:
        where = self.path
        if self.list_file is not None:  # a clip named on a row of a list: say which list and row
            split = f"{self.split} " if self.split else ""
            row = f", row {self.row}" if self.row is not None else ""
            where += f" ({split}list {self.list_file}{row})"
        elif self.row is not None:
            where += f": row {self.row}"
        if self.field is not None:
            sep = "," if self.row is not None and self.list_file is None else ":"
            where += f"{sep} field '{self.field}'"
        return f"{where}: {self.reason}"


class BadInputError(ValueError):
    """A file (or one of its rows / fields) that cannot be used; `str(e)` names all of them."""

    def __init__(self, path: str, reason: str, row: int | None = None, field: str | None = None):
        self.problem = Problem(str(path), reason, row, field)
        self.path, self.reason, self.row, self.field = self.problem[:4]
        super().__init__(str(self.problem))

    def __str__(self) -> str:
        return str(self.problem)

    def __reduce__(self):  # pickles across processes with all four parts
        return type(self), tuple(self.problem[:4])


class MissingInputError(BadInputError, FileNotFoundError):
    """A path that does not exist; also a FileNotFoundError so `except FileNotFoundError` works."""

    def __init__(self, path: str, reason: str = "no such file", row=None, field=None):
        super().__init__(path, reason, row, field)
        self.errno, self.strerror, self.filename = errno.ENOENT, reason, str(path)


# ----------------------------------------------------------------------------- reading


def read_video(path: str, num_frames: int | None = None, size: tuple[int, int] | None = None,
               pad: bool = False) -> np.ndarray:
    """uint8 RGB frames `[T, H, W, 3]` of a video file (PyAV) or a .npy / .npz frame array.

    Arrays (.npz: the `video` or else `frames` array) may be `[T, H, W]` or `[T, H, W, 1]`
    grayscale (copied to 3 channels), `[T, H, W, 3]` RGB or `[T, H, W, 4]` RGBA (alpha dropped,
    not composited), of any size; their values follow `to_uint8`'s rule (integers in [0, 255];
    float frames whose maximum is <= 1 are read as [0, 1], other floats as [0, 255]).

    `size=(H, W)` resizes every frame: videos with FFmpeg's scaler while decoding, arrays with
    `_resize` (`jax.image.resize`, "linear", antialiased when shrinking) on the CPU, so an array at
    a video's native resolution gives (nearly) the frames of that video. `num_frames` picks that
    many evenly spaced frames, first and last included; a clip with fewer frames raises, or with
    `pad=True` keeps all its frames and repeats the last. A video is decoded whole (meant for
    clips, not hour-long films).

    Raises `BadInputError` naming the file for anything wrong with it: missing (also a
    `FileNotFoundError`), empty, truncated or corrupt, unsupported extension, bad shape or dtype,
    NaN / inf or out-of-range values, too few frames.
    """
    if not os.path.exists(path):
        raise MissingInputError(path, "no such file")
    if os.path.isdir(path):
        raise BadInputError(path, "is a directory, expected a video or frame-array file")
    if os.path.getsize(path) == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    _check_arguments(num_frames, size)
    ext = os.path.splitext(path)[1].lower()
    if ext in ARRAY_EXTENSIONS:
        frames = to_rgb_uint8(_load_array(path), path)
        frames = sample_frames(frames, num_frames, pad, path)
        return frames if size is None else _resize(frames, size)
    if ext in VIDEO_EXTENSIONS:
        return sample_frames(_decode(path, size), num_frames, pad, path)
    raise BadInputError(path, f"unsupported extension {ext!r}; expected a video "
                              f"({', '.join(VIDEO_EXTENSIONS)}) or a frame array (.npy, .npz)")


def _check_arguments(num_frames, size):
    """The caller's mistakes are plain ValueErrors, not the file's."""
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: expected >= 1 or None")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size={size}: expected (height, width) >= 1 or None")


def _load_array(path: str) -> np.ndarray:
    # np.load goes by the content, not the name: a zip named .npy would come back as a dict.
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            start = f.read(8)
        if not start.startswith(_MAGIC[ext]):
            raise BadInputError(path, f"not a {ext} file (starts with {start!r})")
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as data:
                key = next((k for k in ARRAY_KEYS if k in data.files), None)
                if key is None:
                    raise BadInputError(path, f"no array named {' or '.join(map(repr, ARRAY_KEYS))}; "
                                              f"found {data.files}", field=ARRAY_KEYS[0])
                return data[key]
        return np.load(path, allow_pickle=False)
    except BadInputError:
        raise
    # np.load reports a truncated / garbage file as any of these, depending on where it breaks.
    except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile, zlib.error) as e:
        raise BadInputError(path, f"not a readable {ext} file "
                                  f"({type(e).__name__}: {e})") from e


def to_uint8(frames: np.ndarray, path: str = "<array>") -> np.ndarray:
    """Image values of any shape -> uint8 of the same shape, by the one rule every reader uses.

    uint8: as is. Other integers: must lie in [0, 255]. Floats: every value must be finite; float
    frames whose maximum is <= 1 are read as [0, 1] and scaled by 255, others must lie in
    [0, 255] and are used as they are; both are rounded to the nearest integer. So `u8 / 255.0`
    and `u8.astype(float)` both read back as exactly `u8`. (A float clip stored as [0, 255] whose
    every value is <= 1, i.e. nearly black, is read as [0, 1]: store such clips as uint8.)

    Anything else raises `BadInputError` naming `path` and the range found (min, max): NaN / inf,
    negative values, values above 255, non-numeric dtypes. Never a silent cast: a [0, 1] float clip
    must not become an all-black one. Image frames only: joint coordinates are not pixel values.
    """
    if frames.dtype == np.uint8:
        return frames
    if frames.dtype.kind not in "uif":
        raise BadInputError(path, f"dtype {frames.dtype}, expected uint8, integers or floats",
                            field="video")
    if frames.size == 0:
        return frames.astype(np.uint8)
    finite = np.isfinite(frames) if frames.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        bad = int(frames.size - np.count_nonzero(finite))
        t = int(np.argwhere(~finite)[0][0]) if frames.ndim else 0
        values = frames[finite]
        found = (f"finite values in [{float(values.min()):g}, {float(values.max()):g}]"
                 if values.size else "no finite values")
        raise BadInputError(path, f"{bad} NaN or inf values (first in frame {t}), {found}; "
                                  "expected finite values in [0, 255] (or [0, 1] floats)",
                            field="video")
    lo, hi = float(frames.min()), float(frames.max())
    if lo < 0 or hi > 255:
        raise BadInputError(path, f"values in [{lo:g}, {hi:g}], expected [0, 255] (or [0, 1] "
                                  "floats)", field="video")
    if frames.dtype.kind == "f" and hi <= 1.0:
        frames = frames * np.float32(255.0)  # read as [0, 1]; float16 computes in float32
    return np.rint(frames).astype(np.uint8)  # in [0, 255] here, so the cast cannot wrap


def to_rgb_uint8(frames: np.ndarray, path: str = "<array>") -> np.ndarray:
    """Any accepted frame array (see `read_video`) -> uint8 `[T, H, W, 3]`; `path` names errors.

    Values go through `to_uint8` (integers in [0, 255]; floats in [0, 1] when their maximum is
    <= 1, else in [0, 255]; anything else raises naming `path` and the range found).
    """
    shape, dtype = frames.shape, frames.dtype
    if frames.dtype.kind not in "uif":
        raise BadInputError(path, f"dtype {dtype}, expected uint8, integers or floats", field="video")
    if frames.ndim == 3 and shape[-1] in (1, 3, 4):
        raise BadInputError(path, f"shape {shape} looks like one frame [H, W, C]; expected "
                                  "[T, H, W, C] or grayscale [T, H, W]", field="video")
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4:
        raise BadInputError(path, f"shape {shape}, expected [T, H, W, C] or grayscale [T, H, W]",
                            field="video")
    if frames.shape[-1] not in (1, 3, 4):
        hint = " (channels first? expected channels last)" if shape[1] in (1, 3, 4) else ""
        raise BadInputError(path, f"shape {shape}: {shape[-1]} channels, expected 1 (gray), 3 (RGB) "
                                  f"or 4 (RGBA){hint}", field="video")
    if min(frames.shape[:3]) == 0:
        raise BadInputError(path, f"shape {shape} has no pixels; expected T, H, W >= 1",
                            field="video")
    frames = to_uint8(frames[..., :3], path)  # RGBA: alpha dropped (and not checked)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames)


def sample_frames(frames: np.ndarray, num_frames: int | None, pad: bool = False,
                  path: str = "<array>") -> np.ndarray:
    """`num_frames` evenly spaced frames of `[T, ...]` (all of them when None): `[num_frames, ...]`.

    Fewer than `num_frames` frames: `BadInputError` naming `path` and both counts, or with
    `pad=True` every frame followed by copies of the last.
    """
    if num_frames is None:
        return frames
    t = len(frames)
    if t < num_frames:
        if not pad:
            raise BadInputError(path, f"{t} frames, fewer than the {num_frames} needed "
                                      "(pad=True repeats the last frame)")
        return np.concatenate([frames, np.repeat(frames[-1:], num_frames - t, axis=0)])
    return frames[np.rint(np.linspace(0, t - 1, num_frames)).astype(np.int64)]


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    import jax  # lazily: reading never touches JAX unless asked to resize an array

    # On the CPU: this runs in data-loading threads and must not take accelerator memory.
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        out = jax.image.resize(frames.astype(np.float32), (len(frames), *size, frames.shape[-1]),
                               method="linear")
    return np.clip(np.rint(np.asarray(out)), 0, 255).astype(np.uint8)


def _import_av():
    try:
        import av
    except ImportError as e:
        raise ImportError("reading video files needs PyAV: pip install -e .[video]") from e
    return av


def _decode(path: str, size: tuple[int, int] | None) -> np.ndarray:
    return np.stack(list(_iter_video_file(path, size)))


def _iter_video_file(path: str, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """Decoded RGB frames of a video file, one at a time; `BadInputError` for a file with no
    video stream, one FFmpeg cannot decode, no frames, or fewer frames than its header lists."""
    av = _import_av()
    resize = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    count = 0
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise BadInputError(path, "no video stream")
            stream = container.streams.video[0]
            expected = stream.frames  # 0 when the container does not say
            for frame in container.decode(stream):
                count += 1
                yield frame.to_ndarray(format="rgb24", **resize)
    except BadInputError:
        raise
    except (av.error.FFmpegError, OSError, EOFError, ValueError) as e:
        raise BadInputError(path, f"cannot decode frame {count} ({type(e).__name__}: {e}); "
                                  "truncated or corrupt?") from e
    if not count:
        raise BadInputError(path, "no frames could be decoded; truncated or corrupt?")
    if expected and count < expected - max(1, int(_TRUNCATION_SLACK * expected)):
        raise BadInputError(path, f"decoded {count} of the {expected} frames its header lists; "
                                  "truncated?")


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def count_frames(path: str) -> int | None:
    """Frames of a video file (its header's count, None when it lists none), of a frame array,
    or image files in a folder; for progress bars, not a promise."""
    if os.path.isdir(path):
        return len([f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)])
    if os.path.splitext(path)[1].lower() in ARRAY_EXTENSIONS:
        return len(_load_array(path))
    av = _import_av()
    try:
        with av.open(path, metadata_errors="ignore") as container:
            return container.streams.video[0].frames or None if container.streams.video else None
    except (av.error.FFmpegError, OSError):
        return None


def iter_frames(path: str, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """uint8 RGB frames `[H, W, 3]` one at a time, resized to `size=(H, W)` when given: a whole
    lesson is never held in memory. `path`: a video file (PyAV), a .npy / .npz frame array, or a
    folder of images (.png, .jpg, ...; sorted by name, all of one size).

    Raises `BadInputError` naming the file (or the folder's offending image) for anything wrong:
    missing, empty, unreadable, truncated (a video that stops early), no frames, an image of
    another size or a file that is no image among the folder's images.
    """
    if size is not None:
        _check_arguments(None, size)
    if not os.path.exists(path):
        raise MissingInputError(path, "no such file or folder")
    if os.path.isdir(path):
        yield from _iter_image_folder(path, size)
        return
    if os.path.getsize(path) == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    ext = os.path.splitext(path)[1].lower()
    if ext in ARRAY_EXTENSIONS:
        yield from read_video(path, size=size)
        return
    if ext not in VIDEO_EXTENSIONS:
        raise BadInputError(path, f"unsupported extension {ext!r}; expected a video "
                                  f"({', '.join(VIDEO_EXTENSIONS)}), a frame array or a folder")
    yield from _iter_video_file(path, size)


def folder_videos(folder: str) -> list[str] | None:
    """The videos and frame arrays of a folder of videos, sorted by name; None for a frame folder
    (one that holds any image: `iter_frames` reads it as one video). Other files and subfolders
    are not videos and are left out.

    Raises `BadInputError` naming the folder when it holds neither images nor videos.
    """
    names = sorted(f for f in os.listdir(folder) if not f.startswith("."))
    if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in names):
        return None
    videos = [os.path.join(folder, f) for f in names
              if f.lower().endswith(VIDEO_EXTENSIONS + ARRAY_EXTENSIONS)
              and os.path.isfile(os.path.join(folder, f))]
    if not videos:
        raise BadInputError(folder, "neither videos (" + ", ".join(VIDEO_EXTENSIONS + ARRAY_EXTENSIONS)
                            + ") nor images (" + ", ".join(IMAGE_EXTENSIONS) + ") in the folder")
    return videos


def _iter_image_folder(folder: str, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    import matplotlib.image  # PNG natively, JPEG etc. through Pillow

    names = sorted(f for f in os.listdir(folder) if not f.startswith("."))
    images = [f for f in names if f.lower().endswith(IMAGE_EXTENSIONS)]
    others = [f for f in names if f not in images and os.path.isfile(os.path.join(folder, f))]
    if others:
        raise BadInputError(os.path.join(folder, others[0]),
                            f"not an image ({', '.join(IMAGE_EXTENSIONS)}); a frame folder holds "
                            "images only")
    if not images:
        raise BadInputError(folder, "no image files in the folder")
    shape = None
    for name in images:
        path = os.path.join(folder, name)
        try:
            image = matplotlib.image.imread(path)
        except (OSError, ValueError, SyntaxError) as e:
            raise BadInputError(path, f"unreadable image ({type(e).__name__}: {e})") from e
        frame = to_rgb_uint8(np.asarray(image)[None], path)[0]
        if shape is None:
            shape = frame.shape
        elif frame.shape != shape:
            raise BadInputError(path, f"image of size {frame.shape[:2]}, the folder's first is "
                                      f"{shape[:2]}; frames of one video share a size")
        yield frame if size is None else _resize(frame[None], size)[0]


def frame_rate(path: str, default: float = 10.0) -> float:
    """Frames per second that a video file's stream declares; `default` for frame arrays (they
    carry none) and streams that declare none. An annotated copy keeps the clip's pace."""
    if os.path.splitext(path)[1].lower() not in VIDEO_EXTENSIONS:
        return default
    av = _import_av()
    try:
        with av.open(path, metadata_errors="ignore") as container:
            rate = container.streams.video[0].average_rate
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise BadInputError(path, f"cannot read the frame rate ({e})") from e
    return float(rate) if rate else default


# ----------------------------------------------------------------------------- writing


def write_video(path: str, frames: np.ndarray, fps: float = 10.0) -> str:
    """Writes uint8 RGB frames `[T, H, W, 3]` to the video file `path` (an .mp4); returns `path`.
    `VideoWriter` says how (codec, odd sizes, atomic rename); this checks the array up front."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape) < 1:
        raise ValueError(f"{path}: frames {frames.dtype} {frames.shape}, expected uint8 "
                         "[T>=1, H, W, 3]")
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return path


class VideoWriter:
    """Streams uint8 RGB frames `[H, W, 3]` (all of one size) into the video file `path` (an
    .mp4), so a long video is never held in memory::

        with VideoWriter(path, fps) as video:
            for frame in frames:
                video.write(frame)

    Codec H.264 where this FFmpeg can encode it, else MPEG-4 part 2; pixel format yuv420p, which
    needs even sizes, so an odd height or width gains one row / column copied from the last (edge
    padding). Creates the parent directory. Frames go to a temporary file beside `path`, renamed
    to `path` when the block ends without an error: an interrupted write never leaves a
    truncated `path`, and an error removes the temporary file. Wrong frames are the caller's
    mistake: a plain ValueError.
    """

    def __init__(self, path: str, fps: float = 10.0):
        if not 0 < fps < float("inf"):
            raise ValueError(f"{path}: fps={fps}, expected > 0")
        self.path, self.fps = path, fps
        directory = os.path.dirname(os.path.abspath(path))
        name, ext = os.path.splitext(os.path.basename(path))
        # The extension stays last: FFmpeg picks the container by it.
        self._tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp{ext}")
        self._container = self._stream = self._shape = None
        self.frames_written = 0

    def __enter__(self) -> VideoWriter:
        os.makedirs(os.path.dirname(self._tmp), exist_ok=True)
        self._av = _import_av()
        self._container = self._av.open(self._tmp, "w")
        return self

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3 or min(frame.shape) < 1:
            raise ValueError(f"{self.path}: frame {self.frames_written} is {frame.dtype} "
                             f"{frame.shape}, expected uint8 [H, W, 3]")
        if self._stream is None:
            self._shape = frame.shape
            self._stream = self._container.add_stream(
                _video_codec(self._av), rate=fractions.Fraction(self.fps).limit_denominator(1001))
            self._stream.height = frame.shape[0] + frame.shape[0] % 2
            self._stream.width = frame.shape[1] + frame.shape[1] % 2
            self._stream.pix_fmt = "yuv420p"
        elif frame.shape != self._shape:
            raise ValueError(f"{self.path}: frame {self.frames_written} is {frame.shape}, the "
                             f"first was {self._shape}; a video has one size")
        h, w = frame.shape[:2]
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        self._container.mux(self._stream.encode(
            self._av.VideoFrame.from_ndarray(frame, format="rgb24")))
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if not self.frames_written:
                    raise ValueError(f"{self.path}: no frames written")
                self._container.mux(self._stream.encode())  # flush the encoder's delayed frames
                self._container.close()
                os.replace(self._tmp, self.path)
        finally:
            self._container.close()  # a second close does nothing
            if os.path.exists(self._tmp):
                os.remove(self._tmp)


def _video_codec(av) -> str:
    try:
        av.codec.Codec("h264", "w")
    except ValueError:  # UnknownCodecError: an FFmpeg built without an H.264 encoder
        return "mpeg4"
    return "h264"


# ----------------------------------------------------------------------------- screening


def summarize(problems: Sequence[Problem], checked: int, what: str = "clips", show: int = 5) -> str:
    """One line: 'skipped 3 of 20 clips: a.mp4: empty file (0 bytes); ...'."""
    if not problems:
        return f"all {checked} {what} good"
    shown = "; ".join(str(p) for p in problems[:show])
    more = f"; and {len(problems) - show} more" if len(problems) > show else ""
    return f"skipped {len(problems)} of {checked} {what}: {shown}{more}"


def scan_clips(items: Iterable[Sequence], *, num_frames: int | None = None,
               size: tuple[int, int] | None = None, pad: bool = False,
               num_classes: int | None = None, class_names: Sequence[str] | None = None,
               num_workers: int = 0, split: str | None = None,
               list_file: str | None = None) -> tuple[list, list[Problem]]:
    """Screens `(path, label)` or `(path, label, row)` items by reading each clip as training would.

    Each distinct clip is decoded in full once with `read_video(path, num_frames, size, pad)` (only
    a full decode finds a truncated file); int labels must lie in `[0, num_classes)` and str labels
    in `class_names`, where given. Returns `(good, problems)`: the good items unchanged and in their
    order, and a `Problem` per bad item (a bad clip on two rows: two problems, one per row).
    Each problem carries `split`, `list_file` and, for a 3-tuple item, `row` (the item's 1-based
    line in `list_file`). Nothing escapes: an unexpected error is recorded (and logged with its
    traceback) like a bad file. `num_workers > 0` reads in a thread pool (decoding releases the
    GIL). Logs a one-line summary.
    """
    _check_arguments(num_frames, size)
    items = list(items)
    classes = None if class_names is None else set(class_names)

    def check_label(label) -> Problem | None:
        if isinstance(label, str):
            if classes is not None and label not in classes:
                return Problem("", f"label {label!r} is not a known class", field="label")
        elif num_classes is not None:
            if not isinstance(label, int | np.integer) or not 0 <= label < num_classes:
                return Problem("", f"label {label!r}, expected an int in [0, {num_classes})",
                               field="label")
        return None

    def read(path: str) -> Problem | None:
        try:
            read_video(path, num_frames=num_frames, size=size, pad=pad)
        except BadInputError as e:
            return e.problem
        except ImportError:
            raise  # a missing library is the environment's fault, not the clip's
        except Exception as e:  # screening must outlive any one file
            logging.warning("unexpected error reading %s", path, exc_info=True)
            return Problem(path, f"unexpected {type(e).__name__}: {e}")
        return None

    # A label problem skips the read; a clip listed on several rows is read once.
    label_problems = [check_label(item[1]) for item in items]
    paths = list(dict.fromkeys(str(item[0]) for item, p in zip(items, label_problems, strict=True)
                               if p is None))
    if num_workers > 0:
        with futures.ThreadPoolExecutor(num_workers) as pool:
            read_problems = dict(zip(paths, pool.map(read, paths), strict=True))
    else:
        read_problems = {path: read(path) for path in paths}
    good, problems = [], []
    for item, label_problem in zip(items, label_problems, strict=True):
        problem = label_problem or read_problems[str(item[0])]
        if problem is None:
            good.append(item)
            continue
        if len(item) > 2:  # the row of the list that names the clip, not a line of the clip
            problem = problem._replace(row=item[2], list_file=list_file)
        problems.append(problem._replace(path=str(item[0]), split=split))
    (logging.warning if problems else logging.info)("%s", summarize(problems, len(items)))
    return good, problems


def write_report(workdir: str, problems: Sequence[Problem], checked: int | None = None,
                 filename: str = "bad_inputs.json") -> str:
    """Writes `problems` to `workdir/filename` as JSON (call it from process 0 only); returns the path.

    Format: `{"checked": N, "skipped": len(problems), "problems": [{path, reason, row, field,
    split, list_file}]}`, a problem per bad row: a clip on two rows of a list, or in two lists,
    appears once per row with its split and row (`list_file`: the list that `row` is a line of,
    null where `row` is a line of `path` itself or there is no row).
    """
    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, filename)
    report = {"checked": checked, "skipped": len(problems),
              "problems": [p._asdict() for p in problems]}
    return files.write_json(out, report, indent=1)  # never a half-written report
