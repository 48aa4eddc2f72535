"""Seat (row, column) of each tracked person in a classroom seen from the front (numpy).

Convention: the camera faces the class from the front, so the front row (nearest the camera)
is the lowest in the image, at the largest y. Row 1 is the front row (largest y), row numbers
grow towards the back; column 1 is the leftmost person of a row in the image (smallest x).

Rows are 1-D clusters of the people's y: complete-linkage agglomerative clustering
(`scipy.cluster.hierarchy`) cut where a row would span more than the row spread, so no two
people of one row are further apart in y than that. Complete, not single, linkage: one person
whose y sits between two rows (a raised arm stretches the box) cannot chain the rows into one.
The row spread is, by priority:

* ``row_gap`` if given (a normalised distance);
* else, with ``heights``, ``height_fraction`` x the median height: people and row spacings
  scale together with the camera's distance;
* else `DEFAULT_ROW_GAP`.

With ``layout``, only those people (e.g. the tracks seen for most of a lesson) define the rows
and columns; everyone else takes the seat of the nearest of them. A brief false detection or a
stray fragment then cannot add a row or push a whole row's column numbers along.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy

# Row gap (normalised image heights) used without heights: rows of a wide classroom shot are
# further apart than this, while the y of people seated in one row differ by less.
DEFAULT_ROW_GAP = 0.05
# Row spread as a fraction of a person's box height: seated rows are set about a body height
# apart, while the people of one row differ in y by far less than half a height.
HEIGHT_FRACTION = 0.5


def assign_seats(centres, row_gap: float | None = None, heights=None,
                 height_fraction: float = HEIGHT_FRACTION, layout=None) -> np.ndarray:
    """(row, column) of each person, both 1-based, as int64 ``[M, 2]``.

    Args:
      centres: ``[M, 2]`` normalised (x, y) per person, e.g. a track's mean box centre.
      row_gap: the row spread: no two people of a row differ in y by more than this; None for
        the automatic spread (module docstring).
      heights: optional ``[M]`` box heights (normalised) that scale the automatic spread.
      height_fraction: the automatic spread as a fraction of the median height.
      layout: optional bool ``[M]``: the people who define the rows and columns; the others get
        the seat of the nearest of them (distance between centres). None, or no one marked:
        everyone defines them.

    Row 1 is the front row (largest y); column 1 is the smallest x within a row. Ties in x keep
    the input order.
    """
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    m = len(centres)
    if not np.isfinite(centres).all():
        raise ValueError("centres must be finite")
    if layout is not None:
        layout = np.asarray(layout, bool).reshape(-1)
        if len(layout) != m:
            raise ValueError(f"layout has {len(layout)} entries for {m} centres")
        if 0 < layout.sum() < m:
            h = None if heights is None else np.asarray(heights, np.float64).reshape(m)[layout]
            seats = np.zeros((m, 2), np.int64)
            seats[layout] = assign_seats(centres[layout], row_gap, h, height_fraction)
            anchors = np.flatnonzero(layout)
            gaps = np.linalg.norm(centres[~layout, None] - centres[None, anchors], axis=-1)
            seats[~layout] = seats[anchors[np.argmin(gaps, axis=1)]]
            return seats
    seats = np.zeros((m, 2), np.int64)
    if m == 0:
        return seats
    if row_gap is not None:
        if row_gap < 0:
            raise ValueError(f"row_gap must be >= 0, got {row_gap}")
        spread = float(row_gap)
    elif heights is not None:
        h = np.asarray(heights, np.float64).reshape(m)
        if not (np.isfinite(h).all() and (h > 0).all()):
            raise ValueError("heights must be finite and positive")
        spread = height_fraction * float(np.median(h))
    else:
        spread = DEFAULT_ROW_GAP
    y = centres[:, 1]
    cluster = (hierarchy.fcluster(hierarchy.linkage(y[:, None], "complete"), spread, "distance")
               if m > 1 else np.ones(1, np.int64))
    # Rows numbered front to back: by descending mean y.
    labels = np.unique(cluster)
    front_first = labels[np.argsort([-y[cluster == c].mean() for c in labels], kind="stable")]
    row_of = {int(c): r for r, c in enumerate(front_first, start=1)}
    rows = np.array([row_of[int(c)] for c in cluster], np.int64)
    seats[:, 0] = rows
    for r in np.unique(rows):
        members = np.flatnonzero(rows == r)  # input order, kept by the stable sort on x
        by_x = members[np.argsort(centres[members, 0], kind="stable")]
        seats[by_x, 1] = np.arange(1, len(by_x) + 1)
    return seats


def seat_name(row: int, col: int) -> str:
    """Human-readable seat, e.g. ``seat_name(2, 3) == "row 2, seat 3"``."""
    return f"row {int(row)}, seat {int(col)}"
