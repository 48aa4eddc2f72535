"""Seat (row, column) of each tracked person in a classroom seen from the front (numpy).

Convention: the camera faces the class from the front, so the front row (nearest the camera)
is the lowest in the image, at the largest y. Row 1 is the front row (largest y), row numbers
grow towards the back; column 1 is the leftmost person of a row in the image (smallest x).

Rows are 1-D clusters of the people's y: sorted by y, the list is split wherever two
neighbours are further apart than the row gap (single linkage, so a slightly slanted row whose
y drifts in small steps stays one row). The gap is, by priority:

* ``row_gap`` if given (a normalised distance, the same everywhere);
* else, with ``heights``, ``height_fraction`` x the mean height of the two neighbours, so it
  shrinks with perspective towards the back, where people and row spacings are smaller;
* else `DEFAULT_ROW_GAP`.
"""

from __future__ import annotations

import numpy as np

# Row gap (normalised image heights) used without heights: rows of a wide classroom shot are
# further apart than this, while the y of people seated in one row differ by less.
DEFAULT_ROW_GAP = 0.05
# Fraction of a person's box height two rows are at least apart: seated rows are set about a
# body height apart, a person's box centre moves far less than half its height.
HEIGHT_FRACTION = 0.5


def assign_seats(centres, row_gap: float | None = None, heights=None,
                 height_fraction: float = HEIGHT_FRACTION) -> np.ndarray:
    """(row, column) of each person, both 1-based, as int64 ``[M, 2]``.

    Args:
      centres: ``[M, 2]`` normalised (x, y) per person, e.g. a track's mean box centre.
      row_gap: split rows where consecutive sorted y differ by more than this; None for the
        automatic gap (module docstring).
      heights: optional ``[M]`` box heights (normalised) that scale the automatic gap.
      height_fraction: the automatic gap as a fraction of the neighbours' mean height.

    Row 1 is the front row (largest y); column 1 is the smallest x within a row. Ties in x keep
    the input order.
    """
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    m = len(centres)
    if not np.isfinite(centres).all():
        raise ValueError("centres must be finite")
    seats = np.zeros((m, 2), np.int64)
    if m == 0:
        return seats
    # Front to back: descending y (stable, so equal y keep input order).
    order = np.argsort(-centres[:, 1], kind="stable")
    gaps = -np.diff(centres[order, 1])  # >= 0
    if row_gap is not None:
        if row_gap < 0:
            raise ValueError(f"row_gap must be >= 0, got {row_gap}")
        limit = np.full(m - 1, float(row_gap))
    elif heights is not None:
        h = np.asarray(heights, np.float64).reshape(m)[order]
        if not (np.isfinite(h).all() and (h > 0).all()):
            raise ValueError("heights must be finite and positive")
        limit = height_fraction * 0.5 * (h[1:] + h[:-1])
    else:
        limit = np.full(m - 1, DEFAULT_ROW_GAP)
    rows = np.concatenate([[1], 1 + np.cumsum(gaps > limit)])
    seats[order, 0] = rows
    for r in np.unique(rows):
        members = np.sort(order[rows == r])  # input order, kept by the stable sort on x
        by_x = members[np.argsort(centres[members, 0], kind="stable")]
        seats[by_x, 1] = np.arange(1, len(by_x) + 1)
    return seats


def seat_name(row: int, col: int) -> str:
    """Human-readable seat, e.g. ``seat_name(2, 3) == "row 2, seat 3"``."""
    return f"row {int(row)}, seat {int(col)}"
