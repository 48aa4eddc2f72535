"""Input pipeline: frame samplers, label-preserving augmentation and a resumable, host-sharded loader.

Every batch has a fixed shape (static shapes keep the train step compiled once). A loader is
deterministic for a seed, reads only its process's shard, and its position can be saved and
restored for exact resume.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import grain
import jax
import numpy as np
import scipy.fft

# Mean/std of uint8 pixels mapped to roughly zero-mean, unit-range inputs.
PIXEL_MEAN = 127.5
PIXEL_STD = 64.0


# ----------------------------------------------------------------------------- samplers


def uniform_indices(length: int, num_frames: int, rng: np.random.Generator | None = None,
                    offset: float = 0.5):
    """`num_frames` sorted indices spread over `[0, length)`: int32 `[num_frames]`.

    The clip is cut into `num_frames` equal segments; training (`rng` given) takes a random frame of
    each, evaluation the frame at `offset` (in `[0, 1)`; 0.5 = the centre) of each. Clips shorter
    than `num_frames` repeat frames.
    """
    if length < 1:
        raise ValueError(f"clip length must be >= 1, got {length}")
    edges = np.linspace(0.0, length, num_frames + 1)
    position = offset if rng is None else rng.random(num_frames)
    points = edges[:-1] + position * (edges[1:] - edges[:-1])
    return np.clip(np.floor(points), 0, length - 1).astype(np.int32)


def first_fraction_indices(length: int, num_frames: int, fraction: float,
                           rng: np.random.Generator | None = None, offset: float = 0.5):
    """Indices from the first `fraction` of the clip only (early prediction): int32 `[num_frames]`."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"observation fraction must be in (0, 1], got {fraction}")
    observed = max(1, math.ceil(fraction * length - 1e-9))
    return uniform_indices(observed, num_frames, rng, offset)


@dataclasses.dataclass(frozen=True)
class View:
    """One deterministic evaluation view of a clip: the frame taken at `offset` (`[0, 1)`) of each
    of the `num_frames` segments, mirrored left-right if `flip`."""

    offset: float = 0.5
    flip: bool = False


CENTRE_VIEW = View()  # single-view testing


def eval_views(temporal_views: int, flip: bool) -> tuple[View, ...]:
    """Multi-view testing: `temporal_views` evenly spaced segment offsets (1 -> the centre only;
    3 -> 1/4, 1/2, 3/4), each also mirrored if `flip`; unmirrored views nearest the centre come first."""
    if temporal_views < 1:
        raise ValueError(f"eval.temporal_views must be >= 1, got {temporal_views}")
    offsets = sorted((np.arange(temporal_views) + 1) / (temporal_views + 1),
                     key=lambda o: abs(o - 0.5))
    return tuple(View(float(o), f) for f in ((False, True) if flip else (False,)) for o in offsets)


def keyframe_window_indices(length: int, keyframe: int, num_frames: int, stride: int = 1):
    """A window of `num_frames` frames with the keyframe at position `num_frames // 2`.

    Frames past either end of the clip repeat the edge frame. Returns int32 `[num_frames]`.
    """
    offsets = (np.arange(num_frames) - num_frames // 2) * stride
    return np.clip(keyframe + offsets, 0, length - 1).astype(np.int32)


def normalize(video: np.ndarray) -> np.ndarray:
    """uint8 `[..., 3]` -> float32, roughly in [-2, 2]."""
    return (video.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD


def target_zoom(frames: np.ndarray, boxes: np.ndarray, crop: int,
                size: int | None = None) -> np.ndarray:
    """A `crop` x `crop` pixel window centred on each frame's box, scaled (nearest pixel) to
    `size` x `size`, by default the frame size: `[T, H, W, C]` frames and `[T, 4]` normalized
    xyxy boxes -> `[T, size or H, size or W, C]`, the same dtype. Pixels of the window outside the
    frame are zero. A fixed-size view of one target in which its small parts (an indicator lamp)
    are `(size or H) / crop` times larger and always at the same place relative to it;
    `size=crop` is the window itself."""
    frames, boxes = np.asarray(frames), np.asarray(boxes, np.float64)
    t, h, w = frames.shape[:3]
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2 * w  # [T], pixels
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2 * h
    out_h, out_w = (h, w) if size is None else (size, size)
    offsets_y = np.floor(np.arange(out_h) * crop / out_h).astype(np.int64)  # crop row per row
    offsets_x = np.floor(np.arange(out_w) * crop / out_w).astype(np.int64)
    rows = np.floor(centre_y - crop / 2).astype(np.int64)[:, None] + offsets_y  # [T, H]
    cols = np.floor(centre_x - crop / 2).astype(np.int64)[:, None] + offsets_x  # [T, W]
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    out = frames[np.arange(t)[:, None, None], np.clip(rows, 0, h - 1)[:, :, None],
                 np.clip(cols, 0, w - 1)[:, None, :]]
    return np.where(inside[..., None], out, np.zeros((), frames.dtype))


TRACK_FEATURES = 6


def target_track(boxes: np.ndarray, frame_indices: np.ndarray) -> np.ndarray:
    """The boxed target's motion, per observed frame: `[T, 4]` normalized xyxy boxes of the
    frames `frame_indices` `[T]` (sorted; repeats allowed) of a clip -> float32
    `[T, TRACK_FEATURES]`: the box centre's displacement from the first observed frame (x10), its
    velocity in frame widths per clip frame (x100; 1.56 is one pixel a frame at 64 px), and the
    box's width and height (x10). Velocity is per clip frame, not per sampled frame: each clip
    frame's is the move from the previous distinct sampled frame over the frames between (the
    first frame takes the second's; one frame alone: 0), and a repeated frame keeps its frame's.
    So one speed reads alike whatever the clip's length and the observed fraction, also when a
    short prefix repeats frames; a slowdown (braking) or a sideways creep (drift) of a fraction
    of a pixel, which the frames alone show only coarsely, is plain. Scales put each feature
    near unit size for the recurrent network's input."""
    boxes = np.asarray(boxes, np.float64)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [T, 2]
    frames, first, which = np.unique(np.asarray(frame_indices), return_index=True,
                                     return_inverse=True)
    distinct = centre[first]  # [U, 2]: each distinct frame's centre
    velocity = np.diff(distinct, axis=0) / np.diff(frames.astype(np.float64))[:, None]
    velocity = (np.concatenate([velocity[:1], velocity]) if len(velocity)
                else np.zeros_like(distinct))[which.reshape(-1)]
    size = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([(centre - centre[:1]) * 10, velocity * 100, size * 10],
                          axis=-1).astype(np.float32)


def camera_shift(frames: np.ndarray, max_shift: int = 4) -> np.ndarray:
    """Whole-pixel translation of the scene in each frame against the first, by phase
    correlation: `[T, H, W, C]` frames -> int64 `[T, 2]` (dx, dy), zero for the first frame: the
    scene point at pixel p of frame 0 is at p + shift[t] in frame t. For a fixed camera that
    shakes; the static background must fill most of the frame (moving objects are outvoted) and
    carry some texture. Shifts are searched within `max_shift` pixels."""
    frames = np.asarray(frames)
    gray = frames @ np.ones(frames.shape[-1], np.float32)  # [T, H, W]; a matmul beats .mean
    gray -= gray.mean((1, 2), keepdims=True)
    spectra = scipy.fft.rfft2(gray)  # float32 throughout (numpy's fft is 4x slower here)
    cross = spectra * np.conj(spectra[:1])
    cross /= np.abs(cross) + 1e-6  # phase only: a sharp peak at the shift whatever the contrast
    corr = scipy.fft.irfft2(cross, s=gray.shape[1:])  # [T, H, W], peak at (dy, dx) mod (H, W)
    steps = np.arange(-max_shift, max_shift + 1)
    dy, dx = np.meshgrid(steps, steps, indexing="ij")
    dy, dx = dy.ravel(), dx.ravel()
    best = corr[:, dy % gray.shape[1], dx % gray.shape[2]].argmax(1)  # [T]
    shift = np.stack([dx[best], dy[best]], axis=1).astype(np.int64)
    return shift - shift[:1]


def flip_boxes(boxes):
    """Mirrors normalized `[..., 4]` boxes (x1, y1, x2, y2) horizontally: x1' = 1 - x2."""
    boxes = np.asarray(boxes)
    x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
    return np.stack([1.0 - x2, y1, 1.0 - x1, y2], axis=-1).astype(boxes.dtype, copy=False)


# ----------------------------------------------------------------------------- transforms


@dataclasses.dataclass(frozen=True)
class ClipTransform:
    """Raw labelled clip -> `{"video": f32 [T, H, W, 3], "label": i32, "boxes": f32 [T, 4]}`.

    The record holds `video` uint8 `[L, H, W, 3]`, `label` and per-frame `boxes` `[L, 4]` (xyxy,
    normalized; zeros where a dataset has none). `fraction` observes only the first part of each
    clip (early prediction); in training a `min_fraction` < 1 draws the fraction uniformly from
    `[min_fraction, 1]` per clip. Training mirrors a clip left-right with probability `flip_prob`
    (one draw per clip, made whatever `flip_prob`); in evaluation `view` picks the frames and
    whether they are mirrored. A mirrored clip gets label `flip_permutation[label]`, the class of
    its mirror image, which the dataset states (None: every class is its own mirror image).
    `target_crop` > 0 appends `target_zoom(frames, boxes, target_crop)` as channels 3-5 (video
    `[T, H, W, 6]`): a zoomed view of the boxed target (maneuvers: the marked vehicle), for cues
    too small to learn from the whole frame; it needs real boxes. `target_only` makes the
    unscaled `target_crop`-pixel window the whole video instead (`[T, crop, crop, 3]`, no frame:
    the target's own appearance, `(H / crop)^2` times cheaper to encode). `target_track` adds
    `"track"` f32 `[T, TRACK_FEATURES]`, the boxed target's motion (`target_track`; after the
    flip, so a mirrored clip's track is mirrored too), which the classifier feeds to its
    recurrent network beside the frames. `stabilize_track` measures that track against the scene
    rather than the image: each observed frame's camera shift (`camera_shift`) is taken off the
    boxes first, so a shaking camera does not add its shake to the target's motion.
    """

    num_frames: int
    train: bool
    fraction: float = 1.0
    min_fraction: float = 1.0
    flip_prob: float = 0.5
    view: View = CENTRE_VIEW
    flip_permutation: tuple[int, ...] | None = None
    target_crop: int = 0  # > 0: add `target_zoom` of the boxes as 3 more channels `[.., 6]`
    target_track: bool = False  # add "track": `target_track` of the boxes
    stabilize_track: bool = False  # the track without the camera's shake (`camera_shift`)
    target_only: bool = False  # the video is the target's window `[T, crop, crop, 3]` alone

    def __post_init__(self):
        if self.target_only and not self.target_crop:
            raise ValueError("data.target_only=True needs data.target_crop > 0: the window's size")
        if self.stabilize_track and not self.target_track:
            raise ValueError("data.stabilize_track=True needs data.target_track=True: it only "
                             "changes the track")

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        video = record["video"]
        length = int(video.shape[0])
        fraction = self.fraction
        if self.train and self.min_fraction < 1.0:
            fraction = rng.uniform(self.min_fraction, 1.0)
        idx = first_fraction_indices(length, self.num_frames, fraction,
                                     rng if self.train else None, self.view.offset)
        frames, boxes, label = video[idx], record["boxes"][idx], int(record["label"])
        for field, used, off in (("target_crop", self.target_crop, 0),
                                 ("target_track", self.target_track, False)):
            if used and not np.any(boxes):
                raise ValueError(f"data.{field} needs the target's box in every frame; this "
                                 f"clip has none (set data.{field}={off})")
        track_boxes = boxes
        if self.stabilize_track:
            height, width = frames.shape[1:3]
            track_boxes = boxes - np.tile(camera_shift(frames) / [width, height], 2)
        if self.target_only:  # before the flip, which then mirrors the window about its centre
            frames = target_zoom(frames, boxes, self.target_crop, size=self.target_crop)
        elif self.target_crop:
            frames = np.concatenate([frames, target_zoom(frames, boxes, self.target_crop)], -1)
        flip = rng.random() < self.flip_prob if self.train else self.view.flip
        if flip:
            frames = frames[:, :, ::-1]
            boxes, track_boxes = flip_boxes(boxes), flip_boxes(track_boxes)
            if self.flip_permutation is not None:
                label = int(self.flip_permutation[label])
        out = {"video": normalize(frames), "label": np.int32(label),
               "boxes": boxes.astype(np.float32)}
        if self.target_track:
            out["track"] = target_track(track_boxes, idx)
        return out


@dataclasses.dataclass(frozen=True)
class KeyframeTransform:
    """Raw keyframe record -> fixed-shape detection example.

    The record holds `video` uint8 `[L, H, W, 3]`, `keyframe`, and per person `boxes` `[n, 4]`
    (xyxy, normalized, at the keyframe), `actions` `[n, A]` and `person_ids` `[n]`; a training
    flip (probability `flip_prob`) mirrors frames and boxes and keeps the actions.
    Output: `video` f32 `[T, H, W, 3]` centred on the keyframe, `boxes` f32 `[P, 4]` (xyxy,
    normalized), `actions` f32 `[P, A]`, `person_ids` i32 `[P]`, `person_mask` bool `[P]`, where
    `P = max_people` (padding rows are zero and masked out).

    A record that also holds `owner` `[H, W]` (int; the person visible at each keyframe pixel, a
    row of `boxes`, -1 for none; the classroom dataset since 1.1.0) adds `owner` i32 `[H, W]`,
    mirrored with the frames on a flip (so `owner == p` stays inside the flipped `boxes[p]`).
    People keep their record order, so `owner` values index the output rows and never a padding
    row. Records without it (other datasets, user clips) give exactly the keys above.
    A record with an `index` (its row in the split: AVA-format data) adds `index` i32, so that
    evaluation can name each example's keyframe.
    """

    num_frames: int
    max_people: int
    train: bool
    stride: int = 1
    flip_prob: float = 0.5

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        video = record["video"]
        idx = keyframe_window_indices(video.shape[0], int(record["keyframe"]), self.num_frames,
                                      self.stride)
        frames = video[idx]
        boxes = record["boxes"].astype(np.float32)
        num = boxes.shape[0]
        if num > self.max_people:
            raise ValueError(f"clip has {num} people, more than max_people={self.max_people}")
        owner = record.get("owner")
        if owner is not None:
            owner = np.asarray(owner)
            if owner.shape != frames.shape[1:3]:
                raise ValueError(f"owner has shape {owner.shape}, expected the frame size "
                                 f"{frames.shape[1:3]}")
            if owner.size and not -1 <= owner.min() <= owner.max() < num:
                raise ValueError(f"owner values [{owner.min()}, {owner.max()}] are not in "
                                 f"[-1, {num}) for a clip of {num} people")
        if self.train and rng.random() < self.flip_prob:
            frames = frames[:, :, ::-1]
            boxes = flip_boxes(boxes)
            if owner is not None:
                owner = owner[:, ::-1]
        pad = self.max_people - num
        actions = record["actions"].astype(np.float32)
        extra = {} if owner is None else {"owner": owner.astype(np.int32)}
        if "index" in record:
            extra["index"] = np.int32(record["index"])
        return {
            "video": normalize(frames),
            "boxes": np.pad(boxes, ((0, pad), (0, 0))),
            "actions": np.pad(actions, ((0, pad), (0, 0))),
            "person_ids": np.pad(record["person_ids"].astype(np.int32), (0, pad),
                                 constant_values=-1),
            "person_mask": np.arange(self.max_people) < num,
            **extra,
        }


# ----------------------------------------------------------------------------- loader


_FILLER = "_filler"  # marks the rows that even out the processes' eval shards


class _EvenShard:
    """This process's rows of `source` (`index`, `index + count`, ...), topped up with copies of
    row 0 marked as filler so that every process has `ceil(len / count)` rows: eval steps are
    collectives, and a process with one batch fewer would leave the others waiting forever."""

    def __init__(self, source, index: int, count: int):
        self.source, self.index, self.count = source, index, count
        self.length = math.ceil(len(source) / count)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        row = self.index + i * self.count
        filler = row >= len(self.source)
        return {**self.source[0 if filler else row], _FILLER: filler}


def _pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads a short final batch to `batch_size` rows and adds a `mask` `[B]` of real rows."""
    filler = batch.pop(_FILLER)
    n = len(filler)
    padded = {k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]), v.dtype)])
              if n < batch_size else v for k, v in batch.items()}
    padded["mask"] = (np.arange(batch_size) < n) & ~np.pad(filler, (0, batch_size - n))
    return padded


@dataclasses.dataclass
class Loader:
    """An iterator of numpy batches whose position can be saved (`get_state`) and restored."""

    dataset: grain.IterDataset
    num_batches: int | None  # None for endless training streams

    def __post_init__(self):
        self._iterator = iter(self.dataset)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        return next(self._iterator)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless training loader has no length")
        return self.num_batches

    def get_state(self) -> dict:
        return self._iterator.get_state()

    def set_state(self, state: dict) -> None:
        self._iterator.set_state(state)


def make_loader(source, transform: Callable[[dict, np.random.Generator], dict], *,
                global_batch_size: int, seed: int, train: bool, num_threads: int = 2,
                prefetch: int = 4, process_index: int | None = None,
                process_count: int | None = None) -> Loader:
    """Builds a deterministic loader over this process's shard of `source`.

    Training loaders shuffle (re-shuffled every epoch), repeat forever and drop the remainder.
    Evaluation loaders visit every example once in order; the last batch is padded and every batch
    has `mask` `[B]` marking real rows. `global_batch_size` is split evenly across processes.
    A `transform` with `sample` and `finish_batch` methods (`sequences.SequenceTransform`) is run
    in two parts: `sample(record, rng)` per example, then `finish_batch` on the batch's "video";
    together they must equal `transform(record, rng)`.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the number of "
                         f"processes {process_count}")
    batch_size = global_batch_size // process_count
    if len(source) == 0:
        raise ValueError("the data source is empty")
    finish = getattr(transform, "finish_batch", None)
    per_example = transform.sample if finish else transform

    def finished(batch: dict) -> dict:
        return {**batch, "video": finish(batch["video"])} if finish else batch

    if train:
        ds = grain.MapDataset.source(source)[process_index::process_count]
        ds = ds.shuffle(seed=seed).repeat(None).random_map(per_example, seed=seed)
        ds = ds.batch(batch_size, drop_remainder=True).map(finished)
        num_batches = None
    else:
        ds = grain.MapDataset.source(_EvenShard(source, process_index, process_count))
        ds = ds.random_map(lambda record, rng: {**per_example(record, rng),
                                                _FILLER: record[_FILLER]}, seed=seed)
        num_batches = math.ceil(len(ds) / batch_size)
        ds = ds.batch(batch_size, drop_remainder=False).map(
            lambda b: _pad_batch(finished(b), batch_size))
    if train:
        ds = ds.map(lambda b: {**b, "mask": np.ones(batch_size, bool)})
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return Loader(ds.to_iter_dataset(read), num_batches)
