"""Whole-lesson analysis: a detector slid over a video, one keyframe every `stride` frames.

    frames (streamed)  ->  keyframe windows [T, H, W, 3]  ->  batched predict  ->  per keyframe
    {time, boxes, scores, behaviour_scores}  ->  `report.analyze` (tracks, seats, intervals)

Memory stays bounded on long videos: frames are decoded one at a time and only those that a
pending window still needs are kept (about `num_frames * frame_stride + stride` of them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from jaxact.data.pipeline import keyframe_window_indices


def keyframe_windows(frames: Iterable[np.ndarray], num_frames: int, frame_stride: int = 1,
                     stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(keyframe index, window `[num_frames, H, W, C]`) for keyframes 0, stride, 2 * stride, ...
    of a stream of frames `[H, W, C]`, each window as `keyframe_window_indices` builds it for
    the whole video (the keyframe at `num_frames // 2`, edge frames repeated past either end).

    A window is emitted as soon as its last frame has arrived; the end of the stream closes the
    rest. Frames no pending window needs are dropped.
    """
    if num_frames < 1 or frame_stride < 1 or stride < 1:
        raise ValueError(f"num_frames={num_frames}, frame_stride={frame_stride} and "
                         f"stride={stride} must be >= 1")
    back = (num_frames // 2) * frame_stride
    ahead = (num_frames - 1 - num_frames // 2) * frame_stride
    kept: dict[int, np.ndarray] = {}
    key, length = 0, 0

    def window(k: int) -> np.ndarray:
        return np.stack([kept[i] for i in keyframe_window_indices(length, k, num_frames,
                                                                  frame_stride)])

    for index, frame in enumerate(frames):
        kept[index] = frame
        length = index + 1
        while key + ahead <= index:
            yield key, window(key)
            key += stride
            for old in [i for i in kept if i < key - back and i < length - 1]:
                del kept[old]
    while key < length:  # the stream ended: the last windows repeat the last frame
        yield key, window(key)
        key += stride


def detect_keyframes(windows: Iterable[tuple[int, np.ndarray]],
                     predict: Callable[[np.ndarray], dict], batch_size: int,
                     fps: float) -> Iterator[dict]:
    """Runs `predict` (`[batch_size, T, H, W, 3]` -> detections, see
    `jaxact.train.detector.detections_from_outputs`) over windows in full batches (the last one
    padded) and yields per keyframe `{"frame", "time", "boxes" [N, 4], "scores" [N],
    "behaviour_scores" [N, A]}`: the person score and each behaviour's probability given a
    person (action score / person score)."""
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        video = np.stack([w for _, w in pending])
        video = np.concatenate([video, np.repeat(video[-1:], batch_size - len(pending), 0)])
        out = predict(video)
        for row, (frame, _) in enumerate(pending):
            person = np.asarray(out["person_scores"][row], np.float32)
            actions = np.asarray(out["action_scores"][row], np.float32)
            yield {"frame": frame, "time": frame / fps, "boxes": np.asarray(out["boxes"][row]),
                   "scores": person,
                   "behaviour_scores": actions / np.maximum(person[:, None], 1e-6)}
        pending.clear()

    for item in windows:
        pending.append(item)
        if len(pending) == batch_size:
            yield from flush()
    if pending:
        yield from flush()
