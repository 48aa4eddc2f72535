"""Samplers, transforms and the loader: shapes, determinism, flips, sharding and resume."""

import math

import chex
import numpy as np
import pytest

from jaxact.data import classroom, maneuvers, pipeline

# The manoeuvre mirror permutation, as the maneuvers dataset passes it to ClipTransform.
MIRROR = tuple(int(i) for i in maneuvers.FLIP_PERMUTATION)


def _fake_maneuver_source(n=10, res=8, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(5, 30))
        boxes = np.tile(np.array([[0.1, 0.2, 0.3, 0.4]], np.float32), (length, 1))
        out.append({"video": rng.integers(0, 256, (length, res, res, 3), dtype=np.uint8),
                    "label": np.int64(i % 6), "boxes": boxes,
                    "onset": np.int64(length // 3), "length": np.int64(length)})
    return out


@pytest.mark.parametrize("length,num", [(100, 16), (16, 16), (5, 16), (1, 4)])
def test_uniform_indices(length, num):
    idx = pipeline.uniform_indices(length, num)
    chex.assert_shape(idx, (num,))
    assert idx.min() >= 0 and idx.max() < length
    assert np.all(np.diff(idx) >= 0)
    rand = pipeline.uniform_indices(length, num, np.random.default_rng(0))
    assert rand.min() >= 0 and rand.max() < length and np.all(np.diff(rand) >= 0)


def test_uniform_indices_cover_clip_in_eval():
    np.testing.assert_array_equal(pipeline.uniform_indices(8, 4), [1, 3, 5, 7])


def test_uniform_indices_take_the_view_offset_of_each_segment():
    np.testing.assert_array_equal(pipeline.uniform_indices(8, 4, offset=0.25), [0, 2, 4, 6])
    np.testing.assert_array_equal(pipeline.uniform_indices(8, 4, offset=0.75), [1, 3, 5, 7])
    np.testing.assert_array_equal(pipeline.first_fraction_indices(16, 4, 0.5, offset=0.25),
                                  [0, 2, 4, 6])


def test_eval_views():
    assert pipeline.eval_views(1, False) == (pipeline.View(),)
    views = pipeline.eval_views(3, True)
    assert views[0] == pipeline.View(0.5, False) and len(set(views)) == 6
    assert {(v.offset, v.flip) for v in views} == {
        (o, f) for o in (0.25, 0.5, 0.75) for f in (False, True)}
    with pytest.raises(ValueError, match="eval.temporal_views"):
        pipeline.eval_views(0, False)


def test_first_fraction_indices_stay_in_prefix():
    for fraction in (0.1, 0.2, 0.5, 1.0):
        idx = pipeline.first_fraction_indices(50, 8, fraction, np.random.default_rng(1))
        assert idx.max() < int(np.ceil(fraction * 50))
    with pytest.raises(ValueError, match="fraction"):
        pipeline.first_fraction_indices(50, 8, 0.0)


def test_keyframe_window_centred_and_clipped():
    np.testing.assert_array_equal(pipeline.keyframe_window_indices(10, 5, 4), [3, 4, 5, 6])
    np.testing.assert_array_equal(pipeline.keyframe_window_indices(10, 0, 4, stride=2),
                                  [0, 0, 0, 2])


def test_flip_boxes():
    boxes = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 1.0, 0.6]], np.float32)
    expected = np.array([[0.7, 0.2, 0.9, 0.4], [0.0, 0.5, 1.0, 0.6]], np.float32)
    np.testing.assert_allclose(pipeline.flip_boxes(boxes), expected, atol=1e-7)
    assert pipeline.flip_boxes(boxes).dtype == np.float32
    batch = np.random.default_rng(0).random((2, 3, 4))
    np.testing.assert_allclose(pipeline.flip_boxes(pipeline.flip_boxes(batch)), batch)


def test_flip_swaps_left_right_labels_and_mirrors():
    record = _fake_maneuver_source(1)[0]
    for label in range(len(maneuvers.MANEUVERS)):
        record["label"] = np.int64(label)
        plain = pipeline.ClipTransform(num_frames=4, train=True, flip_prob=0.0,
                                       flip_permutation=MIRROR)(record, np.random.default_rng(3))
        flipped = pipeline.ClipTransform(num_frames=4, train=True, flip_prob=1.0,
                                         flip_permutation=MIRROR)(record, np.random.default_rng(3))
        name = maneuvers.MANEUVERS[label]
        flipped_name = maneuvers.MANEUVERS[int(flipped["label"])]
        assert flipped_name == name.replace("left", "@").replace("right", "left").replace(
            "@", "right")
        np.testing.assert_array_equal(flipped["video"], plain["video"][:, :, ::-1])
        np.testing.assert_allclose(flipped["boxes"][:, [0, 2]], 1 - plain["boxes"][:, [2, 0]])


def test_flip_without_permutation_keeps_the_label():
    record = _fake_maneuver_source(1)[0]
    record["label"] = np.int64(1)
    plain = pipeline.ClipTransform(num_frames=4, train=True, flip_prob=0.0)(
        record, np.random.default_rng(3))
    flipped = pipeline.ClipTransform(num_frames=4, train=True, flip_prob=1.0)(
        record, np.random.default_rng(3))
    assert plain["label"] == flipped["label"] == 1
    np.testing.assert_array_equal(flipped["video"], plain["video"][:, :, ::-1])
    np.testing.assert_allclose(flipped["boxes"], pipeline.flip_boxes(plain["boxes"]))
    view = pipeline.ClipTransform(num_frames=4, train=False, view=pipeline.View(flip=True))
    assert view(record, None)["label"] == 1


@pytest.mark.parametrize("min_fraction", [1.0, 0.5])
def test_training_draws_the_flip_whatever_flip_prob(min_fraction):
    """Every training clip makes the same draws (fraction, frames, flip), also at flip_prob 0:
    wrappers that draw after it (`sources.Mirror`) rely on that stream."""
    record = _fake_maneuver_source(1)[0]
    states = set()
    for flip_prob in (0.0, 0.5, 1.0):
        rng = np.random.default_rng(5)
        pipeline.ClipTransform(num_frames=4, train=True, flip_prob=flip_prob,
                               min_fraction=min_fraction)(record, rng)
        states.add(rng.random())
    reference = np.random.default_rng(5)
    if min_fraction < 1.0:
        reference.uniform(min_fraction, 1.0)
    reference.random(4)
    reference.random()
    assert states == {reference.random()}


def test_eval_view_mirrors_deterministically_and_train_ignores_it():
    record = _fake_maneuver_source(1)[0]
    record["label"] = np.int64(maneuvers.MANEUVERS.index("turn_left"))
    rng = np.random.default_rng(0)
    plain = pipeline.ClipTransform(num_frames=4, train=False, flip_prob=1.0,
                                   flip_permutation=MIRROR)(record, rng)
    assert plain["label"] == record["label"]  # flip_prob is a training augmentation only
    view = pipeline.View(flip=True)
    mirrored = pipeline.ClipTransform(num_frames=4, train=False, view=view,
                                      flip_permutation=MIRROR)(record, None)
    assert maneuvers.MANEUVERS[int(mirrored["label"])] == "turn_right"
    np.testing.assert_array_equal(mirrored["video"], plain["video"][:, :, ::-1])
    train = pipeline.ClipTransform(num_frames=4, train=True, flip_prob=0.0, view=view,
                                   flip_permutation=MIRROR)
    assert train(record, np.random.default_rng(0))["label"] == record["label"]


def _batches(loader, n):
    return [next(loader) for _ in range(n)]


def test_train_loader_shapes_and_determinism():
    source = _fake_maneuver_source()
    make = lambda seed: pipeline.make_loader(
        source, pipeline.ClipTransform(num_frames=6, train=True), global_batch_size=4,
        seed=seed, train=True, process_index=0, process_count=1)
    a, b, c = _batches(make(0), 5), _batches(make(0), 5), _batches(make(1), 5)
    for batch in a:
        chex.assert_shape(batch["video"], (4, 6, 8, 8, 3))
        chex.assert_shape([batch["label"], batch["mask"]], [(4,), (4,)])
        assert batch["video"].dtype == np.float32 and batch["mask"].all()
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x["video"], y["video"]) for x, y in zip(a, c, strict=True))


def test_loader_resume_from_saved_state():
    source = _fake_maneuver_source()
    make = lambda: pipeline.make_loader(
        source, pipeline.ClipTransform(num_frames=3, train=True), global_batch_size=2,
        seed=7, train=True, process_index=0, process_count=1)
    reference = _batches(make(), 9)
    loader = make()
    _batches(loader, 4)
    state = loader.get_state()
    resumed = make()
    resumed.set_state(state)
    for x, y in zip(_batches(resumed, 5), reference[4:], strict=True):
        np.testing.assert_array_equal(x["video"], y["video"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_eval_loader_visits_every_example_once_with_padding():
    source = _fake_maneuver_source(n=10)
    loader = pipeline.make_loader(source, pipeline.ClipTransform(num_frames=2, train=False),
                                  global_batch_size=4, seed=0, train=False, process_index=0,
                                  process_count=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, [int(r["label"]) for r in source])
    assert batches[-1]["mask"].tolist() == [True, True, False, False]


@pytest.mark.parametrize("num_rows", [12, 13, 7])
def test_process_shards_are_disjoint_complete_and_equally_long(num_rows):
    source = [{"video": np.full((3, 2, 2, 3), i, np.uint8), "label": np.int64(i),
               "boxes": np.zeros((3, 4), np.float32)} for i in range(num_rows)]
    seen, num_batches = [], set()
    for process in range(3):
        loader = pipeline.make_loader(source, pipeline.ClipTransform(2, train=False),
                                      global_batch_size=6, seed=0, train=False,
                                      process_index=process, process_count=3)
        batches = list(loader)
        # Every process runs the same number of (collective) eval steps.
        assert len(batches) == len(loader)
        num_batches.add(len(batches))
        for batch in batches:
            chex.assert_shape(batch["label"], (2,))
            seen.extend(batch["label"][batch["mask"]].tolist())
    assert len(num_batches) == 1
    assert sorted(seen) == list(range(num_rows))


def test_loader_errors_are_clear():
    with pytest.raises(ValueError, match="not divisible"):
        pipeline.make_loader(_fake_maneuver_source(), pipeline.ClipTransform(2, True),
                             global_batch_size=5, seed=0, train=True, process_index=0,
                             process_count=2)
    with pytest.raises(ValueError, match="empty"):
        pipeline.make_loader([], pipeline.ClipTransform(2, True), global_batch_size=2,
                             seed=0, train=True, process_index=0, process_count=1)


def test_keyframe_transform_pads_people():
    rng = np.random.default_rng(0)
    record = {"video": rng.integers(0, 255, (9, 8, 8, 3), dtype=np.uint8),
              "keyframe": np.int64(4), "person_ids": np.array([3, 7]),
              "boxes": np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.8]], np.float32),
              "actions": np.array([[1, 0, 0, 1, 0], [0, 1, 1, 0, 0]], np.uint8)}
    out = pipeline.KeyframeTransform(num_frames=4, max_people=5, train=True, flip_prob=1.0)(
        record, rng)
    chex.assert_shape([out["video"], out["boxes"], out["actions"], out["person_mask"]],
                      [(4, 8, 8, 3), (5, 4), (5, 5), (5,)])
    assert out["person_mask"].tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(out["boxes"][0], [0.6, 0.1, 0.9, 0.5])
    np.testing.assert_array_equal(out["video"], pipeline.normalize(
        record["video"][[2, 3, 4, 5]][:, :, ::-1]))


def _owner_boxes(owner, num, size):
    """Normalized boxes of each person's owner pixels (first column, first row, last column + 1,
    last row + 1) / size: the classroom renderer's box convention."""
    out = np.zeros((num, 4), np.float32)
    for p in range(num):
        rows, cols = np.nonzero(owner == p)
        out[p] = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
    return out / size


def test_keyframe_transform_passes_owner_and_mirrors_it_with_the_boxes():
    clip = classroom.render_clip(3, classroom.ClassroomConfig(resolution=64, num_frames=8))
    record = {k: clip[k] for k in ("video", "keyframe", "person_ids", "boxes", "actions", "owner")}
    num = clip["num_people"]
    kinds = {"plain": pipeline.KeyframeTransform(num_frames=4, max_people=12, train=True,
                                                 flip_prob=0.0),
             "flip": pipeline.KeyframeTransform(num_frames=4, max_people=12, train=True,
                                                flip_prob=1.0),
             "eval": pipeline.KeyframeTransform(num_frames=4, max_people=12, train=False)}
    out = {k: t(record, np.random.default_rng(0)) for k, t in kinds.items()}
    for o in out.values():
        assert o["owner"].dtype == np.int32 and o["owner"].shape == (64, 64)
        assert o["owner"].max() < num and o["owner"].min() == -1  # never a padding row
        np.testing.assert_array_equal(_owner_boxes(o["owner"], num, 64), o["boxes"][:num])
    np.testing.assert_array_equal(out["plain"]["owner"], clip["owner"])
    np.testing.assert_array_equal(out["eval"]["owner"], clip["owner"])
    np.testing.assert_array_equal(out["flip"]["owner"], clip["owner"][:, ::-1])
    np.testing.assert_allclose(out["flip"]["boxes"][:num], pipeline.flip_boxes(clip["boxes"]))
    np.testing.assert_array_equal(out["flip"]["video"], out["plain"]["video"][:, :, ::-1])
    # The keyframe (window position T // 2) is the frame the owner map labels.
    np.testing.assert_array_equal(out["plain"]["video"][2],
                                  pipeline.normalize(clip["video"][clip["keyframe"]]))
    # Without an owner map the output keys are what they always were.
    del record["owner"]
    plain = kinds["flip"](record, np.random.default_rng(0))
    assert set(plain) == {"video", "boxes", "actions", "person_ids", "person_mask"}
    with pytest.raises(ValueError, match="owner values"):
        kinds["plain"]({**record, "owner": np.full((64, 64), num, np.int16)},
                       np.random.default_rng(0))
    with pytest.raises(ValueError, match="frame size"):
        kinds["plain"]({**record, "owner": np.zeros((32, 64), np.int16)},
                       np.random.default_rng(0))


def _zoom_by_loops(frames, boxes, crop, size=None):
    t, h, w = frames.shape[:3]
    out_h, out_w = (h, w) if size is None else (size, size)
    out = np.zeros((t, out_h, out_w, frames.shape[3]), frames.dtype)
    for k in range(t):
        x0 = math.floor((boxes[k, 0] + boxes[k, 2]) / 2 * w - crop / 2)
        y0 = math.floor((boxes[k, 1] + boxes[k, 3]) / 2 * h - crop / 2)
        for i in range(out_h):
            for j in range(out_w):
                y, x = y0 + (i * crop) // out_h, x0 + (j * crop) // out_w
                if 0 <= y < h and 0 <= x < w:
                    out[k, i, j] = frames[k, y, x]
    return out


def test_target_zoom_matches_pixel_loops_and_pads_outside_with_zeros():
    rng = np.random.default_rng(0)
    frames = rng.integers(1, 256, (3, 12, 16, 3), dtype=np.uint8)
    boxes = np.array([[0.4, 0.4, 0.6, 0.6], [0.0, 0.0, 0.1, 0.1], [0.9, 0.8, 1.0, 1.0]])
    for crop in (4, 6, 12):
        out = pipeline.target_zoom(frames, boxes, crop)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, _zoom_by_loops(frames, boxes, crop))
        for size in (crop, 2 * crop):  # the window itself, and scaled by 2
            np.testing.assert_array_equal(pipeline.target_zoom(frames, boxes, crop, size),
                                          _zoom_by_loops(frames, boxes, crop, size))
    corner = pipeline.target_zoom(frames, boxes, 6)[1]
    assert not corner[:6].any() and corner[6:, 8:].all()  # the window hangs off the top left


def test_target_crop_adds_the_zoom_as_channels_and_flips_with_the_clip():
    rng = np.random.default_rng(1)
    record = {"video": rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8), "label": 1,
              "boxes": np.tile([[0.25, 0.25, 0.5, 0.5]], (10, 1))}
    plain = pipeline.ClipTransform(4, train=False, flip_prob=0.0)(record, None)
    zoomed = pipeline.ClipTransform(4, train=False, flip_prob=0.0, target_crop=8)(record, None)
    assert zoomed["video"].shape == (4, 16, 16, 6)
    np.testing.assert_array_equal(zoomed["video"][..., :3], plain["video"])
    mirrored = pipeline.ClipTransform(4, train=False, target_crop=8,
                                      view=pipeline.View(0.5, True))(record, None)
    np.testing.assert_array_equal(mirrored["video"], zoomed["video"][:, :, ::-1])
    with pytest.raises(ValueError, match="data.target_crop"):
        pipeline.ClipTransform(4, train=False, target_crop=8)(
            {**record, "boxes": np.zeros((10, 4))}, None)


def test_target_only_makes_the_unscaled_window_the_whole_video():
    rng = np.random.default_rng(5)
    record = {"video": rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8), "label": 1,
              "boxes": np.tile([[0.25, 0.25, 0.5, 0.5]], (10, 1))}
    out = pipeline.ClipTransform(4, train=False, target_crop=8, target_only=True)(record, None)
    idx = pipeline.first_fraction_indices(10, 4, 1.0)
    window = record["video"][idx][:, 2:10, 2:10]  # box centre (6, 6) minus half the crop
    np.testing.assert_array_equal(out["video"], pipeline.normalize(window))
    mirrored = pipeline.ClipTransform(4, train=False, target_crop=8, target_only=True,
                                      view=pipeline.View(0.5, True))(record, None)
    np.testing.assert_array_equal(mirrored["video"], out["video"][:, :, ::-1])
    with pytest.raises(ValueError, match="data.target_only=True needs data.target_crop"):
        pipeline.ClipTransform(4, train=False, target_only=True)


def _track_by_loops(boxes, frames):
    def centre(box):
        return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])

    distinct = sorted(set(frames))
    rows = []
    for k, box in enumerate(boxes):
        d = distinct.index(frames[k])
        d = max(d, 1) if len(distinct) > 1 else d  # the first frame takes the second's velocity
        velocity = np.zeros(2)
        if d:  # from the previous distinct frame, over the clip frames between
            cur = centre(boxes[list(frames).index(distinct[d])])
            prev = centre(boxes[list(frames).index(distinct[d - 1])])
            velocity = (cur - prev) / (distinct[d] - distinct[d - 1])
        offset = centre(box) - centre(boxes[0])
        rows.append([*(offset * 10), *(velocity * 100), (box[2] - box[0]) * 10,
                     (box[3] - box[1]) * 10])
    return np.array(rows, np.float32)


def test_target_track_matches_a_per_frame_reference():
    rng = np.random.default_rng(2)
    low = rng.uniform(0.0, 0.5, (6, 2))
    boxes = np.concatenate([low, low + rng.uniform(0.05, 0.4, (6, 2))], axis=1)
    frames = np.array([0, 3, 3, 7, 8, 12])
    boxes[2] = boxes[1]  # a repeated frame is the same frame
    track = pipeline.target_track(boxes, frames)
    assert track.shape == (6, pipeline.TRACK_FEATURES) and track.dtype == np.float32
    np.testing.assert_allclose(track, _track_by_loops(boxes, frames), rtol=1e-5, atol=1e-6)
    assert pipeline.target_track(boxes[:1], frames[:1])[0, 2:4].tolist() == [0.0, 0.0]
    # A short prefix repeats frames: each keeps its clip frame's velocity, the same as without
    # the repeats (before: 0 at every repeat, so a steady speed read v, 0, v, 0).
    steady = np.array([[0.1 + 0.01 * f, 0.2, 0.2 + 0.01 * f, 0.3] for f in range(8)])
    repeated = np.repeat(np.arange(8), 2)
    np.testing.assert_allclose(pipeline.target_track(steady[repeated], repeated)[:, 2:4],
                               np.tile([1.0, 0.0], (16, 1)), atol=1e-5)
    np.testing.assert_allclose(pipeline.target_track(steady[repeated], repeated)[::2],
                               pipeline.target_track(steady, np.arange(8)), atol=1e-5)


def test_target_track_joins_the_example_and_mirrors_with_the_clip():
    rng = np.random.default_rng(3)
    t = np.arange(10, dtype=np.float64)[:, None]
    boxes = np.concatenate([0.2 + 0.01 * t, 0.5 - 0.02 * t, 0.3 + 0.01 * t, 0.6 - 0.02 * t], 1)
    record = {"video": rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8), "label": 1,
              "boxes": boxes}
    plain = pipeline.ClipTransform(4, train=False, flip_prob=0.0)(record, None)
    assert "track" not in plain
    out = pipeline.ClipTransform(4, train=False, flip_prob=0.0, target_track=True)(record, None)
    idx = pipeline.first_fraction_indices(10, 4, 1.0)
    np.testing.assert_allclose(out["track"], pipeline.target_track(boxes[idx], idx), rtol=1e-6)
    np.testing.assert_allclose(out["track"][:, 2:4], [[1.0, -2.0]] * 4, rtol=1e-5)  # per frame
    mirrored = pipeline.ClipTransform(4, train=False, target_track=True,
                                      view=pipeline.View(0.5, True))(record, None)
    np.testing.assert_allclose(mirrored["track"][:, [0, 2]], -out["track"][:, [0, 2]], atol=1e-6)
    np.testing.assert_allclose(mirrored["track"][:, [1, 3, 4, 5]], out["track"][:, [1, 3, 4, 5]],
                               atol=1e-6)
    with pytest.raises(ValueError, match="data.target_track"):
        pipeline.ClipTransform(4, train=False, target_track=True)(
            {**record, "boxes": np.zeros((10, 4))}, None)


def test_camera_shift_recovers_whole_pixel_shifts_of_a_textured_scene():
    rng = np.random.default_rng(4)
    scene = rng.integers(0, 256, (40, 44, 3)).astype(np.float64)
    shifts = np.array([[0, 0], [1, -1], [-2, 0], [3, 2], [0, -4], [-1, 1]])  # (dx, dy) per frame
    origin = np.array([6, 5])  # (x, y) of the first frame's window in the scene
    frames = []
    for t, (dx, dy) in enumerate(shifts):
        x, y = origin - (dx, dy)  # the scene moves by +shift in the image
        frame = scene[y:y + 28, x:x + 32].copy()
        frame[4 + t:10 + t, 3 + 2 * t:9 + 2 * t] = 255.0  # a moving object the shift ignores
        frames.append(frame + rng.normal(0, 8, frame.shape))
    frames = np.clip(np.stack(frames), 0, 255).astype(np.uint8)
    found = pipeline.camera_shift(frames)
    assert found.dtype == np.int64 and found.shape == (6, 2)
    np.testing.assert_array_equal(found, shifts - shifts[0])
    np.testing.assert_array_equal(pipeline.camera_shift(frames[2:], max_shift=5),
                                  shifts[2:] - shifts[2])  # against frame 2: up to 5 px
    assert not (pipeline.camera_shift(frames, max_shift=2) == shifts).all()  # 3 and -4 too far


def _unclipped_cue_clip(config):
    """A cue clip whose target box stays inside the frame (the renderer clips boxes at its
    edges, where the shake would move a clipped box differently)."""
    for seed in range(100):
        clip = maneuvers.render_clip(seed, 3, config)
        if (clip["boxes"] > 0.01).all() and (clip["boxes"] < 0.99).all():
            return seed
    raise AssertionError("no unclipped clip in 100 seeds")


def test_stabilized_track_of_a_shaking_camera_is_the_still_cameras_track():
    # jitter_px=0 keeps every draw of the clip but the shake, whose draw is still made.
    shaking = maneuvers.ManeuverConfig(resolution=64, cues=True, min_frames=24, max_frames=40)
    still = maneuvers.ManeuverConfig(resolution=64, cues=True, min_frames=24, max_frames=40,
                                     jitter_px=0.0)
    seed = _unclipped_cue_clip(shaking)
    records = [maneuvers.render_clip(seed, 3, c) for c in (shaking, still)]
    assert not np.array_equal(records[0]["boxes"], records[1]["boxes"])
    for view in (pipeline.CENTRE_VIEW, pipeline.View(0.5, True)):
        plain = pipeline.ClipTransform(12, train=False, view=view, target_track=True)
        stable = pipeline.ClipTransform(12, train=False, view=view, target_track=True,
                                        stabilize_track=True)
        reference = plain(records[1], None)["track"]
        np.testing.assert_allclose(stable(records[0], None)["track"], reference, atol=1e-5)
        assert np.abs(plain(records[0], None)["track"] - reference).max() > 0.1
    with pytest.raises(ValueError, match="data.stabilize_track=True needs data.target_track"):
        pipeline.ClipTransform(12, train=False, stabilize_track=True)
