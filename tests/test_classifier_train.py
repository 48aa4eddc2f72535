"""End-to-end smoke test of the memory classifier on the tiny maneuvers dataset: train, results
contract, checkpoint with memory bank, eval from checkpoint, predict, resume."""

import json
import os

import jax
import numpy as np
import pytest

from configs import maneuvers_memory
from jaxact.train import checkpoint, classifier


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("memory_run"))
    config = maneuvers_memory.get_config("tiny")
    config.data.data_dir = os.environ.get("JAXACT_DATA_DIR",
                                          str(tmp_path_factory.mktemp("tfds")))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    results = classifier.train_and_evaluate(config, workdir)
    return config, workdir, results


def test_results_contract(tiny_run):
    _, workdir, results = tiny_run
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    for key in ("top1", "mean_class_accuracy", "baseline_top1", "early_prediction", "num_params",
                "train_seconds", "dataset", "config_name"):
        assert key in saved, key
    assert set(saved["early_prediction"]) == {"memory", "baseline"}
    assert set(saved["early_prediction"]["memory"]) == {"0.2", "1.0"}
    assert 0.0 <= saved["top1"] <= 1.0 and saved["num_params"] > 0
    for name in ("confusion_matrix.png", "early_prediction.png", "metrics.jsonl"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    assert results["top1"] == saved["top1"]


def test_checkpoint_holds_memory_bank(tiny_run):
    config, workdir, _ = tiny_run
    exp = classifier.Experiment(config, workdir)
    state = classifier.restore_final(exp, "memory", with_memory=True)
    assert int(state.step) == config.train.num_steps
    valid = np.asarray(jax.device_get(state.memory.valid))
    assert valid.shape == (6, config.memory.capacity) and valid.sum() > 0
    assert np.asarray(state.references.valid).any()


def test_eval_from_checkpoint_reproduces_metrics(tiny_run):
    config, workdir, results = tiny_run
    again = classifier.evaluate_from_checkpoint(config, workdir)
    for key in ("top1", "mean_class_accuracy", "baseline_top1", "early_prediction"):
        assert again[key] == results[key], key


def test_predict_npy_and_bad_input(tiny_run, tmp_path):
    config, workdir, _ = tiny_run
    exp = classifier.Experiment(config, workdir)
    record = exp.source("test")[0]
    path = str(tmp_path / "clip.npy")
    np.save(path, record["video"])
    out = classifier.predict_video(config, workdir, path)
    assert out["class"] in exp.class_names and len(out["top_k"]) == 5
    assert 0.0 <= out["score"] <= 1.0 and sum(out["votes"]) == config.data.num_frames
    bad = str(tmp_path / "bad.npy")
    np.save(bad, np.zeros((4, 7, 7), np.uint8))
    with pytest.raises(ValueError, match="bad.npy"):
        classifier.predict_video(config, workdir, bad)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        classifier.predict_video(config, workdir, str(tmp_path / "missing.npy"))


def test_rerun_resumes_from_final_checkpoints(tiny_run):
    config, workdir, results = tiny_run
    mgr = checkpoint.manager(os.path.join(workdir, "checkpoints", "memory"))
    assert mgr.latest_step() == config.train.num_steps
    again = classifier.train_and_evaluate(config, workdir)  # restores; no further steps
    assert again["top1"] == results["top1"]


def test_config_errors_name_the_field():
    config = maneuvers_memory.get_config("tiny")
    config.memory.distance = "euclidian"
    with pytest.raises(ValueError, match="memory.distance.*euclidean"):
        classifier.validate_config(config, 1)
    config = maneuvers_memory.get_config("tiny")
    config.memory.capacity = 0
    with pytest.raises(ValueError, match="memory.capacity"):
        classifier.validate_config(config, 1)
    config = maneuvers_memory.get_config("tiny")
    config.train.batch_size = 6
    with pytest.raises(ValueError, match="train.batch_size"):
        classifier.validate_config(config, 4)
