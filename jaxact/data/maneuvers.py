"""Synthetic top-down traffic clips in which a marked target vehicle performs a manoeuvre.

A fixed overhead camera looks at a main road (2-3 lanes per direction, right-hand traffic) crossed
by a side road. The target vehicle (bright roof marker) enters from the bottom, drives up its lane
and, at a random onset time, performs one of `MANEUVERS`. Distractor vehicles without the marker
drive straight along other lanes.

Every random draw is made in the same order whatever the label, and the label only selects which
of the (all precomputed) post-onset paths the target follows. Hence, without cues, frames before
`onset` are byte-identical across labels for a given seed, which makes the pre-onset part of every
clip genuinely ambiguous. Without cues the timing (onset fraction, speeds) is label independent
too.

Starting actions (`ManeuverConfig.cues`, off by default) announce the manoeuvre before its onset.
Let `o` be the drawn onset (the target reaches the onset point at frame o - 1 when it does not
brake). The cues fill a window of `lead = max(1, round(a * (o - 1)))` frames, `a` uniform in
[cue_lead_min, cue_lead_max], starting at frame `start = o - 1 - lead` (>= 0):
  - indicator: amber lamps at the front and rear corner of one side (about 2 px each at 64 px, so
    64 px is enough), lit from `start` to the end of the clip for the first half of every
    `blink_period` frames. Turns, lane changes and U-turns signal with `indicator_prob`, on the
    wrong side with `indicator_wrong_prob`; a U-turn signals left (a left-side manoeuvre in
    right-hand traffic). A straight driver signals, either side with equal odds, with
    `false_indicator_prob`.
  - deceleration: before turns and U-turns the speed drops linearly, from the approach speed v at
    `start` to (1 - f) v at the onset point. Braking covers less ground, so these targets reach
    the onset point, and their `onset` is, `delay = min(round(lead * F / (2 - F)), lead - 1)`
    whole frames later, F = `decel_fraction`; f = 2 delay / (lead + delay) is the fraction that
    makes it a whole number of frames (F for long windows; no braking where delay is 0). The motion
    after the onset point is unchanged, so the manoeuvre still departs by `_DISP_PX` within
    `_DISP_FRAMES` of `onset`. With `brake_lights`, red lamps at both rear corners are lit while
    the target slows (frames `start` to `onset - 1`), so braking shows from its first frame as
    the indicator does, not only once the lost speed adds up to pixels.
  - drift: before a lane change, with `drift_prob`, the target drifts sideways toward the new lane
    along a smoothstep, `drift_px` (at 64 px) by the onset point, and the drift then fades into the
    lane change. `drift_px <= _DISP_PX / 2` keeps the drift inside the lane and well short of the
    `_DISP_PX` departure that the manoeuvre proper reaches within `_DISP_FRAMES` of `onset`, so
    `onset` still marks the first frame on the manoeuvre's path.
  - straight: no cue other than the false signal.
The cue draws come from a stream of their own (seeded by `(seed, 1)`, so apart from and after
every other draw): four uniforms per clip, always, which the label only uses deterministically.
Hence frames before `start` stay byte-identical across labels, and without cues no draw changes.
(With cues the layout is sampled for the latest possible onset, so a clip need not match its
cue-free twin.) `bayes_limit` computes the Bayes-optimal accuracy of early prediction from the
same latent draws.

Everything is pure numpy and deterministic in `(seed, label, config)`.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from jaxact.data.render_utils import add_pixel_noise, hsv

MANEUVERS = (
    "straight",
    "turn_left",
    "turn_right",
    "lane_change_left",
    "lane_change_right",
    "u_turn",
)

# Label index after a horizontal flip: left and right swap, straight and u_turn are symmetric.
# The maneuvers builder states it (`builders.Maneuvers.FLIP_PERMUTATION`).
FLIP_PERMUTATION = np.array([0, 2, 1, 4, 3, 5], dtype=np.int32)
FLIP_PERMUTATION.setflags(write=False)

_STEP = 0.2  # polyline spacing of the target paths, in pixels
_ONSET_RANGE = (0.3, 0.5)  # onset as a fraction of the clip length, identical for all labels
_DISP_FRAMES = 10  # the manoeuvre must be >= _DISP_PX off the straight path this soon after onset
_DISP_PX = 6.0  # at 64 px resolution

# Side of each manoeuvre (-1 left, +1 right); a U-turn is a left-side manoeuvre in right-hand traffic.
_SIDE = np.array([0, -1, 1, -1, 1, -1])
_BRAKES = np.array([False, True, True, False, False, True])  # turns and U-turns slow down first
_DRIFTS = np.array([False, False, False, True, True, False])  # lane changes may drift first
_AMBER = np.array([255, 150, 0], np.float32)  # brighter and redder than any paint or marking
_BRAKE_RED = np.array([255, 30, 50], np.float32)  # brighter than any red paint (value <= 0.78)


@dataclasses.dataclass(frozen=True)
class ManeuverConfig:
    resolution: int = 64  # H = W
    min_frames: int = 32
    max_frames: int = 96
    max_distractors: int = 4
    noise_std: float = 3.0  # per-pixel, per-frame noise std in uint8 units (triangular noise)
    jitter_px: float = 1.0  # camera jitter amplitude (integer shifts of the whole scene)
    # Starting actions before the onset (module docstring); off, clips are those without cues.
    cues: bool = False
    indicator_prob: float = 0.75  # P(signal | turn, lane change or U-turn)
    indicator_wrong_prob: float = 0.05  # P(wrong side | signal)
    false_indicator_prob: float = 0.05  # P(signal, either side | straight)
    cue_lead_min: float = 0.2  # cue window, as a fraction of the frames before the onset point
    cue_lead_max: float = 0.7
    decel_fraction: float = 0.4  # speed lost by the onset point before turns and U-turns
    drift_prob: float = 0.7  # P(drift toward the new lane | lane change)
    drift_px: float = 1.5  # lateral drift at the onset point, in pixels at 64 px resolution
    blink_period: int = 4  # frames per indicator cycle, lit for the first half
    brake_lights: bool = False  # red rear lamps lit while braking (needs cues)

    def __post_init__(self):
        probs = (self.indicator_prob, self.indicator_wrong_prob, self.false_indicator_prob,
                 self.drift_prob)
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError("cue probabilities must be in [0, 1]")
        if not 0.0 < self.cue_lead_min <= self.cue_lead_max <= 1.0:
            raise ValueError("need 0 < cue_lead_min <= cue_lead_max <= 1")
        if not 0.0 <= self.decel_fraction <= 0.5:  # delays the onset by at most a third of the window
            raise ValueError("decel_fraction must be in [0, 0.5]")
        if not 0.0 <= self.drift_px <= _DISP_PX / 2:  # stays in the lane, short of the manoeuvre
            raise ValueError(f"drift_px must be in [0, {_DISP_PX / 2}]")
        if self.blink_period < 2:
            raise ValueError("blink_period must be >= 2")
        if self.brake_lights and not self.cues:
            raise ValueError("brake_lights needs cues=True (they show the cue model's braking)")


# --------------------------------------------------------------------------------------------
# Target paths.


class _Path:
    """Polyline starting at the onset point, parametrised by arc length `s` (pixels).

    `s <= 0` is the straight approach below the onset point (heading up); beyond the end the
    path continues along its last direction.
    """

    def __init__(self, points, man_len):
        self.pts = points
        seg = np.diff(points, axis=0)
        seg_len = np.hypot(seg[:, 0], seg[:, 1])
        self.cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        self.dirs = seg / seg_len[:, None]
        self.man_len = man_len  # arc length at which the manoeuvre is complete

    def __call__(self, s):
        """`s`: [N] -> positions [N, 2] (x, y) and unit headings [N, 2]."""
        s = np.asarray(s, np.float64)
        start, end = self.pts[0], self.pts[-1]
        up = np.array([0.0, -1.0])
        inside = np.clip(s, 0.0, self.cum[-1])
        pos = np.stack([np.interp(inside, self.cum, self.pts[:, i]) for i in range(2)], -1)
        idx = np.clip(np.searchsorted(self.cum, inside, side="right") - 1, 0, len(self.dirs) - 1)
        head = self.dirs[idx]
        before, after = s <= 0, s > self.cum[-1]
        pos[before] = start + s[before, None] * up
        head[before] = up
        pos[after] = end + (s[after] - self.cum[-1])[:, None] * self.dirs[-1]
        return pos, head

    def exit_length(self, lo, hi):
        """Arc length at which the position first leaves the square [lo, hi]^2."""
        out = np.any((self.pts < lo) | (self.pts > hi), axis=1)
        return self.cum[np.argmax(out)] if out.any() else self.cum[-1]


def _line(p, d, length):
    n = max(int(np.ceil(length / _STEP)), 1)
    t = np.linspace(0.0, length, n + 1)[1:]
    return p + t[:, None] * np.asarray(d, np.float64)


def _arc(centre, r, a0, a1):
    """Arc of radius r around `centre` from angle a0 to a1 (image coordinates, y down)."""
    n = max(int(np.ceil(abs(a1 - a0) * r / _STEP)), 2)
    a = np.linspace(a0, a1, n + 1)[1:]
    return np.asarray(centre, np.float64) + r * np.stack([np.cos(a), np.sin(a)], -1)


def _make_path(start, piece, end_dir, tail):
    """Onset point, manoeuvre polyline `piece(start)`, then a straight tail along `end_dir`."""
    start = np.asarray(start, np.float64)
    man = np.concatenate([start[None], piece(start)])
    # The exact final heading, not the last polyline segment, so the tail does not drift.
    tail_pts = _line(man[-1], end_dir, tail)
    path = _Path(np.concatenate([man, tail_pts]), 0.0)
    path.man_len = path.cum[len(man) - 1]
    return path


def _class_paths(x0, y0, lay, tail):
    """Paths for all labels, all starting at the onset point (x0, y0) heading up."""
    up = (0.0, -1.0)
    w = lay["w"]
    s_lc, r_right, r_left, r_u, d_u = (lay[k] for k in ("s_lc", "r_right", "r_left", "r_u", "d_u"))

    def lane_change(sign):
        def piece(p):
            ll = np.linspace(0.0, s_lc, int(np.ceil(s_lc / _STEP)) + 1)[1:]
            u = ll / s_lc
            shift = sign * w * u * u * (3.0 - 2.0 * u)  # smoothstep: heading ends straight again
            return np.stack([p[0] + shift, p[1] - ll], -1)

        return piece

    def u_turn(p):
        # Two quarter arcs joined by a straight segment if the lanes are further apart than 2 r_u.
        a = _arc((p[0] - r_u, p[1]), r_u, 0.0, -np.pi / 2)
        gap = d_u - 2.0 * r_u
        if gap > 0.05:
            a = np.concatenate([a, _line(a[-1], (-1.0, 0.0), gap)])
        b = _arc((a[-1][0], a[-1][1] + r_u), r_u, -np.pi / 2, -np.pi)
        return np.concatenate([a, b])

    start = (x0, y0)
    left, right, down = (-1.0, 0.0), (1.0, 0.0), (0.0, 1.0)
    return [
        _make_path(start, lambda p: _line(p, up, 1.0), up, tail),
        _make_path(start, lambda p: _arc((p[0] - r_left, p[1]), r_left, 0.0, -np.pi / 2), left, tail),
        _make_path(
            start, lambda p: _arc((p[0] + r_right, p[1]), r_right, np.pi, 1.5 * np.pi), right, tail
        ),
        _make_path(start, lane_change(-1.0), up, tail),
        _make_path(start, lane_change(1.0), up, tail),
        _make_path(start, u_turn, down, tail),
    ]


def _first_displacement(path, straight, thr):
    """Arc length after which `path` is first >= thr pixels away from the straight path."""
    s = path.cum
    p, _ = path(s)
    q, _ = straight(s)
    far = np.hypot(*(p - q).T) >= thr
    return s[np.argmax(far)] if far.any() else np.inf


# --------------------------------------------------------------------------------------------
# Colours and static scene.


def _vehicle_colour(rng):
    # Saturated paints or greys, capped in brightness so they never resemble the bright marker.
    if rng.random() < 0.3:
        return np.full(3, rng.uniform(25, 170), np.float32)
    return hsv(rng.random(), rng.uniform(0.35, 0.95), rng.uniform(0.3, 0.78))


def _unit(x):
    # np.minimum/np.maximum are much cheaper than np.clip on the small arrays used here.
    return np.minimum(np.maximum(x, 0.0), 1.0)


def _band(coord, centre, half):
    """Anti-aliased coverage of |coord - centre| <= half."""
    return _unit(half + 0.5 - np.abs(coord - centre))


def _paint(img, cov, colour):
    """Blends `colour` into `img` [..., 3] with coverage `cov` [...], in place."""
    diff = np.asarray(colour, np.float32) - img
    diff *= cov[..., None]
    img += diff


def _span(lo, hi, offset, size):
    """Pixel index range [i0, i1) whose centres can be covered by the interval [lo, hi]."""
    return max(int(np.floor(lo + offset)) - 1, 0), min(int(np.ceil(hi + offset)) + 1, size)


def _paint_rect(img, coords, offset, cx, cy, hx, hy, colour):
    """Axis-aligned rectangle centred at (cx, cy) with half sizes (hx, hy); touches only its slice."""
    i0, i1 = _span(cy - hy, cy + hy, offset, img.shape[0])
    j0, j1 = _span(cx - hx, cx + hx, offset, img.shape[1])
    if i1 > i0 and j1 > j0:
        cov = _band(coords[i0:i1, None], cy, hy) * _band(coords[None, j0:j1], cx, hx)
        _paint(img[i0:i1, j0:j1], cov, colour)


def _paint_disc(img, coords, offset, cx, cy, r, colour):
    i0, i1 = _span(cy - r, cy + r, offset, img.shape[0])
    j0, j1 = _span(cx - r, cx + r, offset, img.shape[1])
    if i1 > i0 and j1 > j0:
        dist = np.sqrt((coords[i0:i1, None] - cy) ** 2 + (coords[None, j0:j1] - cx) ** 2)
        _paint(img[i0:i1, j0:j1], _unit(r + 0.5 - dist), colour)


def _render_background(rng, lay, size, offset, scale):
    """Static scene on a `[size, size, 3]` float canvas; pixel i is at scene coord i - offset."""
    coords = np.arange(size, dtype=np.float32) - offset + 0.5
    xx, yy = coords[None, :], coords[:, None]
    c, n, w = lay["c"], lay["n"], lay["w"]
    yc, nc, wc = lay["yc"], lay["nc"], lay["wc"]

    theme = rng.integers(3)
    if theme == 0:  # grass
        base = hsv(rng.uniform(0.22, 0.36), rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.6))
    elif theme == 1:  # dry land
        base = hsv(rng.uniform(0.07, 0.15), rng.uniform(0.25, 0.55), rng.uniform(0.45, 0.7))
    else:  # urban concrete
        base = hsv(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.45, 0.7))
    # Smooth large-scale shading plus fine static texture.
    shade = rng.normal(0.0, 5.0, (size, size)).astype(np.float32)
    for _ in range(3):
        f = rng.uniform(0.02, 0.08) / scale
        a = rng.uniform(0, 2 * np.pi)
        ph = rng.uniform(0, 2 * np.pi)
        shade += rng.uniform(4, 10) * np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + ph)
    img = base + shade[..., None]

    # Buildings and trees; the roads are painted over them afterwards.
    for _ in range(rng.integers(2, 7)):
        bx, by = rng.uniform(-offset, size - offset, 2)
        bw, bh = rng.uniform(6, 16, 2) * scale
        col = hsv(rng.random(), rng.uniform(0.05, 0.4), rng.uniform(0.35, 0.75))
        _paint_rect(img, coords, offset, bx, by, bw / 2, bh / 2, col * 0.75)
        _paint_rect(img, coords, offset, bx, by, bw / 2 - scale, bh / 2 - scale, col)
    for _ in range(rng.integers(0, 8)):
        tx, ty = rng.uniform(-offset, size - offset, 2)
        col = hsv(rng.uniform(0.22, 0.4), rng.uniform(0.5, 0.8), rng.uniform(0.2, 0.4))
        _paint_disc(img, coords, offset, tx, ty, rng.uniform(1.5, 3.5) * scale, col)

    sidewalk = hsv(rng.random(), rng.uniform(0.0, 0.1), rng.uniform(0.55, 0.75))
    sw = rng.uniform(1.0, 2.5) * scale
    main_half, cross_half = n * w, nc * wc
    _paint(img, np.maximum(_band(xx, c, main_half + sw), _band(yy, yc, cross_half + sw)), sidewalk)
    road = np.clip(rng.uniform(50, 105) + rng.uniform(-8, 8, 3), 0, 255).astype(np.float32)
    road_cov = np.maximum(_band(xx, c, main_half), _band(yy, yc, cross_half))
    _paint(img, road_cov, road + rng.normal(0.0, 3.0, (size, size, 1)).astype(np.float32))

    # Markings, left out inside the intersection square.
    white = np.full(3, rng.uniform(200, 240), np.float32)
    centre_col = np.array([225, 190, 50], np.float32) if rng.random() < 0.6 else white
    lw = 0.35 * scale  # half line width
    off_cross = 1.0 - _band(yy, yc, cross_half + 0.5)  # [S, 1]
    off_main = 1.0 - _band(xx, c, main_half + 0.5)  # [1, S]
    period = rng.uniform(4.0, 7.0) * scale
    dash_y = ((yy / period + rng.random()) % 1.0 < 0.5).astype(np.float32)
    dash_x = ((xx / period + rng.random()) % 1.0 < 0.5).astype(np.float32)
    main_lines = np.zeros_like(xx)
    for i in range(1, n):
        for sgn in (-1, 1):
            main_lines = np.maximum(main_lines, _band(xx, c + sgn * i * w, lw))
    cross_lines = np.zeros_like(yy)
    for i in range(1, nc):
        for sgn in (-1, 1):
            cross_lines = np.maximum(cross_lines, _band(yy, yc + sgn * i * wc, lw))
    # Stop line in front of the northbound lanes: identical for every label.
    stop = _band(yy, yc + cross_half + 1.2 * scale, 0.5 * scale) * _band(
        xx, c + main_half / 2, main_half / 2
    )
    marks = np.maximum(
        np.maximum(main_lines * dash_y, stop) * off_cross, cross_lines * dash_x * off_main
    )
    _paint(img, marks, white)
    centre_cov = np.maximum(_band(xx, c, lw) * off_cross, _band(yy, yc, lw) * off_main)
    _paint(img, centre_cov, centre_col)
    return img


# --------------------------------------------------------------------------------------------
# Vehicles.

_GLASS = np.array([35, 45, 60], np.float32)


def _draw_vehicle(canvas, cx, cy, head, length, width, body, marker=None, lamps=None,
                  brakes=None):
    """Paints one oriented vehicle into every frame of `canvas` [T, R, R, 3] (float, in place).

    cx, cy: [T] centre in image pixel coordinates; head: [T, 2] unit heading (x, y);
    lamps: int [T], the side (-1 left, +1 right, 0 none) whose indicator lamps are lit;
    brakes: bool [T], whether the brake lamps (both rear corners) are lit.
    Only a small window around the vehicle is evaluated, and only in frames where it is near
    the image.
    """
    size = canvas.shape[1]
    # Windows are clamped inside the image; a vehicle partly outside still has its visible part
    # inside the clamped window, because the window is at least as large as the vehicle.
    win = min(int(np.ceil(np.hypot(length, width))) + 4, size)
    on = (cx > -win) & (cx < size + win) & (cy > -win) & (cy < size + win)
    if not on.any():
        return
    frames = np.flatnonzero(on)
    cx, cy, head = cx[frames], cy[frames], head[frames]
    x0 = np.clip(np.floor(cx).astype(np.int64) - win // 2, 0, size - win)
    y0 = np.clip(np.floor(cy).astype(np.int64) - win // 2, 0, size - win)
    offs = np.arange(win)
    xs = x0[:, None] + offs  # [F, win]
    ys = y0[:, None] + offs
    px = (xs + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]  # [F, 1, win]
    py = (ys + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]  # [F, win, 1]
    hx = head[:, 0, None, None].astype(np.float32)
    hy = head[:, 1, None, None].astype(np.float32)
    u = px * hx + py * hy  # along the heading, forward positive
    v = np.abs(py * hx - px * hy)
    hl, hw = length / 2.0, width / 2.0

    def rect(u_lo, u_hi, half_w):
        return _unit(np.minimum(u - u_lo, u_hi - u) + 0.5) * _unit(half_w + 0.5 - v)

    index = (frames[:, None, None], ys[:, :, None], xs[:, None, :])
    patch = canvas[index]
    _paint(patch, rect(-hl - 0.5, hl + 0.5, hw + 0.5), body * 0.35)  # dark outline
    _paint(patch, rect(-hl, hl, hw), body)
    _paint(patch, rect(0.12 * length, 0.32 * length, hw - 0.6), _GLASS)  # windscreen: heading cue
    _paint(patch, rect(-0.44 * length, -0.34 * length, hw - 0.6), _GLASS)
    if marker is not None:
        _paint(patch, rect(-0.2 * length, 0.08 * length, max(0.3 * width, 1.0)), marker)
    if brakes is not None:
        # Both rear corners with the indicator's lamp geometry; a lit indicator paints over one.
        lit = brakes[frames].astype(np.float32)[:, None, None]
        lamp = _unit(v - hw + 0.35 * width + 0.5) * _unit(hw + 1.0 - v)
        lamp *= _unit(-u - hl + 0.25 * length + 0.5) * _unit(hl + 1.0 + u)
        _paint(patch, lamp * lit, _BRAKE_RED)
    if lamps is not None:
        # Front and rear corner of the lit side, out over the outline: about 2 x 2 px at 64 px.
        side = lamps[frames].astype(np.float32)[:, None, None]
        toward = (py * hx - px * hy) * side  # lateral offset toward the lit side
        along = np.abs(u)
        lamp = _unit(toward - hw + 0.35 * width + 0.5) * _unit(hw + 1.0 - toward)
        lamp *= _unit(along - hl + 0.25 * length + 0.5) * _unit(hl + 1.0 - along)
        _paint(patch, lamp * np.abs(side), _AMBER)
    canvas[index] = patch


def _box(cx, cy, head, length, width):
    """Axis-aligned [T, 4] box (x1, y1, x2, y2) of an oriented rectangle, in pixels."""
    hl, hw = length / 2.0, width / 2.0
    ex = np.abs(head[:, 0]) * hl + np.abs(head[:, 1]) * hw
    ey = np.abs(head[:, 1]) * hl + np.abs(head[:, 0]) * hw
    return np.stack([cx - ex, cy - ey, cx + ex, cy + ey], -1)


# --------------------------------------------------------------------------------------------
# Clip sampling.


def _sample_layout(rng, res, scale, t_len, onset, delay=0):
    """Samples a road layout, target lane and label-independent speed profile.

    Rejects layouts in which some manoeuvre would not complete, or would leave the frame, within
    the clip, also when braking makes the target reach the onset point `delay` frames late; every
    quantity is computed for all labels so the result is label independent.
    """
    margin = 2.5 * scale
    t_post = t_len - onset - delay  # frames after the last straight frame
    for attempt in itertools.count():
        n = int(rng.integers(2, 4))
        w = rng.uniform(6.4, 7.6 if n == 2 else 6.9) * scale
        nc = int(rng.integers(1, 3))
        wc = rng.uniform(6.0, 7.0) * scale
        k = int(rng.integers(n))  # target lane, 0 = next to the centre line
        # The target lane is placed near the middle so that turns either way stay in view; the
        # main road may then extend past the left edge of the frame.
        x0 = rng.uniform(0.44, 0.56) * res
        c = x0 - (k + 0.5) * w
        y_on = rng.uniform(0.52, 0.7) * res  # onset point = near edge of the cross road
        lay = {
            "n": n,
            "w": w,
            "nc": nc,
            "wc": wc,
            "c": c,
            "yc": y_on - nc * wc,
            "k": k,
            "s_lc": rng.uniform(1.4, 1.9) * w,
            # Right turns end in a random eastbound lane, left turns in the nearest westbound one.
            "r_right": (nc - int(rng.integers(nc)) - 0.5) * wc,
            "r_left": (nc + 0.5) * wc,
            "r_u": rng.uniform(4.5, 6.5) * scale,
            "d_u": (k + 1) * w,  # into the nearest southbound lane
        }
        lay["r_u"] = min(lay["r_u"], lay["d_u"] / 2.0)
        length = rng.uniform(1.3, 1.5) * w
        width = rng.uniform(0.6, 0.68) * w
        y_start = rng.uniform(max(0.75 * res, y_on + 0.25 * res), res + 0.1 * length)
        v_rand = rng.uniform(0.85, 1.15)
        amp = rng.uniform(0.95, 1.0)

        paths = _class_paths(x0, y_on, lay, tail=1.5 * res)
        budget = amp * min(p.exit_length(margin, res - margin) for p in paths)
        need = max(p.man_len for p in paths) + 2.0 * scale
        disp = max(_first_displacement(p, paths[0], _DISP_PX * scale) for p in paths[1:])
        if need > 0.95 * budget or disp > 0.9 * budget:
            continue
        # Arc length after onset follows s(tau) = A tanh(v tau / A): speed v at onset, then a
        # smooth slow-down so the target never leaves the frame in long clips.
        v_pre = (y_start - y_on) / (onset - 1)
        v_need = max(
            budget * np.arctanh(need / budget) / t_post,
            budget * np.arctanh(disp / budget) / _DISP_FRAMES,
        )
        v_post = max(np.clip(v_pre * v_rand, 1.0 * scale, 2.6 * scale), v_need)
        if v_post > 4.0 * scale and attempt < 50:  # only very short clips need a faster target
            continue
        lay.update(
            paths=paths,
            length=length,
            width=width,
            v_pre=v_pre,
            v_post=v_post,
            budget=budget,
            x0=x0,
            y_on=y_on,
        )
        return lay


def _distractors(rng, lay, count, t_len, res, scale):
    """Straight-driving vehicles in lanes other than the target's.

    Returns a list of (positions [T, 2], headings [T, 2], length, width, colour [3]).
    """
    c, n, w, yc, nc, wc, k = (lay[key] for key in ("c", "n", "w", "yc", "nc", "wc", "k"))
    lanes = [((c + (i + 0.5) * w, 0.0), (0.0, -1.0), w) for i in range(n) if i != k]
    lanes += [((c - (i + 0.5) * w, 0.0), (0.0, 1.0), w) for i in range(n)]
    lanes += [((0.0, yc + (i + 0.5) * wc), (1.0, 0.0), wc) for i in range(nc)]
    lanes += [((0.0, yc - (i + 0.5) * wc), (-1.0, 0.0), wc) for i in range(nc)]
    chosen = rng.choice(len(lanes), size=count, replace=count > len(lanes))
    t = np.arange(t_len)
    out = []
    for li in chosen:
        (lx, ly), d, lw = lanes[li]
        d = np.asarray(d)
        speed = rng.uniform(0.4, 1.8) * scale
        t_ref = rng.uniform(0, t_len)
        along = rng.uniform(0.1, 0.9) * res + speed * (t - t_ref)  # along-lane coordinate
        if d[0] == 0:
            pos = np.stack([np.full(t_len, lx), along if d[1] > 0 else res - along], -1)
        else:
            pos = np.stack([along if d[0] > 0 else res - along, np.full(t_len, ly)], -1)
        length = rng.uniform(1.3, 1.5) * lw * (1.6 if rng.random() < 0.15 else 1.0)
        width = rng.uniform(0.6, 0.68) * lw
        out.append((pos, np.broadcast_to(d, (t_len, 2)), length, width, _vehicle_colour(rng)))
    return out


def _draw_latents(rng, cue_rng, labels, config):
    """Timing and cues of clips of `labels` (int [N]), drawn label independently.

    `rng` makes the first draws of `render_clip` (length, onset), `cue_rng` the cue draws; the
    labels only use the draws deterministically. Returns a dict of [N] arrays:
      length: T; base_onset: the drawn onset `o`; onset: first frame off the straight path, o plus
      delay; lead, start: cue window length and first frame (module docstring);
      indicator: -1 left, 0 none, +1 right; decel: fraction of the speed lost, 0 without braking;
      lag: whole frames a braking target would arrive late (whatever the label); delay: lag if it
      brakes, else 0; drift: signed lateral drift at the onset point, pixels at
      `config.resolution`.
    Without `config.cues` every cue is off (indicator, decel, lag, delay and drift 0).
    """
    labels = np.asarray(labels)
    n = len(labels)
    length = rng.integers(config.min_frames, config.max_frames + 1, size=n)
    base = np.rint(rng.uniform(*_ONSET_RANGE, size=n) * length).astype(np.int64)
    signal_u, side_u, lead_u, drift_u = cue_rng.random((4, n))
    span = config.cue_lead_max - config.cue_lead_min
    lead = np.maximum(np.rint((config.cue_lead_min + span * lead_u) * (base - 1)), 1).astype(np.int64)

    side = _SIDE[labels]
    straight = side == 0
    signal = config.cues & (
        signal_u < np.where(straight, config.false_indicator_prob, config.indicator_prob))
    # side_u: the wrong side for a manoeuvre, either side (even odds) for a false signal.
    swap = side_u < np.where(straight, 0.5, config.indicator_wrong_prob)
    indicator = np.where(signal, np.where(straight, 1, side) * np.where(swap, -1, 1), 0)
    # Braking linearly by f over lead + lag frames covers the ground of `lead` frames iff
    # f = 2 lag / (lead + lag); lag < lead keeps f < 1.
    f = config.decel_fraction
    lag = np.minimum(np.floor(lead * f / (2.0 - f) + 0.5), lead - 1).astype(np.int64) * config.cues
    delay = lag * _BRAKES[labels]
    decel = 2.0 * delay / (lead + delay)
    drifts = config.cues & _DRIFTS[labels] & (drift_u < config.drift_prob)
    drift = np.where(drifts, side * config.drift_px * config.resolution / 64.0, 0.0)
    return {
        "length": length,
        "base_onset": base,
        "onset": base + delay,
        "lead": lead,
        "start": base - 1 - lead,
        "indicator": indicator,
        "decel": decel,
        "lag": lag,
        "delay": delay,
        "drift": drift,
    }


def _arc_length(t_len, base_onset, lead, delay, decel, lay):
    """Arc length [T] along the target path; frame `base_onset - 1 + delay` is on the onset point
    (`delay`: int frames).

    Without braking (delay 0) the target keeps the approach speed up to the onset point; with it,
    the speed drops linearly from `start` to (1 - decel) of the approach speed at the (later)
    onset point.
    """
    tau = np.arange(t_len, dtype=np.float64) - (base_onset - 1)
    s = lay["v_pre"] * tau
    if delay:
        window = lead + delay
        y = np.clip((tau + lead) / window, 0.0, 1.0)  # 0 at `start`, 1 at the onset point
        braking = -lay["v_pre"] * window * (1.0 - y - decel * (1.0 - y * y) / 2.0)
        s = np.where(tau < -lead, s, braking)  # frames before `start` stay as without braking
        tau = tau - delay
    amp = lay["budget"]
    return np.where(tau <= 0, s, amp * np.tanh(lay["v_post"] * tau / amp))


def _smoothstep(x):
    return x * x * (3.0 - 2.0 * x)


def render_clip(seed: int, label: int, config: ManeuverConfig = ManeuverConfig()) -> dict:
    """Renders one clip of manoeuvre `label` (index into `MANEUVERS`).

    Returns a dict with
      video: uint8 [T, R, R, 3];
      boxes: float32 [T, 4] target box, normalized (x1, y1, x2, y2), clipped to [0, 1];
      onset: int, first frame whose target position departs from driving straight;
      label: int; length: int T (random in [min_frames, max_frames]);
      cues: the latent starting actions (all off without `config.cues`), a dict of scalars:
        indicator (-1 left, 0 none, +1 right), start (first frame of the cue window, the first lit
        frame of a signal), decel (fraction of the speed lost by the onset point), delay (frames
        braking adds before the onset point), drift (signed lateral pixels at the onset point).
    """
    if not 0 <= label < len(MANEUVERS):
        raise ValueError(f"label must be in [0, {len(MANEUVERS)}), got {label}")
    if not 16 <= config.min_frames <= config.max_frames:
        raise ValueError("need 16 <= min_frames <= max_frames")
    rng = np.random.default_rng(seed)
    res = config.resolution
    scale = res / 64.0

    cue_rng = np.random.default_rng([seed, 1])
    lat = {k: v[0].item() for k, v in _draw_latents(rng, cue_rng, [label], config).items()}
    t_len, onset, base, lead = lat["length"], lat["onset"], lat["base_onset"], lat["lead"]
    lay = _sample_layout(rng, res, scale, t_len, base, lat["lag"])

    s = _arc_length(t_len, base, lead, lat["delay"], lat["decel"], lay)
    pos, head = lay["paths"][label](s)
    if lat["drift"]:
        # Toward the new lane over the cue window, then fading out along the lane change.
        toward = np.clip((np.arange(t_len) - lat["start"]) / lead, 0.0, 1.0)
        fade = np.clip(s / lay["s_lc"], 0.0, 1.0)
        pos[:, 0] += lat["drift"] * np.where(s <= 0, _smoothstep(toward), 1.0 - _smoothstep(fade))
    lamps = None
    if lat["indicator"]:
        since = np.arange(t_len) - lat["start"]
        lit = (since >= 0) & (since % config.blink_period < config.blink_period // 2)
        lamps = np.where(lit, lat["indicator"], 0)
    brakes = None
    if config.brake_lights and lat["delay"]:
        frame = np.arange(t_len)
        brakes = (frame >= lat["start"]) & (frame < onset)

    body = _vehicle_colour(rng)
    marker = (
        np.array([255, 255, 255], np.float32)
        if rng.random() < 0.5
        else np.array([255, 235, 40], np.float32)
    )
    others = _distractors(rng, lay, int(rng.integers(config.max_distractors + 1)), t_len, res, scale)

    jit = int(np.ceil(config.jitter_px))
    shift = np.rint(rng.uniform(-config.jitter_px, config.jitter_px, (t_len, 2))).astype(np.int64)
    background = _render_background(rng, lay, res + 2 * jit, jit, scale)

    canvas = np.empty((t_len, res, res, 3), np.float32)
    for t in range(t_len):
        oy, ox = jit - shift[t, 1], jit - shift[t, 0]
        canvas[t] = background[oy : oy + res, ox : ox + res]
    off = shift.astype(np.float64)  # scene -> image coordinates, per frame
    for p, h, length, width, colour in others:
        _draw_vehicle(canvas, p[:, 0] + off[:, 0], p[:, 1] + off[:, 1], h, length, width, colour)
    _draw_vehicle(
        canvas,
        pos[:, 0] + off[:, 0],
        pos[:, 1] + off[:, 1],
        head,
        lay["length"],
        lay["width"],
        body,
        marker,
        lamps,
        brakes,
    )

    video = add_pixel_noise(rng, canvas, config.noise_std)

    box = _box(
        pos[:, 0] + shift[:, 0], pos[:, 1] + shift[:, 1], head, lay["length"] + 0.6, lay["width"] + 0.6
    )
    boxes = np.clip(box / res, 0.0, 1.0).astype(np.float32)
    cues = {k: lat[k] for k in ("indicator", "start", "decel", "delay", "drift")}
    return {"video": video, "boxes": boxes, "onset": onset, "label": int(label), "length": t_len,
            "cues": cues}


# --------------------------------------------------------------------------------------------
# Bayes limit of early prediction.


def clip_latents(seed: int, label: int, config: ManeuverConfig) -> dict:
    """The timing and cue draws `render_clip(seed, label, config)` uses (`_draw_latents`'s
    fields, as scalars), without rendering."""
    lat = _draw_latents(np.random.default_rng(seed), np.random.default_rng([seed, 1]), [label],
                        config)
    return {k: v[0].item() for k, v in lat.items()}


def observed_cues(lat, labels, observed, reveal_frames: int = 1):
    """What the first `observed` (int [N]) frames show: int [N, 4] of (indicator side, braking,
    drift side, label or -1 while not revealed); sides are signed, so a flip negates them.
    `lat`: `_draw_latents`' dict of [N] arrays.

    Every cue counts as seen once frame `start` is observed, the label once `onset - 1 +
    reveal_frames` is.
    """
    seen = observed > lat["start"]
    return np.stack([
        np.where(seen, lat["indicator"], 0),
        seen & (lat["decel"] > 0),
        np.where(seen, np.sign(lat["drift"]), 0),
        np.where(observed >= lat["onset"] + reveal_frames, labels, -1),
    ], -1).astype(np.int64)


_SUMMARY_DIMS = (3, 2, 3, len(MANEUVERS) + 1)  # the value ranges of `observed_cues`' columns


def summary_index(summary) -> np.ndarray:
    """int [N]: one index per distinct `observed_cues` row [N, 4], in
    `[0, prod(_SUMMARY_DIMS))`."""
    return np.ravel_multi_index(tuple((np.asarray(summary) + [1, 0, 1, 1]).T), _SUMMARY_DIMS)


def observed_frames(ratio, length):
    """How many first frames of a clip of `length` frames the `ratio` observes (as
    `pipeline.first_fraction_indices`, at least 1)."""
    return np.maximum(np.ceil(ratio * length - 1e-9), 1)


def _decide(index, labels) -> np.ndarray:
    """The most frequent label of each summary index (ties: the lower label): int [S]."""
    counts = np.zeros((int(np.prod(_SUMMARY_DIMS)), len(MANEUVERS)))
    np.add.at(counts, (index, labels), 1.0)
    return counts.argmax(1)


def _sampled_latents(config, num_samples, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(num_samples) % len(MANEUVERS)  # balanced like the builder's index % 6
    return _draw_latents(rng, rng, labels, config), labels


def bayes_decisions(config: ManeuverConfig, ratio: float, num_samples: int = 200_000,
                    seed: int = 0, reveal_frames: int = 1) -> np.ndarray:
    """The Bayes-optimal label for each summary of the first `ratio` of a clip: int [S], indexed
    by `summary_index(observed_cues(...))` (fitted on `num_samples` latent draws; summaries
    never drawn get label 0)."""
    lat, labels = _sampled_latents(config, num_samples, seed)
    observed = observed_frames(ratio, lat["length"])
    return _decide(summary_index(observed_cues(lat, labels, observed, reveal_frames)), labels)


def bayes_limit(config: ManeuverConfig, ratios, num_samples: int = 20000, seed: int = 0,
                reveal_frames: int = 1) -> dict[float, float]:
    """Bayes-optimal top-1 accuracy when observing the first `ratio` of each clip, per ratio.

    Monte Carlo over the renderer's own latent draws (`_draw_latents`, no pixels): labels balanced
    like the builder's `index % 6`, `max(1, ceil(ratio * T))` observed frames like
    `pipeline.first_fraction_indices`. The observation is summarised by `observed_cues`; the
    posterior P(label | summary) is counted on the first half of the samples and its argmax
    scored on the second half (decisions fitted on finite samples can only lose to the exact
    ones, by MC noise).

    The summary gives the observer at least what the pixels do, so this is an upper bound: every
    cue counts as seen from its first frame `start` (when braking and drift have barely begun;
    brake lamps, `brake_lights`, show braking from then on), and with `reveal_frames=1` the
    label from the first frame off the straight path, however small the departure;
    `reveal_frames=_DISP_FRAMES` waits for the dataset's guaranteed departure of `_DISP_PX`.
    Before `start` the frames are identical across labels, and the optimal decision does not
    depend on the timing (when the window began, the clip length or the onset), so knowing those
    would not help.
    """
    if not all(0.0 < r <= 1.0 for r in ratios):
        raise ValueError(f"ratios must be in (0, 1], got {ratios}")
    lat, labels = _sampled_latents(config, num_samples, seed)
    fit, score = slice(0, num_samples // 2), slice(num_samples // 2, None)
    out = {}
    for ratio in ratios:
        observed = observed_frames(ratio, lat["length"])
        index = summary_index(observed_cues(lat, labels, observed, reveal_frames))
        decision = _decide(index[fit], labels[fit])
        out[float(ratio)] = float(np.mean(decision[index[score]] == labels[score]))
    return out
