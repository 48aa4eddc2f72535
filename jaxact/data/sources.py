"""Datasets, picked by `config.data.name` from the registry of the experiment's task.

Classification datasets (`CLASSIFICATION_DATASETS`) offer the same small interface, so the
classifier never asks where clips come from:
  class_names               sorted class names
  description               what results.json calls the dataset
  source(split)             random-access records `{"video": [T, ...], "label": int}`
  transform(train, fraction, view)  record -> fixed-shape example `{"video": f32 [num_frames, ...], ...}`
  flip_permutation          `[C]` class of each class's mirror image (for mirrored test views)
  read_clip(path)           a user's clip file -> raw record `{"video": [T, ...], ...}` (--mode=predict)
Datasets that screen their files up front also offer `problems` (`video_io.Problem`s of what they
skipped) and `num_checked`; the classifier writes them to WORKDIR/bad_inputs.json.

Detection datasets (`DETECTION_DATASETS`) offer:
  class_names, description, source(split)   as above; records hold a `keyframe`, and per person
                            `boxes` `[P, 4]`, `actions` `[P, A]` and `person_ids` `[P]`
  transform(train)          record -> `pipeline.KeyframeTransform` example
  max_people                the most people in one clip
  frame_shape               `(H, W, 3)` of the frames
  read_clip(path)           a user's clip file -> uint8 frames `[T, H, W, 3]` (--mode=predict)
and, before any data is generated, `detection_spec(config)` (class names, max_people,
frame_shape, from the builder's metadata) validates the data section.

`make(config, task)` builds the dataset; an unknown `data.name` for the task fails naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable

import numpy as np
from absl import logging

from jaxact.data import ava_format, builders, maneuvers, pipeline, sequences, video_folder, video_io


def observed_fractions(config, train: bool, fraction: float) -> tuple[float, float]:
    """(fraction, min_fraction) of a clip transform: in training, a fixed first
    `data.train_observation` of each clip when that is < 1 (the early-prediction training mode),
    else random prefixes from `data.min_fraction` (1: whole clips); in evaluation `fraction`."""
    observation = config.get("train_observation", 1.0)
    if not 0.0 < observation <= 1.0:
        raise ValueError(f"data.train_observation must be in (0, 1], got {observation}")
    if observation < 1.0 and config.min_fraction < 1.0:
        raise ValueError(f"data.train_observation={observation} and data.min_fraction="
                         f"{config.min_fraction}: fixed and random prefixes; set one of them to 1")
    if train and observation < 1.0:
        return observation, 1.0
    return fraction, config.min_fraction


class _Concatenated:
    """Random access over one sequence of records followed by another."""

    def __init__(self, first, rest):
        self._first, self._rest = first, rest

    def __len__(self) -> int:
        return len(self._first) + len(self._rest)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        index %= len(self)
        first = len(self._first)
        return self._first[index] if index < first else self._rest[index - first]


class SyntheticVideos:
    """A built-in TFDS dataset of labelled clips (`data.name` a key of `builders.BUILDERS` whose
    records hold a `label`: maneuvers), uint8 `[T, H, W, 3]` with per-frame `boxes` `[T, 4]`.

    The builder class states the mirror image of each class (`FLIP_PERMUTATION`; None: every
    class is its own), which training flips and mirrored test views apply to the label.
    `data.extra_train_clips` > 0 appends that many more clips of the train seed stream to split
    'train' (the indices past the split's end), rendered once into memory when the split is
    first read: more training clips than TFDS can write without TensorFlow (~1 GB a split).
    """

    def __init__(self, config):
        self.config = config
        self.builder = builders.load(config.name, config.builder_config, config.data_dir)
        self.class_names = list(self.builder.CLASS_NAMES)
        self.description = f"{config.name}/{config.builder_config}"
        self._label_flip = builders.BUILDERS[config.name].FLIP_PERMUTATION
        self._extra_train_clips = int(config.get("extra_train_clips", 0))
        if self._extra_train_clips < 0:
            raise ValueError(f"data.extra_train_clips must be >= 0, got {self._extra_train_clips}")
        self._train = None

    def source(self, split: str):
        if split != "train" or not self._extra_train_clips:
            return self.builder.as_data_source(split)
        if self._train is None:
            stored = self.builder.as_data_source(split)
            extra = [record for _, record in self.builder.render_examples(
                "train", range(len(stored), len(stored) + self._extra_train_clips))]
            self._train = _Concatenated(stored, extra)
        return self._train

    def bayes_limit(self, ratios) -> dict[str, float] | None:
        """The Bayes-optimal top-1 from the first `ratio` of a clip, per ratio ("0.2": acc), where
        the renderer knows it (`maneuvers.bayes_limit`, 200k latent draws); else None."""
        render = self.builder.builder_config.render
        if not isinstance(render, maneuvers.ManeuverConfig):
            return None
        limit = maneuvers.bayes_limit(render, tuple(ratios), num_samples=200_000)
        return {f"{r:.1f}": float(acc) for r, acc in limit.items()}

    @property
    def flip_permutation(self) -> np.ndarray:
        if self._label_flip is None:
            return np.arange(len(self.class_names))
        return self._label_flip

    def transform(self, train: bool, fraction: float = 1.0, view=pipeline.CENTRE_VIEW):
        c = self.config
        flip = None if self._label_flip is None else tuple(int(i) for i in self._label_flip)
        fraction, min_fraction = observed_fractions(c, train, fraction)
        return pipeline.ClipTransform(num_frames=c.num_frames, train=train, fraction=fraction,
                                      min_fraction=min_fraction, flip_prob=c.flip_prob,
                                      view=view, flip_permutation=flip,
                                      target_crop=c.get("target_crop", 0),
                                      target_track=c.get("target_track", False),
                                      stabilize_track=c.get("stabilize_track", False),
                                      target_only=c.get("target_only", False))

    def read_clip(self, path: str) -> dict:
        """A record of a user's clip file: uint8 frames at the dataset's frame size (`read_frames`:
        any video, or arrays by `video_io.to_uint8`'s value rule) with zero boxes."""
        frames = read_frames(path, self.source("train")[0]["video"].shape[1:])
        return clip_record(frames, 0)


class RaggedNpzSequences:
    """Per-frame vectors from ragged-sequence npz files (`data.train_path`, `data.test_path`).

    `data.validation_fraction` > 0 carves a class-stratified random part (`data.validation_seed`)
    of the train file out as split 'validation' (`sequences.validation_split`: every class keeps
    >= 1 training clip); 'train' is then the rest, and the standardisation statistics come from
    it alone. `data.validation_path` instead holds out the clips of the train file that are also
    clips of that file (`sequences.shared_split`: for JHMDB, another split's test file, so the
    validation part comes from other source videos). Test views: the centre one, and its mirror
    image for 2-D joints (`eval.flip_view`; needs `data.joint_order`).
    """

    def __init__(self, config):
        self.config = config
        paths = {"train": config.train_path, "test": config.test_path}
        self.class_names, self._sources = sequences.load_splits(paths)
        train = self._sources["train"].sequences
        sequences.check_frame_shape(
            train.frames.shape[1:], tuple(config.features),
            bool(config.scale_range or config.rotation_degrees or config.get("shear_range", 0.0)
                 or config.mirror_prob), train.path,
            joint_order=config.joint_order,
            normalize_scale=bool(config.get("normalize_scale", False)))
        self.description = f"ragged_npz:{config.train_path}|{config.test_path}"
        # .get: configs written before these fields existed have no validation part.
        fraction = float(config.get("validation_fraction", 0.0))
        seed = int(config.get("validation_seed", 0))
        shared_with = config.get("validation_path", "")
        if fraction and shared_with:
            raise ValueError(f"data.validation_fraction={fraction:g} and data.validation_path="
                             f"{shared_with!r} both pick a validation part: set one of them")
        if shared_with:
            self._sources["train"], self._sources["validation"] = sequences.shared_split(
                self._sources["train"], sequences.read_ragged_npz(shared_with))
            self.description += f" (validation: clips shared with {shared_with})"
        elif fraction:
            self._sources["train"], self._sources["validation"] = sequences.validation_split(
                self._sources["train"], fraction, seed)
            self.description += f" (validation: {fraction:g} of train, seed {seed})"
        self.mean = self.std = None
        if config.standardize:
            self.mean, self.std = sequences.feature_statistics(self._sources["train"],
                                                               self.transform(train=False))

    def source(self, split: str):
        if split not in self._sources:
            hint = ("; set data.validation_fraction > 0 or data.validation_path to carve split "
                    "'validation' out of data.train_path" if split == "validation" else "")
            raise ValueError(f"split {split!r}: ragged npz data has only "
                             f"{sorted(self._sources)}{hint}")
        return self._sources[split]

    @property
    def flip_permutation(self) -> np.ndarray:
        return np.arange(len(self.class_names))  # a mirrored joint sequence keeps its label

    def transform(self, train: bool, fraction: float = 1.0, view=pipeline.CENTRE_VIEW):
        if view.offset != pipeline.CENTRE_VIEW.offset:
            raise ValueError(f"{view}: ragged npz sequences are resampled linearly, so they have "
                             "only the centre temporal view; set eval.temporal_views=1 "
                             "(eval.flip_view=True works for 2-D joints)")
        c = self.config
        if view.flip:
            train_file = self._sources["train"].sequences
            sequences.check_frame_shape(train_file.frames.shape[1:], (), False, train_file.path,
                                        joint_order=c.joint_order, flip_view=True)
        fraction, min_fraction = observed_fractions(c, train, fraction)
        return sequences.SequenceTransform(
            num_frames=c.num_frames, train=train, fraction=fraction, min_fraction=min_fraction,
            crop_min=c.crop_min, scale_range=c.scale_range, rotation_degrees=c.rotation_degrees,
            shear_range=float(c.get("shear_range", 0.0)), mirror_prob=c.mirror_prob,
            joint_order=c.joint_order, features=tuple(c.features),
            mean=self.mean, std=self.std, mirror=view.flip,
            normalize_scale=bool(c.get("normalize_scale", False)))

    def read_clip(self, path: str) -> dict:
        """A record of a user's sequence file: float32 `[T, ...]` shaped like the data's frames
        (e.g. joints `[T, 15, 2]`). Coordinates, not pixels: no image value rule, no resizing."""
        frame_shape = self._sources["train"].sequences.frames.shape[1:]
        frames = read_array(path, ("frames", "video"))
        if frames.ndim < 1 or tuple(frames.shape[1:]) != tuple(frame_shape) or len(frames) == 0:
            raise ValueError(f"{path}: frames have shape {frames.shape}, expected "
                             f"[T>=1, {', '.join(map(str, frame_shape))}]")
        return {"video": frames.astype(np.float32), "label": 0}


class VideoFiles:
    """Clip files listed in two CSVs (`data.train_list`, `data.test_list`; see `read_clip_list`).

    Class names are the sorted labels of the train list. On construction every listed clip is
    read once at `data.frame_size` (`video_io.scan_clips`); malformed rows, test labels unknown to
    the train list and unreadable clips are skipped and kept in `problems` (both splits, one per
    bad row, with its split and 1-based row, out of `num_checked` rows), so the loaders only ever
    see good clips. A clip shorter than `num_frames` is good: the sampler repeats frames of short
    clips (scanned with pad=True). Arrays of any size are resized like videos.
    Records decode their file on every access: `{"video": uint8 [T, H, W, 3] at frame_size,
    "label": int, "boxes": f32 [T, 4] zeros}`.
    """

    LISTS = {"train": "train_list", "test": "test_list"}

    def __init__(self, config):
        self.config = config
        self.size = tuple(int(v) for v in config.frame_size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"data.frame_size={tuple(config.frame_size)}: expected (height, width)"
                             " >= 1")
        paths = {split: list_path(config, field) for split, field in self.LISTS.items()}
        rows, csv_problems = {}, {}
        for split, path in paths.items():
            rows[split], csv_problems[split] = read_clip_list(path)
        self.class_names = sorted({label for _, label, _ in rows["train"]})
        self.description = f"video_files:{paths['train']}|{paths['test']}"
        self.num_checked = sum(len(rows[s]) + len(csv_problems[s]) for s in paths)
        ids = {name: i for i, name in enumerate(self.class_names)}
        self.problems, self._records = [], {}
        for split, path in paths.items():
            problems = [p._replace(split=split) for p in csv_problems[split]] + [
                video_io.Problem(path, f"label {label!r} is not a class of data.train_list",
                                 row, "label", split)
                for _, label, row in rows[split] if label not in ids]
            items = [row for row in rows[split] if row[1] in ids]  # (clip, label, row)
            good, bad = video_io.scan_clips(items, num_frames=config.num_frames, size=self.size,
                                            pad=True, class_names=self.class_names,
                                            num_workers=config.scan_workers, split=split,
                                            list_file=path)
            problems += bad
            if not good:
                raise ValueError(f"data.{self.LISTS[split]}={path}: no usable clip among its "
                                 f"{len(rows[split]) + len(csv_problems[split])} rows; "
                                 + video_io.summarize(problems, len(problems)))
            self.problems += problems
            self._records[split] = ClipRecords([(clip, ids[label]) for clip, label, _ in good],
                                               self.size)
        trained = {label for _, label in self._records["train"].rows}
        if missing := [name for i, name in enumerate(self.class_names) if i not in trained]:
            logging.warning("classes with no usable training clip: %s", missing)

    def source(self, split: str):
        if split not in self._records:
            raise ValueError(f"split {split!r}: video file lists give only {sorted(self._records)}")
        return self._records[split]

    @property
    def flip_permutation(self) -> np.ndarray:
        return np.arange(len(self.class_names))  # a mirrored action clip keeps its label

    def transform(self, train: bool, fraction: float = 1.0, view=pipeline.CENTRE_VIEW):
        return user_clip_transform(self.config, train, fraction, view)

    def read_clip(self, path: str) -> dict:
        return clip_record(video_io.read_video(path, size=self.size), 0)


class ClipRecords:
    """Random access to `rows` of `(clip path, label id)`: `clip_record`s decoded at `size`."""

    def __init__(self, rows: list[tuple[str, int]], size: tuple[int, int]):
        self.rows, self.size = rows, size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        path, label = self.rows[i]
        # A clip that passed the scan fails here only if its file changed since: the error names it.
        return clip_record(video_io.read_video(path, size=self.size), label)


def user_clip_transform(config, train: bool, fraction: float, view,
                        inner: Callable | None = None):
    """The clip transform of datasets of users' clips (labels kept under a mirror): a
    `pipeline.ClipTransform` that never flips (its flip draw is still made in training), then
    `inner` of it where given (e.g. a crop), then `Mirror` of the video alone, after one more
    draw."""
    fraction, min_fraction = observed_fractions(config, train, fraction)
    out = pipeline.ClipTransform(num_frames=config.num_frames, train=train, fraction=fraction,
                                 min_fraction=min_fraction, flip_prob=0.0,
                                 view=dataclasses.replace(view, flip=False))
    if inner is not None:
        out = inner(out)
    flip_prob = config.flip_prob if train else float(view.flip)
    return Mirror(out, flip_prob) if flip_prob > 0 else out


def clip_record(frames: np.ndarray, label: int) -> dict:
    """uint8 frames `[T, H, W, 3]` -> a record for `pipeline.ClipTransform` (zero boxes)."""
    return {"video": frames, "label": label, "boxes": np.zeros((len(frames), 4), np.float32)}


@dataclasses.dataclass(frozen=True)
class Mirror:
    """`transform`'s output `video` `[T, H, W, C]` mirrored left-right with probability
    `flip_prob` (1: always, no random draw); the label is kept."""

    transform: Callable[[dict, np.random.Generator], dict]
    flip_prob: float

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        out = self.transform(record, rng)
        if self.flip_prob >= 1.0 or rng.random() < self.flip_prob:
            out["video"] = np.ascontiguousarray(out["video"][:, :, ::-1])
        return out


def list_path(config, field: str) -> str:
    """`config[field]`, a clip-list path that the user must set."""
    if not config[field]:
        raise ValueError(f"data.{field} is not set: pass --config.data.{field}=PATH.csv "
                         "(a CSV with one clip per row: path,label)")
    return os.path.expanduser(config[field])


def read_clip_list(path: str) -> tuple[list[tuple[str, str, int]], list[video_io.Problem]]:
    """Rows `(clip path, label, row)` of a clip-list CSV, and a `video_io.Problem` per bad row.

    One clip per row: `path,label` (label: a class name), optionally below a header row
    `path,label`; blank lines are skipped; relative paths are resolved against the CSV's
    directory. `row` is the 1-based line in the file. A missing list, or one that lists nothing,
    raises `video_io.BadInputError` naming it: that is a setup mistake, not a clip to skip.
    """
    if not os.path.isfile(path):
        raise video_io.MissingInputError(path, "no such clip list (CSV of path,label rows)")
    base = os.path.dirname(os.path.abspath(path))
    rows, problems = [], []
    # utf-8-sig: spreadsheet exports start with a byte-order mark that would spoil the header.
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        try:
            for fields in reader:
                row, fields = reader.line_num, [v.strip() for v in fields]
                if not any(fields):
                    continue
                if not rows and not problems and [v.lower() for v in fields] == ["path", "label"]:
                    continue  # the header
                problem = _row_problem(fields)
                if problem:
                    problems.append(video_io.Problem(path, problem[0], row, problem[1]))
                else:
                    clip = os.path.join(base, os.path.expanduser(fields[0]))
                    rows.append((os.path.normpath(clip), fields[1], row))
        except csv.Error as e:
            raise video_io.BadInputError(path, f"not a readable CSV ({e})", reader.line_num) from e
    if not rows and not problems:
        raise video_io.BadInputError(path, "lists no clips; expected rows path,label")
    return rows, problems


def _row_problem(fields: list[str]) -> tuple[str, str | None] | None:
    """(reason, field) of what is wrong with a clip-list row's fields, or None."""
    if len(fields) == 1:
        return "no label; expected path,label", "label"
    if len(fields) > 2:
        return f"{len(fields)} fields, expected 2 (path,label); quote a path with commas", None
    for name, value in zip(("path", "label"), fields, strict=True):
        if not value:
            return f"empty {name}", name
    return None


@dataclasses.dataclass(frozen=True)
class DetectionSpec:
    """What a detection dataset's clips look like, from its builder's metadata alone."""

    class_names: tuple[str, ...]
    max_people: int  # the most people in one clip
    frame_shape: tuple[int, int, int]  # (H, W, 3)


class KeyframeVideos:
    """A built-in TFDS dataset of keyframe boxes with per-person actions (`data.name` a key of
    `builders.BUILDERS` whose records hold a `keyframe`: classroom).

    Records: `{"video": uint8 [T, H, W, 3], "keyframe": int, "boxes": f32 [P, 4] (xyxy,
    normalized), "actions": uint8 [P, A], "person_ids": int [P], ...}`; every action is
    mirror-symmetric, so a training flip keeps the actions.
    """

    def __init__(self, config):
        self.config = config
        spec = self.spec(config)  # an unknown builder config fails before any generation
        self.max_people = spec.max_people
        self.builder = builders.load(config.name, config.builder_config, config.data_dir)
        self.class_names = list(self.builder.CLASS_NAMES)
        self.description = f"{config.name}/{config.builder_config}"
        self.frame_shape = tuple(self.builder.info.features["video"].shape[1:])  # (H, W, 3)

    @classmethod
    def spec(cls, config) -> DetectionSpec:
        """The builder's metadata for `config.builder_config`; generates nothing."""
        builder = builders.BUILDERS[config.name]
        return DetectionSpec(class_names=tuple(builder.CLASS_NAMES),
                             max_people=builder.max_people(config.builder_config),
                             frame_shape=builder.frame_shape(config.builder_config))

    def source(self, split: str):
        return self.builder.as_data_source(split)

    def transform(self, train: bool) -> pipeline.KeyframeTransform:
        c = self.config
        return pipeline.KeyframeTransform(num_frames=c.num_frames, max_people=c.max_people,
                                          train=train, stride=c.frame_stride,
                                          flip_prob=c.flip_prob)

    def read_clip(self, path: str) -> np.ndarray:
        """uint8 frames `[T, H, W, 3]` of a user's clip file (`read_frames` at `frame_shape`)."""
        return read_frames(path, self.frame_shape)


CLASSIFICATION_DATASETS = {"maneuvers": SyntheticVideos, "ragged_npz": RaggedNpzSequences,
                           "video_files": VideoFiles, "video_folder": video_folder.VideoFolder}
DETECTION_DATASETS = {"classroom": KeyframeVideos, "ava_format": ava_format.AvaFormat}
REGISTRIES = {"classification": CLASSIFICATION_DATASETS, "detection": DETECTION_DATASETS}
_NEEDS = {"classification": "labelled clips",
          "detection": "keyframe boxes and per-person actions"}


def dataset_class(config, task: str = "classification") -> type:
    """The class registered for `config.name` (the `data` section) under `task`; generates
    nothing. Fails naming `data.name` and the datasets of the task."""
    if task not in REGISTRIES:
        raise ValueError(f"task={task!r}: expected one of {sorted(REGISTRIES)}")
    registry = REGISTRIES[task]
    if config.name not in registry:
        raise ValueError(f"data.name={config.name!r}: {task} needs {_NEEDS[task]}; expected one "
                         f"of {sorted(registry)}")
    return registry[config.name]


def make(config, task: str = "classification"):
    """The dataset named by `config.name` (the `data` section of an experiment config) in the
    registry of `task` ('classification' or 'detection')."""
    return dataset_class(config, task)(config)


def detection_spec(config) -> DetectionSpec:
    """Class names, max_people and frame_shape of the detection dataset of `config` (the `data`
    section), from builder metadata: generates nothing. Fails naming `data.name` or
    `data.builder_config` when either is unknown."""
    return dataset_class(config, "detection").spec(config)


def detection_max_people(config) -> int:
    """The most people in one clip of the detection dataset of `config`; generates nothing."""
    return detection_spec(config).max_people


def read_frames(path: str, frame_shape: tuple[int, ...]) -> np.ndarray:
    """uint8 frames `[T, H, W, 3]` of a video or a .npy / .npz frame array, resized to
    `frame_shape` `(H, W, 3)` (the training resolution), all by `video_io.read_video`.

    Arrays and videos are treated alike: any size is resized (arrays with `video_io._resize`),
    grayscale / RGBA become RGB, and values follow `video_io.to_uint8`'s rule (integers in
    [0, 255]; float frames whose maximum is <= 1 are read as [0, 1], other floats as [0, 255]).
    A bad file raises `video_io.BadInputError` (a ValueError; missing: also a FileNotFoundError)
    naming it.
    """
    if len(frame_shape) != 3 or frame_shape[2] != 3:
        raise ValueError(f"frame_shape={tuple(frame_shape)}: expected (H, W, 3)")
    return video_io.read_video(path, size=tuple(frame_shape[:2]))


def read_array(path: str, keys=("video", "frames")) -> np.ndarray:
    """The raw array of a .npy file, or of a .npz file (first of `keys` present, else its first
    array), or uint8 `[T, H, W, 3]` of a video file (`video_io.read_video`); fails naming the file
    on missing, unreadable or non-finite data. Values are returned as stored (for non-image data
    such as joint coordinates): image frames go through `read_frames` / `video_io.read_video`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if path.lower().endswith(video_io.VIDEO_EXTENSIONS):
        return video_io.read_video(path)
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                key = next((k for k in keys if k in data.files), None) or data.files[0]
                frames = data[key]
        elif path.endswith(".npy"):
            frames = np.load(path, allow_pickle=False)
        else:
            raise ValueError(f"{path}: expected a .npy or .npz file of frames or a video "
                             f"({', '.join(video_io.VIDEO_EXTENSIONS)})")
    except (OSError, EOFError, IndexError, ValueError) as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: cannot read frames ({e})") from e
    if not np.issubdtype(frames.dtype, np.number):
        raise ValueError(f"{path}: frames have dtype {frames.dtype}, expected numbers")
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{path}: frames contain NaN or inf")
    return frames
