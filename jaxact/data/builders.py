"""TFDS builders for the built-in synthetic datasets (array_record, no TensorFlow needed).

Both datasets are rendered with numpy from a per-example seed derived from (split, index), so a
builder config always produces byte-identical records. Generation fans out over processes because
rendering, not writing, dominates.

  maneuvers: {"video": uint8 [T, R, R, 3], "label": int64, "boxes": float32 [T, 4], "onset": int64,
              "length": int64}; T varies per clip.
  classroom: {"video": uint8 [T, R, R, 3], "keyframe": int64, "person_ids": int64 [P],
              "boxes": float32 [P, 4], "track_boxes": float32 [T, P, 4], "actions": uint8 [P, A],
              "owner": int16 [R, R]} (owner: the visible person, a row of boxes/actions, at each
              keyframe pixel, -1 for none; since 1.1.0).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import importlib.util
import multiprocessing
import os

import filelock
import numpy as np
import tensorflow_datasets as tfds

from jaxact.data import classroom, lessons, maneuvers

SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def example_seed(split: str, index: int) -> int:
    """Seed of one example; splits draw from disjoint seed streams."""
    return int(np.random.SeedSequence([SPLIT_IDS[split], index]).generate_state(1)[0])


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    """Sizes of the three splits plus the renderer's own config."""

    num_train: int = 0
    num_validation: int = 0
    num_test: int = 0
    render: object = None


def _sizes(split: str, config: SyntheticConfig) -> int:
    return getattr(config, f"num_{split}")


def _map_in_processes(fn, items, workers: int):
    """Ordered map; single process when small so tests don't pay process start-up."""
    if workers <= 1 or len(items) < 32:
        yield from map(fn, items)
        return
    # spawn, not fork: the parent may already run JAX's threads.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(fn, items, chunksize=8)


def _render_maneuver(args):
    split, index, render_config = args
    clip = maneuvers.render_clip(
        example_seed(split, index), index % len(maneuvers.MANEUVERS), render_config)
    return f"{split}_{index:06d}", {
        "video": clip["video"],
        "label": clip["label"],
        "boxes": clip["boxes"].astype(np.float32),
        "onset": clip["onset"],
        "length": clip["length"],
    }


def _render_classroom(args):
    split, index, render_config = args
    render = (lessons.render_clip if isinstance(render_config, lessons.LessonConfig)
              else classroom.render_clip)
    clip = render(example_seed(split, index), render_config)
    return f"{split}_{index:06d}", {
        "video": clip["video"],
        "keyframe": clip["keyframe"],
        "person_ids": clip["person_ids"].astype(np.int64),
        "boxes": clip["boxes"].astype(np.float32),
        "track_boxes": clip["track_boxes"].astype(np.float32),
        "actions": clip["actions"].astype(np.uint8),
        "owner": clip["owner"].astype(np.int16),
    }


class _SyntheticBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared split logic and metadata; subclasses name the features and the render function.

    Each subclass states `CLASS_NAMES` and `FLIP_PERMUTATION`: the class index of each class's
    mirror image (a horizontal flip), or None where a mirrored clip keeps its label(s).
    """

    VERSION = tfds.core.Version("1.0.0")
    CLASS_NAMES: tuple[str, ...] = ()
    FLIP_PERMUTATION: np.ndarray | None = None
    _render_fn = None

    @classmethod
    def preset(cls, config_name: str) -> SyntheticConfig:
        """The builder config named `config_name` (metadata only: renders nothing); an unknown
        name fails naming `data.builder_config` and the presets."""
        presets = {c.name: c for c in cls.BUILDER_CONFIGS}
        if config_name not in presets:
            raise ValueError(f"data.builder_config={config_name!r}: expected one of "
                             f"{sorted(presets)}")
        return presets[config_name]

    @classmethod
    def frame_shape(cls, config_name: str) -> tuple[int, int, int]:
        """`(H, W, 3)` of the frames of the preset `config_name` (metadata only)."""
        r = cls.preset(config_name).render.resolution
        return (r, r, 3)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in SPLIT_IDS}

    def _generate_examples(self, split):
        yield from self.render_examples(split, range(_sizes(split, self.builder_config)))

    def render_examples(self, split: str, indices):
        """`(key, example)` of the split's examples at `indices`, rendered in worker processes.

        Any index works, also past the split's size (more clips of the same seed stream), and
        nothing goes through TFDS, so there is no size limit without TensorFlow.
        """
        items = [(split, i, self.builder_config.render) for i in indices]
        workers = min(os.cpu_count() or 1, 8)
        yield from _map_in_processes(type(self)._render_fn, items, workers)


class Maneuvers(_SyntheticBuilder):
    """Top-down road clips; the target vehicle performs one of six manoeuvres."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.1.0": "`video` stored as raw bytes instead of zlib: the per-pixel noise leaves zlib "
                 "~20 % of the size to gain, and inflating it took most of the loader's time "
                 "per clip (benchmarks/input_pipeline.py). The clips are unchanged.",
        "1.0.0": "Initial release.",
    }
    _render_fn = staticmethod(_render_maneuver)
    CLASS_NAMES = maneuvers.MANEUVERS
    FLIP_PERMUTATION = maneuvers.FLIP_PERMUTATION  # left and right manoeuvres swap
    BUILDER_CONFIGS = [
        SyntheticConfig(name="tiny", num_train=48, num_validation=12, num_test=24,
                        render=maneuvers.ManeuverConfig(min_frames=24, max_frames=40)),
        # The `:tiny` config runs (learn in under a minute): easier clips, no distractor vehicles
        # and no camera jitter; seconds to generate.
        SyntheticConfig(name="small", num_train=600, num_validation=24, num_test=48,
                        render=maneuvers.ManeuverConfig(min_frames=24, max_frames=40,
                                                        max_distractors=0, jitter_px=0.0)),
        SyntheticConfig(name="default", num_train=1200, num_validation=300, num_test=600,
                        render=maneuvers.ManeuverConfig()),
        # `default` plus starting actions (indicator, braking, drift) before the onset; the
        # indicator lamps are visible at 64 px. `maneuvers.bayes_limit` gives its ceiling.
        SyntheticConfig(name="cues", num_train=1200, num_validation=300, num_test=600,
                        render=maneuvers.ManeuverConfig(cues=True)),
        # `cues` plus brake lamps while braking: braking shows from its first frame, as
        # `maneuvers.bayes_limit` assumes (same latent draws, so the same limit).
        SyntheticConfig(name="cues_brake_lights", num_train=1200, num_validation=300,
                        num_test=600,
                        render=maneuvers.ManeuverConfig(cues=True, brake_lights=True)),
    ]

    def _info(self):
        r = self.builder_config.render.resolution
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Synthetic road manoeuvres: {', '.join(maneuvers.MANEUVERS)}.",
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(None, r, r, 3), dtype=np.uint8,
                                              encoding="bytes"),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                "onset": tfds.features.Tensor(shape=(), dtype=np.int64),
                "length": tfds.features.Tensor(shape=(), dtype=np.int64),
            }),
        )


class Classroom(_SyntheticBuilder):
    """Classrooms of 2-12 students with per-person multi-label behaviours at a keyframe
    (`lessons`: 6-12 students, clips cut from whole lessons; `lessons_crowded`: the same from
    lessons of 10-12 students)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.1.0": "`owner` int16 [R, R]: the visible person (row of boxes/actions) at each keyframe "
                 "pixel, -1 for none. Videos, boxes and actions are unchanged.",
        "1.0.0": "Initial release.",
    }
    _render_fn = staticmethod(_render_classroom)
    CLASS_NAMES = classroom.BEHAVIOURS
    FLIP_PERMUTATION = None  # every behaviour is mirror-symmetric
    BUILDER_CONFIGS = [
        SyntheticConfig(name="tiny", num_train=32, num_validation=8, num_test=16,
                        render=classroom.ClassroomConfig(resolution=64, num_frames=8)),
        SyntheticConfig(name="small", num_train=300, num_validation=16, num_test=32,  # `:tiny` runs
                        render=classroom.ClassroomConfig(resolution=64, num_frames=8)),
        SyntheticConfig(name="default", num_train=1100, num_validation=200, num_test=400,
                        render=classroom.ClassroomConfig()),
        # 2 s clips cut from generated lessons (`lessons.render_clip`): keyframes mid-way through
        # a movement and students half hidden, as `--mode=analyze` meets them (`:lessons` runs).
        SyntheticConfig(name="lessons", num_train=1100, num_validation=200, num_test=400,
                        render=lessons.LessonConfig(seconds=2.0)),
        # The same from full rooms, where rows overlap and raised hands are misread (`:crowded`).
        SyntheticConfig(name="lessons_crowded", num_train=1100, num_validation=200, num_test=400,
                        render=lessons.LessonConfig(seconds=2.0, min_people=10)),
    ]

    @classmethod
    def max_people(cls, config_name: str) -> int:
        """The most people in one clip of the preset `config_name` (metadata only)."""
        return cls.preset(config_name).render.max_people

    def _info(self):
        r = self.builder_config.render.resolution
        a = len(classroom.BEHAVIOURS)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Synthetic classrooms: {', '.join(classroom.BEHAVIOURS)}.",
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(None, r, r, 3), dtype=np.uint8,
                                              encoding="zlib"),
                "keyframe": tfds.features.Tensor(shape=(), dtype=np.int64),
                "person_ids": tfds.features.Tensor(shape=(None,), dtype=np.int64),
                "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                "track_boxes": tfds.features.Tensor(shape=(None, None, 4), dtype=np.float32,
                                                    encoding="zlib"),
                "actions": tfds.features.Tensor(shape=(None, a), dtype=np.uint8),
                "owner": tfds.features.Tensor(shape=(r, r), dtype=np.int16, encoding="zlib"),
            }),
        )


BUILDERS = {"maneuvers": Maneuvers, "classroom": Classroom}


def make_builder(name: str, config_name: str, data_dir: str, **overrides):
    """Builder for a named preset; `overrides` change split sizes or render fields.

    An overridden config gets a name that encodes the overrides, so distinct settings never share
    (and silently reuse) a cache directory.
    """
    if name not in BUILDERS:
        raise ValueError(f"data.name={name!r}: unknown dataset; expected one of {sorted(BUILDERS)}")
    cls = BUILDERS[name]
    config = cls.preset(config_name)
    if overrides:
        split_fields = {k: v for k, v in overrides.items() if k.startswith("num_")}
        render_fields = {k: v for k, v in overrides.items() if not k.startswith("num_")}
        bad = set(render_fields) - {f.name for f in dataclasses.fields(config.render)}
        if bad:
            raise ValueError(f"data.overrides: unknown field(s) {sorted(bad)} for {name}")
        suffix = "_".join(f"{k}{v}" for k, v in sorted(overrides.items()))
        config = dataclasses.replace(
            config, name=f"{config_name}_{suffix}", **split_fields,
            render=dataclasses.replace(config.render, **render_fields))
    _check_split_sizes(name, config)
    return cls(config=config, data_dir=os.path.expanduser(data_dir), file_format="array_record")


# TFDS shuffles each split in memory up to 1 GB and spills to disk through TensorFlow beyond that.
_SHUFFLE_BUFFER_BYTES = 1000 << 20


def _check_split_sizes(name: str, config: SyntheticConfig) -> None:
    """Fails up front (not after minutes of rendering) when a split cannot be written without TF."""
    if importlib.util.find_spec("tensorflow") is not None:
        return
    render = config.render
    frames = getattr(render, "num_frames", None) or (render.min_frames + render.max_frames) / 2
    clip_bytes = frames * render.resolution**2 * 3  # noisy frames barely compress
    for split in SPLIT_IDS:
        size = _sizes(split, config) * clip_bytes
        if size > 0.95 * _SHUFFLE_BUFFER_BYTES:
            raise ValueError(
                f"{name}/{config.name}: split '{split}' would be ~{size / 1e9:.1f} GB, more than "
                f"TFDS can shuffle in memory without TensorFlow (1 GB): lower num_{split} or "
                "install the [tf] extra")


@functools.cache
def _prepared(name, config_name, data_dir, overrides):
    probe = make_builder(name, config_name, data_dir, **dict(overrides))
    # Processes sharing a data_dir (hosts of one job, test workers) would otherwise race to move
    # their finished copies into place; the lock makes the later ones find it prepared and skip.
    # The builder is made under the lock so that it reads the info of a copy finished meanwhile.
    os.makedirs(probe.data_dir_root, exist_ok=True)
    lock_name = f"{probe.name}.{probe.builder_config.name}.{probe.version}.lock"
    with filelock.FileLock(os.path.join(probe.data_dir_root, lock_name)):
        builder = make_builder(name, config_name, data_dir, **dict(overrides))
        builder.download_and_prepare(file_format="array_record")
    return builder


def load(name: str, config_name: str, data_dir: str, overrides: dict | None = None):
    """Generates the dataset on first use (deterministic), then returns the prepared builder."""
    return _prepared(name, config_name, data_dir, tuple(sorted((overrides or {}).items())))
