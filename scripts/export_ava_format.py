"""Writes the built-in synthetic classroom data in AVA format: a complete, working example of the
layout that `configs/ava_detector.py` (`data.name='ava_format'`) reads.

Usage (from the repository root; both forms work):
  python scripts/export_ava_format.py --out=DIR [--builder_config=tiny|small|default]
      [--num_clips=N] [--splits=train,validation,test] [--noframes] [--novideos]
  python -m scripts.export_ava_format --out=DIR

DIR/frames/VIDEO_ID/img_00001.jpg ..., DIR/videos/VIDEO_ID.mp4, DIR/annotations/{train,
validation,test}.csv, labelmap.pbtxt and an empty excluded_timestamps.csv; one video per clip,
its keyframe at second 1 (`jaxact.data.ava_format.export_classroom`). Prints the files written
and the command that trains the detector on them.
"""

from __future__ import annotations

import os
import shlex

from absl import app, flags, logging

from jaxact.data import ava_format

_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_BUILDER_CONFIG = flags.DEFINE_enum("builder_config", "tiny", ["tiny", "small", "default"],
                                    "Classroom preset: its clips, resolution and split sizes.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", None, "At most this many clips per split "
                                  "(default: the preset's split sizes).", lower_bound=1)
_SPLITS = flags.DEFINE_list("splits", ["train", "validation", "test"], "Splits to write.")
_FRAMES = flags.DEFINE_bool("frames", True, "Write JPEG frame folders.")
_VIDEOS = flags.DEFINE_bool("videos", True, "Write MP4 videos.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # no JAX backend chatter (the progress bars ask it)
    if not (_FRAMES.value or _VIDEOS.value):
        raise app.UsageError("--noframes and --novideos: nothing to write frames to")
    if bad := sorted(set(_SPLITS.value) - {"train", "validation", "test"}):
        raise app.UsageError(f"--splits: unknown {bad}; expected train, validation, test")
    if not {"train", "test"} <= set(_SPLITS.value):
        raise app.UsageError("--splits: the detector needs train and test")
    out_dir = os.path.abspath(os.path.expanduser(_OUT.value))
    out = ava_format.export_classroom(out_dir, _BUILDER_CONFIG.value, _NUM_CLIPS.value,
                                      tuple(_SPLITS.value), write_frames=_FRAMES.value,
                                      write_videos=_VIDEOS.value)
    clips = ", ".join(f"{n} {split}" for split, n in out["num_clips"].items())
    size = "x".join(map(str, out["frame_size"]))
    print(f"classroom/{_BUILDER_CONFIG.value} in AVA format ({clips} clips, {size} px, "
          f"{out['fps']} fps, keyframes at second 1) -> {out_dir}")
    if _FRAMES.value:
        print(f"  frames:      {out['frames']}/VIDEO_ID/img_00001.jpg ...")
    if _VIDEOS.value:
        print(f"  videos:      {out['videos']}/VIDEO_ID.mp4")
    for split in out["num_clips"]:
        print(f"  annotations: {out[f'{split}_csv']}")
    print(f"  label map:   {out['label_map']}\n  excluded:    {out['excluded_csv']} (empty)")
    overrides = dict(out["overrides"])
    overrides["data.frame_size"] = f"({out['frame_size'][0]},{out['frame_size'][1]})"
    flags_text = " \\\n    ".join(shlex.quote(f"--config.{k}={v}") for k, v in overrides.items())
    print("train the detector on it:\n  python launch.py --config=configs/ava_detector.py:tiny "
          f"--workdir=/tmp/ava_tiny \\\n    {flags_text}")


if __name__ == "__main__":
    app.run(main)
