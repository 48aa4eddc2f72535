"""benchmarks/analysis_calibration.py on a hand-built lesson, no model: a behaviour the detector
scores weakly is missed by the shared thresholds and found by its own."""

import dataclasses
import os
import types

import numpy as np
import pytest

from benchmarks import analysis_calibration as ac
from jaxact.analysis import report

NAMES = ("sit", "turn_to_neighbour")
FPS = 2
BOXES = {0: [0.1, 0.4, 0.3, 0.8], 1: [0.6, 0.4, 0.8, 0.8]}
TURNS = ((4.0, 6.0), (12.0, 14.0))  # student 0, [start, end) seconds


def _turning(t):
    return any(a <= t < b for a, b in TURNS)


def _lesson(seconds=20, seed=0):
    frames, keyframes = [], []
    for k in range(seconds * FPS):
        t = k / FPS
        people = {pid: ["sit"] + (["turn_to_neighbour"] if pid == 0 and _turning(t) else [])
                  for pid in BOXES}
        frames.append({"time": t, "people": [{"id": pid, "box": BOXES[pid], "behaviours": b,
                                              "seat": [1, pid + 1]} for pid, b in people.items()]})
        # The detector is sure of sitting but scores the turns only 0.45.
        behaviour = [[0.9, 0.45 if "turn_to_neighbour" in people[pid] else 0.05]
                     for pid in BOXES]
        keyframes.append({"frame": k, "time": t, "boxes": np.array([BOXES[p] for p in BOXES]),
                          "scores": np.full(len(BOXES), 0.9),
                          "behaviour_scores": np.array(behaviour)})
    gt = {"seed": seed, "fps": FPS, "seconds": float(seconds), "num_frames": len(frames),
          "behaviours": list(NAMES), "people": [{"id": p, "seat": [1, p + 1]} for p in BOXES],
          "frames": frames}
    return keyframes, gt


def test_calibration_finds_the_weak_behaviour_and_keeps_the_rest():
    keyframes, gt = _lesson()
    settings = report.AnalysisSettings()  # on 0.6: the 0.45 turns never open
    lesson = ac.prepare(keyframes, gt, NAMES, settings)
    assert sorted(lesson.assignment) == [0, 1] and len(set(lesson.assignment.values())) == 2
    chosen, validation = ac.calibrate([lesson])
    turn = validation["turn_to_neighbour"]
    assert turn["run_settings"]["interval_f1"] == 0.0 and turn["run_settings"]["fn"] == 2
    assert turn["chosen"]["interval_f1"] == 1.0 and turn["chosen"]["tp"] == 2
    assert chosen["turn_to_neighbour"]["on"] <= 0.45
    # Sitting scores the same under many settings: the tie goes to the run's own.
    assert chosen["sit"] == settings.for_behaviour("sit")
    assert validation["sit"]["chosen"] == validation["sit"]["run_settings"]
    # Chosen settings, applied as the config would, reproduce the validation score.
    tuned = report.AnalysisSettings(per_behaviour=chosen)
    assert ac.score([ac.prepare(keyframes, gt, NAMES, tuned)], None) == {
        n: validation[n]["chosen"] for n in NAMES}


def test_cross_validation_scores_each_fold_with_the_others_thresholds():
    settings = report.AnalysisSettings()
    lessons = [ac.prepare(*_lesson(seed=s), NAMES, settings) for s in (7, 8, 9)]
    cv = ac.cross_validate(lessons, 2)
    assert cv["folds"] == [[7, 8], [9]]
    turn = cv["per_behaviour"]["turn_to_neighbour"]
    # Held-out: all 3 lessons (60 s), each with 4 seconds of turning that the shared
    # thresholds miss and the calibrated ones find.
    assert turn["run_settings"] == {"interval_f1": 0.0, "tp": 0, "fp": 0, "fn": 6,
                                    "abs_error": 12, "num_seconds": 60, "count_mae": 0.2}
    assert turn["chosen"] == {"interval_f1": 1.0, "tp": 6, "fp": 0, "fn": 0,
                              "abs_error": 0, "num_seconds": 60, "count_mae": 0.0}
    everything = cv["all_behaviours"]["chosen"]
    assert everything["tp"] == 6 + cv["per_behaviour"]["sit"]["chosen"]["tp"]
    with pytest.raises(ValueError, match="--calibration_folds=4: need 2 to 3"):
        ac.cross_validate(lessons, 4)


def test_choose_breaks_ties_by_mae_then_own_settings_then_order():
    own = {"on": 0.6}
    cands = [{"on": 0.2}, {"on": 0.6}, {"on": 0.3}, {"on": 0.4}]
    f1 = lambda f, mae: {"interval_f1": f, "count_mae": mae}
    assert ac.choose(cands, [f1(0.5, 0.1), f1(0.5, 0.1), f1(0.7, 0.3), f1(0.7, 0.2)], own) == 3
    assert ac.choose(cands, [f1(0.5, 0.1), f1(0.5, 0.1), f1(0.4, 0.0), f1(None, 0.0)], own) == 1
    assert ac.choose(cands, [f1(0.5, 0.1), f1(0.4, 0.1), f1(0.5, 0.1), f1(0.5, 0.1)], own) == 0


def test_grid_settings_are_valid_and_keyframes_round_trip():
    grid = ac.grid_settings()
    assert len(grid) == np.prod([len(v) for v in ac.GRID.values()])
    for g in grid:
        report.AnalysisSettings(per_behaviour={"sit": g})  # off <= on, all >= 0
    assert report.AnalysisSettings().for_behaviour("sit") in grid
    keyframes, _ = _lesson(2)
    back = ac._from_json(ac._to_json(keyframes))
    for a, b in zip(keyframes, back, strict=True):
        assert a["time"] == b["time"] and a["frame"] == b["frame"]
        np.testing.assert_allclose(a["behaviour_scores"], b["behaviour_scores"], rtol=1e-6)


def test_lesson_analysis_reads_the_chosen_settings(tmp_path):
    from benchmarks import lesson_analysis as la
    from jaxact.train import loop

    path = str(tmp_path / "calibration.json")
    loop.write_json(path, {"per_behaviour_settings": {"sit": {"on": 0.5}}})
    assert la.read_calibration(path) == {"sit": {"on": 0.5}}
    loop.write_json(path, {"per_behaviour": {}})
    with pytest.raises(ValueError, match="calibration.json: no 'per_behaviour_settings'"):
        la.read_calibration(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        la.read_calibration(str(tmp_path / "missing.json"))


@dataclasses.dataclass
class _CountingRunner:
    """Stands in for the lesson runner: one made-up keyframe per call, calls counted."""

    video: bool = True
    map_size: int | None = 64
    calls: list = dataclasses.field(default_factory=list)

    def run(self, path, output_dir):
        self.calls.append(path)
        return {"keyframes": [{"frame": 0, "time": 0.0, "boxes": np.zeros((1, 4)),
                               "scores": np.ones(1), "behaviour_scores": np.zeros((1, 5))}]}


def test_cached_detections_follow_the_runs_stride(tmp_path):
    from configs import classroom_detector

    workdir, lesson_dir = str(tmp_path / "run"), str(tmp_path / "lesson")
    config = classroom_detector.get_config("smoke")

    def save_config(stride):
        config.analyze.stride = stride
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort())

    runner = _CountingRunner()
    factory = lambda: types.SimpleNamespace(runner=runner)  # noqa: E731
    save_config(4)
    first, gt = ac.lesson_keyframes(factory, workdir, 5, 2.0, lesson_dir)
    again, _ = ac.lesson_keyframes(factory, workdir, 5, 2.0, lesson_dir)
    assert len(runner.calls) == 1 and gt["seed"] == 5 and gt["seconds"] == 2.0
    np.testing.assert_array_equal(again[0]["scores"], first[0]["scores"])
    save_config(2)  # other keyframes: detected again
    ac.lesson_keyframes(factory, workdir, 5, 2.0, lesson_dir)
    assert len(runner.calls) == 2
