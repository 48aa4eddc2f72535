"""Per-frame vector sequences (joints, sensor channels, precomputed features) from ragged npz files.

The "ragged sequence npz" format holds a whole split in three arrays:
  frames   float  [sum_T, ...]  every clip's frames, concatenated (any per-frame shape)
  lengths  int    [N]           frames per clip, in order
  labels   str    [N]           class names
Clips become records `{"video": f32 [T, ...], "label": i32}` that `SequenceTransform` samples,
augments and turns into fixed-size `[num_frames, F]` inputs for the recurrent encoder.
`validation_split` carves a class-stratified validation part out of a training split.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import zipfile

import numpy as np

# JHMDB's 15 "puppet" joints in the order its files use; MIRROR swaps each left/right pair.
JHMDB_JOINTS = ("neck", "belly", "face", "right_shoulder", "left_shoulder", "right_hip", "left_hip",
                "right_elbow", "left_elbow", "right_knee", "left_knee", "right_wrist", "left_wrist",
                "right_ankle", "left_ankle")
JOINT_ORDERS = {"jhmdb": JHMDB_JOINTS}

# JHMDB's skeleton: 14 bones (parent, child), a tree over its 15 joints rooted at the neck; the
# list is its own mirror image (mirror_permutation maps every bone onto its left/right partner).
JHMDB_BONES = (("neck", "face"), ("neck", "belly"),
               ("neck", "right_shoulder"), ("right_shoulder", "right_elbow"),
               ("right_elbow", "right_wrist"),
               ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"),
               ("left_elbow", "left_wrist"),
               ("belly", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
               ("belly", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"))
BONES = {"jhmdb": JHMDB_BONES}  # same keys as JOINT_ORDERS

# Output order of `joint_features` (whatever the order of `data.features`).
FEATURES = ("coords", "distances", "motion", "motion2", "bones", "angles")
SKELETON_FEATURES = ("bones", "angles")  # need the bones of data.joint_order and [J, 2] joints


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


@functools.cache  # joint_features asks for every clip; read-only, so one array serves all
def bone_indices(joint_order: str) -> np.ndarray:
    """`[B, 2]` joint indices (parent, child) of the bones of `BONES[joint_order]`."""
    index = {name: i for i, name in enumerate(JOINT_ORDERS[joint_order])}
    out = np.array([(index[a], index[b]) for a, b in BONES[joint_order]], np.int64).reshape(-1, 2)
    out.setflags(write=False)
    return out


@functools.cache  # as bone_indices
def angle_indices(joint_order: str) -> np.ndarray:
    """`[A, 3]` joint indices (joint, a, b) of every angle of the skeleton: at each joint with 2+
    bones (in joint order), every pair of its bones (in bone-list order), the bones going from the
    joint to its neighbours a and b. JHMDB: 17 angles (6 at the neck, 3 at the belly, 1 at each
    shoulder, elbow, hip and knee)."""
    out = []
    bones = bone_indices(joint_order)
    for j in range(len(JOINT_ORDERS[joint_order])):
        neighbours = [int(b if a == j else a) for a, b in bones if j in (a, b)]
        out += [(j, a, b) for a, b in itertools.combinations(neighbours, 2)]
    out = np.array(out, np.int64).reshape(-1, 3)
    out.setflags(write=False)
    return out


def mirror_joints(frames: np.ndarray, joint_order: str) -> np.ndarray:
    """2-D joints `[T, J, 2]` mirrored left-right about the sequence's mean x, with every left
    joint swapped with its right partner (`mirror_permutation`): the mirrored test view."""
    if frames.ndim != 3 or frames.shape[-1] != 2 or \
            frames.shape[1] != len(JOINT_ORDERS[joint_order]):
        raise ValueError(f"mirroring needs 2-D joints [T, {len(JOINT_ORDERS[joint_order])}, 2] "
                         f"(data.joint_order={joint_order!r}), got frames of shape {frames.shape}")
    out = frames[:, mirror_permutation(JOINT_ORDERS[joint_order])].astype(np.float32)
    out[..., 0] = 2 * frames[..., 0].mean() - out[..., 0]
    return out


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

    def subset(self, rows) -> RaggedSequences:
        """The clips `rows` (int `[n]`, n >= 1), in that order, from the same file."""
        rows = np.asarray(rows, np.int64)
        frames = np.concatenate([self.clip(int(i)) for i in rows])
        return RaggedSequences(self.path, frames, self.lengths[rows], self.labels[rows])


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

    def subset(self, rows) -> SequenceSource:
        rows = np.asarray(rows, np.int64)
        return SequenceSource(self.sequences.subset(rows), self.label_ids[rows])


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


def validation_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Bool `[N]`: the clips of a class-stratified random validation part.

    Each class (in sorted order) of `n` clips gives `min(floor(fraction * n + 0.5), n - 1)` of
    them, the first ones of `rng.permutation` of its rows (`rng = np.random.default_rng(seed)`,
    one permutation per class): deterministic in the seed, and every class keeps >= 1 training
    clip (a class of one clip gives none).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.validation_fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(labels), bool)
    for name in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == name)
        count = min(int(np.floor(fraction * len(rows) + 0.5)), len(rows) - 1)
        held_out[rng.permutation(rows)[:count]] = True
    return held_out


def validation_split(source: SequenceSource, fraction: float, seed: int):
    """`(train, validation)` sources: the `validation_rows` of `source` and the rest, each in file
    order. Fails naming `data.validation_fraction` when no class can spare a clip."""
    held_out = validation_rows(source.sequences.labels, fraction, seed)
    if not held_out.any():
        most = int(np.unique(source.sequences.labels, return_counts=True)[1].max())
        raise ValueError(f"data.validation_fraction={fraction}: leaves no validation clip in "
                         f"{source.sequences.path} (at most {most} clips per class; every class "
                         "keeps >= 1 training clip); raise it or set it to 0")
    return _hold_out(source, held_out)


def _hold_out(source: SequenceSource, held_out: np.ndarray):
    """`(train, validation)`: the clips of `source` not in bool `held_out` `[N]`, and those in
    it, each in file order."""
    return source.subset(np.flatnonzero(~held_out)), source.subset(np.flatnonzero(held_out))


def shared_split(source: SequenceSource, other: RaggedSequences):
    """`(train, validation)` sources: validation holds the clips of `source` whose frames (values
    and length) are a clip of `other`, train the rest, each in file order.

    For JHMDB's official splits, with `other` another split's test file: no clip of those clips'
    source videos is in that split's training part (HMDB51's protocol), so holding them out
    gives a validation part from other videos, as test is, without reading this split's test
    file. Fails naming `data.validation_path` when no clip is shared, or when a class would keep
    no training clip.
    """
    seqs = source.sequences
    if other.frames.shape[1:] != seqs.frames.shape[1:]:
        raise ValueError(f"data.validation_path={other.path}: per-frame shape "
                         f"{other.frames.shape[1:]} differs from {seqs.path}'s "
                         f"{seqs.frames.shape[1:]}")
    known = {other.clip(i).tobytes() for i in range(len(other))}
    held_out = np.array([seqs.clip(i).tobytes() in known for i in range(len(seqs))], bool)
    if not held_out.any():
        raise ValueError(f"data.validation_path={other.path}: none of its {len(other)} clips is "
                         f"a clip of {seqs.path}, so there is no validation part")
    emptied = sorted(set(seqs.labels[held_out].tolist()) - set(seqs.labels[~held_out].tolist()))
    if emptied:
        raise ValueError(f"data.validation_path={other.path}: holds every clip of class(es) "
                         f"{emptied} of {seqs.path}, leaving none to train on")
    return _hold_out(source, held_out)


# ----------------------------------------------------------------------------- features


def resample(frames: np.ndarray, num_frames: int, start: float, end: float) -> np.ndarray:
    """Linear interpolation of `frames` `[T, ...]` at `num_frames` evenly spaced times in
    `[start, end]` (in frame units, `0 <= start <= end <= T - 1`): `[num_frames, ...]`."""
    times = np.linspace(start, end, num_frames)
    lo = np.floor(times).astype(np.int64)
    hi = np.minimum(lo + 1, len(frames) - 1)
    w = (times - lo).reshape(-1, *([1] * (frames.ndim - 1))).astype(np.float32)
    return (1 - w) * frames[lo] + w * frames[hi]


def check_frame_shape(frame_shape: tuple[int, ...], features, augment: bool, path: str,
                      joint_order: str = "", flip_view: bool = False,
                      normalize_scale: bool = False) -> None:
    """Fails, naming `data.features` (or the augmentations, `data.normalize_scale` or
    `eval.flip_view`), the expected and found per-frame shapes and the file `path`, unless frames
    of `frame_shape` suit them: joint features need joints `[J, D]` (distances: J >= 2); scale /
    rotation / mirror and `normalize_scale` need 2-D joints `[J, 2]`; the skeleton features
    (bones, angles) and the mirrored test view (`flip_view`) need `joint_order` (a key of
    `JOINT_ORDERS`, fails naming `data.joint_order`) and 2-D joints `[J, 2]` with J its number of
    joints. `features=()` takes any per-frame shape (each frame is flattened)."""
    frame_shape = tuple(int(n) for n in frame_shape)
    if features and (len(frame_shape) != 2 or ("distances" in features and frame_shape[0] < 2)):
        raise ValueError(f"data.features={tuple(features)} needs joints per frame, [J, D]"
                         f"{' with J >= 2' if 'distances' in features else ''}, but {path} has "
                         f"frames of shape {list(frame_shape)}; for plain vectors set "
                         "data.features=()")
    if augment and (len(frame_shape) != 2 or frame_shape[1] != 2):
        raise ValueError(f"data.scale_range / rotation_degrees / shear_range / mirror_prob need "
                         f"2-D joints [J, 2] per frame, but {path} has frames of shape "
                         f"{list(frame_shape)}; set them to 0")
    if normalize_scale and (len(frame_shape) != 2 or frame_shape[1] != 2):
        raise ValueError(f"data.normalize_scale needs 2-D joints [J, 2] per frame, but {path} has "
                         f"frames of shape {list(frame_shape)}; set it to False")
    skeleton = [f for f in SKELETON_FEATURES if f in features]
    users = ([f"data.features={tuple(features)} (with {', '.join(skeleton)})"] if skeleton
             else []) + (["eval.flip_view=True"] if flip_view else [])
    for user in users:
        check_joint_order(joint_order, user)
        joints = len(JOINT_ORDERS[joint_order])
        if frame_shape != (joints, 2):
            raise ValueError(f"{user} needs 2-D joints [{joints}, 2] per frame (data.joint_order="
                             f"{joint_order!r}), but {path} has frames of shape "
                             f"{list(frame_shape)}")


def check_joint_order(joint_order: str, user: str) -> None:
    """Fails unless `joint_order` is a key of `JOINT_ORDERS`; `user` names what needs it."""
    if joint_order not in JOINT_ORDERS:
        raise ValueError(f"{user} needs the skeleton of data.joint_order, one of "
                         f"{sorted(JOINT_ORDERS)}; got data.joint_order={joint_order!r}")


def joint_features(joints: np.ndarray, features, joint_order: str = "") -> np.ndarray:
    """Per-frame features of a joint sequence `[..., T, J, D]` -> `[..., T, F]` (any leading
    batch axes: a batch at once costs the numpy calls of one clip), in the order of `FEATURES`.

      coords     joints relative to the sequence's mean position (translation invariant)
      distances  all pairwise joint distances per frame (also rotation invariant)
      motion     frame-to-frame displacement `x[t] - x[t-1]` (zero for the first frame)
      motion2    displacement over 2 frames `x[t] - x[max(t-2, 0)]`, the slow scale of DD-Net's
                 multi-scale motion (index clamped at the first frame: zero for frame 0,
                 `x[1] - x[0]` for frame 1)
      bones      unit direction `(dx, dy)` of every bone (parent -> child) of
                 `BONES[joint_order]`, per frame: `[T, 2B]` (zero for a zero-length bone)
      angles     `(cos, sin)` of the signed angle from bone (j -> a) to bone (j -> b) for every
                 angle (j, a, b) of `angle_indices(joint_order)`: `[T, 2A]`, the pair per angle
    bones and angles need `joint_order` and 2-D joints `[T, J, 2]` of its J joints.
    """
    lead = joints.shape[:-2]  # [..., T]

    def flat(x):  # [..., T, K, L] -> [..., T, K * L]
        return x.reshape(*lead, -1)

    def gather(index):  # joints `index` of every frame: [..., T, len(index), D]
        return joints[..., index, :]

    out = []
    if "coords" in features:
        out.append(flat(joints - joints.mean(axis=(-3, -2), keepdims=True)))
    if "distances" in features:
        i, j = np.triu_indices(joints.shape[-2], k=1)
        out.append(np.linalg.norm(gather(i) - gather(j), axis=-1))
    frames = np.arange(joints.shape[-3])
    for name, step in (("motion", 1), ("motion2", 2)):
        if name in features:  # the index clamps at the first frame
            out.append(flat(joints - np.take(joints, np.maximum(frames - step, 0), axis=-3)))
    if any(f in features for f in SKELETON_FEATURES):
        check_frame_shape(joints.shape[-2:], features, False, "the clip", joint_order)
    if "bones" in features:
        bones = bone_indices(joint_order)
        out.append(flat(_unit(gather(bones[:, 1]) - gather(bones[:, 0]))))
    if "angles" in features:
        angles = angle_indices(joint_order)
        u = _unit(gather(angles[:, 1]) - gather(angles[:, 0]))
        v = _unit(gather(angles[:, 2]) - gather(angles[:, 0]))
        cos = (u * v).sum(axis=-1)
        sin = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
        out.append(flat(np.stack([cos, sin], axis=-1)))
    return np.concatenate(out, axis=-1).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    """`vectors` `[..., D]` scaled to unit length (zero vectors stay zero)."""
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norm, 1e-12)


@dataclasses.dataclass(frozen=True)
class SequenceTransform:
    """Record `{"video": [T, ...], "label"}` -> `{"video": f32 [num_frames, F], "label"}`.

    Sampling: the observed part (the first `fraction`, or in training a random fraction in
    `[min_fraction, 1]`) is linearly resampled to `num_frames` frames; training also crops a random
    `[crop_min, 1]` portion of it. Joint sequences (`[T, J, 2]`, `joint_order` set) can be
    augmented (scale, rotation, shear, mirror with left/right swap) and turned into `features`;
    `features=()` flattens each frame as it is. `normalize_scale` divides 2-D joints by the
    person's size in the observed clip (`person_scale`), so people filmed near and far give
    the same coordinates, distances and motion. `mean`/`std` (`[F]`) standardise the output.
    `mirror` mirrors every clip (`mirror_joints`, after resampling; the mirrored test view).
    """

    num_frames: int
    train: bool
    fraction: float = 1.0
    min_fraction: float = 1.0
    crop_min: float = 1.0
    scale_range: float = 0.0  # scale ~ U[1 - r, 1 + r]
    rotation_degrees: float = 0.0  # angle ~ U[-a, a]
    # x += a y, y += b x with a, b ~ U[-r, r]: other camera angles and body proportions
    shear_range: float = 0.0
    mirror_prob: float = 0.0
    joint_order: str = ""  # key of JOINT_ORDERS, needed for mirroring
    features: tuple = ()
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    mirror: bool = False  # mirror every clip (x and left/right joints): the mirrored test view
    normalize_scale: bool = False

    def __post_init__(self):
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"data.features: unknown {sorted(unknown)}; expected any of {FEATURES}")
        if self.mirror_prob > 0 and self.joint_order not in JOINT_ORDERS:
            raise ValueError(f"data.mirror_prob > 0 needs data.joint_order in "
                             f"{sorted(JOINT_ORDERS)}, got {self.joint_order!r}")
        skeleton = [f for f in SKELETON_FEATURES if f in self.features]
        if skeleton:
            check_joint_order(self.joint_order, f"data.features={tuple(self.features)} (with "
                                                f"{', '.join(skeleton)})")
        if self.mirror:
            check_joint_order(self.joint_order, "the mirrored view (eval.flip_view=True)")

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        sampled = self.sample(record, rng)
        return {**sampled, "video": self.finish_batch(sampled["video"][None])[0]}

    def sample(self, record: dict, rng: np.random.Generator) -> dict:
        """The per-clip part of `__call__`: `{"video": f32 [num_frames, ...] frames (resampled,
        mirrored, augmented), "label"}`; `finish_batch` turns a batch of them into features. The
        loader runs the two apart, so that the features cost numpy's per-call overhead once per
        batch instead of once per clip."""
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
        if self.normalize_scale:
            frames = frames / person_scale(frames)
        if self.mirror:
            frames = mirror_joints(frames, self.joint_order)
        if self.train:
            frames = self._augment(frames, rng)
        return {"video": frames.astype(np.float32), "label": np.int32(record["label"])}

    def finish_batch(self, frames: np.ndarray) -> np.ndarray:
        """Frames `[B, num_frames, ...]` of `sample` -> standardised features
        `[B, num_frames, F]`, f32."""
        video = (joint_features(frames, self.features, self.joint_order) if self.features
                 else frames.reshape(*frames.shape[:2], -1))
        if self.mean is not None:
            video = (video - self.mean) / self.std
        return video.astype(np.float32)

    def _augment(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not (self.scale_range or self.rotation_degrees or self.shear_range or self.mirror_prob):
            return frames
        if frames.ndim != 3 or frames.shape[-1] != 2:
            raise ValueError(f"scale/rotation/shear/mirror augmentations need 2-D joints [T, J, 2], "
                             f"got frames of shape {frames.shape}")
        centre = frames.mean(axis=(0, 1))
        x = frames - centre
        if rng.random() < self.mirror_prob:
            x = x[:, mirror_permutation(JOINT_ORDERS[self.joint_order])] * np.array([-1.0, 1.0])
        angle = np.deg2rad(rng.uniform(-self.rotation_degrees, self.rotation_degrees))
        scale = rng.uniform(1 - self.scale_range, 1 + self.scale_range)
        c, s = np.cos(angle), np.sin(angle)
        x = x @ (scale * np.array([[c, s], [-s, c]], np.float32))
        if self.shear_range:  # drawn last, so runs without it keep their random draws
            a, b = rng.uniform(-self.shear_range, self.shear_range, size=2)
            x = x @ np.array([[1.0, b], [a, 1.0]], np.float32)
        return (x + centre).astype(np.float32)


def person_scale(joints: np.ndarray) -> float:
    """The size of the person in 2-D joints `[T, J, 2]`: the mean over frames of the RMS distance
    of the joints from their frame's centroid (> 0: 1.0 for a clip whose joints all coincide)."""
    if joints.ndim != 3 or joints.shape[-1] != 2:
        raise ValueError(f"data.normalize_scale needs 2-D joints [T, J, 2], got frames of shape "
                         f"{joints.shape}")
    spread = joints - joints.mean(axis=1, keepdims=True)
    scale = float(np.mean(np.sqrt(np.mean(np.sum(spread**2, axis=-1), axis=1))))
    return scale if scale > 1e-12 else 1.0


def feature_statistics(source: SequenceSource, transform: SequenceTransform):
    """Mean and std `[F]` of the un-augmented, un-standardised inputs over a split (std >= 1e-6)."""
    plain = dataclasses.replace(transform, train=False, fraction=1.0, mean=None, std=None)
    rng = np.random.default_rng(0)
    feats = np.concatenate([plain(source[i], rng)["video"] for i in range(len(source))])
    return feats.mean(axis=0), np.maximum(feats.std(axis=0), 1e-6)

