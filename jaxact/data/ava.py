"""AVA-format person-action annotations: CSV rows -> per-keyframe boxes and multi-hot actions.

One (person, action) pair per row, no header (AVA v2.x, and MultiSports exported the same way):
  video_id, timestamp, x1, y1, x2, y2, action_id[, person_id]
`timestamp` is an integer (AVA: the keyframe's second; MultiSports: a frame number), the box is
normalized xyxy, `action_id` is 1-based (AVA v2.2: 1..80) unless a label map says otherwise. The
rows of one person at one keyframe merge into one multi-hot row; without a `person_id` column a
person is identified by its box.

Every row is validated; a bad row is skipped and reported as a `Problem` naming the file, the
1-based line number and the field, so one broken line never costs the rest of the file.
`strict=True` raises `BadInputError` on the first problem instead.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np
from absl import logging

from jaxact.data.video_io import BadInputError, MissingInputError, Problem, summarize

FIELDS = ("video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "person_id")
BOX_TOLERANCE = 1e-3  # coordinates this far outside [0, 1] are rounding noise: clipped, not rejected

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")  # no nan / inf / 1_0


@dataclasses.dataclass(frozen=True)
class Keyframe:
    """The annotated people of one keyframe."""

    video_id: str
    timestamp: int
    boxes: np.ndarray  # f32 [P, 4] normalized x1, y1, x2, y2
    actions: np.ndarray  # u8 [P, A] multi-hot, column order of the label map
    person_ids: np.ndarray  # i64 [P]; -1 where the rows have no person_id


class _Problems(list):
    """Collects problems, or raises the first one when strict."""

    def __init__(self, strict: bool):
        super().__init__()
        self.strict = strict

    def add(self, path: str, reason: str, row: int | None = None, field: str | None = None):
        if self.strict:
            raise BadInputError(path, reason, row, field)
        self.append(Problem(path, reason, row, field))


def read_bytes(path: str) -> bytes:
    """The whole file; `MissingInputError` / `BadInputError` naming it when it is absent or
    unreadable."""
    if not os.path.exists(path):
        raise MissingInputError(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BadInputError(path, f"cannot read ({e})") from e


def _rows(path: str, problems: _Problems, allow_empty: bool):
    """Yields `(line number, stripped fields)` of each non-blank line, with fields None for a line
    already reported (not UTF-8, bad CSV). Lines are parsed one at a time so that a broken one
    cannot swallow its neighbours."""
    data = read_bytes(path)
    if not data and not allow_empty:
        raise BadInputError(path, "empty file (0 bytes), expected annotation rows")
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            problems.add(path, "not UTF-8 text", number)
            yield number, None
            continue
        if not text.strip():
            continue
        try:
            fields = next(csv.reader([text]))
        except csv.Error as e:
            problems.add(path, f"malformed CSV ({e})", number)
            yield number, None
            continue
        yield number, [f.strip() for f in fields]


def _timestamp(text: str) -> int | str:
    """The timestamp, or the reason it is bad."""
    if not re.fullmatch(r"\d+", text):
        return f"{text!r} is not a non-negative integer"
    return int(text)


def read_excluded_timestamps(path: str, strict: bool = False):
    """Keyframes to leave out, from `video_id, timestamp` rows.

    Returns `(set of (video_id, timestamp), problems)`; an empty file excludes nothing.
    """
    problems = _Problems(strict)
    excluded = set()
    for number, fields in _rows(path, problems, allow_empty=True):
        if fields is None:
            continue
        if len(fields) != 2:
            problems.add(path, f"{len(fields)} fields, expected 2 (video_id, timestamp)", number)
        elif not fields[0]:
            problems.add(path, "empty", number, "video_id")
        elif isinstance(ts := _timestamp(fields[1]), str):
            problems.add(path, ts, number, "timestamp")
        else:
            excluded.add((fields[0], ts))
    if problems:
        logging.warning("%s: %s", path, summarize(problems, len(excluded) + len(problems), "rows"))
    return excluded, list(problems)


def _parse(fields: list[str], action_index: dict[int, int], id_range: str, tolerance: float):
    """`(video_id, timestamp, box (4 floats), action column, person_id)` of a row of the right
    length, or `(field, reason)` for its first bad field."""
    video_id = fields[0]
    if not video_id:
        return "video_id", "empty"
    timestamp = _timestamp(fields[1])
    if isinstance(timestamp, str):
        return "timestamp", timestamp
    box = []
    for name, text in zip(FIELDS[2:6], fields[2:6], strict=True):
        if not _FLOAT.fullmatch(text):
            return name, f"{text!r} is not a number"
        value = float(text)
        if not -tolerance <= value <= 1 + tolerance:
            return name, f"{name}={text} is outside [0, 1]"
        box.append(min(max(value, 0.0), 1.0))
    x1, y1, x2, y2 = box
    if x2 <= x1:
        return "x2", f"x2={fields[4]} <= x1={fields[2]}: an empty or inverted box"
    if y2 <= y1:
        return "y2", f"y2={fields[5]} <= y1={fields[3]}: an empty or inverted box"
    if not _INT.fullmatch(fields[6]):
        return "action_id", f"{fields[6]!r} is not an integer"
    action_id = int(fields[6])
    if action_id not in action_index:
        return "action_id", f"{action_id} is outside {id_range}"
    person_id = -1
    if len(fields) == 8:
        if not _INT.fullmatch(fields[7]):
            return "person_id", f"{fields[7]!r} is not an integer"
        person_id = int(fields[7])
        if person_id < 0:
            return "person_id", f"{person_id} is negative, expected an integer >= 0"
    return video_id, timestamp, tuple(box), action_index[action_id], person_id


def read_ava_csv(path: str, actions: int | Sequence[int] = 80, excluded_path: str | None = None,
                 strict: bool = False, tolerance: float = BOX_TOLERANCE):
    """Reads and validates an AVA-format CSV; returns `(annotations, problems)`.

    `actions`: the number of classes A (ids 1..A -> columns 0..A-1), or the label map as the
    sequence of action ids in column order (e.g. AVA's 60 evaluated ids). `excluded_path`: an
    excluded-timestamps CSV whose keyframes are dropped (not reported as problems).

    `annotations`: `{(video_id, timestamp): Keyframe}` in sorted key order, people in the order
    they first appear. `problems`: a `Problem` (file, 1-based line, field, reason) per skipped
    row: wrong number of fields, empty or non-numeric fields, a timestamp that is not an integer,
    coordinates outside [0, 1] beyond `tolerance` (within it they are clipped), empty or inverted
    boxes, action ids outside the label map, negative person ids, exact duplicates of an earlier
    row, and a person id that already has another box at the same keyframe (the first box wins).
    Missing or empty files raise `BadInputError`; so does any problem when `strict`.
    """
    if isinstance(actions, int):
        action_ids, id_range = list(range(1, actions + 1)), f"1..{actions}"
    else:
        action_ids, id_range = [int(a) for a in actions], f"the label map's {len(actions)} ids"
    if not action_ids or len(set(action_ids)) != len(action_ids):
        raise ValueError(f"actions={actions!r}: expected a class count >= 1 or distinct ids")
    action_index = {a: i for i, a in enumerate(action_ids)}
    excluded, excluded_problems = set(), []
    if excluded_path is not None:
        excluded, excluded_problems = read_excluded_timestamps(excluded_path, strict)
    problems = _Problems(strict)

    seen_rows = {}  # parsed row -> line: exact duplicates
    person_boxes = {}  # (video_id, timestamp, person_id) -> (box, line)
    people = {}  # (video_id, timestamp) -> {person key: [box, person_id, set of action columns]}
    total = dropped = 0
    for number, fields in _rows(path, problems, allow_empty=False):
        total += 1
        if fields is None:
            continue
        if len(fields) not in (7, 8):
            problems.add(path, f"{len(fields)} fields, expected 7 or 8 ({', '.join(FIELDS[:7])}"
                               f"[, {FIELDS[7]}])", number)
            continue
        parsed = _parse(fields, action_index, id_range, tolerance)
        if len(parsed) == 2:
            problems.add(path, parsed[1], number, parsed[0])
            continue
        video_id, timestamp, box, column, person_id = parsed
        keyframe = (video_id, timestamp)
        if keyframe in excluded:
            dropped += 1
            continue
        if parsed in seen_rows:
            problems.add(path, f"duplicate of row {seen_rows[parsed]}", number)
            continue
        seen_rows[parsed] = number
        if person_id >= 0:
            first_box, first_row = person_boxes.setdefault((*keyframe, person_id), (box, number))
            if first_box != box:
                problems.add(path, f"person_id {person_id} already has box "
                                   f"{[round(v, 4) for v in first_box]} at row {first_row} of this "
                                   "keyframe; this row's box differs", number, "person_id")
                continue
        key = ("id", person_id) if person_id >= 0 else ("box", box)
        person = people.setdefault(keyframe, {}).setdefault(key, [box, person_id, set()])
        person[2].add(column)
    if total == 0 and not problems:
        raise BadInputError(path, "no annotation rows")

    annotations = {}
    for (video_id, timestamp), persons in sorted(people.items()):
        multi_hot = np.zeros((len(persons), len(action_ids)), np.uint8)
        for p, (_, _, columns) in enumerate(persons.values()):
            multi_hot[p, sorted(columns)] = 1
        annotations[(video_id, timestamp)] = Keyframe(
            video_id, timestamp,
            boxes=np.array([p[0] for p in persons.values()], np.float32).reshape(-1, 4),
            actions=multi_hot,
            person_ids=np.array([p[1] for p in persons.values()], np.int64))
    kept = sum(len(k.person_ids) for k in annotations.values())
    logging.info("%s: %d keyframes, %d people from %d rows%s", path, len(annotations), kept, total,
                 f"; {dropped} rows at excluded keyframes dropped" if dropped else "")
    if problems:
        logging.warning("%s: %s", path, summarize(problems, total, "rows"))
    return annotations, excluded_problems + list(problems)
