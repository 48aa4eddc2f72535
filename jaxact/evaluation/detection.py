"""The detector's evaluator: AVA frame-mAP, per-class AP and person AP@0.5 of keyframe detections,
and, for heads with behaviour maps on data with visible-person masks, the maps' pixel IoU.

Every one of the N predicted boxes of a clip is a candidate (no score threshold, no NMS), with
person score `sigmoid(person_logit)` and per-action score `person score * sigmoid(action logit)`.
Models with a temporal channel gate or actor relations also get their counted compute and
groups on the split (`adaptive_results`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import numpy as np
from absl import logging

from jaxact import console, viz
from jaxact.data import behaviour_labels, pipeline
from jaxact.evaluation import ava, behaviour_maps, frame_map

# Queries scoring at least this count as found people in the adaptive layers' statistics.
PERSON_THRESHOLD = 0.5

def keyframe_image(video: np.ndarray) -> np.ndarray:
    """Normalized clip `[T, H, W, 3]` -> its keyframe as uint8 `[H, W, 3]`."""
    frame = video[video.shape[0] // 2] * pipeline.PIXEL_STD + pipeline.PIXEL_MEAN
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def number(x) -> float | None:
    """float, or None for NaN (classes without ground truth): results.json stays strict JSON."""
    return None if math.isnan(x) else float(x)


@dataclasses.dataclass(frozen=True)
class MapSettings:
    """How predicted behaviour maps are pasted (`behaviour_maps.paste_maps`) and scored."""

    class_names: tuple[str, ...]
    score_threshold: float = 0.5
    cell: int = 1


def collect(batches, predict_batch, params, num_images: int = 0,
            maps: MapSettings | None = None) -> dict:
    """Detections and ground truth of every clip of `batches` (padding removed).

    `predict_batch(params, batch)` gives the batch's rows of every process: detections
    (`boxes_pred`, `person_scores`, `action_scores`, and `map_probs` from heads with maps) and
    the batch's `boxes`, `actions`, `person_mask`, `mask` (and `owner` where the data has it).
    Returns `detections` and `ground_truth` (lists in `frame_map.frame_map`'s format, one entry
    per clip), `images`: (clip index, uint8 keyframe `[H, W, 3]`) of the first `num_images` clips
    of this process (process 0 holds the first rows of every global batch), `indices`: each
    clip's `index` (its row in the split) where the rows hold one, and, with `maps` and
    rows holding maps and owners, `map_iou` (an `IoUAccumulator` over every clip) and
    `map_images`: (predicted, true) single-channel maps `[H, W]` of those first clips.
    """
    detections, ground_truth, images, map_images, indices = [], [], [], [], []
    map_iou = None
    adaptive = {"gate_flops": [], "gate_people_flops": [], "gate_fractions": [],
                "gate_people_kept": [], "gate_clip_kept": [], "groups_used": []}
    for batch in console.track(batches, "eval"):
        rows = predict_batch(params, batch)
        local_rows = len(batch["mask"])
        with_maps = maps is not None and "map_probs" in rows and "owner" in rows
        if with_maps and map_iou is None:
            map_iou = behaviour_maps.IoUAccumulator(len(maps.class_names))
        for i in np.flatnonzero(rows["mask"]):
            people = rows["person_mask"][i]
            detections.append({"boxes": rows["boxes_pred"][i], "scores": rows["action_scores"][i],
                               "person_scores": rows["person_scores"][i]})
            for key in ("gate_flops", "gate_fractions", "gate_clip_kept", "groups_used"):
                if key in rows:
                    adaptive[key].append(rows[key][i])
            if "gate_actor_flops" in rows:
                found = rows["person_scores"][i] >= PERSON_THRESHOLD
                adaptive["gate_people_flops"].extend(rows["gate_actor_flops"][i][found])
                adaptive["gate_people_kept"].extend(rows["gate_kept"][i][found])
            ground_truth.append({"boxes": rows["boxes"][i][people],
                                 "labels": rows["actions"][i][people]})
            if "index" in rows:
                indices.append(int(rows["index"][i]))
            keep_image = len(images) < num_images and i < local_rows
            if keep_image:
                images.append((len(detections) - 1, keyframe_image(batch["video"][i])))
            if with_maps:
                height, width = rows["owner"][i].shape
                probs = behaviour_maps.paste_maps(
                    rows["map_probs"][i], rows["boxes_pred"][i], rows["person_scores"][i],
                    height, width, maps.score_threshold, maps.cell)
                predicted = behaviour_maps.behaviour_map(probs)
                _, true = behaviour_labels.label_maps(rows["owner"][i], rows["actions"][i],
                                                      maps.class_names)
                map_iou.add(predicted, true)
                if keep_image:
                    map_images.append((predicted, true))
    return {"detections": detections, "ground_truth": ground_truth, "images": images,
            "indices": indices, "map_iou": map_iou, "map_images": map_images,
            "adaptive": adaptive_results(adaptive)}


def adaptive_results(values: dict) -> dict:
    """results.json fields of the adaptive layers, from per-clip (and per-person) values:
    `gated_flops_fraction` (counted FLOPs of the gated layers over every query, as a fraction of
    their ungated FLOPs), `gated_flops_fraction_people` (the same over the queries scoring >=
    PERSON_THRESHOLD), `gate_fractions` (per layer: keep, reuse, drop), `gate_people_kept_max`
    (per head layer, the most channels any found person kept: a compact-path budget that
    changes no found person's output), `gate_clip_kept_max` (per backbone layer, the largest
    kept fraction of any clip) and `groups_used` (mean groups holding a real actor per clip).
    Empty without a gate and relations."""
    out = {}
    if values["gate_flops"]:
        out["gated_flops_fraction"] = float(np.mean(values["gate_flops"]))
        out["gated_flops_fraction_people"] = (float(np.mean(values["gate_people_flops"]))
                                              if values["gate_people_flops"] else None)
        layers = np.mean(np.stack(values["gate_fractions"]), axis=0)  # [L, 3]
        out["gate_fractions"] = [dict(zip(("keep", "reuse", "drop"), map(float, f), strict=True))
                                 for f in layers]
        kept = values["gate_people_kept"]
        out["gate_people_kept_max"] = (np.max(np.stack(kept), axis=0).astype(int).tolist()
                                       if kept else None)
        clip_kept = values["gate_clip_kept"]
        out["gate_clip_kept_max"] = (np.max(np.stack(clip_kept), axis=0).astype(float).tolist()
                                     if clip_kept else None)
    if values["groups_used"]:
        out["groups_used"] = float(np.mean(values["groups_used"]))
    return out


def ava_files(detections, ground_truth, split: str, class_names, keyframes=None) -> dict:
    """Writers of the split's detections, ground truth and label map in the AVA formats
    (`detections.csv`, `groundtruth.csv`, `labelmap.pbtxt`; one keyframe per clip, named by
    `keyframes` (`(video_id, timestamp)` per clip, as the data has them) or else video id
    `SPLIT_INDEX`, timestamp 0), so `python -m jaxact.evaluation.ava` or any other AVA tool
    scores them. That applies the official rules (the top 50 (box, action) rows per keyframe):
    its mAP can differ from results.json's `frame_map`, which ranks every row."""
    @functools.cache  # built when first written: validation runs never pay for it
    def rows():
        if keyframes:
            return ava.keyframe_rows(detections, ground_truth, *zip(*keyframes, strict=True))
        videos = [f"{split}_{i:06d}" for i in range(len(detections))]
        return ava.keyframe_rows(detections, ground_truth, videos)

    return {"detections.csv": lambda path: ava.write_csv(path, rows()[1], detections=True),
            "groundtruth.csv": lambda path: ava.write_csv(path, rows()[0], detections=False),
            "labelmap.pbtxt": lambda path: ava.write_labelmap(path, class_names)}


@dataclasses.dataclass(frozen=True)
class FrameMapEvaluator:
    """Frame-mAP at `iou_threshold`, per-class AP, person AP@0.5 on `split`, and
    `detections.png` (the first `plot_num_clips` keyframes, boxes above `plot_score_threshold`).

    `loader(split)` yields the split's batches; `predict_batch`: see `collect`.
    `keyframe_ids(split)`: `(video_id, timestamp)` of each row of the split (data that has
    them, with an `index` in every example), to name the keyframes in the AVA CSVs.
    """

    predict_batch: Callable
    loader: Callable
    split: str
    class_names: tuple[str, ...]
    description: str
    iou_threshold: float = 0.5
    matching: str = "voc"
    plot_num_clips: int = 6
    plot_score_threshold: float = 0.5
    map_score_threshold: float = 0.5
    map_cell: int = 1
    keyframe_ids: Callable[[str], list[tuple[str, int]]] | None = None

    def run(self, params) -> tuple[dict, dict]:
        start = time.time()
        maps = MapSettings(self.class_names, self.map_score_threshold, self.map_cell)
        out = collect(self.loader(self.split), self.predict_batch, params, self.plot_num_clips,
                      maps)
        dets, gts = out["detections"], out["ground_truth"]
        num_actions = len(self.class_names)
        scores = frame_map.frame_map(dets, gts, num_actions, self.iou_threshold, self.matching)
        at_50 = scores if self.iou_threshold == 0.5 else frame_map.frame_map(
            dets, gts, num_actions, 0.5, self.matching)
        results = {
            "frame_map": number(scores["map"]),
            "person_ap50": number(at_50["person_ap"]),
            "per_class_ap": {name: number(ap) for name, ap in
                             zip(self.class_names, scores["per_class_ap"], strict=True)},
            "dataset": self.description,
            "split": self.split,
            "num_clips": len(dets),
            "num_people": int(sum(len(g["boxes"]) for g in gts)),
            "iou_threshold": self.iou_threshold,
            "eval_seconds": round(time.time() - start, 1),
        }
        logging.info("%s: frame-mAP %.4f, person AP@0.5 %.4f, per class %s", self.split,
                     scores["map"], at_50["person_ap"], results["per_class_ap"])
        index = [i for i, _ in out["images"]]
        images = [img for _, img in out["images"]]

        def plot(path):
            viz.plot_detections(images, [dets[i] for i in index], [gts[i] for i in index],
                                list(self.class_names), path,
                                score_threshold=self.plot_score_threshold)
        keyframes = None
        if self.keyframe_ids is not None and len(out["indices"]) == len(dets):
            table = self.keyframe_ids(self.split)
            keyframes = [table[i] for i in out["indices"]]
        artefacts = {"detections.png": plot,
                     **ava_files(dets, gts, self.split, self.class_names, keyframes)}
        results.update(out["adaptive"])
        if out["map_iou"] is not None:
            results.update(out["map_iou"].result(list(self.class_names)))
            predicted = [p for p, _ in out["map_images"]]
            true = [t for _, t in out["map_images"]]
            artefacts["behaviour_maps.png"] = lambda path: behaviour_maps.plot_behaviour_maps(
                images[:len(predicted)], predicted, true, list(self.class_names), path)
        return results, artefacts
