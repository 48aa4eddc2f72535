"""Per-frame vector sequences (joints, sensor channels, precomputed features) from ragged npz files.

The "ragged sequence npz" format holds a whole split in three arrays:
  frames   float  [sum_T, ...]  every clip's frames, concatenated (any per-frame shape)
  lengths  int    [N]           frames per clip, in order
  labels   str    [N]           class names
Clips become records `{"video": f32 [T, ...], "label": i32}` that `SequenceTransform` samples,
augments and turns into fixed-size `[num_frames, F]` inputs for the recurrent encoder.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

# JHMDB's 15 "puppet" joints in the order its files use; MIRROR swaps each left/right pair.
JHMDB_JOINTS = ("neck", "belly", "face", "right_shoulder", "left_shoulder", "right_hip", "left_hip",
                "right_elbow", "left_elbow", "right_knee", "left_knee", "right_wrist", "left_wrist",
                "right_ankle", "left_ankle")
JOINT_ORDERS = {"jhmdb": JHMDB_JOINTS}

FEATURES = ("coords", "distances", "motion")


def mirror_permutation(joint_names) -> np.ndarray:
    """Index map that swaps every `left_*` joint with its `right_*` partner: int `[J]`."""
    index = {name: i for i, name in enumerate(joint_names)}
    perm = np.arange(len(joint_names))
    for name, i in index.items():
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if name.startswith(a):
                partner = b + name[len(a):]
                if partner not in index:
                    raise ValueError(f"joint {name!r} has no mirror partner {partner!r}")
                perm[i] = index[partner]
    return perm


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class RaggedSequences:
    """One split. `offsets[i]:offsets[i] + lengths[i]` are clip i's rows of `frames`."""

    path: str
    frames: np.ndarray  # f32 [sum_T, ...]
    lengths: np.ndarray  # i64 [N]
    labels: np.ndarray  # str [N]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]])

    def __len__(self) -> int:
        return len(self.lengths)

    def clip(self, i: int) -> np.ndarray:
        start = int(self.offsets[i])
        return self.frames[start:start + int(self.lengths[i])]


def read_ragged_npz(path: str) -> RaggedSequences:
    """Reads and validates one ragged-sequence npz; errors name the file and the field."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("frames", "lengths", "labels") if k not in data.files]
            if missing:
                raise ValueError(f"{path}: missing field(s) {missing}; found {data.files}")
            frames, lengths, labels = data["frames"], data["lengths"], data["labels"]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable npz file ({e})") from e
    except ValueError as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: cannot read ({e})") from e
    if frames.ndim < 2 or not np.issubdtype(frames.dtype, np.number):
        raise ValueError(f"{path}: field 'frames' must be numeric [sum_T, ...], got "
                         f"{frames.dtype} {frames.shape}")
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"{path}: field 'lengths' must be int [N], got {lengths.dtype} "
                         f"{lengths.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "US":
        raise ValueError(f"{path}: field 'labels' must be str [N], got {labels.dtype} "
                         f"{labels.shape}")
    if len(labels) != len(lengths):
        raise ValueError(f"{path}: 'labels' has {len(labels)} rows but 'lengths' has "
                         f"{len(lengths)}")
    if len(lengths) == 0:
        raise ValueError(f"{path}: no clips ('lengths' is empty)")
    bad = np.flatnonzero(lengths < 1)
    if bad.size:
        raise ValueError(f"{path}: field 'lengths' row {bad[0]} is {lengths[bad[0]]}; every clip "
                         "needs >= 1 frame")
    if int(lengths.sum()) != len(frames):
        raise ValueError(f"{path}: field 'lengths' adds up to {int(lengths.sum())} frames but "
                         f"'frames' has {len(frames)} rows")
    finite = np.isfinite(frames.reshape(len(frames), -1)).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        clip = int(np.searchsorted(np.cumsum(lengths), row, side="right"))
        raise ValueError(f"{path}: field 'frames' row {row} (clip {clip}) has NaN or inf values")
    return RaggedSequences(path, frames.astype(np.float32), lengths.astype(np.int64),
                           labels.astype(str))


@dataclasses.dataclass(frozen=True)
class SequenceSource:
    """Random-access source of `{"video": f32 [T, ...], "label": i32}` records (grain reads it)."""

    sequences: RaggedSequences
    label_ids: np.ndarray  # i32 [N]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.sequences.clip(i), "label": np.int32(self.label_ids[i])}


def load_splits(paths: dict[str, str], train_split: str = "train"):
    """Reads every split; class names are the sorted labels of `train_split`.

    Returns `(class_names, {split: SequenceSource})`. Labels of other splits must be known to
    train; per-frame shapes must agree.
    """
    sequences = {split: read_ragged_npz(path) for split, path in paths.items()}
    train = sequences[train_split]
    class_names = sorted(set(train.labels.tolist()))
    index = {name: i for i, name in enumerate(class_names)}
    sources = {}
    for split, seq in sequences.items():
        if seq.frames.shape[1:] != train.frames.shape[1:]:
            raise ValueError(f"{seq.path}: per-frame shape {seq.frames.shape[1:]} differs from "
                             f"{train.path}'s {train.frames.shape[1:]}")
        unknown = sorted(set(seq.labels.tolist()) - set(class_names))
        if unknown:
            row = int(np.flatnonzero(seq.labels == unknown[0])[0])
            raise ValueError(f"{seq.path}: field 'labels' has class(es) {unknown} (first at row "
                             f"{row}) that {train.path} does not have")
        sources[split] = SequenceSource(seq, np.array([index[x] for x in seq.labels], np.int32))
    return class_names, sources


# ----------------------------------------------------------------------------- features


def resample(frames: np.ndarray, num_frames: int, start: float, end: float) -> np.ndarray:
    """Linear interpolation of `frames` `[T, ...]` at `num_frames` evenly spaced times in
    `[start, end]` (in frame units, `0 <= start <= end <= T - 1`): `[num_frames, ...]`."""
    times = np.linspace(start, end, num_frames)
    lo = np.floor(times).astype(np.int64)
    hi = np.minimum(lo + 1, len(frames) - 1)
    w = (times - lo).reshape(-1, *([1] * (frames.ndim - 1))).astype(np.float32)
    return (1 - w) * frames[lo] + w * frames[hi]


def check_frame_shape(frame_shape: tuple[int, ...], features, augment: bool, path: str) -> None:
    """Fails, naming `data.features` (or the augmentations), the expected and found per-frame
    shapes and the file `path`, unless frames of `frame_shape` suit them: joint features need
    joints `[J, D]` (distances: J >= 2); scale / rotation / mirror need 2-D joints `[J, 2]`.
    `features=()` takes any per-frame shape (each frame is flattened)."""
    frame_shape = tuple(int(n) for n in frame_shape)
    if features and (len(frame_shape) != 2 or ("distances" in features and frame_shape[0] < 2)):
        raise ValueError(f"data.features={tuple(features)} needs joints per frame, [J, D]"
                         f"{' with J >= 2' if 'distances' in features else ''}, but {path} has "
                         f"frames of shape {list(frame_shape)}; for plain vectors set "
                         "data.features=()")
    if augment and (len(frame_shape) != 2 or frame_shape[1] != 2):
        raise ValueError(f"data.scale_range / rotation_degrees / mirror_prob need 2-D joints "
                         f"[J, 2] per frame, but {path} has frames of shape {list(frame_shape)}; "
                         "set them to 0")


def joint_features(joints: np.ndarray, features) -> np.ndarray:
    """Per-frame features of a joint sequence `[T, J, D]` -> `[T, F]`.

      coords     joints relative to the sequence's mean position (translation invariant)
      distances  all pairwise joint distances per frame (also rotation invariant)
      motion     frame-to-frame displacement (zero for the first frame)
    """
    out = []
    if "coords" in features:
        out.append((joints - joints.mean(axis=(0, 1), keepdims=True)).reshape(len(joints), -1))
    if "distances" in features:
        i, j = np.triu_indices(joints.shape[1], k=1)
        out.append(np.linalg.norm(joints[:, i] - joints[:, j], axis=-1))
    if "motion" in features:
        motion = np.diff(joints, axis=0, prepend=joints[:1])
        out.append(motion.reshape(len(joints), -1))
    return np.concatenate(out, axis=-1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SequenceTransform:
    """Record `{"video": [T, ...], "label"}` -> `{"video": f32 [num_frames, F], "label"}`.

    Sampling: the observed part (the first `fraction`, or in training a random fraction in
    `[min_fraction, 1]`) is linearly resampled to `num_frames` frames; training also crops a random
    `[crop_min, 1]` portion of it. Joint sequences (`[T, J, 2]`, `joint_order` set) can be
    augmented (scale, rotation, mirror with left/right swap) and turned into `features`;
    `features=()` flattens each frame as it is. `mean`/`std` (`[F]`) standardise the output.
    """

    num_frames: int
    train: bool
    fraction: float = 1.0
    min_fraction: float = 1.0
    crop_min: float = 1.0
    scale_range: float = 0.0  # scale ~ U[1 - r, 1 + r]
    rotation_degrees: float = 0.0  # angle ~ U[-a, a]
    mirror_prob: float = 0.0
    joint_order: str = ""  # key of JOINT_ORDERS, needed for mirroring
    features: tuple = ()
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def __post_init__(self):
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"data.features: unknown {sorted(unknown)}; expected any of {FEATURES}")
        if self.mirror_prob > 0 and self.joint_order not in JOINT_ORDERS:
            raise ValueError(f"data.mirror_prob > 0 needs data.joint_order in "
                             f"{sorted(JOINT_ORDERS)}, got {self.joint_order!r}")

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        frames = np.asarray(record["video"], np.float32)
        fraction = self.fraction
        if self.train and self.min_fraction < 1.0:
            fraction = rng.uniform(self.min_fraction, 1.0)
        last = max(fraction * len(frames) - 1.0, 0.0)  # last observed time, in frames
        start, end = 0.0, last
        if self.train and self.crop_min < 1.0:
            span = last * rng.uniform(self.crop_min, 1.0)
            start = rng.uniform(0.0, last - span)
            end = start + span
        frames = resample(frames, self.num_frames, start, end)
        if self.train:
            frames = self._augment(frames, rng)
        video = (joint_features(frames, self.features) if self.features
                 else frames.reshape(len(frames), -1))
        if self.mean is not None:
            video = (video - self.mean) / self.std
        return {"video": video.astype(np.float32), "label": np.int32(record["label"])}

    def _augment(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not (self.scale_range or self.rotation_degrees or self.mirror_prob):
            return frames
        if frames.ndim != 3 or frames.shape[-1] != 2:
            raise ValueError(f"scale/rotation/mirror augmentations need 2-D joints [T, J, 2], "
                             f"got frames of shape {frames.shape}")
        centre = frames.mean(axis=(0, 1))
        x = frames - centre
        if rng.random() < self.mirror_prob:
            x = x[:, mirror_permutation(JOINT_ORDERS[self.joint_order])] * np.array([-1.0, 1.0])
        angle = np.deg2rad(rng.uniform(-self.rotation_degrees, self.rotation_degrees))
        scale = rng.uniform(1 - self.scale_range, 1 + self.scale_range)
        c, s = np.cos(angle), np.sin(angle)
        x = x @ (scale * np.array([[c, s], [-s, c]], np.float32))
        return (x + centre).astype(np.float32)


def feature_statistics(source: SequenceSource, transform: SequenceTransform):
    """Mean and std `[F]` of the un-augmented, un-standardised inputs over a split (std >= 1e-6)."""
    plain = dataclasses.replace(transform, train=False, fraction=1.0, mean=None, std=None)
    rng = np.random.default_rng(0)
    feats = np.concatenate([plain(source[i], rng)["video"] for i in range(len(source))])
    return feats.mean(axis=0), np.maximum(feats.std(axis=0), 1e-6)

