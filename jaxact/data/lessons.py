"""Long synthetic classroom lessons with per-frame ground truth, written as an ordinary MP4.

The room, figures and drawing are those of `jaxact.data.classroom`, but one class sits through the
whole lesson: every student keeps a seat, and behaviours follow a state machine timed in seconds
rather than the clip renderer's per-frame flips. Each behaviour (stand, raise_hand, write,
turn_to_neighbour) runs for `min_seconds` plus an exponential time (mean `*_seconds` in all), then
stops; a stopped behaviour starts again at a constant rate (mean wait `*_gap_seconds`) counted only
while the classroom rules allow it to start: writing only while seated with no raised hand and no
turn, and nothing but sitting while writing. The rules hold on every frame by construction.

Expected rates with the defaults (measured over 2000 student-minutes; `tests/test_lessons.py`
checks them loosely): a raise lasts 3.5 s and a student raises a hand ~3.3 times a minute (hand up
~20% of the time); writing bouts last 8 s, ~2.2 a minute (~30%); turns 2.5 s, ~2.6 a minute (~11%);
a student stands ~0.9 times a minute for 6 s (~9%). So a minute shows every behaviour many times
per class, and a 16-frame (2 s) window still mostly holds one state per student.

A frame is labelled with a behaviour once the pose is more than half way into it (the eased pose
of `classroom._eased` covers 3 frames), so labels follow the pictures. Pure numpy, deterministic in
`(seed, config)`; a lesson is a prefix of any longer lesson with the same seed and config.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np

from jaxact import files
from jaxact.data import classroom as cr
from jaxact.data import video_io
from jaxact.data.render_utils import add_pixel_noise, hsv

_STAND, _RAISE, _WRITE, _TURN = range(4)  # the state order of classroom's pose code
_BURN_IN_SECONDS = 30.0  # the lesson opens mid-lesson, not with everyone idle
_CHUNK = 32  # frames composited at once: vectorised, yet a few MB whatever the lesson length


@dataclasses.dataclass(frozen=True)
class LessonConfig:
    seconds: float = 60.0
    fps: int = 8
    resolution: int = 128
    min_people: int = 6
    max_people: int = 12
    noise_std: float = 3.0  # per-pixel, per-frame noise std in uint8 units
    # Mean length of each behaviour and mean wait before it starts again, in seconds (see above).
    stand_seconds: float = 6.0
    stand_gap_seconds: float = 40.0
    raise_seconds: float = 3.5
    raise_gap_seconds: float = 9.0
    write_seconds: float = 8.0
    write_gap_seconds: float = 10.0
    turn_seconds: float = 2.5
    turn_gap_seconds: float = 14.0
    min_seconds: float = 1.0  # shortest behaviour, so no pose flickers for a frame or two

    @property
    def num_frames(self) -> int:
        return round(self.seconds * self.fps)

    def rates(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean length, mean gap) in seconds, each [4] in (stand, raise, write, turn) order."""
        on = (self.stand_seconds, self.raise_seconds, self.write_seconds, self.turn_seconds)
        gap = (self.stand_gap_seconds, self.raise_gap_seconds, self.write_gap_seconds,
               self.turn_gap_seconds)
        return np.array(on, np.float64), np.array(gap, np.float64)

    def validate(self) -> None:
        on, gap = self.rates()
        if self.fps < 1 or self.num_frames < 1 or self.resolution < 16:
            raise ValueError(f"{self}: need fps >= 1, at least one frame and resolution >= 16")
        if not 1 <= self.min_people <= self.max_people:
            raise ValueError("need 1 <= min_people <= max_people")
        if not (np.all(on > 0) and np.all(gap > 0) and 0 <= self.min_seconds):
            raise ValueError(f"{self}: behaviour lengths and gaps must be positive")


def _sample_states(rng, config, num_frames, num):
    """bool [num_frames, P, 4] (stand, raise, write, turn) per frame, from all idle at frame 0.

    Stands in for classroom._sample_states, whose per-frame flips around a keyframe suit 16-frame
    clips but not minutes: here lengths and waits are in seconds, whatever the fps.
    """
    on, gap = config.rates()
    p_start = -np.expm1(-1.0 / (gap * config.fps))  # per-frame start probability while allowed
    shortest = np.minimum(config.min_seconds, on)
    states = np.zeros((num_frames, num, 4), bool)
    cur = np.zeros((num, 4), bool)
    end = np.zeros((num, 4), np.int64)  # first frame after each running behaviour
    for t in range(num_frames):
        # Fixed draws per frame, so the same seed gives the same start of any longer lesson.
        start = rng.random((num, 4)) < p_start
        seconds = shortest + rng.exponential(on - shortest, (num, 4))
        length = np.maximum(np.rint(seconds * config.fps), 1).astype(np.int64)
        cur &= t < end
        begin = start & ~cur
        begin[:, [_STAND, _RAISE, _TURN]] &= ~cur[:, _WRITE, None]  # nothing else while writing
        cur[:, [_STAND, _RAISE, _TURN]] |= begin[:, [_STAND, _RAISE, _TURN]]
        begin[:, _WRITE] &= ~cur[:, [_STAND, _RAISE, _TURN]].any(1)  # write only seated and idle
        cur[:, _WRITE] |= begin[:, _WRITE]
        end = np.where(begin, t + length, end)
        states[t] = cur
    return states


def _sample_class(rng, config):
    """(room [R, R, 3] f32, seat dicts for classroom's pose code, back row first)."""
    # classroom._try_render builds these dicts inside its clip loop; this is that part alone.
    res = config.resolution
    num = int(rng.integers(config.min_people, config.max_people + 1))
    room, _ = cr._render_room(rng, res)
    desk = hsv(rng.uniform(0.05, 0.12), rng.uniform(0.35, 0.65), rng.uniform(0.45, 0.75))
    seats = []
    for x, ground, height, row in cr._layout(rng, res, num):
        seats.append({
            "x": x, "ground": ground, "height": height, "row": row,
            "desk_top": ground - 0.33 * height, "desk_dx": rng.uniform(-0.06, 0.06) * height,
            "raise_side": float(rng.choice([-1.0, 1.0])),
            "write_side": float(rng.choice([-1.0, 1.0])),
            "colours": cr._person_colours(rng, desk),
        })
    for seat in seats:  # students turn to the closest classmate in their row
        mates = [s["x"] for s in seats if s["row"] == seat["row"] and s is not seat]
        near = min(mates, key=lambda m: abs(m - seat["x"]), default=seat["x"] + 1.0)
        seat["turn_dir"] = 1.0 if near >= seat["x"] else -1.0
    return room, seats


def _draw_sprites(seats, levels, res):
    """Per person p: (rows slice, cols slice, classroom._Sprite of the poses levels[p] [U, 4])."""
    out = []
    for seat, lv in zip(seats, levels, strict=True):
        h = seat["height"]  # the window classroom uses: room for a raised hand above the head
        y0, y1 = max(int(seat["ground"] - 1.22 * h), 0), min(int(seat["ground"] + 0.05 * h) + 1, res)
        x0, x1 = max(int(seat["x"] - 0.55 * h), 0), min(int(seat["x"] + 0.55 * h) + 1, res)
        spr = cr._Sprite(len(lv), y0, y1, x0, x1)
        cr._draw_person(spr, lv, seat, cr._person_poses(lv, seat))
        out.append((slice(y0, y1), slice(x0, x1), spr))
    return out


def _composite(room, sprites, poses, video):
    """poses int [C, P] sprite pose per frame -> (canvas f32 [C, R, R, 3] or None, ids int16
    [C, R, R]: the person seen at each pixel, -1 for none), back rows first."""
    c_len, res = len(poses), room.shape[0]
    canvas = np.broadcast_to(room, (c_len, res, res, 3)).copy() if video else None
    ids = np.full((c_len, res, res), -1, np.int16)
    for p, (sy, sx, spr) in enumerate(sprites):
        u = poses[:, p]
        if video:
            region = canvas[:, sy, sx]
            region *= (1.0 - spr.alpha[u])[..., None]
            region += spr.col[u]
        owner = spr.owner[u]
        id_region = ids[:, sy, sx]
        id_region[(owner != 0) & (owner != cr._OWN_DESK)] = p
        id_region[owner == cr._OWN_DESK] = -1  # a desk hides whoever is behind it
    return canvas, ids


def _seated_view_ok(room, seats):
    """Whether every seated, idle student shows at least half of their figure and of their head."""
    sprites = _draw_sprites(seats, [np.zeros((1, 4), np.float32)] * len(seats), room.shape[0])
    _, ids = _composite(room, sprites, np.zeros((1, len(seats)), np.int64), video=False)
    for p, (sy, sx, spr) in enumerate(sprites):
        seen = ids[0, sy, sx] == p
        for part in ((spr.owner[0] != 0) & (spr.owner[0] != cr._OWN_DESK), spr.owner[0] == cr._OWN_HEAD):
            if (seen & part).sum() < cr._MIN_VISIBLE * part.sum():
                return False
    return True


@dataclasses.dataclass
class _Lesson:
    room: np.ndarray  # [R, R, 3] f32
    sprites: list  # per person (rows, cols, sprite)
    poses: np.ndarray  # int [T, P] sprite pose of each person per frame
    actions: np.ndarray  # uint8 [T, P, 5]
    seats: np.ndarray  # int32 [P, 2] (row, column), 1-based, row 1 in front


def _build(seed, config):
    config.validate()
    scene_ss, state_ss, noise_ss = np.random.SeedSequence(seed).spawn(3)
    scene_rng = np.random.default_rng(scene_ss)
    for attempt in range(50):  # rarely needed: a tall student hiding one behind at a desk
        room, seats = _sample_class(scene_rng, config)
        if _seated_view_ok(room, seats) or attempt == 49:
            break
    num = len(seats)
    burn = round(_BURN_IN_SECONDS * config.fps)
    states = _sample_states(np.random.default_rng(state_ss), config, burn + config.num_frames, num)
    levels = cr._eased(states)[burn:]  # [T, P, 4] eased pose
    labels = levels > 0.5
    actions = np.zeros((*labels.shape[:2], len(cr.BEHAVIOURS)), np.uint8)
    for i, name in ((_STAND, "stand"), (_RAISE, "raise_hand"), (_WRITE, "write"),
                    (_TURN, "turn_to_neighbour")):
        actions[..., cr.BEHAVIOURS.index(name)] = labels[..., i]
    actions[..., cr.BEHAVIOURS.index("sit")] = ~labels[..., _STAND]
    # Each person is drawn once per distinct eased pose (a few dozen in a lesson), not per frame.
    uniq, poses = zip(*(np.unique(levels[:, p], axis=0, return_inverse=True) for p in range(num)),
                      strict=True)
    layout_row = np.array([s["row"] for s in seats])  # 0 = back row
    xs = np.array([s["x"] for s in seats])
    col = np.zeros(num, np.int64)
    for r in np.unique(layout_row):
        members = np.flatnonzero(layout_row == r)
        col[members[np.argsort(xs[members], kind="stable")]] = np.arange(len(members))
    seat_rc = np.stack([layout_row.max() - layout_row + 1, col + 1], -1).astype(np.int32)
    lesson = _Lesson(room, _draw_sprites(seats, uniq, config.resolution),
                     np.stack([np.reshape(i, -1) for i in poses], -1), actions, seat_rc)
    return lesson, np.random.default_rng(noise_ss)


def _iter(lesson, config, noise_rng, video):
    """Yields (frame uint8 [R, R, 3] or None, boxes f32 [P, 4] NaN where hidden, visible [P])."""
    res = config.resolution
    for lo in range(0, config.num_frames, _CHUNK):
        canvas, ids = _composite(lesson.room, lesson.sprites, lesson.poses[lo : lo + _CHUNK], video)
        boxes = np.full((len(ids), len(lesson.sprites), 4), np.nan, np.float32)
        for p, (sy, sx, _) in enumerate(lesson.sprites):
            mask = ids[:, sy, sx] == p
            seen = mask.any(axis=(1, 2))
            boxes[seen, p] = cr._mask_boxes(mask[seen], sy.start, sx.start) / res
        for i in range(len(ids)):
            frame = add_pixel_noise(noise_rng, canvas[i], config.noise_std) if video else None
            yield frame, boxes[i], ~np.isnan(boxes[i, :, 0])


def iter_lesson_frames(seed: int, config: LessonConfig = LessonConfig()) -> Iterator[np.ndarray]:
    """The frames of `render_lesson(seed, config)["video"]`, one uint8 [R, R, 3] at a time."""
    lesson, noise_rng = _build(seed, config)
    for frame, _, _ in _iter(lesson, config, noise_rng, video=True):
        yield frame


def render_lesson(seed: int, config: LessonConfig = LessonConfig(), video: bool = True) -> dict:
    """Renders one lesson of T = round(seconds * fps) frames with P students.

    Returns a dict with
      video: uint8 [T, R, R, 3] (left out when `video=False`: ground truth alone, much faster);
      boxes: float32 [T, P, 4] normalised (x1, y1, x2, y2) tight around each person's visible
        pixels, NaN where `visible` is False (fully hidden behind classmates or desks);
      visible: bool [T, P]; actions: uint8 [T, P, 5] multi-hot over `classroom.BEHAVIOURS`;
      person_ids: int32 [P] (0..P-1, the column of boxes/actions); num_people: P;
      seats: int32 [P, 2] (row, column), 1-based, row 1 the front row (nearest the camera, lowest
        in the image), column 1 the leftmost; fps: int; times: float64 [T] seconds (t / fps).
    """
    lesson, noise_rng = _build(seed, config)
    t_len, num, res = config.num_frames, len(lesson.sprites), config.resolution
    out = {"video": np.empty((t_len, res, res, 3), np.uint8)} if video else {}
    boxes = np.empty((t_len, num, 4), np.float32)
    visible = np.empty((t_len, num), bool)
    for t, (frame, frame_boxes, frame_visible) in enumerate(_iter(lesson, config, noise_rng, video)):
        boxes[t], visible[t] = frame_boxes, frame_visible
        if video:
            out["video"][t] = frame
    out.update(boxes=boxes, visible=visible, actions=lesson.actions,
               person_ids=np.arange(num, dtype=np.int32), num_people=num, seats=lesson.seats,
               fps=config.fps, times=np.arange(t_len) / config.fps)
    return out


def _ground_truth_json(lesson: dict, config: LessonConfig, seed: int) -> dict:
    seats = lesson["seats"].tolist()
    frames = []
    for t, time in enumerate(lesson["times"].tolist()):
        people = [{"id": p, "box": [round(v, 6) for v in lesson["boxes"][t, p].tolist()],
                   "behaviours": [cr.BEHAVIOURS[a] for a in np.flatnonzero(lesson["actions"][t, p])],
                   "seat": seats[p]}
                  for p in np.flatnonzero(lesson["visible"][t]).tolist()]
        frames.append({"time": time, "people": people})
    return {"seed": seed, "fps": config.fps, "seconds": config.seconds,
            "num_frames": config.num_frames, "resolution": config.resolution,
            "behaviours": list(cr.BEHAVIOURS),
            "people": [{"id": p, "seat": seats[p]} for p in lesson["person_ids"].tolist()],
            "frames": frames}


def write_lesson(seed: int, config: LessonConfig, out_dir: str) -> dict:
    """Writes `out_dir/lesson.mp4` (`video_io.write_video`, `config.fps`) and the JSON
    `out_dir/ground_truth.json`:
    {"seed", "fps", "seconds", "num_frames", "resolution", "behaviours", "people": [{"id", "seat"}],
    "frames": [{"time", "people": [{"id", "box", "behaviours", "seat"}]}]}, the arrays of
    `render_lesson` (boxes normalised xyxy; people hidden in a frame are left out of it).
    Returns {"video", "ground_truth": the paths, "num_people", "num_frames"}.

    Each file is written to a temporary name and renamed. The JSON goes last and a stale one is
    removed first, so a ground_truth.json beside lesson.mp4 always describes that video.
    """
    lesson = render_lesson(seed, config)
    os.makedirs(out_dir, exist_ok=True)
    video_path = os.path.join(out_dir, "lesson.mp4")
    truth_path = os.path.join(out_dir, "ground_truth.json")
    if os.path.exists(truth_path):
        os.remove(truth_path)
    video_io.write_video(video_path, lesson["video"], fps=config.fps)
    files.write_json(truth_path, _ground_truth_json(lesson, config, seed), separators=(",", ":"))
    return {"video": video_path, "ground_truth": truth_path, "num_people": lesson["num_people"],
            "num_frames": config.num_frames}


def render_clip(seed: int, config: LessonConfig = LessonConfig(seconds=2.0)) -> dict:
    """A detector training clip cut from a lesson: the `config.num_frames` frames of lesson `seed`
    (after its burn-in) with the keyframe at T // 2, in the format of `classroom.render_clip`
    (video, keyframe, person_ids, num_people, boxes, track_boxes, actions, owner).

    Unlike `classroom.render_clip`, nothing is held still around the keyframe and nobody is
    re-drawn to be seen: the keyframe may fall mid-way through a hand going up, and the people are
    those the lesson's ground truth lists there (any visible pixel), labelled as it labels them.
    So a detector trained on these clips sees what `--mode=analyze` shows it. A person hidden in
    another frame of the clip keeps their keyframe box in `track_boxes`.
    """
    lesson, noise_rng = _build(seed, config)
    t_len, key, res = config.num_frames, config.num_frames // 2, config.resolution
    video = np.empty((t_len, res, res, 3), np.uint8)
    boxes = np.empty((t_len, len(lesson.sprites), 4), np.float32)
    for t, (frame, frame_boxes, _) in enumerate(_iter(lesson, config, noise_rng, video=True)):
        video[t], boxes[t] = frame, frame_boxes
    keep = np.flatnonzero(~np.isnan(boxes[key, :, 0]))
    _, ids = _composite(lesson.room, lesson.sprites, lesson.poses[key : key + 1], video=False)
    row_of = np.full(len(lesson.sprites) + 1, -1, np.int16)  # person -> row of `keep`; -1 -> -1
    row_of[keep] = np.arange(len(keep))
    track = boxes[:, keep]
    track = np.where(np.isnan(track), track[key][None], track)
    return {"video": video, "keyframe": key, "person_ids": np.arange(len(keep), dtype=np.int32),
            "num_people": len(keep), "boxes": track[key].copy(), "track_boxes": track,
            "actions": lesson.actions[key, keep], "owner": row_of[ids[0]]}
