"""Where behaviour-map mIoU is lost: a finished detector run's maps against box-fill ceilings.

  python -m benchmarks.map_ceiling --runs=workdirs/ablate_detector/gram/seed_0,...

For each run (a workdir holding a trained detector with behaviour maps) and its test split, the
mIoU of the single-channel keyframe map (`jaxact.evaluation.behaviour_maps`, the evaluator's
paste rule) when each person's region and label come from:

  model         the model's per-bin maps (what results.json reports as map_miou)
  pred_box      its boxes (score > 0.5) filled with the label of the true person each matches
                best: the cost of box-shaped regions and of its localisation
  pred_label    its boxes filled with its own label per actor (the label-image priority rule
                applied to its sigmoids, Bayes decode: p(c present, no higher-priority c present))
  true_box      the true boxes filled with the true labels: the ceiling of any box-shaped map

plus `label_accuracy`: how often that own label equals the true person's (over true people
found at IoU >= 0.5). Prints a table and writes benchmarks/results/map_ceiling.json.
"""

from __future__ import annotations

import datetime
import json
import platform

import numpy as np
from absl import app, flags, logging

from jaxact.analysis import tracking
from jaxact.data import behaviour_labels
from jaxact.evaluation import behaviour_maps as bm
from jaxact.train import get_experiment, loop

_RUNS = flags.DEFINE_list("runs", None, "Workdirs of finished detector runs with behaviour maps.")
_RESULTS_JSON = flags.DEFINE_string("results_json", "benchmarks/results/map_ceiling.json",
                                    "Where the table's JSON goes.")
SCORE_THRESHOLD = 0.5
DECODES = ("model", "pred_box", "pred_label", "true_box")


def priority_decode(probs: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """`[N, A]` independent action probabilities -> `[N]` the most probable label-image class:
    argmax_c p_c * prod over higher-priority c' of (1 - p_c')."""
    none_above = np.ones(probs.shape[0])
    joint = np.zeros_like(probs)
    for c in np.argsort(ranks):
        joint[:, c] = probs[:, c] * none_above
        none_above = none_above * (1 - probs[:, c])
    return np.argmax(joint, axis=-1)


def _filled(boxes, labels, num_actions: int, height: int, width: int) -> np.ndarray:
    q = np.zeros((len(boxes), 1, 1, num_actions + 1))
    q[np.arange(len(boxes)), 0, 0, 1 + np.asarray(labels, int)] = 1.0
    return bm.behaviour_map(bm.paste_maps(q, boxes, np.ones(len(boxes)), height, width))


def measure(workdir: str) -> dict:
    config = loop.read_config(workdir)
    exp = get_experiment(config.experiment)(config, workdir)
    params = exp.restore_final()
    names = list(exp.class_names)
    ranks = behaviour_labels.priority_ranks(names)
    iou = {k: bm.IoUAccumulator(len(names)) for k in DECODES}
    correct = []
    for batch in exp.eval_loader("test"):
        rows = exp.predict_batch(params, batch)
        if "map_probs" not in rows or "owner" not in rows:
            raise ValueError(f"{workdir}: the model or the data has no behaviour maps")
        for i in np.flatnonzero(rows["mask"]):
            height, width = rows["owner"][i].shape
            _, true = behaviour_labels.label_maps(rows["owner"][i], rows["actions"][i], names)
            people = np.asarray(rows["person_mask"][i])
            gt_boxes = np.asarray(rows["boxes"][i])[people]
            gt_labels = behaviour_labels.person_labels(np.asarray(rows["actions"][i])[people],
                                                       names) - 1  # -1: no action
            scores = np.asarray(rows["person_scores"][i])
            iou["model"].add(bm.behaviour_map(bm.paste_maps(
                rows["map_probs"][i], rows["boxes_pred"][i], scores, height, width,
                SCORE_THRESHOLD)), true)
            labelled = gt_labels >= 0
            iou["true_box"].add(_filled(gt_boxes[labelled], gt_labels[labelled], len(names),
                                        height, width), true)
            found = scores > SCORE_THRESHOLD
            boxes = np.asarray(rows["boxes_pred"][i])[found]
            probs = (np.asarray(rows["action_scores"][i])[found]
                     / np.maximum(scores[found, None], 1e-6))
            own = priority_decode(probs, ranks)
            if len(boxes) and len(gt_boxes):
                overlap = tracking.iou_matrix(boxes, gt_boxes)
                matched_label = gt_labels[np.argmax(overlap, axis=1)]
                keep = matched_label >= 0
                iou["pred_box"].add(_filled(boxes[keep], matched_label[keep], len(names),
                                            height, width), true)
                hit = (overlap.max(axis=0) >= 0.5) & labelled
                correct += list(own[np.argmax(overlap, axis=0)][hit] == gt_labels[hit])
            else:
                iou["pred_box"].add(np.zeros_like(true), true)
            iou["pred_label"].add(_filled(boxes, own, len(names), height, width), true)
    out = {"workdir": workdir, "config_name": config.config_name,
           "label_accuracy": float(np.mean(correct)) if correct else None}
    for k in DECODES:
        r = iou[k].result(names)
        out[k] = {"map_miou": r["map_miou"], "per_class_map_iou": r["per_class_map_iou"]}
    return out


def main(argv):
    if len(argv) > 1 or not _RUNS.value:
        raise app.UsageError("usage: python -m benchmarks.map_ceiling --runs=DIR[,DIR...]")
    logging.set_verbosity(logging.WARNING)
    rows = [measure(w) for w in _RUNS.value]
    print(f"{'run':<48} | " + " | ".join(f"{k:>10}" for k in DECODES) + " | label acc")
    for r in rows:
        print(f"{r['workdir'][-48:]:<48} | "
              + " | ".join(f"{r[k]['map_miou']:>10.3f}" for k in DECODES)
              + f" | {r['label_accuracy']:.3f}")
    table = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
             "machine": platform.node(), "score_threshold": SCORE_THRESHOLD, "rows": rows}
    loop.write_json(_RESULTS_JSON.value, json.loads(json.dumps(table)))
    print(f"written: {_RESULTS_JSON.value}")


if __name__ == "__main__":
    app.run(main)
