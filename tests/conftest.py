"""Test setup: simulate 8 CPU devices before JAX initialises its backend."""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# Many tests build the same tiny programs again (new Experiment objects, and the subprocess runs of
# the resilience and multi-host tests), so a session-wide persistent compilation cache saves minutes.
# Fresh per session and inherited by subprocesses and pytest-xdist workers; a cache hit is the same
# executable, so bitwise comparisons are unaffected. A size limit turns on JAX's file lock, so
# concurrent processes never read an entry that another one is still writing.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="jaxact_xla_cache_")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))


@pytest.fixture(scope="session")
def tiny_memory_run(tmp_path_factory):
    """(config, workdir, results) of one tiny memory-classifier run, shared by the tests that
    inspect a finished run. Treat the workdir as read-only (copy it to change it)."""
    from configs import maneuvers_memory
    from jaxact.train import classifier

    workdir = str(tmp_path_factory.mktemp("memory_run"))
    config = maneuvers_memory.get_config("smoke")
    config.data.data_dir = os.environ.get("JAXACT_DATA_DIR",
                                          str(tmp_path_factory.mktemp("tfds")))
    with open(os.path.join(workdir, "config.json"), "w") as f:  # as launch.py writes it
        f.write(config.to_json_best_effort())
    results = classifier.Experiment(config, workdir).train_and_evaluate()
    return config, workdir, results


def check_results_against_checkpoints(exp, results: dict) -> None:
    """Asserts that `results` of a finished memory-classifier run are the metrics of its final
    checkpoints: the per-clip outputs of the restored models are recomputed here and every
    headline number is counted again in numpy, on the split's own labels (every clip once, in
    order, no padding). A run that reported another model's numbers, lost or repeated clips, or
    mixed up the memory classifier and its baseline fails, whatever its accuracy."""
    import jax
    import numpy as np

    from jaxact.data import pipeline

    split = exp.config.eval.split
    source = exp.data.source(split)
    labels = np.array([source[i]["label"] for i in range(len(source))])
    models = exp.restore_final()
    evaluator = exp.classification_evaluator()
    out = evaluator.outputs(models)
    memory = out["memory"]
    np.testing.assert_array_equal(memory["label"], labels)
    correct = memory["memory_pred"] == labels
    classes = np.unique(labels)
    assert results["num_examples"] == len(labels) and results["eval_views"] == len(exp.views)
    assert results["top1"] == pytest.approx(correct.mean(), abs=1e-12)
    assert results["mean_class_accuracy"] == pytest.approx(
        np.mean([correct[labels == c].mean() for c in classes]), abs=1e-12)
    # Top-5 of the memory scores: fewer than 5 classes score strictly higher than the label.
    logp = memory["memory_logp"]
    higher = (logp > logp[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    assert results["top5_scores"] == pytest.approx(
        np.mean(higher < min(5, len(exp.class_names))), abs=1e-12)
    assert results["num_params"] == sum(np.size(x) for x in jax.tree.leaves(models["memory"][0]))
    if exp.config.baseline.enabled:
        base = out["baseline"]["softmax_pred"] == labels
        assert results["baseline_top1"] == pytest.approx(base.mean(), abs=1e-12)
        assert results["memory_vs_baseline"]["only_memory_right"] == int(np.sum(correct & ~base))
        assert results["memory_vs_baseline"]["only_baseline_right"] == int(np.sum(base & ~correct))
    else:
        assert "baseline" not in models and "baseline_top1" not in results
    # Early prediction: the centre view of the first `ratio` of every clip.
    ratios = tuple(exp.config.eval.observation_ratios)
    keys = {"memory": "memory_pred", "baseline": "softmax_pred"}
    limit = results["early_prediction"].get("bayes_limit")
    if limit is not None:  # the data's ceiling: every ratio, a probability, reached at 1.0
        assert set(limit) == {f"{r:.1f}" for r in ratios}
        assert all(0.0 <= v <= 1.0 for v in limit.values()) and limit.get("1.0", 1.0) > 0.99
    for name, curve in results["early_prediction"].items():
        if name == "bayes_limit":
            continue
        assert set(curve) == ({f"{r:.1f}" for r in ratios} if name in models else set()), name
    for ratio in ratios:
        early = evaluator.outputs(models, ratio, views=(pipeline.CENTRE_VIEW,))
        for name in models:
            pred = early[name][keys[name]]
            assert results["early_prediction"][name][f"{ratio:.1f}"] == pytest.approx(
                np.mean(pred == labels), abs=1e-12), (name, ratio)


@pytest.fixture(scope="session")
def check_results():
    """`check_results_against_checkpoints` for the tests of finished runs."""
    return check_results_against_checkpoints
