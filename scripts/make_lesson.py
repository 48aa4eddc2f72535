"""Writes one synthetic classroom lesson as an MP4 with its per-frame ground truth.

Usage (from the repository root; both forms work):
  python scripts/make_lesson.py --seed=0 --seconds=60 --out=DIR [--fps=8] [--resolution=128]
  python -m scripts.make_lesson --seed=0 --seconds=60 --out=DIR

DIR/lesson.mp4: the video at --fps. DIR/ground_truth.json (written last, so its presence means the
lesson is complete): {"seed", "fps", "seconds", "num_frames", "resolution", "behaviours",
"people": [{"id", "seat": [row, col]}], "frames": [{"time", "people": [{"id", "box": [x1, y1,
x2, y2] normalised, "behaviours": [names], "seat"}]}]}, seats 1-based with row 1 the front row;
a person hidden in a frame is left out of that frame. See `jaxact.data.lessons`.
"""

from __future__ import annotations

from absl import app, flags

from jaxact.data import lessons

_SEED = flags.DEFINE_integer("seed", 0, "Lesson seed (room, class and behaviours).", lower_bound=0)
_SECONDS = flags.DEFINE_float("seconds", 60.0, "Lesson length in seconds.", lower_bound=0.0)
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_FPS = flags.DEFINE_integer("fps", 8, "Frames per second.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 128, "Frame height and width in pixels.",
                                   lower_bound=16)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = lessons.LessonConfig(seconds=_SECONDS.value, fps=_FPS.value,
                                  resolution=_RESOLUTION.value)
    out = lessons.write_lesson(_SEED.value, config, _OUT.value)
    print(f"lesson seed {_SEED.value}: {out['num_people']} people, {out['num_frames']} frames "
          f"({config.seconds:g} s at {config.fps} fps) -> {out['video']}, {out['ground_truth']}")


if __name__ == "__main__":
    app.run(main)
