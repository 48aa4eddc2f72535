"""benchmarks/lesson_analysis.py: its metrics on hand-built ground truth and predictions, no model."""

import numpy as np
import pytest

from benchmarks import lesson_analysis as la
from jaxact.analysis import tracking

BOX_A = [0.1, 0.1, 0.3, 0.5]
BOX_B = [0.6, 0.1, 0.8, 0.5]


def _gt(frames, fps=2, behaviours=("sit", "raise_hand")):
    """ground_truth.json of `frames`: per frame {student id: (box, behaviours)}."""
    ids = sorted({pid for f in frames for pid in f})
    return {"seed": 0, "fps": fps, "seconds": len(frames) / fps, "num_frames": len(frames),
            "behaviours": list(behaviours), "people": [{"id": i, "seat": [1, i + 1]} for i in ids],
            "frames": [{"time": t / fps, "people": [{"id": pid, "box": box, "behaviours": list(b),
                                                      "seat": [1, pid + 1]}
                                                     for pid, (box, b) in sorted(f.items())]}
                       for t, f in enumerate(frames)]}


def test_parse_ground_truth():
    truth = la.parse_ground_truth(_gt([{0: (BOX_A, ["sit"]), 1: (BOX_B, ["sit", "raise_hand"])},
                                       {0: (BOX_A, ["sit"])}]))
    assert truth["ids"] == [0, 1] and truth["fps"] == 2 and truth["duration"] == 1.0
    np.testing.assert_array_equal(truth["times"], [0.0, 0.5])
    np.testing.assert_array_equal(truth["visible"], [[True, True], [True, False]])
    np.testing.assert_array_equal(truth["on"]["raise_hand"], [[False, True], [False, False]])
    assert np.isnan(truth["boxes"][1, 1]).all() and truth["boxes"][0, 1].tolist() == BOX_B


def test_true_intervals_are_runs_of_frames():
    times = np.arange(8) / 8
    on = np.array([0, 1, 1, 0, 1, 1, 1, 0], bool)
    assert la.true_intervals(on, np.ones(8, bool), times) == [(0.125, 0.25), (0.5, 0.75)]
    # A hidden frame (2) neither ends nor extends the run; a run open at the end closes there.
    on = np.array([1, 1, 0, 1, 0, 0, 1, 1], bool)
    visible = np.array([1, 1, 0, 1, 1, 1, 1, 1], bool)
    assert la.true_intervals(on, visible, times) == [(0.0, 0.375), (0.75, 0.875)]
    assert la.true_intervals(np.zeros(8, bool), np.ones(8, bool), times) == []


def test_true_counts_and_count_mae_by_hand():
    times = np.arange(6) / 2  # 2 fps, 3 s
    on = np.array([[0, 0], [1, 0], [0, 0], [0, 0], [1, 1], [1, 0]], bool)
    visible = np.ones_like(on)
    visible[4, 1] = False  # hidden: its behaviour is unknown, so it is not counted
    # Second 0: student 0 at 0.5 s; second 1: nobody; second 2: student 0 (student 1 hidden).
    np.testing.assert_array_equal(la.true_counts_per_second(on, visible, times, 3.0), [1, 0, 1])
    assert la.count_mae([1, 2, 0], [1, 0, 1]) == pytest.approx(1.0)  # (0 + 2 + 1) / 3
    with pytest.raises(ValueError):
        la.count_mae([1, 2], [1, 0, 1])


def test_temporal_iou_widens_by_half_the_spacing():
    # [3.75, 8.75] against [3.75, 8.875]: 5 / 5.125.
    assert la.temporal_iou((4.0, 8.5), (4.0, 8.625), 0.5) == pytest.approx(5 / 5.125)
    assert la.temporal_iou((2.0, 2.0), (2.0, 2.0), 0.5) == pytest.approx(1.0)  # one sample: dt
    assert la.temporal_iou((2.0, 2.0), (2.5, 2.5), 0.5) == 0.0  # [1.75, 2.25] meets [2.25, 2.75]
    assert la.temporal_iou((0.0, 1.0), (0.5, 2.0), 0.0) == pytest.approx(0.25)


def test_greedy_one_to_one_interval_matching():
    # P0-T0 0.95 beats P1-T0 0.947: P1 stays unmatched; P2-T1 is 1/3 < 0.5: never.
    pred = [(0.0, 10.0), (0.0, 9.0), (20.0, 21.0)]
    true = [(0.0, 9.5), (20.0, 23.0)]
    assert la.match_intervals(pred, true, 0.0) == [(0, 0)]
    # By IoU, not by order: P1-T1 (5/6) first, then P0-T0 (0.8); P0-T1 0.5 and P1-T0 0.75 lose.
    assert sorted(la.match_intervals([(0, 10), (0, 6)], [(0, 8), (0, 5)], 0.0)) == [(0, 0), (1, 1)]


def test_f1_by_hand():
    assert la.f1_score(2, 1, 3) == pytest.approx(0.5)  # P 2/3, R 2/5: 2PR / (P + R) = 0.5
    assert la.f1_score(0, 0, 0) is None
    assert la.f1_score(0, 2, 0) == 0.0


def test_interval_counts_only_matched_tracks_hit():
    predicted = {7: {"raise_hand": [(0.0, 4.0), (10.0, 12.0)]}, 9: {"raise_hand": [(20.0, 22.0)]}}
    true = {0: {"raise_hand": [(0.0, 4.5), (10.0, 11.75)]}, 1: {"raise_hand": [(20.0, 22.0)]}}
    # Track 7 is student 0's (IoU 4.5/5 and 2.25/2.5); track 9 is nobody's, so its exact hit on
    # student 1 is a false positive and student 1's interval a false negative.
    counts = la.interval_counts(predicted, true, {0: 7}, ["raise_hand"], 0.5)
    assert counts == {"raise_hand": {"tp": 2, "fp": 1, "fn": 1}}
    assert la.f1_score(**counts["raise_hand"]) == pytest.approx(2 / 3)


def test_match_tracks_is_hungarian_on_keyframe_counts():
    # Greedy would give student 0 track 10 (5) and student 1 nothing; 4 + 4 is more.
    assert la.match_tracks({(0, 10): 5, (0, 11): 4, (1, 10): 4}) == {0: 11, 1: 10}
    assert la.match_tracks({}) == {}


def test_per_student_accuracy_by_hand():
    truth = la.parse_ground_truth(_gt([
        {0: (BOX_A, ["sit"]), 1: (BOX_B, ["sit"])},
        {0: (BOX_A, ["sit", "raise_hand"]), 1: (BOX_B, ["sit"])},
        {0: (BOX_A, ["sit", "raise_hand"])},  # student 1 hidden
        {0: (BOX_A, ["sit"]), 1: (BOX_B, ["sit", "raise_hand"])}]))
    predicted = {5: {"sit": [(0.0, 1.5)], "raise_hand": [(0.5, 1.5)]},
                 6: {"sit": [(0.0, 1.5)], "raise_hand": []}}
    # Keyframes 0, 0.5, 1.0, 1.5 s. Student 0 (track 5): {sit} ok, {sit, raise} ok, ok, then
    # {sit} against {sit, raise}: 3 of 4. Student 1 (track 6): ok, ok, hidden, misses the
    # raise: 2 of 3. Student 2 would be unmatched: not counted.
    assert la.student_accuracy(truth, [0, 1, 2, 3], predicted, {0: 5, 1: 6}) == (5, 7)
    assert la.behaviours_at(predicted[5], 1.5) == {"sit", "raise_hand"}
    assert la.behaviours_at(predicted[5], 1.6) == frozenset()


def _frames(hyp_ids):
    """Three keyframes of students 0 (BOX_A) and 1 (BOX_B), tracks `hyp_ids[k]` on them."""
    return [([0, 1], np.array([BOX_A, BOX_B]), list(h), np.array([BOX_A, BOX_B]))
            for h in hyp_ids]


def test_mot_perfect_tracking_and_a_switch():
    pytest.importorskip("motmetrics")
    acc = la.mot_accumulator(_frames([(10, 11)] * 3))
    scores = la.mot_scores(la.mot_counts(acc))
    assert scores == {"idf1": pytest.approx(1.0), "mota": pytest.approx(1.0), "id_switches": 0}
    assert la.mot_pairs(acc) == {(0, 10): 3, (1, 11): 3}
    assert la.match_tracks(la.mot_pairs(acc)) == {0: 10, 1: 11}

    # Student 1 gets a new track id on the last keyframe: one switch, MOTA 1 - 1/6.
    acc = la.mot_accumulator(_frames([(10, 11), (10, 11), (10, 12)]))
    scores = la.mot_scores(la.mot_counts(acc))
    assert scores["id_switches"] == 1 and scores["mota"] == pytest.approx(5 / 6)
    assert scores["idf1"] == pytest.approx(10 / 12)  # IDTP 5 of 6 objects and 6 predictions
    assert la.match_tracks(la.mot_pairs(acc)) == {0: 10, 1: 11}

    # A box below IoU 0.5 is never a match: a miss and a false positive.
    far = [([0], np.array([BOX_A]), [10], np.array([[0.2, 0.1, 0.4, 0.5]]))]  # IoU 1/3
    counts = la.mot_counts(la.mot_accumulator(far))
    assert counts["num_misses"] == 1 and counts["num_false_positives"] == 1


def test_evaluate_lesson_and_aggregate_end_to_end():
    pytest.importorskip("motmetrics")
    raise_on = {2, 3, 4, 5}  # 1.0 .. 2.5 s at 2 fps
    truth = la.parse_ground_truth(_gt([{0: (BOX_A, ["sit", "raise_hand"] if t in raise_on
                                            else ["sit"])} for t in range(8)]))
    times = np.arange(8) / 2
    track = tracking.Track(3, times, np.tile(BOX_A, (8, 1)), np.ones(8), np.zeros((8, 2)))
    analysis = {"meta": {"class_names": ["sit", "raise_hand"], "keyframe_spacing": 0.5},
                "tracks": [{"id": 3, "mean_box": BOX_A, "seat": [1, 1], "behaviours": {
                    "sit": [{"start": 0.0, "end": 3.5}],
                    "raise_hand": [{"start": 1.0, "end": 2.5}, {"start": 3.5, "end": 3.5}]}}],
                "per_behaviour": {"sit": {"count_per_second": [1, 1, 1, 1]},
                                  "raise_hand": {"count_per_second": [0, 1, 1, 1]}}}
    row = la.evaluate_lesson(truth, analysis, [track], times.tolist())
    assert (row["idf1"], row["mota"], row["id_switches"]) == (1.0, 1.0, 0)
    assert row["matched_students"] == 1 and row["num_keyframes"] == 8
    assert row["per_behaviour"]["sit"]["count_mae"] == 0.0
    assert row["per_behaviour"]["raise_hand"]["count_mae"] == pytest.approx(0.25)
    assert {k: row["per_behaviour"]["raise_hand"][k] for k in ("tp", "fp", "fn")} == {
        "tp": 1, "fp": 1, "fn": 0}
    assert row["per_behaviour"]["raise_hand"]["interval_f1"] == pytest.approx(2 / 3)
    assert row["per_student_accuracy"] == pytest.approx(7 / 8)  # 3.5 s: raise predicted only
    assert row["seat_accuracy"] == 1.0  # student 0 sits in row 1, seat 1
    moved = {**analysis, "tracks": [{**analysis["tracks"][0], "seat": [2, 1]}]}
    assert la.evaluate_lesson(truth, moved, [track], times.tolist())["seat_accuracy"] == 0.0

    row.update(seconds=4.0, analyze_seconds=2.0)
    other = {**row, "analyze_seconds": 6.0}
    table = la.aggregate([row, other], ["sit", "raise_hand"])
    assert table["per_behaviour"]["raise_hand"] == {"count_mae": pytest.approx(0.25),
                                                    "interval_f1": pytest.approx(2 / 3),
                                                    "tp": 2, "fp": 2, "fn": 0,
                                                    "abs_error": 2, "num_seconds": 8}
    assert table["realtime_factor"] == pytest.approx(1.0)  # 8 lesson s / 8 wall s
    assert table["idf1"] == 1.0 and table["id_switches"] == 0
    assert table["per_student_accuracy"] == pytest.approx(7 / 8)
    assert table["seat_accuracy"] == 1.0
