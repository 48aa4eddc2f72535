"""Behaviour scores over time -> on/off intervals and per-second counts (numpy, host side).

Times are seconds, non-decreasing; a track's samples are the keyframes where it was detected,
so spacing is irregular and may have gaps.

Interval convention: an `Interval` spans the sample times of its first and last "on" samples,
both inclusive, so a single-sample interval has ``start == end`` (zero duration), and
`counts_per_second` counts a person in every second that one of their (closed) intervals
meets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

# Slack on window edges, so a sample exactly window / 2 away stays in despite rounding of times.
_EDGE_SLACK = 1e-9


class Interval(NamedTuple):
    """``[start, end]`` seconds (first and last on-sample times) and the mean score of the
    samples in it."""

    start: float
    end: float
    mean_score: float


def _times(times, k: int) -> np.ndarray:
    t = np.asarray(times, np.float64).reshape(-1)
    if len(t) != k:
        raise ValueError(f"{len(t)} times for {k} samples")
    if not np.isfinite(t).all() or (np.diff(t) < 0).any():
        raise ValueError("times must be finite and non-decreasing")
    return t


def smooth(scores, times, window_seconds: float) -> np.ndarray:
    """Centred moving average over time: each sample becomes the mean of the samples within
    ``window_seconds / 2`` of it (inclusive). ``scores`` ``[K, A]`` (or ``[K]``), ``times``
    ``[K]`` -> float64 of the shape of ``scores``. Being time-based, it handles irregular
    spacing, and samples across a gap wider than the window never mix. A window <= 0 returns a
    copy."""
    x = np.asarray(scores, np.float64)
    t = _times(times, x.shape[0] if x.ndim else 0)
    if window_seconds <= 0 or len(t) == 0:
        return x.copy()
    half = window_seconds / 2 + _EDGE_SLACK
    lo = np.searchsorted(t, t - half, side="left")
    hi = np.searchsorted(t, t + half, side="right")  # hi > lo: a sample is in its own window
    csum = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)])
    count = (hi - lo).reshape(-1, *([1] * (x.ndim - 1)))
    return (csum[hi] - csum[lo]) / count


def hysteresis_intervals(scores, times, on: float = 0.6, off: float = 0.4,
                         min_duration: float = 0.0, max_gap: float | None = None
                         ) -> list[Interval]:
    """On/off intervals of one behaviour's ``scores`` ``[K]`` at ``times`` ``[K]``.

    The behaviour turns on at a sample with score >= ``on`` and stays on until a score drops
    below ``off`` (two thresholds, so flicker between them does not split an interval). It is
    also closed where consecutive samples are more than ``max_gap`` seconds apart (the track was
    lost meanwhile); the sample after the gap may open a new interval. An interval runs from its
    first to its last on sample (module docstring), its ``mean_score`` averages every sample in
    it; intervals with ``end - start < min_duration`` are dropped.
    """
    s = np.asarray(scores, np.float64).reshape(-1)
    t = _times(times, len(s))
    if off > on:
        raise ValueError(f"off ({off}) must be <= on ({on})")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    out: list[Interval] = []
    first = last = None  # sample indices of the open interval

    def close():
        if first is not None and t[last] - t[first] >= min_duration:
            out.append(Interval(float(t[first]), float(t[last]),
                                float(s[first:last + 1].mean())))

    for k in range(len(s)):
        if first is not None and max_gap is not None and t[k] - t[k - 1] > max_gap:
            close()
            first = None
        if first is None:
            if s[k] >= on:
                first = last = k
        elif s[k] < off:
            close()
            first = None
        else:
            last = k
    close()
    return out


def counts_per_second(intervals_by_person: Mapping | Iterable, duration: float,
                      fps: float = 1.0) -> np.ndarray:
    """Number of people "on" per time bin, int64 ``[S]``, ``S = ceil(duration * fps)``.

    Bin ``i`` covers ``[i / fps, (i + 1) / fps)`` (``fps = 1``: whole seconds); a person counts
    once in every bin that one of their intervals ``[start, end]`` meets, so a zero-length
    interval counts in the bin holding it. ``intervals_by_person``: a mapping person ->
    intervals, or an iterable of interval lists; an interval is any ``(start, end, ...)``.
    Parts outside ``[0, duration)`` are left out.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    size = max(int(np.ceil(duration * fps - _EDGE_SLACK)), 0)
    people = intervals_by_person.values() if isinstance(intervals_by_person, Mapping) \
        else intervals_by_person
    counts = np.zeros(size, np.int64)
    for intervals in people:
        on = np.zeros(size, bool)  # per person, so overlapping intervals count once
        for start, end, *_ in intervals:
            lo, hi = max(int(np.floor(start * fps)), 0), min(int(np.floor(end * fps)), size - 1)
            if hi >= lo:  # else wholly outside [0, duration)
                on[lo:hi + 1] = True
        counts += on
    return counts
