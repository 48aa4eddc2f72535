"""Per-pixel behaviour label images from a person-ownership map (numpy only, no JAX).

A dataset that knows which person is visible at each keyframe pixel (`owner`, e.g. the classroom
generator's, passed through by `pipeline.KeyframeTransform`) and each person's multi-hot actions
gives two training targets for behaviour distribution maps:

  multi_hot  uint8 [..., H, W, A]  the actions of the person visible at each pixel (all zero where
                                   no person is visible);
  single     int32 [..., H, W]     one label per pixel: 0 for no behaviour (no person, or a person
                                   with no action), else 1 + a, a the class index of the pixel
                                   person's highest-priority action under `PRIORITY`.

The priority rule works on class names, so any dataset whose classes all appear in the priority
order works, whatever their index order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Highest first: the action that names a multi-label person's pixels in the single-channel image.
# Momentary, salient actions win over the posture that every classroom person has (sit or stand).
PRIORITY = ("raise_hand", "write", "turn_to_neighbour", "stand", "sit")


def priority_ranks(class_names: Sequence[str], priority: Sequence[str] = PRIORITY) -> np.ndarray:
    """int32 `[A]`: the rank of each class in `priority` (0 = highest).

    Raises ValueError naming any class that `priority` does not list.
    """
    missing = [name for name in class_names if name not in priority]
    if missing:
        raise ValueError(f"class(es) {missing} are not in the behaviour priority order "
                         f"{tuple(priority)}; add them to rank multi-label pixels")
    return np.array([list(priority).index(name) for name in class_names], np.int32)


def person_labels(actions, class_names: Sequence[str], priority: Sequence[str] = PRIORITY):
    """`actions` `[..., P, A]` (multi-hot; a value >= 0.5 is present) -> int32 `[..., P]`:
    1 + the class index of each person's highest-priority action, 0 for a person with none."""
    actions = np.asarray(actions)
    if actions.shape[-1] != len(class_names):
        raise ValueError(f"actions have {actions.shape[-1]} classes, class_names "
                         f"{len(class_names)}")
    ranks = priority_ranks(class_names, priority)
    present = actions >= 0.5
    # Absent classes rank after every present one; argmin picks the best present class.
    keyed = np.where(present, ranks, len(priority))
    best = np.argmin(keyed, axis=-1) if keyed.shape[-1] else np.zeros(keyed.shape[:-1], int)
    return np.where(present.any(axis=-1), best + 1, 0).astype(np.int32)


def label_maps(owner, actions, class_names: Sequence[str], priority: Sequence[str] = PRIORITY):
    """Per-pixel behaviour labels of the people visible in `owner`.

    owner: int `[..., H, W]`, the person (row of `actions`) visible at each pixel, -1 for none.
    actions: `[..., P, A]` multi-hot over `class_names` (a value >= 0.5 is present); rows no pixel
      refers to (padding) are ignored.
    class_names: `A` names, each listed in `priority` (highest first).
    Leading batch dimensions `...` of `owner` and `actions` must match.

    Returns `(multi_hot uint8 [..., H, W, A], single int32 [..., H, W])`: `multi_hot` copies the
    pixel person's actions (zeros where owner is -1); `single` is 0 where no person is visible or
    the person has no action, else 1 + the class index of the person's highest-priority action.
    """
    owner = np.asarray(owner)
    actions = np.asarray(actions)
    if owner.ndim < 2 or actions.ndim != owner.ndim:
        raise ValueError(f"owner [..., H, W] {owner.shape} and actions [..., P, A] "
                         f"{actions.shape} need the same leading dimensions")
    if owner.shape[:-2] != actions.shape[:-2]:
        raise ValueError(f"owner {owner.shape} and actions {actions.shape} differ in their "
                         "leading (batch) dimensions")
    num = actions.shape[-2]
    if owner.size and not -1 <= owner.min() <= owner.max() < num:
        raise ValueError(f"owner values [{owner.min()}, {owner.max()}] are not in [-1, {num}) "
                         f"for {num} people")
    lead, (h, w) = owner.shape[:-2], owner.shape[-2:]
    # Row 0 of each table is "no person"; owner + 1 indexes them.
    idx = (owner.astype(np.int64) + 1).reshape(*lead, h * w)
    present = (actions >= 0.5).astype(np.uint8)
    table = np.concatenate([np.zeros((*lead, 1, present.shape[-1]), np.uint8), present], axis=-2)
    multi_hot = np.take_along_axis(table, idx[..., None], axis=-2).reshape(*lead, h, w, -1)
    single_table = np.concatenate([np.zeros((*lead, 1), np.int32),
                                   person_labels(actions, class_names, priority)], axis=-1)
    single = np.take_along_axis(single_table, idx, axis=-1).reshape(*lead, h, w)
    return multi_hot, single
