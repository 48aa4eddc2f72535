"""Several detectors' detections of the same clips, fused into one set per clip (numpy, host).

Detectors trained from different seeds err on different people and frames, so fusing their
detections (as weighted box fusion does for object detectors) gives steadier scores than any
one of them. Per clip the members' detections are grouped member by member: each member's
detections are paired with the groups so far by box IoU (Hungarian, the highest total IoU),
a pair joining a group when its IoU >= `iou_threshold`; the rest start groups of their own.
A group's box, behaviour probabilities (given a person) and behaviour maps are the means over
the members in it; its person score is the sum of theirs over the number of members M, so a
person only one of two members sees keeps half its score (and, below the tracker's
`min_score`, drops out).

Inputs and output follow `jaxact.train.detector.detections_from_outputs`: `boxes` `[B, N, 4]`
xyxy, `person_scores` `[B, N]`, `action_scores` `[B, N, A]` (person score x behaviour
probability), optionally `map_probs` `[B, N, S, S, A + 1]`. The fused arrays have M x N
detections a clip (static shape), best person score first, unused places zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxact.analysis.tracking import iou_matrix

FIELDS = ("boxes", "person_scores", "action_scores")


def _groups(boxes: Sequence[np.ndarray], iou_threshold: float) -> list[list[tuple[int, int]]]:
    """Per group, its (member, detection) pairs; members' boxes `[N_m, 4]` in member order."""
    groups = [[(0, i)] for i in range(len(boxes[0]))]
    sums = [boxes[0][i].astype(np.float64) for i in range(len(boxes[0]))]
    for m in range(1, len(boxes)):
        centres = np.stack([s / len(g) for s, g in zip(sums, groups, strict=True)]) \
            if groups else np.zeros((0, 4))
        iou = iou_matrix(boxes[m], centres)
        rows, cols = linear_sum_assignment(-iou) if iou.size else ((), ())
        joined = set()
        for r, c in zip(rows, cols, strict=True):
            if iou[r, c] >= iou_threshold:
                groups[c].append((m, r))
                sums[c] = sums[c] + boxes[m][r]
                joined.add(r)
        for r in range(len(boxes[m])):
            if r not in joined:
                groups.append([(m, r)])
                sums.append(boxes[m][r].astype(np.float64))
    return groups


def fuse_detections(members: Sequence[Mapping], iou_threshold: float = 0.5) -> dict:
    """M members' detections of the same B clips (module docstring) -> one fused set.

    Every member must have the same B and A, and `map_probs` all or none.
    """
    if not members:
        raise ValueError("fuse_detections needs at least one member's detections")
    with_maps = {"map_probs" in m for m in members}
    if len(with_maps) != 1:
        raise ValueError("either every member has map_probs or none has")
    fields = FIELDS + (("map_probs",) if with_maps.pop() else ())
    arrays = [{f: np.asarray(m[f], np.float32) for f in fields} for m in members]
    b, a = arrays[0]["action_scores"].shape[0], arrays[0]["action_scores"].shape[2]
    for i, m in enumerate(arrays):
        if m["action_scores"].shape[0] != b or m["action_scores"].shape[2] != a:
            raise ValueError(f"member {i}: action_scores {m['action_scores'].shape}, member 0 "
                             f"{arrays[0]['action_scores'].shape}: different clips or behaviours")
    num_members, size = len(arrays), sum(m["person_scores"].shape[1] for m in arrays)
    out = {f: np.zeros((b, size, *arrays[0][f].shape[2:]), np.float32) for f in fields}
    for row in range(b):
        groups = _groups([m["boxes"][row] for m in arrays], iou_threshold)
        person = np.zeros(len(groups))
        fused = {f: [] for f in fields if f != "person_scores"}
        for g, group in enumerate(groups):
            scores = np.array([arrays[m]["person_scores"][row, i] for m, i in group])
            person[g] = scores.sum() / num_members
            # Behaviour probabilities given a person, so that a member's low person score
            # does not also dilute the behaviours it sees.
            given = [arrays[m]["action_scores"][row, i] / max(s, 1e-6)
                     for (m, i), s in zip(group, scores, strict=True)]
            fused["action_scores"].append(person[g] * np.clip(np.mean(given, axis=0), 0, 1))
            for f in fused:
                if f != "action_scores":
                    fused[f].append(np.mean([arrays[m][f][row, i] for m, i in group], axis=0))
        order = np.argsort(-person, kind="stable")
        out["person_scores"][row, :len(groups)] = person[order]
        for f, values in fused.items():
            out[f][row, :len(groups)] = np.asarray(values)[order]
    return out
