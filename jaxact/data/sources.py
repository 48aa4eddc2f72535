"""Labelled clip datasets for the classifiers, picked by `config.data.name`.

Each offers the same small interface, so the classifier never asks where clips come from:
  class_names               sorted class names
  description               what results.json calls the dataset
  source(split)             random-access records `{"video": [T, ...], "label": int}`
  transform(train, fraction)  record -> fixed-shape example `{"video": f32 [num_frames, ...], ...}`
  read_clip(path)           a user's clip file -> raw frames `[T, ...]` (for --mode=predict)
"""

from __future__ import annotations

import os

import numpy as np

from jaxact.data import builders, pipeline, sequences


class SyntheticVideos:
    """A built-in TFDS video dataset (`data.name` in `builders.BUILDERS`), uint8 `[T, H, W, 3]`."""

    def __init__(self, config):
        self.config = config
        self.builder = builders.load(config.name, config.builder_config, config.data_dir)
        self.class_names = list(self.builder.CLASS_NAMES)
        self.description = f"{config.name}/{config.builder_config}"

    def source(self, split: str):
        return self.builder.as_data_source(split)

    def transform(self, train: bool, fraction: float = 1.0):
        c = self.config
        return pipeline.ManeuverTransform(num_frames=c.num_frames, train=train, fraction=fraction,
                                          min_fraction=c.min_fraction, flip_prob=c.flip_prob)

    def read_clip(self, path: str) -> dict:
        frame_shape = self.source("train")[0]["video"].shape[1:]
        frames = read_array(path, ("video", "frames"))
        if frames.ndim != 4 or tuple(frames.shape[1:]) != tuple(frame_shape) or len(frames) == 0:
            raise ValueError(f"{path}: frames have shape {frames.shape}, expected "
                             f"[T>=1, {', '.join(map(str, frame_shape))}]")
        return {"video": frames.astype(np.uint8), "label": 0,
                "boxes": np.zeros((len(frames), 4), np.float32)}


class RaggedNpzSequences:
    """Per-frame vectors from ragged-sequence npz files (`data.train_path`, `data.test_path`)."""

    def __init__(self, config):
        self.config = config
        paths = {"train": config.train_path, "test": config.test_path}
        self.class_names, self._sources = sequences.load_splits(paths)
        self.description = f"ragged_npz:{config.train_path}|{config.test_path}"
        self.mean = self.std = None
        if config.standardize:
            self.mean, self.std = sequences.feature_statistics(self._sources["train"],
                                                               self.transform(train=False))

    def source(self, split: str):
        if split not in self._sources:
            raise ValueError(f"split {split!r}: ragged npz data has only {sorted(self._sources)}")
        return self._sources[split]

    def transform(self, train: bool, fraction: float = 1.0):
        c = self.config
        return sequences.SequenceTransform(
            num_frames=c.num_frames, train=train, fraction=fraction, min_fraction=c.min_fraction,
            crop_min=c.crop_min, scale_range=c.scale_range, rotation_degrees=c.rotation_degrees,
            mirror_prob=c.mirror_prob, joint_order=c.joint_order, features=tuple(c.features),
            mean=self.mean, std=self.std)

    def read_clip(self, path: str) -> dict:
        frame_shape = self._sources["train"].sequences.frames.shape[1:]
        frames = read_array(path, ("frames", "video"))
        if frames.ndim < 1 or tuple(frames.shape[1:]) != tuple(frame_shape) or len(frames) == 0:
            raise ValueError(f"{path}: frames have shape {frames.shape}, expected "
                             f"[T>=1, {', '.join(map(str, frame_shape))}]")
        return {"video": frames.astype(np.float32), "label": 0}


DATASETS = {**{name: SyntheticVideos for name in builders.BUILDERS},
            "ragged_npz": RaggedNpzSequences}


def make(config):
    """The dataset named by `config.name` (the `data` section of an experiment config)."""
    if config.name not in DATASETS:
        raise ValueError(f"data.name={config.name!r}: expected one of {sorted(DATASETS)}")
    return DATASETS[config.name](config)


def read_array(path: str, keys=("video", "frames")) -> np.ndarray:
    """The frames array of a .npy file, or of a .npz file (first of `keys` present, else its
    first array); fails naming the file on missing, unreadable or non-finite data."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                key = next((k for k in keys if k in data.files), None) or data.files[0]
                frames = data[key]
        elif path.endswith(".npy"):
            frames = np.load(path, allow_pickle=False)
        else:
            raise ValueError(f"{path}: expected a .npy or .npz file of frames")
    except (OSError, EOFError, IndexError, ValueError) as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: cannot read frames ({e})") from e
    if not np.issubdtype(frames.dtype, np.number):
        raise ValueError(f"{path}: frames have dtype {frames.dtype}, expected numbers")
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{path}: frames contain NaN or inf")
    return frames
