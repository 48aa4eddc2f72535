"""End-to-end smoke test of the action detector (`classroom_detector.py:smoke`, on the tiny
classroom dataset): train, results contract, eval from checkpoint, resume, predict, config errors,
one compile of the train step."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from configs import classroom_detector
from jaxact.data import builders
from jaxact.evaluation import detection as evaluation_detection
from jaxact.evaluation import frame_map
from jaxact.train import checkpoint, detector, parallel

# A ~1 min tiny training run: kept out of the default suite (15 min budget); `make test-slow`.
pytestmark = pytest.mark.slow

CLASS_NAMES = list(builders.Classroom.CLASS_NAMES)


def _tiny_config(data_dir):
    config = classroom_detector.get_config("smoke")
    config.data.data_dir = data_dir
    return config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("detector_run"))
    config = _tiny_config(os.environ.get("JAXACT_DATA_DIR", str(tmp_path_factory.mktemp("tfds"))))
    make_step = detector.make_train_step
    detector.programs.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        # The step is built once per setting and cached, so every later step in this module
        # (the resume and the compile tests) runs this wrapper: a second trace fails there.
        mp.setattr(detector, "make_train_step",
                   lambda model, weights, *ranks: chex.assert_max_traces(
                       make_step(model, weights, *ranks), n=1))
        results = detector.Experiment(config, workdir).train_and_evaluate()
    return config, workdir, results


def test_results_contract(tiny_run):
    config, workdir, results = tiny_run
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    for key in ("frame_map", "person_ap50", "per_class_ap", "num_params", "gflops_per_clip",
                "train_seconds", "dataset", "config_name"):
        assert key in saved, key
    assert 0.0 <= saved["frame_map"] <= 1.0 and 0.0 <= saved["person_ap50"] <= 1.0
    assert list(saved["per_class_ap"]) == CLASS_NAMES
    assert all(ap is None or 0.0 <= ap <= 1.0 for ap in saved["per_class_ap"].values())
    assert saved["num_params"] > 0 and 0.0 < saved["gflops_per_clip"] < 10.0
    assert saved["train_seconds"] > 0 and saved["resumed_from_step"] == 0
    assert saved["dataset"] == "classroom/tiny" and saved["config_name"] == "classroom_detector:smoke"
    assert saved["num_clips"] == 16 and saved["num_people"] >= 2 * 16
    assert saved == results
    # The metrics equal a recomputation from the final checkpoint by an independent frame-mAP
    # call on the same detections (not just "in [0, 1]").
    exp = detector.Experiment(config, workdir)
    evaluator = exp.evaluators()[0]
    out = evaluation_detection.collect(exp.eval_loader("test"), exp.predict_batch,
                                       exp.restore_final())
    scores = frame_map.frame_map(out["detections"], out["ground_truth"], len(CLASS_NAMES), 0.5)
    assert saved["frame_map"] == pytest.approx(float(scores["map"]), abs=1e-12)
    assert saved["person_ap50"] == pytest.approx(float(scores["person_ap"]), abs=1e-12)
    assert evaluator.split == "test" and len(out["detections"]) == saved["num_clips"]
    image = matplotlib.image.imread(os.path.join(workdir, "detections.png"))
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    # The same detections in the AVA formats, for any AVA tool (the official top-50 rule).
    from jaxact.evaluation import ava

    official = ava.evaluate_files(*(os.path.join(workdir, name) for name in (
        "labelmap.pbtxt", "groundtruth.csv", "detections.csv")))
    same_rules = frame_map.frame_map(out["detections"], out["ground_truth"], len(CLASS_NAMES),
                                     0.5, top_k_per_keyframe=50, drop_invalid_boxes=True)
    assert official["map"] == pytest.approx(float(same_rules["map"]), abs=1e-4)  # 6 decimals
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert [r["step"] for r in logged] == list(range(2, config.train.num_steps + 1, 2))
    assert all(r["phase"] == "detector" and np.isfinite(r["loss"]) for r in logged)


def test_eval_from_checkpoint_reproduces_metrics(tiny_run):
    config, workdir, results = tiny_run
    again = detector.Experiment(config, workdir).evaluate_from_checkpoint()
    for key in ("frame_map", "person_ap50", "per_class_ap", "num_params", "train_seconds"):
        assert again[key] == results[key], key


def test_rerun_resumes_from_final_checkpoint(tiny_run):
    config, workdir, results = tiny_run
    mgr = checkpoint.manager(os.path.join(workdir, "checkpoints", "detector"))
    assert mgr.latest_step() == config.train.num_steps
    again = detector.Experiment(config, workdir).train_and_evaluate()  # restores; no steps
    assert again["resumed_from_step"] == config.train.num_steps
    assert again["frame_map"] == results["frame_map"]
    assert again["train_seconds"] == results["train_seconds"]  # the time of the real training


def test_predict_matches_evaluation_and_rejects_bad_files(tiny_run, tmp_path):
    config, workdir, _ = tiny_run
    config = _tiny_config(config.data.data_dir)
    config.eval.plot_score_threshold = 0.0  # every query, so the comparison below sees them all
    exp = detector.Experiment(config, workdir)
    record = exp.data.source("test")[0]
    assert int(record["keyframe"]) == len(record["video"]) // 2  # predict's keyframe choice
    path = str(tmp_path / "clip.npz")
    np.savez(path, video=record["video"])
    out = exp.predict_video(path)
    assert out["keyframe"] == len(record["video"]) // 2
    found = out["detections"]
    assert len(found) == config.model.num_queries
    person = [d["person_score"] for d in found]
    assert person == sorted(person, reverse=True)
    for d in found:
        x0, y0, x1, y1 = d["box_xyxy"]
        assert 0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0
        assert list(d["action_scores"]) == CLASS_NAMES
        assert all(0.0 <= s <= d["person_score"] + 1e-4 for s in d["action_scores"].values())
    # The same clip through the evaluation pipeline gives the same detections.
    first = evaluation_detection.collect(exp.eval_loader("test"), exp.predict_batch,
                                         exp.restore_final())["detections"][0]
    order = np.argsort(-first["person_scores"], kind="stable")
    np.testing.assert_allclose(person, first["person_scores"][order], atol=2e-4)
    np.testing.assert_allclose([d["box_xyxy"] for d in found], first["boxes"][order], atol=2e-4)

    bad = str(tmp_path / "bad.npy")
    np.save(bad, np.zeros((4, 7, 7, 2), np.uint8))
    with pytest.raises(ValueError, match="bad.npy.*2 channels"):
        exp.predict_video(bad)
    # Float frames in [0, 1] are the same clip: the same detections.
    floats = str(tmp_path / "floats.npy")
    np.save(floats, record["video"].astype(np.float32) / 255.0)
    assert exp.predict_video(floats)["detections"] == found
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        exp.predict_video(str(tmp_path / "missing.npy"))


def test_train_step_compiles_once_on_8_devices(tiny_run):
    config, workdir, _ = tiny_run
    exp = detector.Experiment(config, workdir)
    state = exp.restore(detector.PHASE, exp.init_state())
    loader = exp.make_loader("train", exp.data.transform(train=True), train=True)
    for _ in range(3):  # the cached step is the fixture's assert_max_traces(n=1) wrapper
        state, metrics = exp.programs.train_step(state, parallel.shard_batch(next(loader),
                                                                            exp.mesh))
    assert int(state.step) == config.train.num_steps + 3
    assert np.isfinite(float(metrics["loss"])) and float(metrics["num_people"]) >= 2 * 8
    leaf = jax.tree.leaves(state.params)[0]
    shards = [np.asarray(s.data) for s in leaf.addressable_shards]
    assert len(shards) == jax.device_count() == 8
    for shard in shards[1:]:
        np.testing.assert_array_equal(shard, shards[0])
    # The guard is live: a batch of another shape would need a second trace (it fails while
    # tracing, before anything is compiled or the state donated).
    double = {k: np.concatenate([v, v]) for k, v in next(loader).items()}
    with pytest.raises(AssertionError, match="traced > 1 times"):
        exp.programs.train_step(state, parallel.shard_batch(double, exp.mesh))


def test_detections_from_outputs_by_hand():
    outputs = {"boxes": jnp.array([[[0.5, 0.5, 0.2, 0.4], [0.05, 0.9, 0.2, 0.4]]]),
               "person_logits": jnp.array([[0.0, np.log(3.0)]]),
               "action_logits": jnp.array([[[0.0, 50.0], [-50.0, 0.0]]])}
    out = detector.detections_from_outputs(outputs)
    np.testing.assert_allclose(out["boxes"], [[[0.4, 0.3, 0.6, 0.7], [0.0, 0.7, 0.15, 1.0]]],
                               atol=1e-6)
    np.testing.assert_allclose(out["person_scores"], [[0.5, 0.75]], atol=1e-6)
    np.testing.assert_allclose(out["action_scores"], [[[0.25, 0.5], [0.0, 0.375]]], atol=1e-6)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("train.batch_size", 12, "train.batch_size=12 .*multiple of the number of devices"),
    ("eval.batch_size", 0, "eval.batch_size=0"),
    ("data.max_people", 0, "data.max_people must be >= 1"),
    ("data.max_people", 5, "data.max_people=5: .*up to 12 people"),
    ("data.num_frames", 0, "data.num_frames"),
    ("data.name", "maneuvers", "data.name='maneuvers'"),
    ("data.builder_config", "huge", "data.builder_config='huge'"),
    ("model.num_queries", 8, "model.num_queries=8 must be >= data.max_people=12"),
    ("model.widthz", (8, 16), r"model.widthz"),
    ("model.head.fusion", "max", "model.head.fusion='max'"),
    ("model.head.name", "fusion", "model.head.name='fusion'"),
    ("loss.persn", 1.0, "unknown field\\(s\\) \\['loss.persn'\\]"),
    ("loss.cost_type", "l2", "loss.cost_type='l2'"),
    ("eval.split", "dev", "eval.split='dev'"),
    ("eval.iou_threshold", 0.0, "eval.iou_threshold=0.0"),
    ("eval.matching", "hungarian", "eval.matching='hungarian'"),
    ("eval.gate_budget", 1.5, r"eval.gate_budget=1.5 must be in \[0, 1\]"),
    ("eval.gate_budget", 0.5, "eval.gate_budget=0.5: the compact path needs a gate"),
])
def test_config_errors_name_the_field(field, value, match, tmp_path):
    config = _tiny_config(str(tmp_path / "tfds"))
    *path, name = field.split(".")
    section = config
    for part in path:
        section = section[part]
    section[name] = value
    # The Experiment checks first: no dataset is generated and no workdir created.
    with pytest.raises(ValueError, match=match):
        detector.Experiment(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "tfds") and not os.path.exists(tmp_path / "run")


def test_predict_command_writes_annotated_png_and_mp4(tiny_run, tmp_path):
    """`launch.py --mode=predict --video=CLIP.mp4 --output_dir=OUT` on a trained workdir: the
    answer, the keyframe and the whole clip annotated at the clip's own resolution."""
    import shutil
    import subprocess
    import sys

    from jaxact.data import video_io

    pytest.importorskip("av")
    config, workdir, _ = tiny_run
    run = str(tmp_path / "run")
    shutil.copytree(workdir, run)
    with open(os.path.join(run, "config.json"), "w") as f:  # as launch.py writes it
        f.write(config.to_json_best_effort())
    frames = detector.Experiment(config, workdir).data.source("test")[0]["video"]
    native = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)  # twice the training size
    clip = video_io.write_video(str(tmp_path / "clip.mp4"), native, fps=12.0)
    out = tmp_path / "out"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, os.path.join(root, "launch.py"), f"--workdir={run}",
                           "--mode=predict", f"--video={clip}", f"--output_dir={out}",
                           "--config=configs/classroom_detector.py:smoke",
                           "--config.eval.plot_score_threshold=0.0"],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    # The default head predicts behaviour maps: the keyframe with its map overlaid, too.
    assert sorted(os.listdir(out)) == ["clip.json", "clip.mp4", "clip.png", "clip_map.png"]
    answer = json.loads((out / "clip.json").read_text())
    assert len(answer["frames"]) == len(frames) and answer["detections"]
    assert set(answer["behaviour_shares"]) == {"none", *CLASS_NAMES}
    assert sum(answer["behaviour_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    image = matplotlib.image.imread(out / "clip.png")
    assert image.shape[:2] == native.shape[1:3]
    annotated = video_io.read_video(str(out / "clip.mp4"))
    assert annotated.shape[0] == len(frames) and annotated.shape[1:3] == native.shape[1:3]
    assert video_io.frame_rate(str(out / "clip.mp4")) == pytest.approx(12.0)
    # Boxes are drawn: the annotated clip differs from the input where detections are.
    assert np.abs(annotated.astype(int) - native.astype(int)).mean() > 1.0


def test_gate_and_relations_train_end_to_end_in_one_trace(tmp_path):
    """The full method (fusion + gate + relations) trains, evaluates and reports its counted
    FLOPs and groups; its train step (Gumbel choices, annealed temperature, Hungarian-matched
    actors) compiles once."""
    config = classroom_detector.get_config("smoke,fusion=concat,gate=both,relation")
    config.model.head.gate_policy = "input"
    config.data.data_dir = os.environ.get("JAXACT_DATA_DIR", str(tmp_path / "tfds"))
    make_step = detector.make_train_step
    detector.programs.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(detector, "make_train_step",
                   lambda model, weights, *rest: chex.assert_max_traces(
                       make_step(model, weights, *rest), n=1))
        results = detector.Experiment(config, str(tmp_path / "run")).train_and_evaluate()
    detector.programs.cache_clear()
    assert 0.0 <= results["gated_flops_fraction"] <= 1.0
    assert results["gated_gflops_per_clip"] > 0
    assert results["model_flops_fraction"] == pytest.approx(
        1 - results["gated_gflops_per_clip"] * (1 - results["gated_flops_fraction"])
        / results["gflops_per_clip"])
    backbone_layers = sum(k > 1 for k in config.model.backbone.temporal_kernels)
    assert len(results["gate_fractions"]) == backbone_layers + config.model.head.temporal_layers
    assert len(results["gate_clip_kept_max"]) == backbone_layers
    for layer in results["gate_fractions"]:
        assert sum(layer.values()) == pytest.approx(1.0)
    assert 0 <= results["groups_used"] <= config.model.head.num_groups
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        logged = set().union(*(json.loads(line) for line in f))
    assert {"gate_keep_0", "gate_reuse_1", "gate_flops", "flops", "relation", "groups_used",
            "temperature"} <= logged, sorted(logged)


def test_analysis_settings_per_behaviour(tiny_run):
    import ml_collections

    config, workdir, _ = tiny_run
    config = ml_collections.ConfigDict(config.to_dict())
    config.analyze.per_behaviour = ml_collections.ConfigDict(
        {"raise_hand": {"on": 0.5, "off": 0.2}})
    settings = detector.Experiment(config, workdir).analysis_settings()
    assert settings.for_behaviour("raise_hand") == {
        "smooth_seconds": config.analyze.smooth_seconds, "on": 0.5, "off": 0.2,
        "min_duration": config.analyze.min_duration}
    assert settings.for_behaviour("stand")["on"] == config.analyze.on
    # A misspelt behaviour fails before the checkpoint is restored, naming it.
    config.analyze.per_behaviour = ml_collections.ConfigDict({"raise_hands": {"on": 0.5}})
    with pytest.raises(ValueError, match="unknown behaviour\\(s\\) raise_hands"):
        detector.Experiment(config, workdir).analyzer()


def test_ensemble_with_a_copy_of_itself_changes_no_detection(tiny_run, tmp_path):
    """`analyze.ensemble_with` runs every member on the same clips and fuses their detections:
    fused with an identical copy, the detector's own detections come back (then zeros)."""
    import shutil

    import ml_collections

    config, workdir, _ = tiny_run
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    with open(os.path.join(copy, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    alone = detector.Experiment(config, workdir).analyzer()
    config = ml_collections.ConfigDict(config.to_dict())
    config.analyze.ensemble_with = copy
    both = detector.Experiment(config, workdir).analyzer()
    clips = np.random.default_rng(0).integers(
        0, 256, (config.eval.batch_size, config.data.num_frames, *alone.frame_size, 3), np.uint8)
    one, two = alone.predict(clips), both.predict(clips)
    n = one["person_scores"].shape[1]
    assert two["person_scores"].shape[1] == 2 * n
    order = np.argsort(-np.asarray(one["person_scores"]), axis=1, kind="stable")
    for key in ("boxes", "person_scores", "action_scores", "map_probs"):
        mine = np.take_along_axis(np.asarray(one[key]), order.reshape(
            *order.shape, *[1] * (np.ndim(one[key]) - 2)), axis=1)
        np.testing.assert_allclose(two[key][:, :n], mine, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(two[key][:, n:], 0.0)


def test_analyze_command_writes_the_lesson_report(tiny_run, tmp_path):
    """`launch.py --mode=analyze --video=lesson.mp4` on a trained workdir streams the lesson
    through the detector and writes the report (format only: the smoke model finds nobody)."""
    import shutil
    import subprocess
    import sys

    from jaxact.data import lessons, video_io

    pytest.importorskip("av")
    config, trained, _ = tiny_run
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:  # as launch.py writes it
        f.write(config.to_json_best_effort())
    lesson = lessons.write_lesson(5, lessons.LessonConfig(seconds=3.0, resolution=64),
                                  str(tmp_path / "lesson"))
    out = tmp_path / "report"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, os.path.join(root, "launch.py"),
                           f"--workdir={workdir}", "--mode=analyze",
                           f"--video={lesson['video']}", f"--output_dir={out}"],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["analysis.json", "annotated.mp4", "counts.csv", "counts.png",
                                       "intervals.csv", "maps.npz", "summary.txt", "timeline.png"]
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["meta"]["workdir"] == workdir
    with np.load(out / "maps.npz") as maps:
        size = config.analyze.map_size
        assert maps["behaviour"].shape == maps["person"].shape == (24 // 4, size, size)
    assert video_io.read_video(str(out / "annotated.mp4")).shape == (24, 64, 64, 3)
    assert analysis["meta"]["num_frames"] == 24 and analysis["meta"]["fps"] == 8.0
    assert analysis["meta"]["num_keyframes"] == 24 // 4
    assert (out / "summary.txt").read_text().startswith("Lesson: 3 s")
    # A video that is not one fails in one line naming it, and writes nothing.
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 64)
    done = subprocess.run([sys.executable, os.path.join(root, "launch.py"),
                           f"--workdir={workdir}", "--mode=analyze", f"--video={bad}",
                           f"--output_dir={tmp_path / 'nothing'}"],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 1 and "bad.mp4" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "nothing").exists()


def test_analyze_command_on_a_folder_of_videos(tiny_run, tmp_path):
    """`--video=FOLDER` of lesson videos: a report per video and index.json; a second run keeps
    the finished ones, and an unreadable video is skipped, named, without stopping the rest."""
    import shutil
    import subprocess
    import sys

    from jaxact.data import lessons

    pytest.importorskip("av")
    config, trained, _ = tiny_run
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    folder = tmp_path / "term"
    folder.mkdir()
    for seed, name in ((5, "monday"), (6, "tuesday")):
        made = lessons.write_lesson(seed, lessons.LessonConfig(seconds=2.0, resolution=64),
                                    str(tmp_path / name))
        shutil.copy(made["video"], folder / f"{name}.mp4")
    (folder / "broken.mp4").write_bytes(b"\x00" * 64)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, os.path.join(root, "launch.py"), f"--workdir={workdir}",
               "--mode=analyze", f"--video={folder}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    out = os.path.join(workdir, "analysis", "term")  # the default output folder
    assert sorted(os.listdir(out)) == ["index.json", "monday", "tuesday"]
    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)["videos"]
    assert [(os.path.basename(v["video"]), v["status"]) for v in index] == [
        ("broken.mp4", "failed"), ("monday.mp4", "analyzed"), ("tuesday.mp4", "analyzed")]
    assert "broken.mp4" in index[0]["error"] and "2 of 3 videos analysed" in done.stderr + done.stdout
    assert os.path.exists(os.path.join(out, "monday", "annotated.mp4"))
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=root)
    assert again.returncode == 0 and "(2 done before)" in again.stderr + again.stdout
