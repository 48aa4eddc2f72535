"""Whole-lesson analysis: a detector slid over a video, one keyframe every `stride` frames.

    frames (streamed)  ->  keyframe windows [T, H, W, 3]  ->  batched predict  ->  per keyframe
    {time, boxes, scores, behaviour_scores, map_probs}  ->  `report.analyze` (tracks, seats,
    intervals) and `annotate` (behaviour maps, annotated video)

`LessonAnalyzer` runs it all on a video file, a frame array or a folder of frames;
`analyze_videos` runs it over many (a folder of lesson videos), resumably. Memory stays
bounded on long videos: frames are decoded one at a time and only those that a pending window
still needs are kept (about `num_frames * frame_stride + stride` of them); of each keyframe, the
detections and two small map images are kept. The annotated video is a second decoding pass.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from jaxact import console, files
from jaxact.analysis import annotate, report
from jaxact.data import video_io
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
    person (action score / person score); from a head with behaviour maps also `"map_probs"`
    `[N, S, S, A + 1]`."""
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        video = np.stack([w for _, w in pending])
        video = np.concatenate([video, np.repeat(video[-1:], batch_size - len(pending), 0)])
        out = predict(video)
        for row, (frame, _) in enumerate(pending):
            person = np.asarray(out["person_scores"][row], np.float32)
            actions = np.asarray(out["action_scores"][row], np.float32)
            keyframe = {"frame": frame, "time": frame / fps, "boxes": np.asarray(out["boxes"][row]),
                        "scores": person,
                        "behaviour_scores": actions / np.maximum(person[:, None], 1e-6)}
            if "map_probs" in out:
                keyframe["map_probs"] = np.asarray(out["map_probs"][row], np.float32)
            yield keyframe
        pending.clear()

    for item in windows:
        pending.append(item)
        if len(pending) == batch_size:
            yield from flush()
    if pending:
        yield from flush()


OUTPUTS = ("analysis.json", "summary.txt", "intervals.csv", "counts.csv", "timeline.png",
           "counts.png", "maps.npz", "annotated.mp4")


@dataclasses.dataclass(frozen=True)
class LessonAnalyzer:
    """A detector and the settings of a whole-lesson analysis; `run` analyses one video.

    ``predict``: uint8 clips ``[batch_size, num_frames, H, W, 3]`` -> detections (as
    `jaxact.train.detector.detections_from_outputs`), ``frame_size``: its ``(H, W)``;
    ``map_size``: ``(h, w)`` of the saved behaviour maps (None: none; a head without maps
    has none either); ``video``: write annotated.mp4; ``meta``: added to the report's meta.
    """

    predict: Callable[[np.ndarray], dict]
    class_names: Sequence[str]
    frame_size: tuple[int, int]
    num_frames: int
    frame_stride: int
    stride: int
    batch_size: int
    default_fps: float
    settings: report.AnalysisSettings = dataclasses.field(default_factory=report.AnalysisSettings)
    map_size: tuple[int, int] | None = (64, 64)
    video: bool = True
    meta: Mapping = dataclasses.field(default_factory=dict)

    def run(self, path: str, output_dir: str | None) -> dict:
        """Analyses the video ``path`` (a file, a frame array or a folder of frames) and, when
        ``output_dir`` is given, writes `OUTPUTS` there (the report files last, so a failure
        leaves no analysis.json behind). Returns ``{"analysis", "tracks", "keyframes"
        (detections, without maps), "maps" (maps.npz's arrays or None), "written" (name ->
        path), "seconds" (wall, decoding to report)}``."""
        start = time.perf_counter()
        fps = video_io.frame_rate(path, default=self.default_fps)
        total = video_io.count_frames(path)
        read = [0]

        def frames():
            for frame in video_io.iter_frames(path, self.frame_size):
                read[0] += 1
                yield frame

        windows = keyframe_windows(frames(), self.num_frames, self.frame_stride, self.stride)
        recorder = annotate.MapRecorder(*self.map_size, self.settings.tracker.min_score) \
            if self.map_size else None
        keyframes = []
        with console.bar(total, "analyze", unit="frame") as progress:
            for keyframe in detect_keyframes(windows, self.predict, self.batch_size, fps):
                probs = keyframe.pop("map_probs", None)
                if recorder is not None and probs is not None:
                    recorder.add({**keyframe, "map_probs": probs})
                keyframes.append(keyframe)
                progress.update(read[0] - progress.n)
        if read[0] < self.num_frames:
            console.warn(f"{path}: {read[0]} frames, shorter than one clip window of "
                         f"{self.num_frames}; edge frames repeated")
        tracks = report.build_tracks(keyframes, self.settings)
        analysis = report.analyze(keyframes, tuple(self.class_names), read[0] / fps,
                                  self.settings, tracks)
        analysis["meta"].update(video=path, fps=fps, num_frames=read[0], stride=self.stride,
                                **self.meta)
        maps = (annotate.maps_npz(recorder, tracks, self.class_names)
                if recorder is not None and len(recorder) else None)
        written = {}
        if output_dir is not None:
            written = self._write(path, output_dir, analysis, tracks, keyframes, maps, fps, read[0])
        return {"analysis": analysis, "tracks": tracks, "keyframes": keyframes, "maps": maps,
                "written": written, "seconds": time.perf_counter() - start}

    def _write(self, path, output_dir, analysis, tracks, keyframes, maps, fps, num_frames):
        os.makedirs(output_dir, exist_ok=True)
        written = {}
        if maps is not None:
            written["maps.npz"] = files.write_atomic(os.path.join(output_dir, "maps.npz"),
                                                     lambda f: np.savez_compressed(f, **maps))
        if self.video:
            times = [k["time"] for k in keyframes]
            labels = annotate.keyframe_labels(analysis, tracks, times)
            out = os.path.join(output_dir, "annotated.mp4")
            with video_io.VideoWriter(out, fps) as writer, \
                    console.bar(num_frames, "annotate", unit="frame") as progress:
                for frame in annotate.annotated_frames(
                        video_io.iter_frames(path), [k["frame"] for k in keyframes], labels,
                        None if maps is None else maps["behaviour"], self.class_names):
                    writer.write(frame)
                    progress.update()
            written["annotated.mp4"] = out
        written.update(report.write_report(analysis, output_dir))
        return written


INDEX = "index.json"


def _output_names(videos: Sequence[str]) -> list[str]:
    """A folder name per video: its file name without the extension, or with it (dot as
    underscore) where two videos share a stem."""
    stems = [os.path.splitext(os.path.basename(v.rstrip("/")))[0] for v in videos]
    return [s if stems.count(s) == 1 else os.path.basename(v.rstrip("/")).replace(".", "_")
            for s, v in zip(stems, videos, strict=True)]


def _summary(analysis: Mapping) -> dict:
    """What `analyze_videos`' index keeps of a report."""
    return {"duration": analysis["meta"]["duration"], "students": len(analysis["tracks"]),
            "intervals": {name: b["intervals"] for name, b in analysis["per_behaviour"].items()}}


def _analysed_before(video: str, output_dir: str, workdir) -> dict | None:
    """The `_summary` of the finished analysis of `video` by the run `workdir` in `output_dir`,
    or None (analysis.json is written last, so it exists only when every output does)."""
    try:
        with open(os.path.join(output_dir, "analysis.json")) as f:
            analysis = json.load(f)
        meta = analysis["meta"]
        if (os.path.abspath(str(meta.get("video"))) != os.path.abspath(video)
                or meta.get("workdir") != workdir):
            return None
        return _summary(analysis)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def analyze_videos(runner: LessonAnalyzer, videos: Sequence[str], output_dir: str,
                   write: bool = True) -> dict:
    """Analyses every video of `videos` (files, frame arrays or frame folders; e.g. the lessons
    of one class) with `runner`, each into `output_dir/NAME` (`_output_names`).

    Resumable and fault-tolerant: a video whose folder already holds this run's finished
    analysis of it is left as it is ("done before"); one that cannot be read (`BadInputError`:
    missing, truncated, ...) is reported and skipped ("failed") and the rest go on. Which videos
    were done is read once, before any runs, so every process of a multi-host job decides alike;
    only a process with `write` writes. `output_dir/index.json` is rewritten (atomically) after
    each video: ``{"videos": [{"video", "output_dir", "status": "analyzed" | "done before" |
    "failed", "error" (failed), "duration" (video seconds), "students" (tracks), "intervals"
    ({behaviour: how many}), "seconds" (wall, analyzed)}]}``. Returns that dict with
    ``"written"``: ``{"index.json": path}``.
    """
    from jaxact.data import video_io

    names = _output_names(videos)
    workdir = runner.meta.get("workdir")
    dirs = [os.path.join(output_dir, n) for n in names]
    before = [_analysed_before(v, d, workdir) for v, d in zip(videos, dirs, strict=True)]
    index_path = os.path.join(output_dir, INDEX)
    rows = []
    for i, (video, out_dir, done) in enumerate(zip(videos, dirs, before, strict=True)):
        row = {"video": video, "output_dir": out_dir}
        tag = f"[{i + 1}/{len(videos)}] {os.path.basename(video.rstrip('/'))}"
        try:
            if done is not None:
                row.update(status="done before", **done)
            else:
                out = runner.run(video, out_dir if write else None)
                row.update(status="analyzed", seconds=round(out["seconds"], 3),
                           **_summary(out["analysis"]))
            console.say(f"{tag}: {row['status']}, {row['students']} students, "
                        f"{row['duration']:.0f} s -> {out_dir}")
        except video_io.BadInputError as e:
            row.update(status="failed", error=str(e))
            console.warn(f"{tag}: skipped: {e}")
        rows.append(row)
        if write:
            files.write_json(index_path, {"videos": rows}, indent=2)
    return {"videos": rows, "written": {INDEX: index_path} if write else {}}
