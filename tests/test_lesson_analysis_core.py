"""Tests for jaxact.analysis: tracking, seats and intervals on hand-built sequences."""

import numpy as np
import pytest

from jaxact.analysis import intervals, seats, tracking

A = 2  # behaviours


def _box(cx, cy, w=0.1, h=0.2):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _frame(time, centres, scores=None):
    """Keyframe dict of boxes at ``centres``; behaviour scores encode (time, detection)."""
    n = len(centres)
    return {"time": float(time), "boxes": np.array([_box(*c) for c in centres]).reshape(n, 4),
            "scores": np.full(n, 0.9) if scores is None else np.asarray(scores, float),
            "behaviour_scores": np.array([[time, i] for i in range(n)], float).reshape(n, A)}


def _update(tracker, f):
    return tracker.update(f["boxes"], f["scores"], f["behaviour_scores"], f["time"])


# ----------------------------------------------------------------------------- tracking


def test_crossing_paths_keep_ids():
    # A walks right, B left, slightly lower; their boxes overlap heavily where they cross, but
    # each keeps overlapping its own last box more. Detection order is shuffled every keyframe.
    rng = np.random.default_rng(0)
    tracker = tracking.Tracker()
    for k in range(11):
        people = [(0.3 + 0.02 * k, 0.5), (0.5 - 0.02 * k, 0.55)]
        perm = rng.permutation(2)
        pairs = _update(tracker, _frame(k, [people[p] for p in perm]))
        assert [d for _, d in pairs] == [0, 1]
        assert {tid: int(perm[d]) for tid, d in pairs} == {0: 0, 1: 1}
    tracks = tracker.finish()
    assert [t.id for t in tracks] == [0, 1]
    np.testing.assert_allclose(tracks[0].boxes[:, 0], 0.25 + 0.02 * np.arange(11))
    np.testing.assert_allclose(tracks[1].mean_centre, [0.4, 0.55])


@pytest.mark.parametrize("gap, ids", [(2, [0]), (3, [0]), (4, [0, 1])])
def test_occlusion_gap_vs_max_missed(gap, ids):
    frames = [_frame(k, [(0.5, 0.5)] if not 3 <= k < 3 + gap else []) for k in range(6 + gap)]
    tracks = tracking.track_sequence(frames, tracking.TrackerSettings(max_missed=3))
    assert [t.id for t in tracks] == ids
    assert sum(len(t.times) for t in tracks) == 6
    if len(ids) == 1:
        np.testing.assert_array_equal(tracks[0].times, [0, 1, 2, 3 + gap, 4 + gap, 5 + gap])


def test_new_person_mid_sequence():
    tracker = tracking.Tracker()
    for k in range(6):
        centres = [(0.2, 0.5)] + ([(0.7, 0.4)] if k >= 3 else [])
        pairs = _update(tracker, _frame(0.5 * k, centres))
        assert pairs == ([(0, 0), (1, 1)] if k >= 3 else [(0, 0)])
    first, second = tracker.finish()
    np.testing.assert_array_equal(second.times, [1.5, 2.0, 2.5])
    assert second.boxes.shape == (3, 4) and second.behaviour_scores.shape == (3, A)
    np.testing.assert_array_equal(second.behaviour_scores, [[1.5, 1], [2.0, 1], [2.5, 1]])
    np.testing.assert_array_equal(first.scores, np.full(6, 0.9))


def test_low_scores_ignored():
    tracker = tracking.Tracker(tracking.TrackerSettings(min_score=0.5))
    for k in range(4):
        # detection 1 overlaps the person exactly but is weak; detection 2 is a weak stray
        f = _frame(k, [(0.5, 0.5), (0.5, 0.5), (0.1, 0.1)], scores=[0.8, 0.49, 0.3])
        assert _update(tracker, f) == [(0, 0)]
    (track,) = tracker.finish()
    np.testing.assert_array_equal(track.scores, np.full(4, 0.8))


def test_min_hits_discards_blips():
    tracker = tracking.Tracker(tracking.TrackerSettings(min_hits=2))
    for k in range(8):
        centres = [(0.3, 0.5)] + ([(0.8, 0.3)] if k == 2 else []) + ([(0.6, 0.7)] if k >= 6 else [])
        _update(tracker, _frame(k, centres))
    # the blip took id 1 and died unconfirmed; the person entering later is id 2
    assert [t.id for t in tracker.finish()] == [0, 2]
    strict = tracking.Tracker(tracking.TrackerSettings(min_hits=3))
    for k in range(8):
        _update(strict, _frame(k, [(0.3, 0.5)] + ([(0.6, 0.7)] if k >= 6 else [])))
    assert [t.id for t in strict.finish()] == [0]  # the late entrant has only 2 hits yet


def test_tracker_copies_inputs_and_checks_time():
    tracker = tracking.Tracker()
    f = _frame(0, [(0.5, 0.5)])
    _update(tracker, f)
    f["boxes"][:] = 0.0  # a reused buffer must not rewrite the stored track
    _update(tracker, _frame(1, [(0.5, 0.5)]))
    np.testing.assert_allclose(tracker.finish()[0].boxes[0], _box(0.5, 0.5))
    with pytest.raises(ValueError, match="increase"):
        _update(tracker, _frame(1, [(0.5, 0.5)]))
    with pytest.raises(ValueError, match="min_hits"):
        tracking.TrackerSettings(min_hits=0)


def test_iou_matrix():
    iou = tracking.iou_matrix([[0, 0, 2, 2], [0, 0, 0, 0]], [[1, 0, 3, 2], [0, 0, 2, 2]])
    np.testing.assert_allclose(iou, [[1 / 3, 1.0], [0.0, 0.0]])


# ----------------------------------------------------------------------------- seats


def _two_rows(rng):
    """2 rows x 3 people, jittered and shuffled: (centres, heights, expected seats)."""
    rows = [(0.75, 0.3), (0.45, 0.2)]  # (y, height): front row lower and larger
    centres, heights, expected = [], [], []
    for r, (y, h) in enumerate(rows, start=1):
        for c, x in enumerate((0.2, 0.5, 0.8), start=1):
            centres.append((x + rng.uniform(-0.02, 0.02), y + rng.uniform(-0.02, 0.02)))
            heights.append(h)
            expected.append((r, c))
    perm = rng.permutation(6)
    return np.array(centres)[perm], np.array(heights)[perm], np.array(expected)[perm]


@pytest.mark.parametrize("how", ["heights", "row_gap", "default"])
def test_two_rows_of_three(how):
    centres, heights, expected = _two_rows(np.random.default_rng(1))
    kwargs = {"heights": heights} if how == "heights" else {"row_gap": 0.1} if how == "row_gap" \
        else {}
    got = seats.assign_seats(centres, **kwargs)
    assert got.dtype == np.int64 and got.shape == (6, 2)
    np.testing.assert_array_equal(got, expected)


def test_single_row_and_front_is_largest_y():
    rng = np.random.default_rng(2)
    xs = rng.permutation(np.linspace(0.1, 0.9, 5))
    centres = np.stack([xs, 0.5 + rng.uniform(-0.02, 0.02, 5)], axis=1)
    got = seats.assign_seats(centres, heights=np.full(5, 0.2))
    np.testing.assert_array_equal(got[:, 0], 1)
    np.testing.assert_array_equal(got[:, 1], np.argsort(np.argsort(xs)) + 1)
    np.testing.assert_array_equal(seats.assign_seats([[0.5, 0.2], [0.5, 0.8]]), [[2, 1], [1, 1]])
    assert seats.assign_seats(np.zeros((0, 2))).shape == (0, 2)


def test_heights_follow_perspective():
    # Rows shrink and close up towards the back: one fixed gap merges the back rows.
    centres = [[0.5, 0.8], [0.5, 0.55], [0.5, 0.41]]
    heights = [0.3, 0.2, 0.12]
    np.testing.assert_array_equal(seats.assign_seats(centres, heights=heights)[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(seats.assign_seats(centres, row_gap=0.2)[:, 0], [1, 2, 2])


def test_layout_people_alone_place_the_seats():
    centres, heights, expected = _two_rows(np.random.default_rng(3))
    # A ghost in front of everyone and one between two back-row people: as ordinary people they
    # add a row and push the columns along; outside the layout they take their nearest seat.
    ghost_front = [0.52, 0.97]
    back_x = np.sort(centres[expected[:, 0] == 2, 0])
    ghost_back = [(back_x[0] + back_x[1]) / 2 + 0.01, centres[expected[:, 0] == 2, 1].mean()]
    all_centres = np.vstack([centres, [ghost_front, ghost_back]])
    all_heights = np.append(heights, [0.05, 0.3])
    plain = seats.assign_seats(all_centres, heights=all_heights)
    assert not np.array_equal(plain[:6], expected)
    layout = np.arange(8) < 6
    got = seats.assign_seats(all_centres, heights=all_heights, layout=layout)
    np.testing.assert_array_equal(got[:6], expected)
    front_middle = expected[np.argmin(np.linalg.norm(centres - ghost_front, axis=1))]
    np.testing.assert_array_equal(got[6], front_middle)
    np.testing.assert_array_equal(got[7], [2, 2])  # nearer the middle back seat (+0.01)
    # Everyone or no one in the layout: the plain assignment.
    np.testing.assert_array_equal(seats.assign_seats(all_centres, heights=all_heights,
                                                     layout=np.ones(8, bool)), plain)
    np.testing.assert_array_equal(seats.assign_seats(all_centres, heights=all_heights,
                                                     layout=np.zeros(8, bool)), plain)
    with pytest.raises(ValueError, match="layout has 3 entries for 8"):
        seats.assign_seats(all_centres, layout=[True, False, True])


def test_seat_name():
    assert seats.seat_name(2, 3) == "row 2, seat 3"
    assert seats.seat_name(np.int64(1), np.int64(4)) == "row 1, seat 4"


# ----------------------------------------------------------------------------- intervals


def test_smooth_constant_and_step():
    times = np.array([0, 1, 2, 3, 10, 11, 11.5])  # irregular, with a gap
    const = np.full((7, A), 0.7)
    np.testing.assert_allclose(intervals.smooth(const, times, 3.0), const)
    step = (np.arange(10) >= 5).astype(float)
    expected = step.copy()
    expected[4], expected[5] = 1 / 3, 2 / 3
    np.testing.assert_allclose(intervals.smooth(step, np.arange(10), 2.0), expected)
    np.testing.assert_allclose(intervals.smooth(step[:, None], np.arange(10), 2.0),
                               expected[:, None])
    np.testing.assert_array_equal(intervals.smooth(step, np.arange(10), 0.0), step)


def test_smooth_irregular_and_gap():
    got = intervals.smooth([1, 2, 3, 4], [0, 0.5, 1, 3], 1.0)
    np.testing.assert_allclose(got, [1.5, 2.0, 2.5, 4.0])
    # samples either side of a gap wider than the window do not mix
    got = intervals.smooth([0, 0, 0, 1, 1], [0, 1, 2, 10, 11], 4.0)
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 1])


def test_hysteresis_flicker_is_one_interval():
    s = np.array([0.1, 0.7, 0.45, 0.55, 0.42, 0.5, 0.65, 0.3, 0.1])
    got = intervals.hysteresis_intervals(s, np.arange(9), on=0.6, off=0.4)
    assert got == [(1.0, 6.0, pytest.approx(s[1:7].mean()))]


def test_hysteresis_exact_intervals():
    s = [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1]
    got = intervals.hysteresis_intervals(s, np.arange(11))
    assert got == [(2.0, 4.0, 1.0), (7.0, 8.0, 1.0), (10.0, 10.0, 1.0)]  # open at the end
    assert got[0].start == 2.0 and got[0].mean_score == 1.0
    assert intervals.hysteresis_intervals([0.2, 0.3], [0, 1]) == []


def test_hysteresis_min_duration_drops_blips():
    s = [0, 1, 0, 0, 1, 1, 1, 1, 0]
    times = np.arange(9) * 0.5
    assert intervals.hysteresis_intervals(s, times) == [(0.5, 0.5, 1.0), (2.0, 3.5, 1.0)]
    assert intervals.hysteresis_intervals(s, times, min_duration=1.0) == [(2.0, 3.5, 1.0)]


def test_hysteresis_max_gap_splits():
    s, times = np.full(6, 0.9), [0, 1, 2, 10, 11, 12]
    assert intervals.hysteresis_intervals(s, times) == [(0.0, 12.0, 0.9)]
    assert intervals.hysteresis_intervals(s, times, max_gap=2.0) == [(0.0, 2.0, 0.9),
                                                                     (10.0, 12.0, 0.9)]
    with pytest.raises(ValueError, match="off"):
        intervals.hysteresis_intervals(s, times, on=0.4, off=0.6)


def test_counts_per_second():
    people = {"a": [(0.5, 2.2, 0.9)],
              "b": [(2.0, 2.0, 0.8), (4.0, 5.5, 0.7)],
              "c": [(1.0, 3.0, 0.9), (2.5, 3.5, 0.9)]}  # overlapping: counted once
    got = intervals.counts_per_second(people, duration=6)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [1, 2, 3, 1, 1, 1])
    # list input, half-second bins, parts outside [0, duration) clipped
    got = intervals.counts_per_second([[(0.0, 1.2)], [(2.9, 10.0)], [(-1.0, 0.2)], [(-3, -2)]],
                                      duration=3, fps=2)
    np.testing.assert_array_equal(got, [2, 1, 1, 0, 0, 1])
    np.testing.assert_array_equal(intervals.counts_per_second({}, duration=2.5), [0, 0, 0])


def test_track_to_counts():
    # one person "on" for behaviour 0 from 1 s to 3 s, tracked at 1 keyframe per second
    frames = [_frame(k, [(0.5, 0.5)]) for k in range(6)]
    for f in frames:
        f["behaviour_scores"][:, 0] = 0.9 if 1 <= f["time"] <= 3 else 0.1
    (track,) = tracking.track_sequence(frames)
    found = intervals.hysteresis_intervals(track.behaviour_scores[:, 0], track.times)
    assert found == [(1.0, 3.0, pytest.approx(0.9))]
    np.testing.assert_array_equal(intervals.counts_per_second([found], duration=6),
                                  [0, 1, 1, 1, 0, 0])


def _track(id_, times, box):
    times = np.asarray(times, float)
    return tracking.Track(id_, times, np.tile(np.asarray(box, float), (len(times), 1)),
                          np.ones(len(times)), np.zeros((len(times), 2)))


def test_merge_fragments_joins_a_person_broken_by_a_long_gap():
    seat_a, seat_b = [0.1, 0.5, 0.2, 0.7], [0.5, 0.5, 0.6, 0.7]
    tracks = [_track(0, [0, 1, 2], seat_a), _track(1, [0, 1, 2, 3, 4, 5], seat_b),
              _track(4, [5, 6], [0.11, 0.5, 0.21, 0.7]),  # seat a again after a gap
              _track(9, [7, 8], [0.5, 0.2, 0.6, 0.4])]  # above seat b: another person
    merged = tracking.merge_fragments(tracks)
    assert [t.id for t in merged] == [0, 1, 9]
    np.testing.assert_array_equal(merged[0].times, [0, 1, 2, 5, 6])
    assert merged[0].boxes.shape == (5, 4) and merged[0].behaviour_scores.shape == (5, 2)
    far = tracking.merge_fragments([_track(0, [0, 1], seat_a), _track(3, [4, 5], seat_b)])
    assert [t.id for t in far] == [0, 3]  # another place: another person
    assert tracking.merge_fragments([]) == []


def test_merge_fragments_joins_a_person_seen_twice_at_once():
    """A second detection of one person (no NMS) over part of the lesson joins the person's
    track; where both saw the person, the higher person score stays."""
    seat = [0.1, 0.5, 0.2, 0.7]
    main = _track(0, [0, 1, 2, 3], seat)
    main.detections = np.array([0, 0, 0, 0])
    twin = _track(5, [2, 3, 4], [0.11, 0.51, 0.2, 0.7])
    twin.scores = np.array([0.5, 2.0, 1.0])
    twin.detections = np.array([3, 3, 3])
    neighbour = _track(2, [0, 1, 2, 3, 4], [0.25, 0.5, 0.35, 0.7])
    merged = tracking.merge_fragments([main, twin, neighbour])
    assert [t.id for t in merged] == [0, 2]
    np.testing.assert_array_equal(merged[0].times, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(merged[0].detections, [0, 0, 0, 3, 3])
    np.testing.assert_array_equal(merged[0].scores, [1, 1, 1, 2, 1])


def test_seat_point_is_the_mean_x_and_the_median_bottom():
    track = tracking.Track(0, np.arange(3.0), np.array([[0.1, 0.5, 0.3, 0.8], [0.1, 0.2, 0.3, 0.8],
                                                        [0.2, 0.5, 0.4, 0.9]]),
                           np.ones(3), np.zeros((3, 1)))
    np.testing.assert_allclose(track.seat_point, [(0.2 + 0.2 + 0.3) / 3, 0.8])
