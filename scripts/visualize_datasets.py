"""Writes contact sheets of the synthetic datasets for a visual sanity check.

Usage: python scripts/visualize_datasets.py --out DIR [--per_maneuver 2] [--num 6]

DIR/maneuvers_grid.png: one row per clip (`per_maneuver` clips of each manoeuvre), 8 frames across
time with the target box (red before the onset, green from the onset on; a legend says so).
DIR/classroom_grid.png: keyframes of `num` classroom clips with boxes and behaviour names.
"""

from __future__ import annotations

import argparse
import os

import matplotlib
import matplotlib.patches as mpatches
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxact.data import classroom, maneuvers

_COLS = 8
_BEFORE, _AFTER = "red", "lime"  # target box before / from the onset
_SHORT = {
    "sit": "sit",
    "raise_hand": "raise",
    "stand": "stand",
    "write": "write",
    "turn_to_neighbour": "turn",
}


def _rect(box, size, colour, lw=1.0):
    x1, y1, x2, y2 = np.asarray(box) * size
    return mpatches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec=colour, lw=lw)


def maneuvers_grid(path, per_maneuver, seed):
    cfg = maneuvers.ManeuverConfig()
    rows = [(label, seed + 1000 * label + i)
            for label in range(len(maneuvers.MANEUVERS)) for i in range(per_maneuver)]
    # Frames of about an inch, smaller for many rows, so that the sheet stays a page or two.
    cell = min(1.1, 24.0 / len(rows))
    legend = 0.45  # inches above the grid
    fig = Figure(figsize=(cell * _COLS + 0.9, cell * 1.16 * len(rows) + legend))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), _COLS, squeeze=False)
    for r, (label, clip_seed) in enumerate(rows):
        clip = maneuvers.render_clip(clip_seed, label, cfg)
        t_len, onset = clip["length"], clip["onset"]
        frames = np.linspace(0, t_len - 1, _COLS).round().astype(int)
        for col, t in enumerate(frames):
            ax = axes[r, col]
            ax.imshow(clip["video"][t], interpolation="nearest")
            ax.add_patch(_rect(clip["boxes"][t], cfg.resolution, _AFTER if t >= onset else _BEFORE))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t={t}" + (" *" if t >= onset else ""), fontsize=6, pad=1)
        axes[r, 0].set_ylabel(f"{maneuvers.MANEUVERS[label]}\nT={t_len}, onset {onset}", fontsize=6)
    handles = [mpatches.Patch(fill=False, ec=_BEFORE, label="target box before the onset"),
               mpatches.Patch(fill=False, ec=_AFTER,
                              label="target box from the onset on (frame title t=... *)")]
    fig.legend(handles=handles, loc="upper center", ncol=2, fontsize=7, frameon=False,
               title="T: clip length; onset: first frame off the straight path", title_fontsize=7)
    fig.tight_layout(pad=0.2, rect=(0, 0, 1, 1 - legend / fig.get_figheight()))
    fig.savefig(path, dpi=110)


def classroom_grid(path, num, seed):
    cfg = classroom.ClassroomConfig()
    cols = min(num, 3)
    nrows = int(np.ceil(num / cols))
    fig = Figure(figsize=(4.2 * cols, 4.4 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False)
    colours = matplotlib.colormaps["tab20"](np.linspace(0, 1, 20))
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= num:
            continue
        clip = classroom.render_clip(seed + i, cfg)
        kf = clip["keyframe"]
        ax.imshow(clip["video"][kf], interpolation="nearest")
        for p in range(clip["num_people"]):
            colour = colours[p % 20]
            ax.add_patch(_rect(clip["boxes"][p], cfg.resolution, colour, lw=1.2))
            names = [_SHORT[classroom.BEHAVIOURS[a]] for a in np.flatnonzero(clip["actions"][p])]
            x1, y1 = clip["boxes"][p, :2] * cfg.resolution
            ax.text(
                x1,
                y1 - 1,
                f"{clip['person_ids'][p]}:" + "+".join(names),
                fontsize=5.5,
                color="white",
                va="bottom",
                bbox={"facecolor": colour, "alpha": 0.6, "pad": 0.5, "lw": 0},
            )
        ax.set_title(f"seed {seed + i}, keyframe {kf}, P={clip['num_people']}", fontsize=8)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--per_maneuver", type=int, default=2, help="maneuvers clips per class")
    parser.add_argument("--num", type=int, default=6, help="classroom clips")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    maneuvers_grid(os.path.join(args.out, "maneuvers_grid.png"), args.per_maneuver, args.seed)
    classroom_grid(os.path.join(args.out, "classroom_grid.png"), args.num, args.seed)
    print(f"wrote {args.out}/maneuvers_grid.png and {args.out}/classroom_grid.png")


if __name__ == "__main__":
    main()
