"""Online multi-object tracking of keyframe detections (numpy, host side).

Per keyframe the detector gives ``N`` boxes (normalised xyxy) ``[N, 4]``, person scores ``[N]``
and behaviour scores ``[N, A]``. `Tracker.update` links them to tracks:

1. Detections with a score below ``min_score`` (or a non-finite box) are ignored.
2. Hungarian matching (scipy) on ``1 - IoU`` between each live track's last box and the
   detections; matched pairs with ``IoU < iou_threshold`` are rejected.
3. Unmatched detections start new tracks, in detection order; ids count up from 0 in creation
   order over all tracks, so ids of discarded (never confirmed) tracks leave gaps.
4. An unmatched track counts a miss; it survives up to ``max_missed`` missed keyframes in a row
   (an occlusion that short keeps the id) and dies at the next one.

A track is confirmed once it has ``min_hits`` detections; `Tracker.finish` returns the
confirmed tracks, dead and alive, so one-keyframe blips are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
    """``iou_threshold``: least IoU to associate; ``max_missed``: keyframes in a row a track
    survives undetected; ``min_score``: detections below are ignored; ``min_hits``: detections
    that confirm a track."""

    iou_threshold: float = 0.3
    max_missed: int = 3
    min_score: float = 0.5
    min_hits: int = 2

    def __post_init__(self):
        if not (0.0 <= self.iou_threshold <= 1.0 and self.max_missed >= 0 and self.min_hits >= 1):
            raise ValueError(f"need 0 <= iou_threshold <= 1, max_missed >= 0, min_hits >= 1: {self}")


@dataclasses.dataclass
class Track:
    """One person's detections over the ``K`` keyframes where it was detected.

    Attributes:
      id: track id (creation order).
      times: ``[K]`` keyframe times, increasing.
      boxes: ``[K, 4]`` normalised xyxy boxes.
      scores: ``[K]`` person scores.
      behaviour_scores: ``[K, A]`` behaviour scores.
      detections: ``[K]`` each detection's index in its keyframe (None when unknown), to find
        the keyframe's other outputs of that person (e.g. its behaviour map).
    """

    id: int
    times: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    behaviour_scores: np.ndarray
    detections: np.ndarray | None = None

    @property
    def mean_centre(self) -> np.ndarray:
        """``[2]`` mean box centre (x, y): the track's place, e.g. for `seats.assign_seats`."""
        return np.stack([self.boxes[:, 0::2].mean(), self.boxes[:, 1::2].mean()])

    @property
    def seat_point(self) -> np.ndarray:
        """``[2]`` (mean x centre, median bottom y): where a seated person is. The bottom edge
        (at the desk) moves little when someone stands or raises a hand, unlike the centre."""
        return np.stack([self.boxes[:, 0::2].mean(), np.median(self.boxes[:, 3])])

    @property
    def mean_height(self) -> float:
        """Mean box height (normalised)."""
        return float(np.mean(self.boxes[:, 3] - self.boxes[:, 1]))


def iou_matrix(a, b) -> np.ndarray:
    """IoU ``[N, M]`` of xyxy boxes ``a`` ``[N, 4]`` and ``b`` ``[M, 4]``; 0 where a union is
    empty (degenerate boxes)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:])
                 - np.maximum(a[:, None, :2], b[None, :, :2]), 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclasses.dataclass
class _State:
    """A track being built: rows appended per hit, misses in a row since the last hit."""

    id: int
    rows: list = dataclasses.field(default_factory=list)  # (time, box, score, behaviours, index)
    missed: int = 0


class Tracker:
    """Online IoU tracker; feed keyframes in time order to `update`, then call `finish`."""

    def __init__(self, settings: TrackerSettings | None = None):
        self.settings = settings or TrackerSettings()
        self._live: list[_State] = []
        self._dead: list[_State] = []  # confirmed only
        self._next_id = 0
        self._last_time = -np.inf

    def update(self, boxes, scores, behaviour_scores, time: float) -> list[tuple[int, int]]:
        """Links one keyframe's detections (``boxes`` ``[N, 4]``, ``scores`` ``[N]``,
        ``behaviour_scores`` ``[N, A]``) to tracks at ``time`` (later than the previous call's).

        Returns ``(track_id, detection_index)`` for every detection taken (score >=
        ``min_score``), sorted by detection index; ids of tracks not yet confirmed are included
        and may never appear in `finish`.
        """
        if not time > self._last_time:
            raise ValueError(f"keyframe times must increase: {time} after {self._last_time}")
        self._last_time = time
        cfg = self.settings
        scores = np.asarray(scores, np.float64).reshape(-1)
        n = len(scores)
        # Copies: the stored rows must not alias the caller's (possibly reused) buffers.
        boxes = np.array(boxes, np.float64).reshape(n, 4)
        behaviours = np.array(behaviour_scores, np.float64).reshape(n, -1) if n else None
        take = np.flatnonzero((scores >= cfg.min_score) & np.isfinite(boxes).all(axis=1))

        row = lambda d: (time, boxes[d], scores[d], behaviours[d], d)
        match: dict[int, int] = {}  # live-track position -> detection index
        if self._live and take.size:
            iou = iou_matrix(np.stack([s.rows[-1][1] for s in self._live]), boxes[take])
            rows, cols = linear_sum_assignment(1.0 - iou)
            keep = iou[rows, cols] >= cfg.iou_threshold
            match = dict(zip(rows[keep].tolist(), take[cols[keep]].tolist(), strict=True))

        out, survivors = [], []
        for r, state in enumerate(self._live):
            if r in match:
                state.rows.append(row(match[r]))
                state.missed = 0
                out.append((state.id, match[r]))
            else:
                state.missed += 1
                if state.missed > cfg.max_missed:
                    if len(state.rows) >= cfg.min_hits:
                        self._dead.append(state)
                    continue
            survivors.append(state)
        for d in sorted(set(take.tolist()) - set(match.values())):
            survivors.append(_State(self._next_id, [row(d)]))
            out.append((self._next_id, d))
            self._next_id += 1
        self._live = survivors
        return sorted(out, key=lambda p: p[1])

    def finish(self) -> list[Track]:
        """Confirmed tracks (at least ``min_hits`` detections), dead and alive, sorted by id.
        The tracker is left as it was, so `update` may go on."""
        done = self._dead + [s for s in self._live if len(s.rows) >= self.settings.min_hits]
        return [_to_track(s) for s in sorted(done, key=lambda s: s.id)]


def _to_track(state: _State) -> Track:
    times, boxes, scores, behaviours, index = zip(*state.rows, strict=True)
    return Track(id=state.id, times=np.asarray(times, np.float64), boxes=np.stack(boxes),
                 scores=np.asarray(scores), behaviour_scores=np.stack(behaviours),
                 detections=np.asarray(index, np.int64))


def track_sequence(frames: Iterable[Mapping], settings: TrackerSettings | None = None
                   ) -> list[Track]:
    """Tracks a whole sequence of keyframes, each a mapping with ``time``, ``boxes`` ``[N, 4]``,
    ``scores`` ``[N]`` and ``behaviour_scores`` ``[N, A]``; returns `Tracker.finish`."""
    tracker = Tracker(settings)
    for f in frames:
        tracker.update(f["boxes"], f["scores"], f["behaviour_scores"], f["time"])
    return tracker.finish()


def merge_fragments(tracks: list[Track], min_iou: float = 0.5) -> list[Track]:
    """Joins the tracks of one person: a person broken by a longer gap than the tracker's
    memory, or seen twice at once (the set predictor has no NMS, so a second query may follow
    the same person for a while). Tracks whose mean boxes overlap with IoU >= `min_iou` join,
    best overlap first, under the lower id; at a keyframe both saw, the detection with the
    higher person score stays. Meant for scenes where people keep their place (a class):
    tracks that move far never merge. Returns the merged tracks sorted by id, each with its
    detections in time order."""
    merged = list(tracks)
    while len(merged) > 1:
        means = np.stack([t.boxes.mean(axis=0) for t in merged])
        overlap = iou_matrix(means, means)
        np.fill_diagonal(overlap, -1.0)
        i, j = np.unravel_index(np.argmax(overlap), overlap.shape)
        if overlap[i, j] < min_iou:
            break
        merged = [t for k, t in enumerate(merged) if k not in (i, j)] + [_join(merged[i],
                                                                               merged[j])]
    return sorted(merged, key=lambda t: t.id)


def _join(a: Track, b: Track) -> Track:
    """One track of `a`'s and `b`'s detections in time order; at a shared time the higher
    score's (ties: `a`'s)."""
    rows = {}
    for track in (b, a):  # a second, so a tie keeps a's
        for k, t in enumerate(track.times.tolist()):
            if t not in rows or track.scores[k] >= rows[t][0].scores[rows[t][1]]:
                rows[t] = (track, k)
    times = sorted(rows)
    pick = lambda field: np.stack([getattr(rows[t][0], field)[rows[t][1]] for t in times])
    detections = None
    if a.detections is not None and b.detections is not None:
        detections = pick("detections")
    return Track(min(a.id, b.id), np.asarray(times, np.float64), pick("boxes"), pick("scores"),
                 pick("behaviour_scores"), detections)
