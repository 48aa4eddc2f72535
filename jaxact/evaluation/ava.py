"""AVA action-detection frame-mAP with the numbers of the official ActivityNet evaluator.

  python -m jaxact.evaluation.ava --labelmap LABELMAP --groundtruth GT.csv --detections DET.csv \
      [--exclusions EXCL.csv] [--output OUT.json]

Prints per-class AP and the mAP at IoU 0.5; `--output` writes `{"map": float, "per_class_ap":
{"<action_id>": float}}` atomically (null for NaN: a class without ground truth).

The official `get_ava_performance.py` reads the CSVs and feeds the TF object-detection API's
`PascalDetectionEvaluator`. Its rules are the defaults of `evaluate` and are applied in its order:

1. Label map: rows (ground truth and detections) whose action id is not in it are dropped first.
2. Top 50: per keyframe (video_id, timestamp) only the 50 highest-scoring detection rows (one row =
   one box with one action) are kept (`top_k_per_keyframe`; None keeps all). The official keeps
   them in a `heapq` of `(score, action_id, y1, x1, y2, x2)` tuples and replaces the smallest only
   for a strictly higher score; this is reproduced exactly, including which rows tied at the 50th
   score survive: those seen before the 50th row scoring at least that score, minus one per later
   higher-scoring row, smallest tuple first (identical tuples: the earliest row first).
3. Excluded keyframes: their ground truth and detections are dropped.
4. Invalid detection boxes (x1 >= x2 or y1 >= y2) are dropped, after the top 50, so they still took
   a place there. Ground-truth boxes are not checked by the official code, except that an inverted
   one (x1 > x2 or y1 > y2) makes it raise; here that is an error too (`read_csv` names the file
   and line). An empty ground-truth box (x1 == x2 or y1 == y2) counts in the recall denominator and
   can never be matched (IoU 0).
5. Detections on a keyframe without ground truth (none left after steps 1 and 3) are false
   positives, as in the official evaluator; `keyframes_without_gt="ignore"` drops them instead.
6. Matching, per keyframe and class, detections in descending score: a detection's best ground
   truth is the box of that class with the highest IoU among all of them, claimed or not; it is a
   true positive if that IoU >= 0.5 and the box is unclaimed (it then claims it), else a false
   positive. A detection whose best box is taken does not fall back to the next one. Ground truth
   has one row per (person box, action): each row is one instance of its class.
7. AP per class as `metrics.compute_precision_recall` + `compute_average_precision`: detections of
   all keyframes ranked by score, precision made monotone (non-increasing in rank), summed over
   the recall changes. A class with ground truth and no detections has AP 0; a class without
   ground truth has AP NaN and is left out of the mAP (NaN-mean over the label map's classes).

IoU is taken on the coordinates as written (normalised; no +1 in widths and areas, no clipping),
with the official's operations in its order, so IoUs near 0.5 compare the same way.

Where the official result is not deterministic, the choices here:
- Equal scores: ranked by row of the detections file, earlier first (`np.argsort(-scores,
  kind="stable")` in file order), both within a keyframe (which detection claims a box) and across
  keyframes (the precision/recall curve). The official order among ties comes from `heapq`'s layout
  and numpy's unstable quicksort; with distinct scores every AP equals the official one.
- Equal IoUs with two ground-truth boxes: the first box wins, in the official's order: descending
  person_id (its read_csv takes that column as the row's score), then file order (the official:
  `heapq` layout).
Keyframes are (video_id, integer timestamp), so "0902" and "902" are one keyframe, as in the
official key. Deviations on bad input only: NaN/inf values, non-integer timestamps, 7-column
detection rows (the official takes score 1.0) and inverted ground-truth boxes anywhere (the official
fails only where that class is detected on that keyframe) are errors naming the file, line and
field; fields are stripped of surrounding spaces.

Speed: vectorised numpy (rows grouped by keyframe and class with sorts and searchsorted, the IoUs of
all (detection, ground truth) pairs of every group in one batch). A synthetic set of AVA v2.2
validation size (57k keyframes, 1M detection rows, 60 classes) evaluates in about 0.8 s, plus 3.3 s
to read the CSVs, on 2 shared cores (`benchmarks/ava_eval.py`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping

import numpy as np
from absl import logging

from jaxact.data.ava import _Problems, _rows, _timestamp, read_bytes, read_excluded_timestamps
from jaxact.data.video_io import BadInputError, MissingInputError
from jaxact.files import write_atomic, write_json

IOU_THRESHOLD = 0.5
TOP_K_PER_KEYFRAME = 50
KEYFRAMES_WITHOUT_GT = ("false_positive", "ignore")
_COLUMNS = ("video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id")
_CHUNK_LINES = 1 << 18  # rows parsed per batch: bounds the memory of the Python row lists


@dataclasses.dataclass(frozen=True)
class Rows:
    """The N rows of an AVA CSV, in file order (the order ranks equal scores)."""

    video_ids: np.ndarray  # object [N] str
    timestamps: np.ndarray  # i64 [N]
    boxes: np.ndarray  # f64 [N, 4] x1, y1, x2, y2 as written
    actions: np.ndarray  # i64 [N]
    scores: np.ndarray  # f64 [N] detection score; ground truth: person_id (1.0 where absent)

    def __len__(self) -> int:
        return len(self.scores)


def keyframe_rows(detections, ground_truth, video_ids, timestamps=None) -> tuple[Rows, Rows]:
    """(ground truth, detections) `Rows` of keyframes in `frame_map.frame_map`'s format, one
    keyframe per clip at its `video_ids` entry and `timestamps` entry (None: 0); action ids are
    1-based class indices. Detections: every (box, class) pair with its score; ground truth: one row per
    (person, labelled action), person_id the person's index."""
    if timestamps is None:
        timestamps = [0] * len(video_ids)
    gt, det = [], []
    for video, ts, d, g in zip(video_ids, timestamps, detections, ground_truth, strict=True):
        labels = np.asarray(g["labels"]).reshape(len(g["boxes"]), -1)
        for person, action in np.argwhere(labels > 0):
            gt.append((video, ts, *np.asarray(g["boxes"])[person], action + 1, person))
        scores = np.asarray(d["scores"])
        for box, action in np.ndindex(*scores.shape):
            det.append((video, ts, *np.asarray(d["boxes"])[box], action + 1, scores[box, action]))

    def rows(items) -> Rows:
        return Rows(np.array([r[0] for r in items], object),
                    np.array([r[1] for r in items], np.int64),
                    np.array([r[2:6] for r in items], np.float64).reshape(-1, 4),
                    np.array([r[6] for r in items], np.int64), np.array([r[7] for r in items],
                                                                        np.float64))
    return rows(gt), rows(det)


def write_csv(path: str, rows: Rows, detections: bool) -> str:
    """`rows` as an AVA CSV (boxes with 6 decimals; detections' scores with 6 significant digits,
    ground truth's person ids as integers), written atomically; `read_csv` reads it back."""
    last = (lambda v: f"{v:.6g}") if detections else (lambda v: str(int(v)))

    def write(f):
        for video, ts, box, action, score in zip(rows.video_ids, rows.timestamps, rows.boxes,
                                                 rows.actions, rows.scores, strict=True):
            f.write(f"{video},{int(ts)},{box[0]:.6f},{box[1]:.6f},{box[2]:.6f},{box[3]:.6f},"
                    f"{int(action)},{last(score)}\n")
    return write_atomic(path, write, binary=False)


def write_labelmap(path: str, names) -> str:
    """An AVA `.pbtxt` label map of `names` (ids 1, 2, ... in order), written atomically."""
    items = "".join(f'item {{\n  name: "{name}"\n  id: {i}\n}}\n'
                    for i, name in enumerate(names, start=1))
    return write_atomic(path, lambda f: f.write(items), binary=False)


# ----------------------------------------------------------------------------- reading


def read_labelmap(path: str) -> dict[int, str]:
    """`{action_id: name}` in file order, from a `.pbtxt` label map or a CSV.

    pbtxt: `item { name: "..." id: N }` blocks as AVA ships them for evaluation, or `label {
    name: "..." label_id: N label_type: ... }` as in its full action list (`display_name` is read
    when there is no `name`; other fields are ignored). CSV: `action_id[, name]` rows, with an
    optional header line. Raises `BadInputError` naming the file, line and field of the first
    problem: unbalanced braces, a missing or non-positive or repeated id, an unknown block.
    """
    if not os.path.exists(path):
        raise MissingInputError(path)
    labels = _read_labelmap_csv(path) if path.endswith(".csv") else _read_pbtxt(path)
    if not labels:
        raise BadInputError(path, "no classes in the label map")
    return labels


_PBTXT_TOKEN = re.compile(r"""\s*(?:(?P<comment>\#.*)|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
                          r"|(?P<punct>[{}:])|(?P<word>[\w.+-]+)|(?P<bad>\S))")


def _pbtxt_tokens(path: str, text: str):
    """Yields `(line, kind, value)`: kind "str" (value unquoted), "punct" or "word"."""
    for number, line in enumerate(text.splitlines(), start=1):
        for m in _PBTXT_TOKEN.finditer(line):
            kind = m.lastgroup
            if kind == "bad":
                raise BadInputError(path, f"unexpected {line[m.start(kind):][:20]!r}", number)
            if kind == "str":
                yield number, kind, re.sub(r"\\(.)", r"\1", m.group(kind)[1:-1])
            elif kind in ("punct", "word"):
                yield number, kind, m.group(kind)


def _read_pbtxt(path: str) -> dict[int, str]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise BadInputError(path, f"not UTF-8 text ({e})") from e
    tokens = list(_pbtxt_tokens(path, text))
    labels, first_line = {}, {}
    i = 0

    def take(kind: str, what: str):
        nonlocal i
        if i >= len(tokens):
            last = tokens[-1][0] if tokens else 1
            raise BadInputError(path, f"file ends where {what} was expected", last)
        line, k, value = tokens[i]
        if k != kind or (kind == "punct" and value not in what):
            raise BadInputError(path, f"expected {what}, found {value!r}", line)
        i += 1
        return line, value

    while i < len(tokens):
        line, block = take("word", "'item {' or 'label {'")
        if block not in ("item", "label"):
            raise BadInputError(path, f"unknown block {block!r}, expected 'item' or 'label'", line)
        if i < len(tokens) and tokens[i][2] == ":":
            i += 1
        take("punct", "{")
        fields = {}
        while i < len(tokens) and tokens[i][1:] != ("punct", "}"):
            field_line, field = take("word", "a field name or '}'")
            take("punct", ":")
            if i >= len(tokens) or tokens[i][1] == "punct":
                raise BadInputError(path, "a value is missing", field_line, field)
            if field in fields:
                raise BadInputError(path, f"repeats line {fields[field][0]}", field_line, field)
            if field in ("name", "display_name") and tokens[i][1] != "str":
                raise BadInputError(path, f"{tokens[i][2]!r} is not a quoted string",
                                    field_line, field)
            fields[field] = (field_line, tokens[i][1], tokens[i][2])
            i += 1
        take("punct", "}")
        id_field = "id" if "id" in fields else "label_id"
        if id_field not in fields:
            raise BadInputError(path, f"the {block} block has no 'id' or 'label_id'", line)
        id_line, kind, value = fields[id_field]
        if kind != "word" or not re.fullmatch(r"[+-]?\d+", value) or int(value) < 1:
            raise BadInputError(path, f"{value!r} is not an integer >= 1 (ids are 1-based)",
                                id_line, id_field)
        if int(value) in labels:
            raise BadInputError(path, f"id {int(value)} repeats that of line "
                                f"{first_line[int(value)]}", id_line, id_field)
        name_field = "name" if "name" in fields else "display_name"
        name = fields[name_field][2] if name_field in fields else str(int(value))
        labels[int(value)] = name
        first_line[int(value)] = id_line
    return labels


def _read_labelmap_csv(path: str) -> dict[int, str]:
    problems = _Problems(strict=True)
    labels, first_line = {}, {}
    for number, fields in _rows(path, problems, allow_empty=False):
        if number == 1 and fields and not re.fullmatch(r"[+-]?\d+", fields[0]):
            continue  # a header
        if not 1 <= len(fields) <= 2:
            raise BadInputError(path, f"{len(fields)} fields, expected action_id[, name]", number)
        if not re.fullmatch(r"\d+", fields[0]) or int(fields[0]) < 1:
            raise BadInputError(path, f"{fields[0]!r} is not an integer >= 1", number, "action_id")
        action_id = int(fields[0])
        if action_id in labels:
            raise BadInputError(path, f"id {action_id} repeats that of line "
                                f"{first_line[action_id]}", number, "action_id")
        labels[action_id] = fields[1] if len(fields) == 2 else str(action_id)
        first_line[action_id] = number
    return labels


def read_exclusions(path: str) -> set[tuple[str, int]]:
    """`{(video_id, timestamp)}` of an excluded-timestamps CSV; a bad row raises
    `BadInputError` with its line."""
    return read_excluded_timestamps(path, strict=True)[0]


def read_csv(path: str, detections: bool) -> Rows:
    """The rows of an AVA ground-truth (`video_id, timestamp, x1, y1, x2, y2, action_id[,
    person_id]`) or detections (`..., action_id, score`) CSV, no header.

    Numbers are parsed with Python's `float` / `int` like the official reader. A bad row raises
    `BadInputError` naming the file, line and field: wrong number of fields, an empty video id, a
    timestamp that is not a non-negative integer, a non-numeric or non-finite value, an inverted
    ground-truth box. An empty detections file is no detections.
    """
    data = read_bytes(path)
    if not data.strip() and not detections:
        raise BadInputError(path, "no ground-truth rows")
    try:
        rows = _parse(data, detections)
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        _raise_first_problem(path, detections)
        raise BadInputError(path, f"cannot parse ({e})") from e  # a problem the row check missed
    if not _all_good(rows, detections):
        _raise_first_problem(path, detections)
    return rows


def _parse(data: bytes, detections: bool) -> Rows:
    """Fast path: whole columns at a time; any failure is located by `_raise_first_problem`."""
    lines = [line for line in data.decode("utf-8-sig").splitlines() if line.strip()]
    vocab = {}  # one str object per video id
    columns = [[] for _ in range(8)]
    for start in range(0, len(lines), _CHUNK_LINES):
        cols = _columns(lines[start:start + _CHUNK_LINES], detections)
        n = len(cols[0])
        video_ids = [vocab.setdefault(v.strip(), v.strip()) for v in cols[0]]
        if "" in vocab or not all(map(str.isdigit, map(str.strip, cols[1]))):
            raise ValueError("empty video id or bad timestamp")
        columns[0].append(np.array(video_ids, object))
        columns[1].append(np.fromiter(map(int, cols[1]), np.int64, n))
        for j in (2, 3, 4, 5, 7):
            columns[j].append(np.fromiter(map(float, cols[j]), np.float64, n))
        columns[6].append(np.fromiter(map(int, cols[6]), np.int64, n))
    cat = [np.concatenate(c) if c else np.zeros(0, d)
           for c, d in zip(columns, (object, np.int64, *[np.float64] * 4, np.int64, np.float64),
                           strict=True)]
    return Rows(cat[0], cat[1], np.stack(cat[2:6], axis=1), cat[6], cat[7])


def _columns(lines: list[str], detections: bool) -> list[list[str]]:
    """The 8 columns (str) of non-blank CSV lines; a 7-field ground-truth row gets the official's
    default score 1.0. Splits on commas, or with the csv module where fields are quoted."""
    allowed = {8} if detections else {7, 8}
    if any('"' in line for line in lines):
        rows = list(csv.reader(lines))
        if not set(map(len, rows)) <= allowed:
            raise ValueError("wrong number of fields")
        return [list(c) for c in zip(*(r if len(r) == 8 else [*r, "1.0"] for r in rows),
                                     strict=True)]
    widths = [line.count(",") + 1 for line in lines]
    if not set(widths) <= allowed:
        raise ValueError("wrong number of fields")
    if 7 in widths:
        lines = [line if w == 8 else line + ",1.0" for line, w in zip(lines, widths, strict=True)]
    fields = ",".join(lines).split(",")
    return [fields[j::8] for j in range(8)]


def _all_good(rows: Rows, detections: bool) -> bool:
    good = np.isfinite(rows.boxes).all() and np.isfinite(rows.scores).all()
    if not detections:
        good = good and not _inverted(rows.boxes).any()
    return bool(good)


def _inverted(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])


def _raise_first_problem(path: str, detections: bool) -> None:
    """Checks the file row by row and raises `BadInputError` at its first bad row, if any."""
    last = "score" if detections else "person_id"
    widths = (8,) if detections else (7, 8)
    for number, fields in _rows(path, _Problems(strict=True), allow_empty=True):
        if len(fields) not in widths:
            expected = " or ".join(map(str, widths))
            raise BadInputError(path, f"{len(fields)} fields, expected {expected} "
                                f"({', '.join(_COLUMNS)}, {last})", number)
        if not fields[0]:
            raise BadInputError(path, "empty", number, "video_id")
        if isinstance(reason := _timestamp(fields[1]), str):
            raise BadInputError(path, reason, number, "timestamp")
        names = (*_COLUMNS[2:6], last) if len(fields) == 8 else _COLUMNS[2:6]
        values = {}
        for name, text in zip(names, fields[2:6] + fields[7:], strict=True):
            try:
                values[name] = float(text)
            except ValueError:
                raise BadInputError(path, f"{text!r} is not a number", number, name) from None
            if not math.isfinite(values[name]):
                raise BadInputError(path, f"{text!r} is not a finite number", number, name)
        try:
            int(fields[6])
        except ValueError:
            raise BadInputError(path, f"{fields[6]!r} is not an integer", number,
                                "action_id") from None
        for lo, hi in (("x1", "x2"), ("y1", "y2")):
            if not detections and values[hi] < values[lo]:
                raise BadInputError(path, f"{hi}={values[hi]} < {lo}={values[lo]}: an inverted "
                                    "ground-truth box (the official evaluator fails on it)",
                                    number, hi)


# ----------------------------------------------------------------------------- evaluation


def keep_top_k(keyframes: np.ndarray, scores: np.ndarray, actions: np.ndarray, boxes: np.ndarray,
               k: int) -> np.ndarray:
    """bool `[N]`: the rows the official reader keeps when it holds at most `k` per keyframe.

    Args (rows in file order): `keyframes` i64 `[N]` keyframe ids, `scores` f64 `[N]`, `actions`
    i64 `[N]`, `boxes` f64 `[N, 4]` xyxy (with the action, they order the heap's tied entries).

    Every row scoring above the keyframe's k-th best score s is kept. Rows scoring s all enter the
    heap until it holds k rows scoring >= s (at the k-th such row in file order); later ones are
    refused, and each later row scoring above s evicts the smallest held `(score, action_id, y1,
    x1, y2, x2)` entry, which then scores s.
    """
    if k < 1:
        raise ValueError(f"k={k}: expected at least 1 row per keyframe")
    keep = np.ones(len(scores), bool)
    if len(scores) == 0:
        return keep
    _, group = np.unique(keyframes, return_inverse=True)
    idx = np.flatnonzero(np.bincount(group)[group] > k)  # rows of keyframes over the limit
    if len(idx) == 0:
        return keep
    g, s = group[idx], scores[idx]
    order = np.lexsort((-s, g))
    first = np.searchsorted(g[order], g[order])
    kth = np.empty_like(s)
    kth[order] = s[order][first + k - 1]
    keep[idx] = False
    cand = np.flatnonzero(s >= kth)  # into idx; still in file order
    cg = g[cand]
    by_group = np.argsort(cg, kind="stable")
    position = np.empty(len(cand), np.int64)
    position[by_group] = np.arange(len(cand)) - np.searchsorted(cg[by_group], cg[by_group])
    early = position < k  # arrived before the heap held k rows scoring >= s
    tied = s[cand] == kth[cand]
    evictions = np.bincount(cg[~tied & ~early], minlength=group.max() + 1)
    keep[idx[cand[~tied | early]]] = True
    held = idx[cand[tied & early]]  # tied rows in the heap, candidates for eviction
    hg = group[held]
    b = boxes[held]
    heap_order = np.lexsort((held, b[:, 2], b[:, 3], b[:, 0], b[:, 1], actions[held], hg))
    hs = hg[heap_order]
    rank = np.arange(len(held)) - np.searchsorted(hs, hs)
    keep[held[heap_order[rank < evictions[hs]]]] = False
    return keep


def _keyframe_codes(parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """One i64 code per (video_id, timestamp), shared by all `parts` ((video_ids, timestamps))."""
    parts = list(parts)
    vocab = {}
    videos = [np.fromiter((vocab.setdefault(v, len(vocab)) for v in vids), np.int64, len(vids))
              for vids, _ in parts]
    stride = 1 + max((int(t.max()) for _, t in parts if len(t)), default=0)
    if stride * max(len(vocab), 1) >= 2**62:
        raise ValueError(f"timestamps up to {stride - 1} with {len(vocab)} videos overflow the codes")
    return [v * stride + t for v, (_, t) in zip(videos, parts, strict=True)]


def _iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of paired xyxy boxes `[P, 4]`, `[P, 4]` -> `[P]`, operation for operation as the
    official `np_box_ops.iou` (it only reorders coordinates to yxyx)."""
    heights = np.maximum(0.0, np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]))
    widths = np.maximum(0.0, np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]))
    intersection = heights * widths
    area = lambda b: (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0])
    return intersection / (area(det) + area(gt) - intersection)


def _true_positives(det_group, det_boxes, det_rank, gt_group, gt_boxes, threshold) -> np.ndarray:
    """bool `[D]` official matching for all (keyframe, class) groups at once.

    `det_group` i64 `[D]`, `gt_group` i64 `[G]` (sorted; within a group in the official's box
    order), boxes `[D, 4]` / `[G, 4]`, `det_rank` i64 `[D]` the processing order (lower first).
    Pairs every detection with the ground truth of its group, takes the first highest-IoU box per
    detection, and gives each box claimed at IoU >= threshold to its first detection.
    """
    lo = np.searchsorted(gt_group, det_group, "left")
    count = np.searchsorted(gt_group, det_group, "right") - lo
    has = count > 0
    start = np.cumsum(count) - count
    det_of_pair = np.repeat(np.arange(len(det_group)), count)
    gt_of_pair = lo[det_of_pair] + np.arange(len(det_of_pair)) - start[det_of_pair]
    iou = _iou(det_boxes[det_of_pair], gt_boxes[gt_of_pair])
    best_iou = np.full(len(det_group), -1.0)
    if has.any():
        best_iou[has] = np.maximum.reduceat(iou, start[has])
    at_max = np.flatnonzero(iou == best_iou[det_of_pair])
    _, first = np.unique(det_of_pair[at_max], return_index=True)  # pairs are grouped by detection
    best_gt = np.full(len(det_group), -1)
    best_gt[has] = gt_of_pair[at_max[first]]
    hit = np.flatnonzero(best_iou >= threshold)
    claims = hit[np.lexsort((det_rank[hit], best_gt[hit]))]
    claimed = best_gt[claims]
    first_claim = np.ones(len(claims), bool)
    first_claim[1:] = claimed[1:] != claimed[:-1]
    tp = np.zeros(len(det_group), bool)
    tp[claims[first_claim]] = True
    return tp


def average_precision(tp_ranked: np.ndarray, num_gt: int) -> float:
    """AP of detections in rank order (bool `[K]` true positives) as the TF object-detection API
    computes it (`metrics.compute_precision_recall` + `compute_average_precision`); NaN without
    ground truth, 0.0 without detections."""
    if num_gt == 0:
        return float("nan")
    if len(tp_ranked) == 0:
        return 0.0
    labels = tp_ranked.astype(int)
    cum_tp, cum_fp = np.cumsum(labels), np.cumsum(1 - labels)
    precision = cum_tp.astype(float) / (cum_tp + cum_fp)
    recall = cum_tp.astype(float) / num_gt
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    indices = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[indices] - recall[indices - 1]) * precision[indices]))


def evaluate(ground_truth: Rows, detections: Rows, labelmap: Mapping[int, str] | Iterable[int],
             excluded: Iterable[tuple[str, int]] = (), *, iou_threshold: float = IOU_THRESHOLD,
             top_k_per_keyframe: int | None = TOP_K_PER_KEYFRAME,
             keyframes_without_gt: str = "false_positive") -> dict:
    """Frame-mAP of AVA-format rows under the official rules (module docstring).

    Args:
      ground_truth, detections: `Rows` in file order.
      labelmap: the evaluated action ids (a `{id: name}` mapping or ids), in output order.
      excluded: `(video_id, timestamp)` keyframes to leave out.
      iou_threshold: minimum IoU of a true positive.
      top_k_per_keyframe: detection rows kept per keyframe (None: all).
      keyframes_without_gt: "false_positive" (official) or "ignore".

    Returns:
      `{"map": float (NaN when no class has ground truth), "per_class_ap": {id: float (NaN
      without ground truth)}, "num_gt": {id: int}, "num_detections": int}` (detections
      evaluated after the rules).
    """
    if keyframes_without_gt not in KEYFRAMES_WITHOUT_GT:
        raise ValueError(f"keyframes_without_gt={keyframes_without_gt!r}, expected one of "
                         f"{KEYFRAMES_WITHOUT_GT}")
    ids = np.array(list(labelmap), np.int64)
    if len(ids) == 0 or len(np.unique(ids)) != len(ids) or ids.min() < 1:
        raise ValueError(f"label map ids {ids.tolist()}: expected distinct ids >= 1")
    excluded = list(excluded)
    ex_video = np.array([v for v, _ in excluded], object)
    ex_time = np.array([t for _, t in excluded], np.int64)
    gt, det = ground_truth, detections
    gt_key, det_key, ex_key = _keyframe_codes([(gt.video_ids, gt.timestamps),
                                               (det.video_ids, det.timestamps),
                                               (ex_video, ex_time)])

    g = np.flatnonzero(np.isin(gt.actions, ids))  # row numbers still in play
    d = np.flatnonzero(np.isin(det.actions, ids))
    if top_k_per_keyframe is not None:
        d = d[keep_top_k(det_key[d], det.scores[d], det.actions[d], det.boxes[d],
                         top_k_per_keyframe)]
    g = g[~np.isin(gt_key[g], ex_key)]
    d = d[~np.isin(det_key[d], ex_key)]
    box = det.boxes[d]
    d = d[(box[:, 0] < box[:, 2]) & (box[:, 1] < box[:, 3])]
    if _inverted(gt.boxes[g]).any():
        row = g[_inverted(gt.boxes[g])][0]
        raise ValueError(f"ground-truth row {row} (0-based) has an inverted box "
                         f"{gt.boxes[row].tolist()}")
    without_gt = ~np.isin(det_key[d], gt_key[g])
    if without_gt.any():
        logging.info("%d detections on %d keyframes without ground truth: %s", without_gt.sum(),
                     len(np.unique(det_key[d][without_gt])),
                     "ignored" if keyframes_without_gt == "ignore" else "false positives")
        if keyframes_without_gt == "ignore":
            d = d[~without_gt]

    # Dense (keyframe, class) groups; classes as label-map columns.
    sorted_ids, id_order = np.sort(ids), np.argsort(ids)
    gt_col = id_order[np.searchsorted(sorted_ids, gt.actions[g])]
    det_col = id_order[np.searchsorted(sorted_ids, det.actions[d])]
    _, dense = np.unique(np.concatenate([gt_key[g], det_key[d]]), return_inverse=True)
    gt_group = dense[:len(g)] * len(ids) + gt_col
    det_group = dense[len(g):] * len(ids) + det_col
    gt_order = np.lexsort((g, -gt.scores[g], gt_group))  # the official's box order
    scores = det.scores[d]
    rank = np.empty(len(d), np.int64)
    rank[np.lexsort((d, -scores))] = np.arange(len(d))
    tp = _true_positives(det_group, det.boxes[d], rank, gt_group[gt_order],
                         gt.boxes[g][gt_order], iou_threshold)

    num_gt = np.bincount(gt_col, minlength=len(ids))
    by_class = np.lexsort((rank, det_col))
    bounds = np.searchsorted(det_col[by_class], np.arange(len(ids) + 1))
    ap = np.array([average_precision(tp[by_class[bounds[c]:bounds[c + 1]]], int(num_gt[c]))
                   for c in range(len(ids))])
    # The official's NaN-mean runs over ids 1..max id (NaN where unused): same sum order here.
    by_id = np.full(ids.max(), np.nan)
    by_id[ids - 1] = ap
    mean_ap = float(np.nanmean(by_id)) if (num_gt > 0).any() else float("nan")
    return {"map": mean_ap,
            "per_class_ap": {int(i): float(a) for i, a in zip(ids, ap, strict=True)},
            "num_gt": {int(i): int(n) for i, n in zip(ids, num_gt, strict=True)},
            "num_detections": len(d)}


def evaluate_files(labelmap: str, groundtruth: str, detections: str, exclusions: str | None = None,
                   **options) -> dict:
    """`evaluate` on the official files; also returns `"names"`: `{id: name}`."""
    labels = read_labelmap(labelmap)
    excluded = read_exclusions(exclusions) if exclusions else set()
    result = evaluate(read_csv(groundtruth, detections=False), read_csv(detections, detections=True),
                      labels, excluded, **options)
    return {**result, "names": labels}


def _number(x: float) -> float | None:
    return None if math.isnan(x) else x


def format_table(result: dict) -> str:
    """Per-class lines `id  AP  num_gt  name` and the mAP line."""
    lines = [f"{'id':>4}  {'AP@0.5':>7}  {'num_gt':>7}  name"]
    for i, ap in result["per_class_ap"].items():
        lines.append(f"{i:>4}  {ap:>7.4f}  {result['num_gt'][i]:>7}  {result['names'][i]}")
    lines.append(f"mAP@0.5IOU {result['map']:.6f} over "
                 f"{sum(n > 0 for n in result['num_gt'].values())} classes with ground truth")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m jaxact.evaluation.ava",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--labelmap", required=True, help="Label map (.pbtxt, or .csv).")
    parser.add_argument("--groundtruth", required=True, help="Ground-truth CSV.")
    parser.add_argument("--detections", required=True, help="Detections CSV.")
    parser.add_argument("--exclusions", help="Excluded-timestamps CSV.")
    parser.add_argument("--output", help="JSON file for the mAP and per-class APs.")
    parser.add_argument("--top_k_per_keyframe", type=int, default=TOP_K_PER_KEYFRAME,
                        help="Detection rows kept per keyframe (0: all).")
    parser.add_argument("--keyframes_without_gt", choices=KEYFRAMES_WITHOUT_GT,
                        default="false_positive",
                        help="Detections on keyframes without ground truth.")
    args = parser.parse_args(argv)
    try:
        result = evaluate_files(args.labelmap, args.groundtruth, args.detections, args.exclusions,
                                top_k_per_keyframe=args.top_k_per_keyframe or None,
                                keyframes_without_gt=args.keyframes_without_gt)
    except BadInputError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(format_table(result))
    if args.output:
        write_json(args.output, {"map": _number(result["map"]),
                                 "per_class_ap": {str(i): _number(ap)
                                                  for i, ap in result["per_class_ap"].items()}},
                   indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
