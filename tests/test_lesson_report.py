"""Tests for jaxact.analysis.report on a hand-built lesson: 3 students in 2 rows, 20 s at 2
keyframes/s."""

import json
import os

import numpy as np
import pytest

from jaxact.analysis import report

NAMES = ("sit", "raise_hand", "stand", "write", "turn_to_neighbour")
SIT, HAND, STAND = 0, 1, 2
DURATION = 20.0
TIMES = np.arange(40) * 0.5
# Detection order shuffled against seat order: front row (large y) right, back row, front left.
CENTRES = {"front_right": (0.7, 0.7), "back": (0.5, 0.35), "front_left": (0.3, 0.7)}


def _box(cx, cy, w=0.1, h=0.2):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _scores(who, t):
    s = np.full(len(NAMES), 0.1)
    s[SIT] = 0.9
    if who == "front_right" and 4 <= t < 9:
        s[HAND] = 0.95
    if who == "back" and 10 <= t < 12:
        s[HAND] = 0.95
    if who == "front_left" and t == 15.0:
        s[HAND] = 1.0  # one-keyframe flicker: smoothed to 0.4, below `on`
    if who == "front_left" and 16 <= t < 18:
        s[STAND], s[SIT] = 0.95, 0.05
    return s


def _lesson(skip=lambda who, t: False):
    frames = []
    for t in TIMES:
        people = [w for w in CENTRES if not skip(w, t)]
        frames.append({"time": float(t),
                       "boxes": np.array([_box(*CENTRES[w]) for w in people]).reshape(-1, 4),
                       "scores": np.full(len(people), 0.9),
                       "behaviour_scores": np.array([_scores(w, t) for w in people]).reshape(
                           -1, len(NAMES))})
    return frames


@pytest.fixture(scope="module")
def analysis():
    return report.analyze(_lesson(), NAMES, DURATION)


def _spans(track, name):
    return [(iv["start"], iv["end"]) for iv in track["behaviours"][name]]


def test_tracks_seats_and_intervals(analysis):
    tracks = analysis["tracks"]
    assert [t["seat_name"] for t in tracks] == ["row 1, seat 1", "row 1, seat 2", "row 2, seat 1"]
    assert [t["seat"] for t in tracks] == [[1, 1], [1, 2], [2, 1]]
    assert [t["id"] for t in tracks] == [2, 0, 1]  # sorted by seat, not by id
    left, right, back = tracks
    np.testing.assert_allclose(right["mean_box"], _box(0.7, 0.7))
    assert (right["first_seen"], right["last_seen"]) == (0.0, 19.5)
    # Raised 4 <= t < 9: on keyframes 4.0 .. 8.5, lasting 5 s (one keyframe spacing added).
    assert _spans(right, "raise_hand") == [(4.0, 8.5)]
    assert right["behaviours"]["raise_hand"][0]["seconds"] == pytest.approx(5.0)
    assert right["behaviours"]["raise_hand"][0]["mean_score"] == pytest.approx(
        (0.1 + 0.95 * 2 + 0.95 * 3 * 8 + 0.95 * 2 + 0.1) / 3 / 10)
    assert _spans(back, "raise_hand") == [(10.0, 11.5)]
    assert _spans(left, "raise_hand") == []  # the flicker is gone
    assert _spans(left, "stand") == [(16.0, 17.5)]
    assert _spans(left, "sit") == [(0.0, 15.5), (18.0, 19.5)]
    assert _spans(right, "sit") == _spans(back, "sit") == [(0.0, 19.5)]
    assert all(_spans(t, n) == [] for t in tracks for n in ("write", "turn_to_neighbour"))


def test_per_behaviour_and_per_second(analysis):
    per = analysis["per_behaviour"]
    hand = per["raise_hand"]
    assert hand["intervals"] == 2
    assert hand["person_seconds"] == pytest.approx(7.0)
    assert hand["students"] == ["row 1, seat 2", "row 2, seat 1"]
    assert hand["longest"] == {"seat_name": "row 1, seat 2", "seconds": pytest.approx(5.0)}
    expected = np.zeros(20, int)
    expected[4:9] = 1
    expected[10:12] = 1
    assert hand["count_per_second"] == expected.tolist()
    assert per["stand"]["count_per_second"] == [0] * 16 + [1, 1, 0, 0]
    assert per["sit"]["count_per_second"] == [3] * 16 + [2, 2, 3, 3]
    assert per["sit"]["intervals"] == 4
    assert per["sit"]["person_seconds"] == pytest.approx(16 + 2 + 20 + 20)
    # Equal longest sits (20 s): the first seat wins.
    assert per["sit"]["longest"] == {"seat_name": "row 1, seat 2", "seconds": pytest.approx(20)}
    assert per["write"] == {"intervals": 0, "person_seconds": 0.0, "students": [], "longest": None,
                            "count_per_second": [0] * 20}
    assert [p["time"] for p in analysis["per_second"]] == list(range(20))
    assert analysis["per_second"][10]["counts"] == {
        "sit": 3, "raise_hand": 1, "stand": 0, "write": 0, "turn_to_neighbour": 0}
    meta = analysis["meta"]
    assert (meta["duration"], meta["num_keyframes"], meta["keyframe_spacing"]) == (20.0, 40, 0.5)
    assert meta["class_names"] == list(NAMES)
    assert report.AnalysisSettings.from_dict(meta["settings"]) == report.AnalysisSettings()


def test_summary_text(analysis):
    lesson = ["Over the lesson:",
              "sat 4 times by 3 students; longest 20.0 s by row 1, seat 2",
              "hand raised 2 times by 2 students; longest 5.0 s by row 1, seat 2",
              "stood up 1 time by 1 student; longest 2.0 s by row 1, seat 1",
              "wrote 0 times",
              "turned to a neighbour 0 times"]
    head = "Lesson: 20 s, 40 keyframes, 3 students in 2 rows."
    # Default moment: the first second with the most raised hands.
    assert report.summary_text(analysis).splitlines() == [
        head, "At 4 s: 3 sitting: row 1 seat 1, row 1 seat 2, row 2 seat 1",
        "At 4 s: 1 raised hand: row 1 seat 2", *lesson]
    assert report.summary_text(analysis, at=16.7).splitlines()[1:3] == [
        "At 16 s: 2 sitting: row 1 seat 2, row 2 seat 1", "At 16 s: 1 standing: row 1 seat 1"]
    assert report.summary_text(analysis, at=99).splitlines()[1].startswith("At 19 s: 3 sitting")


def test_other_class_names_and_no_raised_hands():
    # Names without readable words are used as they are; no raise_hand: the moment is the end.
    names = ("sit", "hand", "stand", "write", "turn")
    lines = report.summary_text(report.analyze(_lesson(), names, DURATION)).splitlines()
    assert lines[1:3] == ["At 19 s: 3 sitting: row 1 seat 1, row 1 seat 2, row 2 seat 1",
                          "Over the lesson:"]
    assert lines[4:] == ["hand 2 times by 2 students; longest 5.0 s by row 1, seat 2",
                         "stood up 1 time by 1 student; longest 2.0 s by row 1, seat 1",
                         "wrote 0 times", "turn 0 times"]


def test_json_round_trip(analysis):
    text = json.dumps(analysis, allow_nan=False)
    back = json.loads(text)
    assert back == analysis
    assert report.summary_text(back) == report.summary_text(analysis)


def test_min_duration_and_max_gap():
    # Without smoothing the flicker is one keyframe: kept as dt = 0.5 s, dropped above that.
    no_smooth = report.AnalysisSettings(smooth_seconds=0.0, min_duration=0.5)
    left = report.analyze(_lesson(), NAMES, DURATION, no_smooth)["tracks"][0]
    assert _spans(left, "raise_hand") == [(15.0, 15.0)]
    assert left["behaviours"]["raise_hand"][0]["seconds"] == pytest.approx(0.5)
    strict = report.AnalysisSettings(smooth_seconds=0.0, min_duration=0.6)
    assert report.analyze(_lesson(), NAMES, DURATION, strict)["tracks"][0]["behaviours"][
        "raise_hand"] == []
    # The raising student is missed on 5.5 .. 6.5 (the track survives 3 misses): a 2 s gap.
    skip = lambda who, t: who == "front_right" and 5.5 <= t <= 6.5
    right = report.analyze(_lesson(skip), NAMES, DURATION)["tracks"][1]
    assert _spans(right, "raise_hand") == [(4.0, 8.5)]
    short_gap = report.AnalysisSettings(max_gap=1.0)
    right = report.analyze(_lesson(skip), NAMES, DURATION, short_gap)["tracks"][1]
    assert _spans(right, "raise_hand") == [(4.0, 5.0), (7.0, 8.5)]


def test_per_behaviour_settings_change_only_their_behaviour():
    # The flicker (one keyframe at 1.0, smoothed to 0.4) opens a raised hand once raise_hand's
    # own `on` is 0.4; other behaviours keep the shared thresholds.
    own = report.AnalysisSettings(per_behaviour={"raise_hand": {"on": 0.4, "off": 0.3}})
    left = report.analyze(_lesson(), NAMES, DURATION, own)["tracks"][0]
    assert _spans(left, "raise_hand") == [(14.5, 15.5)]
    shared = report.analyze(_lesson(), NAMES, DURATION)["tracks"][0]
    for name in NAMES:
        if name != "raise_hand":
            assert left["behaviours"][name] == shared["behaviours"][name]
    # The same thresholds shared by every behaviour open the same raised hand.
    everyone = report.AnalysisSettings(on=0.4, off=0.3)
    assert _spans(report.analyze(_lesson(), NAMES, DURATION, everyone)["tracks"][0],
                  "raise_hand") == [(14.5, 15.5)]
    assert own.for_behaviour("stand") == {"smooth_seconds": 1.0, "on": 0.6, "off": 0.4,
                                          "min_duration": 0.5}
    assert own.for_behaviour("raise_hand")["on"] == 0.4
    assert report.AnalysisSettings.from_dict(json.loads(json.dumps(
        report.analyze(_lesson(), NAMES, DURATION, own)["meta"]["settings"]))) == own


@pytest.mark.parametrize("per_behaviour, match", [
    ({"raise_hand": {"onn": 0.5}}, r"per_behaviour\.raise_hand: unknown field\(s\) onn"),
    ({"raise_hand": {"on": -0.1}}, r"per_behaviour\.raise_hand\.on must be"),
    ({"raise_hand": {"off": 0.7}}, r"per_behaviour\.raise_hand: off \(0\.7\) must be <= on"),
    ({"raise_hand": 0.5}, r"per_behaviour\.raise_hand must be a mapping"),
    ([("raise_hand", {})], r"per_behaviour must map")])
def test_bad_per_behaviour_settings_name_the_field(per_behaviour, match):
    with pytest.raises(ValueError, match=match):
        report.AnalysisSettings(per_behaviour=per_behaviour)


def test_per_behaviour_names_an_unknown_behaviour():
    settings = report.AnalysisSettings(per_behaviour={"raise_hands": {"on": 0.5}})
    with pytest.raises(ValueError, match="unknown behaviour\\(s\\) raise_hands; the detector's "
                                         "are sit, raise_hand"):
        report.analyze(_lesson(), NAMES, DURATION, settings)


def _files(folder):
    return sorted(os.listdir(folder))


REPORT_FILES = ["analysis.json", "counts.csv", "counts.png", "intervals.csv", "summary.txt",
                "timeline.png"]


def test_write_report(analysis, tmp_path):
    paths = report.write_report(analysis, str(tmp_path / "out"))
    assert list(paths)[-1] == "analysis.json"  # last: it marks a finished report
    assert sorted(paths) == REPORT_FILES and _files(tmp_path / "out") == REPORT_FILES
    with open(paths["analysis.json"]) as f:
        assert json.load(f) == analysis
    with open(paths["summary.txt"]) as f:
        assert f.read() == report.summary_text(analysis) + "\n"
    for name in ("timeline.png", "counts.png"):
        with open(paths[name], "rb") as f:
            data = f.read()
        assert data.startswith(b"\x89PNG") and len(data) > 5000


def test_write_report_failure_leaves_no_partial_file(analysis, tmp_path, monkeypatch):
    out = tmp_path / "out"
    report.write_report(analysis, str(out))
    before = (out / "counts.png").read_bytes()

    def broken(_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "plot_counts", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_report(analysis, str(out))
    assert _files(out) == REPORT_FILES
    assert (out / "counts.png").read_bytes() == before
    # A first report that fails leaves no analysis.json, the mark of a finished one.
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_report(analysis, str(tmp_path / "fresh"))
    assert "analysis.json" not in _files(tmp_path / "fresh")


def test_csv_files_hold_the_intervals_and_counts(analysis):
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(report.intervals_csv(analysis))))
    assert list(rows[0]) == list(report.INTERVAL_COLUMNS)
    expected = [(tr["seat_name"], str(tr["id"]), name, iv["start"], iv["end"], iv["seconds"])
                for tr in analysis["tracks"] for name in NAMES
                for iv in tr["behaviours"][name]]
    assert [(r["seat_name"], r["track_id"], r["behaviour"]) for r in rows] == \
        [e[:3] for e in expected]
    np.testing.assert_allclose([[float(r[k]) for k in ("start", "end", "seconds")] for r in rows],
                               [e[3:] for e in expected], atol=1e-3)
    raised = [r for r in rows if r["behaviour"] == "raise_hand"]
    assert [(r["seat_name"], r["row"], r["column"], r["start"], r["end"], r["seconds"])
            for r in raised] == [("row 1, seat 2", "1", "2", "4.000", "8.500", "5.000"),
                                 ("row 2, seat 1", "2", "1", "10.000", "11.500", "2.000")]
    counts = list(csv.reader(io.StringIO(report.counts_csv(analysis))))
    assert counts[0] == ["second", *NAMES]
    assert len(counts) == 1 + len(analysis["per_second"])
    for row, second in zip(counts[1:], analysis["per_second"], strict=True):
        assert [int(v) for v in row] == [second["time"], *(second["counts"][n] for n in NAMES)]


def test_brief_tracks_take_a_seat_without_renumbering_the_class():
    # A false detection in front of the class for 3 s of 20: with every track placing seats it
    # is a new front row.
    frames = _lesson()
    for f in frames[10:16]:
        f["boxes"] = np.vstack([f["boxes"], _box(0.5, 0.9)])
        f["scores"] = np.append(f["scores"], 0.9)
        f["behaviour_scores"] = np.vstack([f["behaviour_scores"], np.full(len(NAMES), 0.1)])

    def seat_of(analysis):
        seat = {}
        for tr in analysis["tracks"]:
            cx = round((tr["mean_box"][0] + tr["mean_box"][2]) / 2, 2)
            seat[cx, round((tr["mean_box"][1] + tr["mean_box"][3]) / 2, 2)] = tr["seat_name"]
        return seat

    plain = seat_of(report.analyze(frames, NAMES, DURATION,
                                   report.AnalysisSettings(seat_min_coverage=0.0)))
    assert plain[0.5, 0.9] == "row 1, seat 1" and plain[0.3, 0.7] == "row 2, seat 1"
    kept = seat_of(report.analyze(frames, NAMES, DURATION))  # default: 0.5
    assert kept[0.3, 0.7] == "row 1, seat 1" and kept[0.7, 0.7] == "row 1, seat 2"
    assert kept[0.5, 0.35] == "row 2, seat 1"
    assert kept[0.5, 0.9] in ("row 1, seat 1", "row 1, seat 2")  # its nearest seat


@pytest.mark.parametrize("kwargs, field", [
    ({"seat_min_coverage": 1.5}, "seat_min_coverage"), ({"seat_min_coverage": -0.1},
                                                        "seat_min_coverage"),
    ({"smooth_seconds": -1.0}, "smooth_seconds"), ({"on": float("nan")}, "on"),
    ({"on": 0.3}, "off"), ({"min_duration": "1"}, "min_duration"), ({"max_gap": 0.0}, "max_gap"),
    ({"off": True}, "off"), ({"tracker": {"min_hits": 2}}, "tracker")])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"AnalysisSettings\.{field}\b"):
        report.AnalysisSettings(**kwargs)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="smoothing"):
        report.AnalysisSettings.from_dict({"smoothing": 1.0})
    with pytest.raises(ValueError, match=r"tracker\.iou"):
        report.AnalysisSettings.from_dict({"tracker": {"iou": 0.5}})
    settings = report.AnalysisSettings.from_dict({"tracker": {"min_hits": 3}, "max_gap": None,
                                                  "on": np.int64(1)})
    assert settings.tracker.min_hits == 3 and settings.max_gap is None
    assert type(settings.on) is float


def test_bad_inputs():
    with pytest.raises(ValueError, match="behaviour scores"):
        report.analyze(_lesson(), NAMES[:3], DURATION)
    with pytest.raises(ValueError, match="duration"):
        report.analyze(_lesson(), NAMES, -1.0)
    with pytest.raises(ValueError, match="class_names"):
        report.analyze(_lesson(), ("sit", "sit"), DURATION)


@pytest.mark.parametrize("frames, duration", [
    ([{"time": 0.5 * k, "boxes": np.zeros((0, 4)), "scores": np.zeros(0),
       "behaviour_scores": np.zeros((0, 5))} for k in range(20)], 10.0),
    ([], 0.0)])
def test_empty_lesson(frames, duration, tmp_path):
    analysis = report.analyze(iter(frames), NAMES, duration)
    assert analysis["tracks"] == []
    assert analysis["per_behaviour"]["raise_hand"]["count_per_second"] == [0] * int(duration)
    assert len(analysis["per_second"]) == int(duration)
    assert report.summary_text(analysis) == (
        f"Lesson: {duration:g} s, {len(frames)} keyframes: no students detected.")
    paths = report.write_report(analysis, str(tmp_path))
    assert len(paths) == 6 and all(os.path.getsize(p) > 0 for p in paths.values())
