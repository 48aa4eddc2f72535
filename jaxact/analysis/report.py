"""A whole lesson's keyframe detections -> a report a person can read (numpy, matplotlib).

`analyze` tracks the people (`tracking`), gives each track a seat (`seats`) and per behaviour the
intervals it was on (`intervals`: scores smoothed over time, then hysteresis); `summary_text`,
`plot_timeline` and `plot_counts` present the result and `write_report` writes it all out.

Conventions: an interval's ``start`` / ``end`` are the times of its first and last on keyframe
(as in `intervals`), and its ``seconds`` are ``end - start + dt``, ``dt`` the lesson's keyframe
spacing (median): each keyframe stands for ``dt`` seconds, so a hand raised on keyframes 4.0 to
8.5 s at 2 keyframes/s lasts 5.0 s, a single on keyframe ``dt``. ``min_duration`` applies to these
seconds, and ``person_seconds`` / ``longest`` sum / compare them. Per-second counts follow
`intervals.counts_per_second`: a person counts in every whole second an interval meets.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from jaxact import files
from jaxact.analysis import intervals, seats, tracking
from jaxact.evaluation.behaviour_maps import behaviour_colours

_SLACK = 1e-9  # keeps an interval of exactly min_duration despite rounding of times


# Fields of AnalysisSettings that `AnalysisSettings.per_behaviour` may set per behaviour.
BEHAVIOUR_FIELDS = ("smooth_seconds", "on", "off", "min_duration")


def _is_number(v) -> bool:
    # bool is a number too, but a flag here is always a mistake.
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _non_negative(where: str, v) -> float:
    if not (_is_number(v) and v >= 0):
        raise ValueError(f"{where} must be a finite number >= 0, got {v!r}")
    return float(v)  # numpy scalars would not go into JSON


@dataclasses.dataclass(frozen=True)
class AnalysisSettings:
    """``smooth_seconds``: moving-average window of the behaviour scores; ``on`` / ``off``:
    hysteresis thresholds; ``min_duration``: shortest interval kept (seconds, module docstring);
    ``max_gap``: an interval closes across a detection gap longer than this (None: never);
    ``merge_iou``: tracks broken by a long gap join when their mean boxes overlap this much
    (`tracking.merge_fragments`; above 1: never). ``seat_min_coverage``: tracks detected at
    fewer than this fraction of the lesson's keyframes take the seat of the nearest track that
    is detected at more (`seats.assign_seats` ``layout``), so brief false detections do not
    renumber the rows and seats of everyone else (0: every track places seats, as before
    this setting existed).
    ``per_behaviour``: behaviour name -> some of `BEHAVIOUR_FIELDS` that replace the shared
    values for that behaviour, e.g.
    ``{"turn_to_neighbour": {"on": 0.4, "off": 0.3}}``: a detector's scores are not equally
    confident for every behaviour, so one pair of thresholds misses the weaker ones (calibrate
    on labelled lessons: `benchmarks/analysis_calibration.py`)."""

    tracker: tracking.TrackerSettings = dataclasses.field(default_factory=tracking.TrackerSettings)
    smooth_seconds: float = 1.0
    on: float = 0.6
    off: float = 0.4
    min_duration: float = 0.5
    max_gap: float | None = 2.0
    merge_iou: float = 0.5
    seat_min_coverage: float = 0.5
    per_behaviour: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.tracker, tracking.TrackerSettings):
            raise ValueError(f"AnalysisSettings.tracker must be a TrackerSettings: {self.tracker!r}")
        for name in ("smooth_seconds", "on", "off", "min_duration", "max_gap", "merge_iou"):
            v = getattr(self, name)
            if name == "max_gap" and v is None:
                continue
            if name == "max_gap" and not (_is_number(v) and v > 0):
                raise ValueError(f"AnalysisSettings.max_gap must be a finite number > 0, "
                                 f"got {v!r}")
            object.__setattr__(self, name, _non_negative(f"AnalysisSettings.{name}", v))
        if self.off > self.on:
            raise ValueError(f"AnalysisSettings.off ({self.off}) must be <= on ({self.on})")
        coverage = _non_negative("AnalysisSettings.seat_min_coverage", self.seat_min_coverage)
        if coverage > 1:
            raise ValueError(f"AnalysisSettings.seat_min_coverage must be in [0, 1], got {coverage}")
        object.__setattr__(self, "seat_min_coverage", coverage)
        if not isinstance(self.per_behaviour, Mapping):
            raise ValueError(f"AnalysisSettings.per_behaviour must map behaviour names to "
                             f"settings, got {self.per_behaviour!r}")
        clean = {}
        for name, fields in self.per_behaviour.items():
            where = f"AnalysisSettings.per_behaviour.{name}"
            if not isinstance(fields, Mapping):
                raise ValueError(f"{where} must be a mapping of {BEHAVIOUR_FIELDS}, got {fields!r}")
            unknown = sorted(set(fields) - set(BEHAVIOUR_FIELDS))
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}; "
                                 f"known: {', '.join(BEHAVIOUR_FIELDS)}")
            clean[str(name)] = {k: _non_negative(f"{where}.{k}", v) for k, v in fields.items()}
            on, off = (clean[str(name)].get(k, getattr(self, k)) for k in ("on", "off"))
            if off > on:
                raise ValueError(f"{where}: off ({off}) must be <= on ({on})")
        object.__setattr__(self, "per_behaviour", clean)

    def __hash__(self):  # per_behaviour is a dict
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True))

    def for_behaviour(self, name: str) -> dict[str, float]:
        """``{field: value}`` of `BEHAVIOUR_FIELDS` that apply to behaviour ``name``."""
        return {k: self.per_behaviour.get(name, {}).get(k, getattr(self, k))
                for k in BEHAVIOUR_FIELDS}

    def check_behaviours(self, class_names: Sequence[str]) -> None:
        """Raises naming ``per_behaviour`` entries that are not among ``class_names``."""
        unknown = sorted(set(self.per_behaviour) - set(class_names))
        if unknown:
            raise ValueError(f"AnalysisSettings.per_behaviour: unknown behaviour(s) "
                             f"{', '.join(unknown)}; the detector's are {', '.join(class_names)}")

    @classmethod
    def from_dict(cls, d: Mapping) -> AnalysisSettings:
        """Inverse of `dataclasses.asdict` (e.g. ``meta["settings"]``); unknown keys raise."""
        kw, tracker = dict(d), d.get("tracker")
        unknown = sorted(set(kw) - {f.name for f in dataclasses.fields(cls)})
        if isinstance(tracker, Mapping):
            known = {f.name for f in dataclasses.fields(tracking.TrackerSettings)}
            unknown += sorted(f"tracker.{k}" for k in set(tracker) - known)
        if unknown:
            raise ValueError(f"unknown AnalysisSettings field(s): {', '.join(unknown)}")
        if isinstance(tracker, Mapping):
            kw["tracker"] = tracking.TrackerSettings(**tracker)
        return cls(**kw)


# Readable words per behaviour: (one, many, over the lesson), as in "At 12 s: 1 raised hand",
# "3 raised hands", "hand raised 14 times by 6 students". Other names are used as they are.
WORDS = {
    "sit": ("sitting", "sitting", "sat"),
    "raise_hand": ("raised hand", "raised hands", "hand raised"),
    "stand": ("standing", "standing", "stood up"),
    "write": ("writing", "writing", "wrote"),
    "turn_to_neighbour": ("turned to a neighbour",) * 3,
}


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def build_tracks(keyframes: Iterable[Mapping], settings: AnalysisSettings | None = None
                 ) -> list[tracking.Track]:
    """The people of a lesson: keyframes (as for `analyze`) tracked, broken tracks merged."""
    settings = settings or AnalysisSettings()
    return tracking.merge_fragments(tracking.track_sequence(keyframes, settings.tracker),
                                    settings.merge_iou)


def analyze(keyframes: Iterable[Mapping], class_names: Sequence[str], duration: float,
            settings: AnalysisSettings | None = None,
            tracks: Sequence[tracking.Track] | None = None) -> dict:
    """JSON-able analysis of a lesson of ``duration`` seconds (the content of analysis.json).

    ``keyframes``: in time order, each ``{"time", "boxes" [N, 4] normalised xyxy, "scores" [N],
    "behaviour_scores" [N, A]}`` with ``A = len(class_names)``. ``tracks``: `build_tracks` of
    them, when the caller has it already. Returns ``{"tracks", "per_behaviour", "per_second",
    "meta"}`` (fields: the module docstring and the code below); tracks are sorted by seat,
    front row first, then left to right, and keep the ids of ``tracks``.
    """
    settings = settings or AnalysisSettings()
    names = [str(n) for n in class_names]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"class_names must be non-empty and unique: {names}")
    settings.check_behaviours(names)
    duration = float(duration)
    if not (math.isfinite(duration) and duration >= 0):
        raise ValueError(f"duration must be a finite number >= 0, got {duration}")
    frames = list(keyframes)
    times = np.unique([float(f["time"]) for f in frames])
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    tracks = build_tracks(frames, settings) if tracks is None else list(tracks)
    for t in tracks:
        if t.behaviour_scores.shape[1] != len(names):
            raise ValueError(f"{t.behaviour_scores.shape[1]} behaviour scores per detection for "
                             f"{len(names)} class_names")
    # Heights floored: a track of degenerate boxes must not make assign_seats reject the lesson.
    # Rows from the tracks' bottom edges (at the desks): they scatter far less within a row
    # than box centres do.
    coverage = [len(np.unique(t.times)) / max(len(times), 1) for t in tracks]
    rc = seats.assign_seats([t.seat_point for t in tracks],
                            heights=[max(t.mean_height, 1e-6) for t in tracks],
                            layout=[c >= settings.seat_min_coverage for c in coverage])

    out_tracks = []
    for (row, col), t in sorted(zip(rc.tolist(), tracks, strict=True),
                                key=lambda p: (*p[0], p[1].id)):
        behaviours = {}
        for a, name in enumerate(names):
            b = settings.for_behaviour(name)
            smoothed = intervals.smooth(t.behaviour_scores[:, a], t.times, b["smooth_seconds"])
            found = intervals.hysteresis_intervals(
                smoothed, t.times, b["on"], b["off"],
                min_duration=b["min_duration"] - dt - _SLACK, max_gap=settings.max_gap)
            behaviours[name] = [{"start": iv.start, "end": iv.end, "seconds": iv.end - iv.start + dt,
                                 "mean_score": iv.mean_score} for iv in found]
        out_tracks.append({"id": int(t.id), "seat": [row, col], "seat_name": seats.seat_name(row, col),
                           "mean_box": t.boxes.mean(axis=0).tolist(), "first_seen": float(t.times[0]),
                           "last_seen": float(t.times[-1]), "behaviours": behaviours})

    per_behaviour = {}
    for name in names:
        found = [(tr["seat_name"], iv) for tr in out_tracks for iv in tr["behaviours"][name]]
        longest = max(found, key=lambda p: p[1]["seconds"], default=None)  # ties: first by seat
        counts = intervals.counts_per_second(
            [[(iv["start"], iv["end"]) for iv in tr["behaviours"][name]] for tr in out_tracks],
            duration)
        per_behaviour[name] = {
            "intervals": len(found),
            "person_seconds": float(sum(iv["seconds"] for _, iv in found)),
            "students": [tr["seat_name"] for tr in out_tracks if tr["behaviours"][name]],
            "longest": None if longest is None else {"seat_name": longest[0],
                                                     "seconds": longest[1]["seconds"]},
            "count_per_second": counts.tolist()}
    num_seconds = len(per_behaviour[names[0]]["count_per_second"])
    return {
        "tracks": out_tracks,
        "per_behaviour": per_behaviour,
        "per_second": [{"time": s, "counts": {n: per_behaviour[n]["count_per_second"][s]
                                              for n in names}} for s in range(num_seconds)],
        "meta": {"duration": duration, "num_keyframes": len(frames), "class_names": names,
                 "keyframe_spacing": dt, "settings": dataclasses.asdict(settings)}}


def summary_text(analysis: Mapping, at: float | None = None) -> str:
    """Human-readable lines: the lesson, who did what in the second holding time ``at`` (default:
    the second with the most raised hands, else the last one), then per behaviour over the
    lesson. Seats are listed front row first, left to right."""
    meta, tracks = analysis["meta"], analysis["tracks"]
    head = f"Lesson: {meta['duration']:g} s, {_count(meta['num_keyframes'], 'keyframe', 'keyframes')}"
    if not tracks:
        return f"{head}: no students detected."
    rows = len({tr["seat"][0] for tr in tracks})
    lines = [f"{head}, {_count(len(tracks), 'student', 'students')} in {_count(rows, 'row', 'rows')}."]
    names, per = meta["class_names"], analysis["per_behaviour"]
    num_seconds = len(analysis["per_second"])
    if num_seconds:
        if at is None:
            hands = per.get("raise_hand", {}).get("count_per_second", [0])
            second = int(np.argmax(hands)) if max(hands) > 0 else num_seconds - 1
        else:
            if not math.isfinite(at):
                raise ValueError(f"at must be finite, got {at!r}")
            second = min(max(math.floor(at), 0), num_seconds - 1)
        moment = []
        for name in names:
            # The students of count_per_second[second]: an interval meets the whole second.
            who = [tr["seat_name"].replace(",", "") for tr in tracks
                   if any(math.floor(iv["start"]) <= second <= math.floor(iv["end"])
                          for iv in tr["behaviours"][name])]
            if who:
                one, many, _ = WORDS.get(name, (name,) * 3)
                moment.append(f"At {second} s: {_count(len(who), one, many)}: {', '.join(who)}")
        lines += moment or [f"At {second} s: no behaviour detected"]
    lines.append("Over the lesson:")
    for name in names:
        b, did = per[name], WORDS.get(name, (name,) * 3)[2]
        line = f"{did} {_count(b['intervals'], 'time', 'times')}"
        if b["intervals"]:
            line += (f" by {_count(len(b['students']), 'student', 'students')}; longest "
                     f"{b['longest']['seconds']:.1f} s by {b['longest']['seat_name']}")
        lines.append(line)
    return "\n".join(lines)


def _figure(figsize) -> tuple[Figure, object]:
    fig = Figure(figsize=figsize, layout="constrained")  # room for the legend outside the axes
    FigureCanvasAgg(fig)  # renders without pyplot state
    return fig, fig.subplots()


def plot_timeline(analysis: Mapping) -> Figure:
    """One lane per student (front row at the top), inside it one thin slot per behaviour with a
    bar per interval, ``seconds`` wide (module docstring); colours of `behaviour_colours`."""
    names, tracks = analysis["meta"]["class_names"], analysis["tracks"]
    colours = behaviour_colours(len(names))[1:]
    fig, ax = _figure((10.0, 1.4 + 0.35 * max(len(tracks), 1)))
    slot = 0.8 / len(names)  # behaviours may overlap in time (sitting and a raised hand)
    for lane, tr in enumerate(tracks):
        for a, name in enumerate(names):
            bars = [(iv["start"], iv["seconds"]) for iv in tr["behaviours"][name]]
            ax.broken_barh(bars, (lane - 0.4 + a * slot, slot), facecolors=colours[a])
    ax.set_yticks(range(len(tracks)), [tr["seat_name"] for tr in tracks])
    ax.set_ylim(max(len(tracks), 1) - 0.5, -0.5)  # inverted: first lane (front row) on top
    ax.set_xlim(0, max(analysis["meta"]["duration"], 1e-3))
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    if not tracks:
        ax.text(0.5, 0.5, "no students detected", ha="center", transform=ax.transAxes)
    ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, names, strict=True)],
              fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_counts(analysis: Mapping) -> Figure:
    """Per behaviour the number of students in each whole second, as step lines."""
    names, per = analysis["meta"]["class_names"], analysis["per_behaviour"]
    colours = behaviour_colours(len(names))[1:]
    fig, ax = _figure((10.0, 3.6))
    num_seconds = len(analysis["per_second"])
    for a, name in enumerate(names if num_seconds else ()):
        ax.stairs(per[name]["count_per_second"], np.arange(num_seconds + 1), baseline=None,
                  color=colours[a], linewidth=1.5, label=name)
    ax.set_xlim(0, max(num_seconds, 1))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("students")
    ax.grid(alpha=0.3)
    if num_seconds:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "empty lesson", ha="center", transform=ax.transAxes)
    return fig


INTERVAL_COLUMNS = ("seat_name", "row", "column", "track_id", "behaviour", "start", "end",
                    "seconds", "mean_score")


def intervals_csv(analysis: Mapping) -> str:
    """Every behaviour interval of every student as CSV (`INTERVAL_COLUMNS`), a row each, in
    seat order (front row first, left to right), then by behaviour and start."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(INTERVAL_COLUMNS)
    names = analysis["meta"]["class_names"]
    for tr in sorted(analysis["tracks"], key=lambda t: (*t["seat"], t["id"])):
        for name in names:
            for iv in tr["behaviours"][name]:
                writer.writerow([tr["seat_name"], *tr["seat"], tr["id"], name,
                                 f"{iv['start']:.3f}", f"{iv['end']:.3f}", f"{iv['seconds']:.3f}",
                                 f"{iv['mean_score']:.4f}"])
    return out.getvalue()


def counts_csv(analysis: Mapping) -> str:
    """Per whole second: `second` (its start) and how many students had each behaviour on."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = analysis["meta"]["class_names"]
    writer.writerow(["second", *names])
    for row in analysis["per_second"]:
        writer.writerow([row["time"], *(row["counts"][n] for n in names)])
    return out.getvalue()


def write_report(analysis: Mapping, output_dir: str) -> dict[str, str]:
    """Writes summary.txt, intervals.csv, counts.csv, timeline.png, counts.png and, last,
    analysis.json into ``output_dir`` (created if missing), each atomically; returns file name ->
    path. analysis.json marks a finished report (`lesson.analyze_videos` resumes by it), so
    a failure before it leaves none."""
    os.makedirs(output_dir, exist_ok=True)
    writers = {
        "summary.txt": lambda f: f.write((summary_text(analysis) + "\n").encode()),
        "intervals.csv": lambda f: f.write(intervals_csv(analysis).encode()),
        "counts.csv": lambda f: f.write(counts_csv(analysis).encode()),
        "timeline.png": lambda f: plot_timeline(analysis).savefig(f, format="png", dpi=100),
        "counts.png": lambda f: plot_counts(analysis).savefig(f, format="png", dpi=100),
        "analysis.json": lambda f: f.write(json.dumps(analysis, indent=2, allow_nan=False).encode()),
    }
    return {name: files.write_atomic(os.path.join(output_dir, name), write)
            for name, write in writers.items()}
