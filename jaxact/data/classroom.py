"""Synthetic classroom clips with AVA-style per-person multi-label behaviours.

A front-facing camera looks at 1-3 rows of students behind desks. Each student is a simple
articulated figure (head with hair/eyes, torso, arms, legs) whose pose follows a small random state
machine over the clip: exactly one of sit/stand per frame plus optional raise_hand, write (sitting
only) and turn_to_neighbour. State changes are eased over 3 frames and the states are held
constant on frames [keyframe - 2, keyframe + 1], so the keyframe labels are always fully visible
in the keyframe pose.

Boxes are tight around each person's *visible* pixels (what remains after desks and students in
front are drawn), and `owner` says which person, if any, is visible at each keyframe pixel: the
ground truth for per-pixel behaviour maps (`jaxact.data.behaviour_labels`). Everything is pure numpy
and deterministic in `(seed, config)`.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from jaxact.data.render_utils import add_pixel_noise, hsv

BEHAVIOURS = ("sit", "raise_hand", "stand", "write", "turn_to_neighbour")
_SIT, _RAISE, _STAND, _WRITE, _TURN = range(5)

_MIN_VISIBLE = 0.5  # visible / unoccluded figure area at the keyframe, for every person
# Sprite pixel owners. Head and raised hand are tracked separately so the keyframe can be checked
# for the parts that carry the labels (a raised hand must not be hidden by a classmate).
_OWN_BODY, _OWN_DESK, _OWN_HEAD, _OWN_HAND = 1, 2, 3, 4
_EASE = 3  # pose = mean of the last _EASE frames' states, so transitions take a few frames


@dataclasses.dataclass(frozen=True)
class ClassroomConfig:
    resolution: int = 128
    num_frames: int = 16  # clip length T; keyframe at T // 2
    min_people: int = 2
    max_people: int = 12
    noise_std: float = 3.0  # per-pixel, per-frame noise std in uint8 units (triangular noise)


def _unit(x):
    # np.minimum/np.maximum are much cheaper than np.clip on small arrays.
    return np.minimum(np.maximum(x, 0.0), 1.0)


# --------------------------------------------------------------------------------------------
# Behaviour state machine.


def _sample_states(rng, t_len, keyframe, num):
    """Returns bool [T, P, 4] effective (stand, raise, write, turn) states per frame.

    Keyframe states are drawn first; the chains then run outwards from the protected window
    around the keyframe. Raw chains flip independently; constraints (write only while sitting,
    write excludes raise/turn) are applied afterwards so they cannot lock a chain.
    """
    p_key = np.array([0.3, 0.3, 0.42, 0.3])  # write is conditional on sitting
    p_flip = np.array([0.025, 0.035, 0.035, 0.035])
    raw = np.zeros((t_len, num, 4), bool)
    lo, hi = max(keyframe - _EASE + 1, 0), min(keyframe + 1, t_len - 1)
    raw[lo : hi + 1] = rng.random((num, 4)) < p_key
    for t in range(hi + 1, t_len):
        raw[t] = raw[t - 1] ^ (rng.random((num, 4)) < p_flip)
    for t in range(lo - 1, -1, -1):
        raw[t] = raw[t + 1] ^ (rng.random((num, 4)) < p_flip)
    eff = raw.copy()
    eff[..., 2] &= ~raw[..., 0]  # write only while sitting
    eff[..., 1] &= ~eff[..., 2]  # the writing pose has no raised arm and looks down
    eff[..., 3] &= ~eff[..., 2]
    return eff


def _eased(states):
    """[T, P, 4] bool -> float32 levels, the mean over the last _EASE frames."""
    cum = np.cumsum(states.astype(np.float32), axis=0)
    out = cum.copy()
    out[_EASE:] -= cum[:-_EASE]
    counts = np.minimum(np.arange(1, len(states) + 1), _EASE).astype(np.float32)
    return out / counts[:, None, None]


# --------------------------------------------------------------------------------------------
# Sprite: anti-aliased primitives for the distinct poses of one person.


class _Sprite:
    """Composites primitives over U poses on a [U, h, w] window (premultiplied colour)."""

    def __init__(self, num, y0, y1, x0, x1):
        self.y0, self.x0 = y0, x0
        h, w = y1 - y0, x1 - x0
        self.col = np.zeros((num, h, w, 3), np.float32)
        self.alpha = np.zeros((num, h, w), np.float32)
        self.owner = np.zeros((num, h, w), np.int8)  # 0 = empty or one of the _OWN_* codes
        self.ys = np.arange(y0, y1, dtype=np.float32) + 0.5
        self.xs = np.arange(x0, x1, dtype=np.float32) + 0.5

    def _region(self, lo_x, hi_x, lo_y, hi_y):
        """Window slices covering the union over poses of [lo, hi] (arrays [U]) plus 1 px."""
        h, w = self.alpha.shape[1:]
        i0 = max(int(np.floor(lo_y.min())) - 1 - self.y0, 0)
        i1 = min(int(np.ceil(hi_y.max())) + 1 - self.y0, h)
        j0 = max(int(np.floor(lo_x.min())) - 1 - self.x0, 0)
        j1 = min(int(np.ceil(hi_x.max())) + 1 - self.x0, w)
        if i1 <= i0 or j1 <= j0:
            return None
        return slice(i0, i1), slice(j0, j1)

    def _blend(self, region, cov, colour, owner):
        sy, sx = region
        col = self.col[:, sy, sx]
        diff = colour - col  # premultiplied "over": col * (1 - cov) + colour * cov
        diff *= cov[..., None]
        col += diff
        alpha = self.alpha[:, sy, sx]
        alpha *= 1.0 - cov
        alpha += cov
        self.owner[:, sy, sx][cov >= 0.5] = owner

    def _grid(self, region):
        sy, sx = region
        return self.xs[None, None, sx], self.ys[None, sy, None]

    def capsule(self, a, b, r, colour, weight=None, owner=_OWN_BODY):
        """Thick segment a -> b, a and b: [U, 2] (x, y); r: scalar or [U]; weight: [U]."""
        if weight is not None and not np.any(weight):
            return
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        r = np.broadcast_to(np.asarray(r, np.float32), a[:, 0].shape)
        region = self._region(
            np.minimum(a[:, 0], b[:, 0]) - r,
            np.maximum(a[:, 0], b[:, 0]) + r,
            np.minimum(a[:, 1], b[:, 1]) - r,
            np.maximum(a[:, 1], b[:, 1]) + r,
        )
        if region is None:
            return
        xx, yy = self._grid(region)
        ax, ay = a[:, 0, None, None], a[:, 1, None, None]
        dx, dy = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
        px, py = xx - ax, yy - ay
        t = _unit((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, 1e-6))
        dist = np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2)
        cov = _unit(r[:, None, None] + 0.5 - dist)
        if weight is not None:
            cov *= np.asarray(weight, np.float32)[:, None, None]
        self._blend(region, cov, colour, owner)

    def disc(self, c, r, colour, weight=None, owner=_OWN_BODY, cut=None):
        """Disc at c [U, 2] with radius r (scalar or [U]).

        cut = (normal [U, 2], offset [U]) keeps only points with normal . (p - c) > offset * r,
        used for hair.
        """
        if weight is not None and not np.any(weight):
            return
        c = np.asarray(c, np.float32)
        r = np.broadcast_to(np.asarray(r, np.float32), c[:, 0].shape)
        region = self._region(c[:, 0] - r, c[:, 0] + r, c[:, 1] - r, c[:, 1] + r)
        if region is None:
            return
        xx, yy = self._grid(region)
        px, py = xx - c[:, 0, None, None], yy - c[:, 1, None, None]
        rr = r[:, None, None]
        cov = _unit(rr + 0.5 - np.sqrt(px * px + py * py))
        if cut is not None:
            normal, offset = cut
            side = px * normal[:, 0, None, None] + py * normal[:, 1, None, None]
            cov *= _unit(side - offset[:, None, None] * rr + 0.5)
        if weight is not None:
            cov *= np.asarray(weight, np.float32)[:, None, None]
        self._blend(region, cov, colour, owner)

    def rect(self, x0, x1, y0, y1, colour, weight=None, owner=_OWN_BODY):
        """Axis-aligned rectangle; bounds scalars or [U]."""
        if weight is not None and not np.any(weight):
            return
        num = self.alpha.shape[0]
        x0, x1, y0, y1 = (np.broadcast_to(np.asarray(v, np.float32), (num,)) for v in (x0, x1, y0, y1))
        region = self._region(x0, x1, y0, y1)
        if region is None:
            return
        xx, yy = self._grid(region)
        cov_x = _unit(np.minimum(xx - x0[:, None, None], x1[:, None, None] - xx) + 0.5)
        cov = cov_x * _unit(np.minimum(yy - y0[:, None, None], y1[:, None, None] - yy) + 0.5)
        if weight is not None:
            cov *= np.asarray(weight, np.float32)[:, None, None]
        self._blend(region, cov, colour, owner)


# --------------------------------------------------------------------------------------------
# Scene.

_SKIN = np.array(
    [[255, 224, 196], [234, 192, 160], [198, 145, 105], [160, 110, 75], [110, 72, 50], [80, 55, 40]],
    np.float32,
)
_HAIR = np.array(
    [[25, 20, 18], [60, 40, 25], [110, 75, 40], [200, 165, 100], [150, 60, 30], [150, 150, 150]],
    np.float32,
)
_EYE = np.array([20, 20, 25], np.float32)
_PAPER = np.array([245, 245, 240], np.float32)


def _render_room(rng, res):
    """Static room background [R, R, 3] float32 and the floor line y."""
    s = res / 128.0
    yy = np.arange(res, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(res, dtype=np.float32)[None, :] + 0.5
    wall = hsv(rng.random(), rng.uniform(0.08, 0.35), rng.uniform(0.65, 0.9))
    if rng.random() < 0.6:  # wooden floor
        floor = hsv(rng.uniform(0.05, 0.11), rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.65))
    else:
        floor = hsv(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.35, 0.6))
    horizon = rng.uniform(0.4, 0.5) * res
    is_floor = _unit(yy - horizon + 0.5)
    img = wall + is_floor[..., None] * (floor - wall)
    img = np.broadcast_to(img, (res, res, 3)).copy()
    # Floor planks get closer towards the back, a cheap perspective cue.
    depth = np.log1p(np.maximum(yy - horizon, 0.0) / (4.0 * s))
    planks = (np.abs(np.sin(depth * rng.uniform(5, 8))) < 0.12) * is_floor
    img -= (planks * 18.0)[..., None]
    img[(yy[:, 0] > horizon - 2 * s) & (yy[:, 0] < horizon)] *= 0.7  # skirting board

    def box(x0, x1, y0, y1, colour):
        cov = _unit(np.minimum(xx - x0, x1 - xx) + 0.5) * _unit(np.minimum(yy - y0, y1 - yy) + 0.5)
        img[...] += cov[..., None] * (colour - img)

    board_w = rng.uniform(0.35, 0.6) * res
    bx = rng.uniform(0.05 * res, 0.95 * res - board_w)
    by0, by1 = rng.uniform(0.04, 0.1) * res, horizon - rng.uniform(0.1, 0.18) * res
    box(
        bx - 2 * s,
        bx + board_w + 2 * s,
        by0 - 2 * s,
        by1 + 2 * s,
        hsv(rng.uniform(0.05, 0.1), 0.5, 0.45),
    )
    board = (
        hsv(rng.uniform(0.3, 0.45), rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.35))
        if rng.random() < 0.7
        else np.full(3, rng.uniform(25, 45), np.float32)
    )
    box(bx, bx + board_w, by0, by1, board)
    for _ in range(rng.integers(2, 6)):  # chalk writing
        ly = rng.uniform(by0 + 3 * s, by1 - 3 * s)
        lx0 = rng.uniform(bx + 2 * s, bx + board_w * 0.6)
        box(
            lx0,
            min(lx0 + rng.uniform(0.1, 0.4) * board_w, bx + board_w - 2 * s),
            ly - 0.4 * s,
            ly + 0.4 * s,
            np.full(3, 215, np.float32),
        )
    for _ in range(rng.integers(0, 3)):  # windows beside the board, if there is room
        wx = rng.uniform(0.0, res - 0.15 * res)
        ww = rng.uniform(0.1, 0.16) * res
        if wx + ww > bx - 3 * s and wx < bx + board_w + 3 * s:
            continue
        box(wx, wx + ww, by0, by1, np.array([235, 235, 235], np.float32))
        box(
            wx + 1.5 * s,
            wx + ww - 1.5 * s,
            by0 + 1.5 * s,
            by1 - 1.5 * s,
            hsv(rng.uniform(0.52, 0.6), rng.uniform(0.2, 0.45), rng.uniform(0.8, 0.95)),
        )
    img += rng.normal(0.0, 2.0, (res, res, 1)).astype(np.float32)  # static texture
    return img, horizon


def _layout(rng, res, num):
    """Seats: per person (x, ground y, height H, row), back rows first."""
    n_rows = int(max(np.ceil(num / 5), min(rng.integers(1, 4), num)))
    counts = np.full(n_rows, num // n_rows)
    counts[rng.permutation(n_rows)[: num % n_rows]] += 1
    depths = np.linspace(0.0, 1.0, n_rows) if n_rows > 1 else np.array([rng.uniform(0.5, 1.0)])
    seats = []
    for row, (m, d) in enumerate(zip(counts, depths, strict=True)):
        height = (0.25 + 0.12 * d) * res
        ground = (0.72 + 0.26 * d) * res
        spacing = 0.84 * res / m
        stagger = (0.25 if row % 2 else -0.25) * spacing if n_rows > 1 else 0.0
        for i in range(m):
            x = 0.08 * res + spacing * (i + 0.5) + stagger + rng.uniform(-0.12, 0.12) * spacing
            x = float(np.clip(x, 0.1 * res, 0.9 * res))
            seats.append(
                (x, ground + rng.uniform(-0.01, 0.01) * res, height * rng.uniform(0.9, 1.08), row)
            )
    return seats


def _person_poses(levels, seat):
    """Keypoints [U, ...] of one person for U distinct eased states (stand, raise, write, turn)."""
    x, gy, h = seat["x"], seat["ground"], seat["height"]
    st, rh, wr, tn = (levels[:, i] for i in range(4))  # each [U]
    side, wside, turn_dir = seat["raise_side"], seat["write_side"], seat["turn_dir"]
    hip = gy - (0.26 + 0.21 * st) * h
    shoulder = hip - 0.30 * h
    torso_x = x + turn_dir * 0.03 * h * tn
    torso_w = 0.27 * h * (1.0 - 0.25 * tn)  # foreshortened when turned
    head = np.stack([x + turn_dir * 0.11 * h * tn, shoulder - (0.12 - 0.05 * wr) * h], -1)

    arms = []
    for arm_side in (-1.0, 1.0):
        sh = np.stack([torso_x + arm_side * (torso_w / 2 - 0.02 * h), shoulder + 0.05 * h], -1)
        # Rest: arms hang down (standing) or forearms go forward under the desk (sitting).
        elbow = sh + np.array([arm_side * 0.035 * h, 0.17 * h])
        hand_sit = elbow + np.array([-arm_side * 0.04 * h, 0.1 * h])
        hand_stand = elbow + np.array([arm_side * 0.01 * h, 0.16 * h])
        hand = hand_sit + st[:, None] * (hand_stand - hand_sit)
        if arm_side == side:
            up = rh[:, None]
            elbow = elbow + up * (sh + np.array([side * 0.06 * h, -0.17 * h]) - elbow)
            hand = hand + up * (sh + np.array([side * 0.075 * h, -0.33 * h]) - hand)
        if arm_side == wside:
            # Writing forearm ends on the paper, drawn over the desk.
            on_desk = np.stack(
                [np.full_like(st, x + wside * 0.05 * h), np.full_like(st, seat["desk_top"] + 0.045 * h)],
                -1,
            )
            hand = hand + wr[:, None] * (on_desk - hand)
        arms.append((sh, elbow, hand))
    return {
        "hip": hip,
        "shoulder": shoulder,
        "torso_x": torso_x,
        "torso_w": torso_w,
        "head": head,
        "arms": arms,
    }


def _draw_person(spr, levels, seat, pose):
    """Draws one person (and their desk) for U distinct eased states `levels` [U, 4]."""
    h, x, gy = seat["height"], seat["x"], seat["ground"]
    wr, tn = levels[:, 2], levels[:, 3]
    num = len(levels)
    cols = seat["colours"]
    turn_dir = seat["turn_dir"]

    # Legs (mostly hidden by the desk; visible above it when standing).
    for leg in (-1.0, 1.0):
        top = np.stack([pose["torso_x"] + leg * 0.065 * h, pose["hip"]], -1)
        foot = np.stack([np.full(num, x + leg * 0.08 * h), np.full(num, gy - 0.07 * h)], -1)
        spr.capsule(top, foot, 0.055 * h, cols["trousers"])
    # Arms behind the torso are drawn first; raised arms go on top afterwards.
    for (sh, elbow, hand), arm_side in zip(pose["arms"], (-1.0, 1.0), strict=True):
        if arm_side == seat["raise_side"]:
            continue
        spr.capsule(sh, elbow, 0.05 * h, cols["shirt"] * 0.85)
        spr.capsule(elbow, hand, 0.045 * h, cols["shirt"] * 0.85)
    r_t = pose["torso_w"] / 2
    top = np.stack([pose["torso_x"], pose["shoulder"] + r_t], -1)
    bottom = np.stack([pose["torso_x"], pose["hip"] - 0.3 * r_t], -1)
    spr.capsule(top, bottom, r_t, cols["shirt"])
    neck_top = pose["head"] + np.array([0.0, 0.06 * h])
    spr.capsule(
        neck_top,
        np.stack([pose["torso_x"], pose["shoulder"] + 0.02 * h], -1),
        0.035 * h,
        cols["skin"] * 0.9,
    )

    head, hr = pose["head"], 0.1 * h
    spr.disc(head, hr, cols["skin"], owner=_OWN_HEAD)
    # Eyes move towards the turn direction; hair (drawn after) hides them when looking down.
    for eye in (-1.0, 1.0):
        ex = head[:, 0] + (eye * 0.38 + turn_dir * 0.35 * tn) * hr
        spr.disc(np.stack([ex, head[:, 1] + 0.1 * hr], -1), max(0.022 * h, 0.55), _EYE, owner=_OWN_HEAD)
    nose = np.stack([head[:, 0] + turn_dir * 0.95 * hr, head[:, 1] + 0.2 * hr], -1)
    spr.disc(nose, 0.03 * h, cols["skin"], weight=_unit(2 * tn - 1), owner=_OWN_HEAD)
    # Hair: cap on top when facing the camera, most of the head when looking down, the back of
    # the head (away from the neighbour) when turned.
    ang = 1.1 * tn * -turn_dir
    normal = np.stack([np.sin(ang), -np.cos(ang)], -1).astype(np.float32)
    offset = (0.3 - 0.65 * wr - 0.35 * tn).astype(np.float32)
    spr.disc(head, hr * 1.04, cols["hair"], cut=(normal, offset), owner=_OWN_HEAD)

    # Raised arm in front of everything else of the body.
    side = seat["raise_side"]
    sh, elbow, hand = pose["arms"][0 if side < 0 else 1]
    spr.capsule(sh, elbow, 0.05 * h, cols["shirt"] * 0.9)
    spr.capsule(elbow, hand, 0.045 * h, cols["shirt"] * 0.9, owner=_OWN_HAND)
    spr.disc(hand, 0.05 * h, cols["skin"], owner=_OWN_HAND)

    # Desk in front of the student hides the lower body.
    desk_top, dx = seat["desk_top"], x + seat["desk_dx"]
    half = 0.42 * h
    spr.rect(dx - half, dx + half, desk_top, desk_top + 0.07 * h, cols["desk"] * 1.15, owner=_OWN_DESK)
    spr.rect(dx - half, dx + half, desk_top + 0.07 * h, gy + 0.02 * h, cols["desk"], owner=_OWN_DESK)
    # Writing: paper on the desk with the writing hand on it.
    writing = _unit(2 * wr - 0.5)
    pc = np.array([x + seat["write_side"] * 0.03 * h, desk_top + 0.035 * h])
    spr.rect(
        pc[0] - 0.16 * h,
        pc[0] + 0.16 * h,
        pc[1] - 0.03 * h,
        pc[1] + 0.035 * h,
        _PAPER,
        weight=writing,
        owner=_OWN_DESK,
    )
    whand = pose["arms"][0 if seat["write_side"] < 0 else 1][2]
    edge = np.stack([whand[:, 0] + seat["write_side"] * 0.02 * h, np.full(num, desk_top - 0.01 * h)], -1)
    spr.capsule(edge, whand, 0.045 * h, cols["shirt"] * 0.85, weight=writing)
    spr.disc(whand, 0.045 * h, cols["skin"], weight=writing)


def _person_colours(rng, desk):
    return {
        "skin": _SKIN[rng.integers(len(_SKIN))] + rng.uniform(-8, 8, 3).astype(np.float32),
        "hair": _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.85, 1.15),
        "shirt": hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.95)),
        "trousers": hsv(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.45)),
        "desk": desk,
    }


def _try_render(rng, config, check_visibility=True):
    """Samples and draws a clip: (canvas f32 [T, R, R, 3], boxes [T, P, 4], states, keyframe,
    owner int16 [R, R]: the visible person at each keyframe pixel, -1 for none).

    Returns None if, at the keyframe, someone's figure, head or raised hand is less than
    `_MIN_VISIBLE` visible (the caller then resamples with the advanced rng).
    """
    res, t_len = config.resolution, config.num_frames
    keyframe = t_len // 2
    num = int(rng.integers(config.min_people, config.max_people + 1))
    room, _ = _render_room(rng, res)
    desk = hsv(rng.uniform(0.05, 0.12), rng.uniform(0.35, 0.65), rng.uniform(0.45, 0.75))
    seats = []
    for x, ground, height, row in _layout(rng, res, num):
        seats.append(
            {
                "x": x,
                "ground": ground,
                "height": height,
                "row": row,
                "desk_top": ground - 0.33 * height,
                "desk_dx": rng.uniform(-0.06, 0.06) * height,
                "raise_side": float(rng.choice([-1.0, 1.0])),
                "write_side": float(rng.choice([-1.0, 1.0])),
                "colours": _person_colours(rng, desk),
            }
        )
    xs = np.array([s["x"] for s in seats])
    rows = np.array([s["row"] for s in seats])
    for i, seat in enumerate(seats):  # turn towards the nearest classmate, preferably same row
        dist = np.abs(xs - xs[i]) + 1e3 * (rows != rows[i])
        dist[i] = np.inf
        seat["turn_dir"] = float(np.sign(xs[np.argmin(dist)] - xs[i]) or 1.0)

    states = _sample_states(rng, t_len, keyframe, num)  # [T, P, 4]
    levels = _eased(states)

    canvas = np.broadcast_to(room, (t_len, res, res, 3)).copy()
    ids = np.full((t_len, res, res), -1, np.int16)  # visible person per pixel, -1 = none
    key_parts = np.zeros((res, res), np.int8)  # visible owner code at the keyframe
    windows, own_areas, own_boxes = [], [], []
    for p, seat in enumerate(seats):
        uniq, inv = np.unique(levels[:, p], axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        h = seat["height"]
        y0, y1 = max(int(seat["ground"] - 1.22 * h), 0), min(int(seat["ground"] + 0.05 * h) + 1, res)
        x0, x1 = max(int(seat["x"] - 0.55 * h), 0), min(int(seat["x"] + 0.55 * h) + 1, res)
        spr = _Sprite(len(uniq), y0, y1, x0, x1)
        _draw_person(spr, uniq, seat, _person_poses(uniq, seat))
        sy, sx = slice(y0, y1), slice(x0, x1)
        region = canvas[:, sy, sx]
        region *= (1.0 - spr.alpha[inv])[..., None]
        region += spr.col[inv]
        owner = spr.owner[inv]
        is_person = (owner != 0) & (owner != _OWN_DESK)
        id_region = ids[:, sy, sx]
        id_region[is_person] = p
        id_region[owner == _OWN_DESK] = -1
        key_owner = owner[keyframe]
        key_parts[sy, sx][key_owner != 0] = key_owner[key_owner != 0]
        windows.append((sy, sx))
        own_areas.append(
            [is_person[keyframe].sum(), (key_owner == _OWN_HEAD).sum(), (key_owner == _OWN_HAND).sum()]
        )
        sprite_person = (spr.owner != 0) & (spr.owner != _OWN_DESK)
        own_boxes.append(_mask_boxes(sprite_person, y0, x0)[inv])

    boxes = np.zeros((t_len, num, 4), np.float32)
    for p, (sy, sx) in enumerate(windows):
        mask = ids[:, sy, sx] == p  # [T, h, w]
        if check_visibility:
            parts = key_parts[sy, sx][mask[keyframe]]
            seen = [len(parts), (parts == _OWN_HEAD).sum(), (parts == _OWN_HAND).sum()]
            needed = [True, True, bool(states[keyframe, p, 1])]  # the hand only when raised
            for ok, n_seen, n_own in zip(needed, seen, own_areas[p], strict=True):
                if ok and n_seen < _MIN_VISIBLE * n_own:
                    return None
        visible = _mask_boxes(mask, sy.start, sx.start)
        # A person fully hidden in some frame keeps the box of their unoccluded figure.
        hidden = ~mask.any(axis=(1, 2))
        boxes[:, p] = np.where(hidden[:, None], own_boxes[p], visible)
    return canvas, boxes / res, states, keyframe, ids[keyframe].copy()


def _mask_boxes(mask, y0, x0):
    """[N, h, w] bool masks of a window at (y0, x0) -> [N, 4] pixel boxes (x1, y1, x2, y2).

    Empty masks give the whole window.
    """
    rows, cols = mask.any(2), mask.any(1)
    h, w = mask.shape[1:]
    first_r = np.where(rows.any(1), rows.argmax(1), 0)
    last_r = np.where(rows.any(1), h - rows[:, ::-1].argmax(1), h)
    first_c = np.where(cols.any(1), cols.argmax(1), 0)
    last_c = np.where(cols.any(1), w - cols[:, ::-1].argmax(1), w)
    return np.stack([x0 + first_c, y0 + first_r, x0 + last_c, y0 + last_r], -1).astype(np.float32)


def render_clip(seed: int, config: ClassroomConfig = ClassroomConfig()) -> dict:
    """Renders one classroom clip.

    Returns a dict with
      video: uint8 [T, R, R, 3]; keyframe: int (= T // 2);
      person_ids: int32 [P] (0..P-1, stable over the clip); num_people: int P;
      boxes: float32 [P, 4] normalized (x1, y1, x2, y2) at the keyframe, tight around each
        person's visible pixels; track_boxes: float32 [T, P, 4] the same for every frame;
      actions: uint8 [P, 5] multi-hot over `BEHAVIOURS` at the keyframe;
      owner: int16 [R, R], at each keyframe pixel the index (0..P-1, the row of `boxes` and
        `actions`) of the person visible there, -1 where none is (background, desks, paper).
        A pixel goes to the front-most figure or desk covering at least half of it (a desk
        gives -1), so `boxes[p] * R` is exactly (first column, first row, last column + 1,
        last row + 1) of `owner == p`. Every person owns pixels, except in the fallback for
        configs far more crowded than the room fits (see below), where a hidden person keeps the
        box of their unoccluded figure and owns none.
    """
    if not 1 <= config.min_people <= config.max_people:
        raise ValueError("need 1 <= min_people <= max_people")
    if config.num_frames < 1:
        raise ValueError("num_frames must be positive")
    rng = np.random.default_rng(seed)
    # Rare retries when someone ends up hidden behind classmates at the keyframe; the limit only
    # matters for configs with far more people than fit in the room.
    for attempt in itertools.count():
        out = _try_render(rng, config, check_visibility=attempt < 50)
        if out is not None:
            break
    canvas, track_boxes, states, keyframe, owner = out
    num = track_boxes.shape[1]

    video = add_pixel_noise(rng, canvas, config.noise_std)

    key = states[keyframe]  # [P, 4] (stand, raise, write, turn)
    actions = np.zeros((num, len(BEHAVIOURS)), np.uint8)
    actions[:, _SIT] = ~key[:, 0]
    actions[:, _STAND] = key[:, 0]
    actions[:, _RAISE] = key[:, 1]
    actions[:, _WRITE] = key[:, 2]
    actions[:, _TURN] = key[:, 3]
    return {
        "video": video,
        "keyframe": int(keyframe),
        "person_ids": np.arange(num, dtype=np.int32),
        "boxes": track_boxes[keyframe].copy(),
        "track_boxes": track_boxes,
        "actions": actions,
        "num_people": int(num),
        "owner": owner,
    }
