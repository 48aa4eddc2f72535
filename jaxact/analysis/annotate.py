"""What the analysis saw, frame by frame: behaviour maps per keyframe and the annotated video.

`MapRecorder` pastes each keyframe's per-person behaviour maps (`behaviour_maps.paste_maps`) as
soon as the keyframe is detected and keeps two small images of it, so memory grows by
``3 * h * w`` bytes per keyframe (12 KB at 64 x 64), never by frames:

* ``behaviour`` uint8 ``[h, w]``, the subject-agnostic map: 0 = no behaviour, ``a`` =
  ``class_names[a - 1]`` (argmax per pixel);
* ``owner`` int16 ``[h, w]``: the detection whose map the pixel shows, -1 where nobody is.

`maps_npz` turns detections into track ids once the tracks are known (the subject-aware map) and
`annotated_frames` draws, on the video's own frames, the latest keyframe's map and every tracked
person's box, id, seat and the behaviours the report decided are on at that keyframe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from jaxact import viz
from jaxact.analysis.tracking import Track
from jaxact.evaluation import behaviour_maps

MAP_ALPHA = 0.45  # opacity of the behaviour colours over the video


class MapRecorder:
    """Collects the behaviour maps of keyframes, `add`ed in time order.

    Args:
      height, width: size of the stored maps (a keyframe's maps are pasted at this size).
      score_threshold: people with a person score at or below this are left out (the
        tracker's ``min_score``, so the map shows the people the report is about).
    """

    def __init__(self, height: int, width: int, score_threshold: float):
        if height < 1 or width < 1:
            raise ValueError(f"map size must be at least 1 x 1, got {height} x {width}")
        self.height, self.width, self.score_threshold = height, width, score_threshold
        self.frames: list[int] = []
        self.times: list[float] = []
        self.behaviour: list[np.ndarray] = []
        self.owner: list[np.ndarray] = []

    def add(self, keyframe: Mapping) -> None:
        """``keyframe``: ``{"frame", "time", "boxes" [N, 4], "scores" [N], "map_probs"
        [N, S, S, A + 1]}`` (as `lesson.detect_keyframes` yields from a head with maps)."""
        probs, owner = behaviour_maps.paste_maps(
            keyframe["map_probs"], keyframe["boxes"], keyframe["scores"], self.height,
            self.width, score_threshold=self.score_threshold, return_owner=True)
        self.frames.append(int(keyframe["frame"]))
        self.times.append(float(keyframe["time"]))
        self.behaviour.append(behaviour_maps.behaviour_map(probs).astype(np.uint8))
        self.owner.append(owner.astype(np.int16))

    def __len__(self) -> int:
        return len(self.frames)


def detection_ids(tracks: Sequence[Track], times: Sequence[float]) -> list[dict[int, int]]:
    """Per keyframe time in ``times``: {detection index: track id} of the tracked people."""
    position = {float(t): k for k, t in enumerate(times)}
    out: list[dict[int, int]] = [{} for _ in times]
    for track in tracks:
        if track.detections is None:
            raise ValueError(f"track {track.id} has no detection indices")
        for t, d in zip(track.times.tolist(), track.detections.tolist(), strict=True):
            out[position[float(t)]][int(d)] = int(track.id)
    return out


def maps_npz(recorder: MapRecorder, tracks: Sequence[Track], class_names: Sequence[str]
             ) -> dict[str, np.ndarray]:
    """The content of ``maps.npz``: ``frame`` ``[K]`` (keyframe index in the video), ``time``
    ``[K]`` seconds, ``behaviour`` uint8 ``[K, h, w]`` (subject-agnostic: 0 none, ``a`` =
    ``class_names[a - 1]``), ``person`` int32 ``[K, h, w]`` (subject-aware: the track id of
    the person each pixel's behaviour belongs to, -1 for nobody or an untracked detection) and
    ``class_names``."""
    ids = detection_ids(tracks, recorder.times)
    person = np.full((len(recorder), recorder.height, recorder.width), -1, np.int32)
    for k, (owner, lookup) in enumerate(zip(recorder.owner, ids, strict=True)):
        if lookup:
            table = np.full(int(max(owner.max(), max(lookup))) + 2, -1, np.int32)
            for d, track_id in lookup.items():
                table[d + 1] = track_id
            person[k] = table[owner.astype(np.int64) + 1]
    shape = (len(recorder), recorder.height, recorder.width)
    behaviour = np.stack(recorder.behaviour) if len(recorder) else np.zeros(shape, np.uint8)
    return {"frame": np.asarray(recorder.frames, np.int64),
            "time": np.asarray(recorder.times, np.float64),
            "behaviour": behaviour, "person": person,
            "class_names": np.asarray([str(n) for n in class_names])}


def keyframe_labels(analysis: Mapping, tracks: Sequence[Track], times: Sequence[float]
                    ) -> list[list[tuple[np.ndarray, str]]]:
    """Per keyframe time: (box ``[4]``, label) of each tracked person there, the label being
    "id, seat" and, on the next line, the behaviours the report has on at that time."""
    by_id = {tr["id"]: tr for tr in analysis["tracks"]}
    position = {float(t): k for k, t in enumerate(times)}
    out: list[list[tuple[np.ndarray, str]]] = [[] for _ in times]
    for track in tracks:
        info = by_id[int(track.id)]
        for t, box in zip(track.times.tolist(), track.boxes, strict=True):
            on = [name for name, found in info["behaviours"].items()
                  if any(iv["start"] <= t <= iv["end"] for iv in found)]
            text = f"{track.id} {info['seat_name']}" + (f"\n{', '.join(on)}" if on else "")
            out[position[float(t)]].append((box, text))
    return out


def overlay_map(frame: np.ndarray, behaviour: np.ndarray, num_behaviours: int) -> np.ndarray:
    """uint8 ``frame`` ``[H, W, 3]`` with the behaviour map ``[h, w]`` (nearest-neighbour to
    ``H x W``) blended in, in `behaviour_maps.behaviour_colours` (no behaviour: unchanged)."""
    h, w = behaviour.shape
    height, width = frame.shape[:2]
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(np.int64)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(np.int64)
    colours = behaviour_maps.behaviour_colours(num_behaviours)[behaviour[rows][:, cols]]
    alpha = MAP_ALPHA * colours[..., 3:]
    return np.round(frame * (1 - alpha) + 255 * colours[..., :3] * alpha).astype(np.uint8)


def annotated_frames(frames: Iterable[np.ndarray], keyframe_frames: Sequence[int],
                     labels: Sequence[Sequence[tuple[np.ndarray, str]]],
                     maps: Sequence[np.ndarray] | None, class_names: Sequence[str]
                     ) -> Iterator[np.ndarray]:
    """The video's frames ``[H, W, 3]`` (uint8, any size), each drawn with the latest keyframe
    at or before it: its behaviour map (``maps[k]``, when given) and its people's boxes and
    ``labels[k]`` (`keyframe_labels`). Frames before the first keyframe are drawn bare."""
    starts = np.asarray(keyframe_frames, np.int64)
    for index, frame in enumerate(frames):
        k = int(np.searchsorted(starts, index, side="right")) - 1
        if k < 0:
            yield np.asarray(frame, np.uint8)
            continue
        if maps is not None:
            frame = overlay_map(frame, maps[k], len(class_names))
        people = labels[k]
        boxes = np.array([box for box, _ in people], np.float32).reshape(-1, 4)
        yield viz.annotate_frame(frame, {"boxes": boxes, "person_scores": np.ones(len(people))},
                                 class_names, score_threshold=0.0,
                                 labels=[text for _, text in people])
