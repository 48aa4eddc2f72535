"""End-to-end smoke test of the memory classifier on the tiny maneuvers dataset: train, results
contract, checkpoint with memory bank, eval from checkpoint, predict, resume."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import maneuvers_memory
from jaxact.data import pipeline
from jaxact.train import checkpoint, classifier, loop, parallel


@pytest.fixture(scope="module")
def tiny_run(tiny_memory_run):
    return tiny_memory_run


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
    assert saved["config_name"] == "maneuvers_memory:tiny"
    for name in ("confusion_matrix.png", "early_prediction.png", "metrics.jsonl"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    events = os.listdir(os.path.join(workdir, "tensorboard"))
    assert any(e.startswith("events.out.tfevents") for e in events), events
    assert results["top1"] == saved["top1"]
    paired, n = saved["memory_vs_baseline"], saved["num_examples"]
    assert 0.0 < paired["mcnemar_p"] <= 1.0
    assert saved["top1"] - saved["baseline_top1"] == pytest.approx(
        (paired["only_memory_right"] - paired["only_baseline_right"]) / n)


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
    # Every frame of every test view votes.
    num_views = len(classifier.eval_views(config))
    assert 0.0 <= out["score"] <= 1.0 and sum(out["votes"]) == config.data.num_frames * num_views
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
    config = maneuvers_memory.get_config("tiny")
    config.eval.temporal_views = 0
    with pytest.raises(ValueError, match="eval.temporal_views"):
        classifier.validate_config(config, 1)


def test_memory_step_compiles_once_and_bank_is_replicated(tiny_run):
    config, workdir, _ = tiny_run
    exp = classifier.Experiment(config, workdir)
    state = classifier.restore_final(exp, "memory", with_memory=True)
    step = exp.compile_step(chex.assert_max_traces(classifier.make_memory_step(exp.model, config), n=1))
    loader = exp.train_loader()
    for _ in range(3):
        state, metrics = step(state, parallel.shard_batch(next(loader), exp.mesh))
    assert np.isfinite(float(metrics["loss"]))
    shards = [np.asarray(s.data) for s in state.memory.feats.addressable_shards]
    assert len(shards) == jax.device_count() == 8
    for shard in shards[1:]:
        np.testing.assert_array_equal(shard, shards[0])


def test_memory_init_from_aux_checkpoint(tiny_run, tmp_path):
    aux_config, aux_workdir, _ = tiny_run
    config = maneuvers_memory.get_config("tiny")
    config.data.data_dir = aux_config.data.data_dir
    config.memory.init = "checkpoint"
    config.memory.aux_checkpoint = aux_workdir
    config.baseline.enabled = False
    config.eval.observation_ratios = (1.0,)
    exp = classifier.Experiment(config, str(tmp_path))
    aux_exp, aux_params = classifier.load_aux_params(exp)
    # The bank is filled with the auxiliary model's features, not the fresh model's.
    state = exp.with_memory(exp.init_state(with_memory=False))
    batch = parallel.shard_batch(next(iter(exp.eval_loader("train"))), exp.mesh)
    bank = aux_exp.fill_fn(aux_params, state.memory, batch)
    expected, _ = aux_exp.model.apply({"params": aux_params}, batch["video"])
    stored = np.asarray(bank.feats)[np.asarray(bank.valid)]
    want = np.asarray(expected[:, ::config.memory.write_stride]).reshape(-1, stored.shape[-1])
    assert {tuple(np.round(v, 4)) for v in stored} <= {tuple(np.round(v, 4)) for v in want}
    results = classifier.train_and_evaluate(config, str(tmp_path))
    assert 0.0 <= results["top1"] <= 1.0 and "baseline_top1" not in results


def test_memory_init_from_missing_checkpoint_is_clear(tmp_path):
    config = maneuvers_memory.get_config("tiny")
    config.data.data_dir = os.environ.get("JAXACT_DATA_DIR", str(tmp_path / "tfds"))
    config.memory.init = "checkpoint"
    config.memory.aux_checkpoint = str(tmp_path / "nowhere")
    exp = classifier.Experiment(config, str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        classifier.load_aux_params(exp)


def test_read_config_round_trips_and_names_a_missing_workdir(tiny_run, tmp_path):
    config, workdir, _ = tiny_run
    assert loop.read_config(workdir).to_dict() == json.loads(config.to_json())
    with pytest.raises(FileNotFoundError, match=r"workdir='.*nowhere': no config.json"):
        loop.read_config(str(tmp_path / "nowhere"))


def test_softmax_loss_weight_adds_the_head_loss(tiny_run):
    config, workdir, _ = tiny_run
    exp = classifier.Experiment(config, workdir)
    state = classifier.restore_final(exp, "memory", with_memory=True)
    batch = parallel.shard_batch(next(exp.train_loader()), exp.mesh)
    weighted = config.copy_and_resolve_references()
    weighted.memory.softmax_loss_weight = 0.5
    losses = {}
    for name, make, cfg in (("memory", classifier.make_memory_step, config),
                            ("weighted", classifier.make_memory_step, weighted),
                            ("softmax", classifier.make_softmax_step, config)):
        step = exp.compile_step(make(exp.model, cfg))
        _, metrics = step(jax.tree.map(jnp.copy, state), batch)
        losses[name] = float(metrics["loss"])
    np.testing.assert_allclose(losses["weighted"], losses["memory"] + 0.5 * losses["softmax"],
                               rtol=1e-5)
    weighted.memory.softmax_loss_weight = -1.0
    with pytest.raises(ValueError, match="memory.softmax_loss_weight"):
        classifier.validate_config(weighted, 1)
    weighted.memory.softmax_loss_weight, weighted.memory.margin = 0.0, -0.1
    with pytest.raises(ValueError, match="memory.margin"):
        classifier.validate_config(weighted, 1)


def test_predict_video_agrees_with_the_split_evaluation(tiny_run, tmp_path):
    config, workdir, _ = tiny_run
    exp = classifier.Experiment(config, workdir)
    assert len(exp.views) == 6  # the tiny config keeps the default's 3 offsets x mirror
    state = classifier.restore_final(exp, "memory", with_memory=True)
    split = classifier.predict_split(exp, {"memory": (state.params, state.references)}, "test",
                                     views=exp.views)["memory"]
    for i in range(3):
        path = str(tmp_path / f"clip{i}.npy")
        np.save(path, exp.source("test")[i]["video"])
        out = classifier.predict_video(config, workdir, path)
        assert out["class"] == exp.class_names[split["memory_pred"][i]]
        np.testing.assert_array_equal(out["votes"], split["memory_votes"][i])


def test_one_loader_pass_feeds_both_models_without_mixing_them(tiny_run):
    config, workdir, _ = tiny_run
    exp = classifier.Experiment(config, workdir)
    mem = classifier.restore_final(exp, "memory", with_memory=True)
    base = classifier.restore_final(exp, "baseline", with_memory=False)
    models = {"memory": (mem.params, mem.references), "baseline": (base.params, None)}
    views, loader, passes = exp.views[-2:], exp.eval_loader, []
    exp.eval_loader = lambda *args: passes.append(args) or loader(*args)
    both = classifier.predict_split(exp, models, "test", views=views)
    assert len(passes) == len(views)
    assert "memory_pred" in both["memory"] and "memory_pred" not in both["baseline"]
    for name, model in models.items():
        alone = classifier.predict_split(exp, {name: model}, "test", views=views)[name]
        assert set(alone) == set(both[name])
        for key, value in alone.items():
            np.testing.assert_array_equal(both[name][key], value, err_msg=f"{name}/{key}")
    # The two models really differ, so equality above is not one model's outputs twice.
    assert not np.array_equal(both["memory"]["softmax_logp"], both["baseline"]["softmax_logp"])


def _combine(per_view, views, perm):
    return classifier.combine_views(per_view, views, perm, temperature=1.0)


@pytest.mark.parametrize("perm", [[0, 2, 1, 4, 3, 5], [1, 2, 3, 4, 5, 0]])
def test_combine_views_maps_mirrored_classes_back(perm):
    """A mirrored view of a clip of class c is a clip of class perm[c]. A model that is exactly
    mirror-equivariant gives the mirrored view the original's outputs with classes permuted;
    combining must undo that, so both views add the same evidence."""
    perm = np.array(perm)
    rng = np.random.default_rng(0)
    n, t, c = 5, 4, 6
    dist = rng.random((n, t, c)).astype(np.float32)
    logp = np.asarray(jax.nn.log_softmax(rng.normal(size=(n, c)), -1))
    label = rng.integers(0, c, n)
    inverse = np.argsort(perm)
    plain = {"label": label, "softmax_logp": logp, "memory_dist": dist}
    mirrored = {"label": perm[label], "softmax_logp": logp[:, inverse],
                "memory_dist": dist[..., inverse]}
    views = (pipeline.View(), pipeline.View(flip=True))
    one = _combine([plain], views[:1], None)
    both = _combine([plain, mirrored], views, perm)
    np.testing.assert_array_equal(both["label"], label)
    np.testing.assert_array_equal(both["memory_pred"], one["memory_pred"])
    np.testing.assert_array_equal(both["memory_votes"], 2 * one["memory_votes"])
    np.testing.assert_allclose(both["memory_logp"], one["memory_logp"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both["softmax_logp"], logp, rtol=1e-5, atol=1e-6)
    # The mirrored view alone, mapped back, is the plain one.
    alone = _combine([mirrored], views[1:], perm)
    np.testing.assert_array_equal(alone["label"], label)
    np.testing.assert_array_equal(alone["memory_pred"], one["memory_pred"])


def test_combine_views_pools_frame_votes_across_views():
    """Frames of all views vote together: 2 frames for class 0 in one view and 3 for class 1 in
    the other give class 1, although class 0 wins the first view."""
    far, near = 5.0, 1.0
    a = np.full((1, 3, 2), far, np.float32)
    a[0, :2, 0] = near
    a[0, 2, 1] = near
    b = np.full((1, 3, 2), far, np.float32)
    b[0, :, 1] = near
    logp = np.log(np.full((1, 2), 0.5, np.float32))
    views = (pipeline.View(0.25), pipeline.View(0.75))
    out = _combine([{"label": np.zeros(1, int), "softmax_logp": logp, "memory_dist": d}
                    for d in (a, b)], views, None)
    np.testing.assert_array_equal(out["memory_votes"], [[2, 4]])
    assert out["memory_pred"][0] == 1
