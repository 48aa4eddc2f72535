"""End-to-end tests of the memory classifier: on the tiny maneuvers dataset (train, results
contract, checkpoint with memory bank, eval from checkpoint, predict, resume), config validation,
and a small problem on which the memory phase must learn."""

import dataclasses
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sequences import synthetic_joint_split

from configs import jhmdb_memory, maneuvers_memory
from jaxact import settings
from jaxact.data import pipeline
from jaxact.models import memory as memlib
from jaxact.train import classifier, loop, parallel


@pytest.fixture(scope="module")
def tiny_run(tiny_memory_run):
    return tiny_memory_run


@pytest.fixture(scope="module")
def tiny_exp(tiny_run):
    """A second Experiment on the finished run's workdir (compiled programs are shared)."""
    config, workdir, _ = tiny_run
    return classifier.Experiment(config, workdir)


def restore_memory_state(exp):
    """The final memory-phase state (bank included), references recomputed from its bank."""
    return exp.programs.refresh(exp.restore("memory", exp.with_memory(exp.init_state())))


def test_results_contract(tiny_run, tiny_exp, check_results):
    _, workdir, results = tiny_run
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    for key in ("top1", "mean_class_accuracy", "baseline_top1", "early_prediction", "num_params",
                "train_seconds", "dataset", "config_name"):
        assert key in saved, key
    assert set(saved["early_prediction"]) == {"memory", "baseline", "bayes_limit"}
    assert set(saved["early_prediction"]["memory"]) == {"0.2", "1.0"}
    # No starting actions in maneuvers/tiny: at 20 % (before every onset) chance is the limit.
    limit = saved["early_prediction"]["bayes_limit"]
    assert limit["0.2"] == pytest.approx(1 / 6, abs=0.01) and limit["1.0"] > 0.99
    assert saved["config_name"] == "maneuvers_memory:smoke"
    assert saved["class_names"] == tiny_exp.class_names and saved["eval_views"] == 6
    for name in ("confusion_matrix.png", "early_prediction.png", "metrics.jsonl"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    events = os.listdir(os.path.join(workdir, "tensorboard"))
    assert any(e.startswith("events.out.tfevents") for e in events), events
    for key in ("top1", "mean_class_accuracy", "baseline_top1", "early_prediction",
                "memory_vs_baseline", "num_params"):
        assert results[key] == saved[key], key
    paired, n = saved["memory_vs_baseline"], saved["num_examples"]
    assert 0.0 < paired["mcnemar_p"] <= 1.0
    assert saved["top1"] - saved["baseline_top1"] == pytest.approx(
        (paired["only_memory_right"] - paired["only_baseline_right"]) / n)
    # The numbers are those of the final checkpoints, recounted clip by clip.
    check_results(tiny_exp, saved)


def test_checkpoint_holds_memory_bank(tiny_run, tiny_exp):
    config, _, _ = tiny_run
    state = restore_memory_state(tiny_exp)
    assert int(state.step) == config.train.num_steps
    valid = np.asarray(jax.device_get(state.memory.valid))
    assert valid.shape == (6, config.memory.capacity) and valid.sum() > 0
    assert np.asarray(state.references.valid).any()
    # restore_final hands the evaluators the same params and references.
    params, references = tiny_exp.restore_final()["memory"]
    chex.assert_trees_all_equal(params, state.params)
    chex.assert_trees_all_equal(references, state.references)


def test_eval_from_checkpoint_reproduces_metrics(tiny_run):
    config, workdir, results = tiny_run
    again = classifier.Experiment(config, workdir).evaluate_from_checkpoint()
    for key in ("top1", "mean_class_accuracy", "baseline_top1", "early_prediction",
                "memory_vs_baseline", "num_params", "train_seconds", "total_train_seconds"):
        assert again[key] == results[key], key


def test_predict_npy_and_bad_input(tiny_run, tiny_exp, tmp_path):
    config, _, _ = tiny_run
    exp = tiny_exp
    record = exp.data.source("test")[0]
    path = str(tmp_path / "clip.npy")
    np.save(path, record["video"])
    out = exp.predict_video(path)
    assert out["class"] in exp.class_names and len(out["top_k"]) == 5
    # Every frame of every test view votes.
    assert 0.0 <= out["score"] <= 1.0
    assert sum(out["votes"].values()) == config.data.num_frames * len(exp.views)
    assert set(out["votes"]) <= set(exp.class_names)
    assert out["baseline"]["class"] in exp.class_names and len(out["baseline"]["top_k"]) == 5
    domain = out["domain"]
    assert domain["bank_threshold"] > 0 and domain["ood_score"] == pytest.approx(
        domain["nearest_reference_distance"] / domain["bank_threshold"], rel=1e-3)
    bad = str(tmp_path / "bad.npy")
    np.save(bad, np.zeros((4, 7, 7, 2), np.uint8))
    with pytest.raises(ValueError, match="bad.npy.*2 channels"):
        exp.predict_video(bad)
    # Float frames in [0, 1] are the same clip: the same answer, never an all-black clip's.
    floats = str(tmp_path / "floats.npy")
    np.save(floats, record["video"].astype(np.float32) / 255.0)
    assert exp.predict_video(floats) == {**out, "video": floats}
    np.save(floats, record["video"].astype(np.float32) + 300.0)
    with pytest.raises(ValueError, match=r"floats.npy.*values in \[3\d\d, \d+\], expected \[0, 255\]"):
        exp.predict_video(floats)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        exp.predict_video(str(tmp_path / "missing.npy"))


def test_domain_threshold_is_the_banks_99th_percentile_distance(tiny_exp):
    """Against numpy: each stored vector's squared distance to its nearest valid reference of any
    class; the out-of-domain limit is their 99th percentile."""
    exp = tiny_exp
    assert exp.memory.distance == "sqeuclidean"
    state = restore_memory_state(exp)
    exp.models(state, None)
    bank, refs = jax.device_get((state.memory, state.references))
    vectors = np.asarray(bank.feats)[np.asarray(bank.valid)]
    centres = np.asarray(refs.refs)[np.asarray(refs.valid)]
    dist = ((vectors[:, None, :] - centres[None, :, :]) ** 2).sum(-1).min(axis=1)
    assert exp.domain_threshold == pytest.approx(np.quantile(dist, 0.99), rel=1e-4)


def test_rerun_resumes_from_final_checkpoints(tiny_run):
    config, workdir, results = tiny_run
    exp = classifier.Experiment(config, workdir)
    assert exp.checkpoint_manager("memory").latest_step() == config.train.num_steps
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = f.readlines()
    again = exp.train_and_evaluate()  # restores; no further steps
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert f.readlines() == logged
    for key in ("top1", "mean_class_accuracy", "baseline_top1", "early_prediction",
                "memory_vs_baseline", "num_params"):
        assert again[key] == results[key], key


@pytest.mark.parametrize("field, value, match", [
    ("memory.distance", "euclidian", "memory.distance.*euclidean"),
    ("memory.capacity", 0, "memory.capacity"),
    ("memory.loss_on", "some", "memory.loss_on"),
    ("memory.softmax_loss_weight", -1.0, "memory.softmax_loss_weight"),
    ("memory.margin", -0.1, "memory.margin"),
    ("memory.capacty", 16, r"unknown field.*memory.capacty"),  # a typo'd field
    ("memory.aux_steps", 8, r"memory.aux_steps=8 must be in \(0, train.num_steps=8\)"),
    ("train.batch_size", 6, "train.batch_size=6.*multiple of the number of devices"),
    ("eval.batch_size", 12, "eval.batch_size=12"),
    ("eval.temporal_views", 0, "eval.temporal_views"),
    ("parallel.mode", "shard", "parallel.mode='shard'"),
])
def test_config_errors_name_the_field_before_creating_anything(field, value, match, tmp_path):
    config = maneuvers_memory.get_config("smoke")
    section, name = field.split(".")
    config[section][name] = value
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        classifier.Experiment(config, str(workdir))
    assert not workdir.exists()  # validation runs before the workdir or the data are made


def test_memory_step_compiles_once_and_bank_is_replicated(tiny_run, tiny_exp):
    config, _, _ = tiny_run
    exp = tiny_exp
    state = restore_memory_state(exp)
    step = exp.data_parallel.train_step(chex.assert_max_traces(classifier.make_memory_step(
        exp.model, exp.memory, config.train.frame_loss_weight), n=1))
    loader = exp.train_loader()
    for _ in range(3):
        state, metrics = step(state, parallel.shard_batch(next(loader), exp.mesh))
    assert np.isfinite(float(metrics["loss"]))
    shards = [np.asarray(s.data) for s in state.memory.feats.addressable_shards]
    assert len(shards) == jax.device_count() == 8
    for shard in shards[1:]:
        np.testing.assert_array_equal(shard, shards[0])


def test_experiments_with_equal_settings_share_their_programs(tiny_run, tiny_exp):
    config, _, _ = tiny_run
    assert classifier.Experiment(config, tiny_exp.workdir).programs is tiny_exp.programs
    other = config.copy_and_resolve_references()
    other.memory.temperature = 0.5
    assert classifier.Experiment(other, tiny_exp.workdir).programs is not tiny_exp.programs


def test_memory_init_from_aux_checkpoint(tiny_run, tmp_path, check_results):
    aux_config, aux_workdir, _ = tiny_run
    config = maneuvers_memory.get_config("smoke")
    config.data.data_dir = aux_config.data.data_dir
    config.memory.init = "checkpoint"
    config.memory.aux_checkpoint = aux_workdir
    config.baseline.enabled = False
    config.eval.observation_ratios = (1.0,)
    exp = classifier.Experiment(config, str(tmp_path))
    aux_exp, aux_params = exp.load_aux_params()
    # The auxiliary model is the run's baseline (its last softmax state).
    baseline_params, _ = aux_exp.restore_final()["baseline"]
    chex.assert_trees_all_equal(aux_params, baseline_params)
    # The bank is filled with the auxiliary model's features, not the fresh model's.
    state = exp.with_memory(exp.init_state())
    batch = parallel.shard_batch(next(iter(exp.eval_loader("train"))), exp.mesh)
    bank = aux_exp.programs.fill(aux_params, state.memory, batch)
    expected, _ = aux_exp.model.apply({"params": aux_params}, batch["video"])
    stored = np.asarray(bank.feats)[np.asarray(bank.valid)]
    want = np.asarray(expected[:, ::config.memory.write_stride]).reshape(-1, stored.shape[-1])
    assert len(stored) > 0
    assert {tuple(np.round(v, 4)) for v in stored} <= {tuple(np.round(v, 4)) for v in want}
    results = exp.train_and_evaluate()
    assert "baseline_top1" not in results
    assert not os.path.exists(os.path.join(str(tmp_path), "checkpoints", "aux"))  # no pre-training
    check_results(exp, results)


@pytest.mark.slow  # ~40 s of a worker; the box-track input is tested in test_pipeline.py
def test_target_track_trains_end_to_end_and_needs_boxes_to_predict(tiny_run, tmp_path,
                                                                     check_results):
    config = maneuvers_memory.get_config("smoke")
    config.data.data_dir = tiny_run[0].data.data_dir
    config.data.target_track = True
    config.baseline.enabled = False
    config.eval.observation_ratios = (0.5, 1.0)
    exp = classifier.Experiment(config, str(tmp_path))
    results = exp.train_and_evaluate()
    check_results(exp, results)  # the evaluation fed the track as training did
    # The LSTM reads the frame embedding and the track: 4 gates' input kernels grow by the
    # track's width, in each direction; nothing else changes.
    frames_only = classifier.Experiment(tiny_run[0], tiny_run[1]).init_state().params
    directions = 2 if config.model.bidirectional else 1
    assert results["num_params"] - classifier.count_params(frames_only) == (
        directions * 4 * config.model.hidden_size * pipeline.TRACK_FEATURES)
    clip = str(tmp_path / "clip.npy")  # a user's clip file comes without boxes
    np.save(clip, exp.data.source("test")[0]["video"])
    with pytest.raises(ValueError, match="data.target_track"):
        exp.predict_video(clip)


@pytest.mark.slow  # ~40 s of a worker; the window itself is tested in test_pipeline.py
def test_target_window_alone_trains_end_to_end(tiny_run, tmp_path, check_results):
    config = maneuvers_memory.get_config("smoke")
    config.data.data_dir = tiny_run[0].data.data_dir
    config.data.target_crop, config.data.target_only = 8, True
    config.model.frame_encoder_kwargs.patch_size = 2
    config.baseline.enabled = False
    config.eval.observation_ratios = (1.0,)
    exp = classifier.Experiment(config, str(tmp_path))
    assert next(iter(exp.eval_loader("test")))["video"].shape[2:] == (8, 8, 3)
    check_results(exp, exp.train_and_evaluate())


def test_memory_init_from_missing_checkpoint_is_clear(tmp_path):
    config = maneuvers_memory.get_config("smoke")
    config.data.data_dir = os.environ.get("JAXACT_DATA_DIR", str(tmp_path / "tfds"))
    config.memory.init = "checkpoint"
    config.memory.aux_checkpoint = str(tmp_path / "nowhere")
    exp = classifier.Experiment(config, str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        exp.load_aux_params()
    config.memory.aux_checkpoint = ""
    with pytest.raises(ValueError, match="memory.aux_checkpoint"):
        classifier.Experiment(config, str(tmp_path / "run2"))


def test_read_config_round_trips_and_names_a_missing_workdir(tiny_run, tmp_path):
    config, workdir, _ = tiny_run
    assert loop.read_config(workdir).to_dict() == json.loads(config.to_json())
    with pytest.raises(FileNotFoundError, match=r"workdir='.*nowhere': no config.json"):
        loop.read_config(str(tmp_path / "nowhere"))


def test_old_workdir_configs_get_the_values_their_runs_used(tiny_run, tmp_path):
    """Fields added to the configs later are filled in with the values older runs used, so an
    old workdir still builds its settings, model and views."""
    config, _, _ = tiny_run
    raw = json.loads(config.to_json())
    for section, name in (("memory", "margin"), ("memory", "softmax_loss_weight"),
                          ("model", "normalize_features"), ("eval", "temporal_views"),
                          ("eval", "flip_view"), ("train", "optimizer")):
        del raw[section][name]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    old = loop.read_config(str(tmp_path))
    assert (old.memory.margin, old.memory.softmax_loss_weight) == (0.0, 0.0)
    assert old.model.normalize_features is False and old.train.optimizer == "adamw"
    assert (old.eval.temporal_views, old.eval.flip_view) == (1, False)
    memory = settings.from_section(memlib.MemorySettings, old.memory, "memory")
    assert memory == dataclasses.replace(
        settings.from_section(memlib.MemorySettings, config.memory), softmax_loss_weight=0.0,
        margin=0.0)
    assert classifier.build_model(old.model, 6).normalize_features is False


def test_softmax_loss_weight_adds_the_head_loss(tiny_run, tiny_exp):
    config, _, _ = tiny_run
    exp = tiny_exp
    state = restore_memory_state(exp)
    batch = parallel.shard_batch(next(exp.train_loader()), exp.mesh)
    weighted = dataclasses.replace(exp.memory, softmax_loss_weight=0.5)
    frame_weight = config.train.frame_loss_weight
    losses = {}
    for name, step_fn in (
            ("memory", classifier.make_memory_step(exp.model, exp.memory, frame_weight)),
            ("weighted", classifier.make_memory_step(exp.model, weighted, frame_weight)),
            ("softmax", classifier.make_softmax_step(exp.model, frame_weight))):
        step = exp.data_parallel.train_step(step_fn)
        _, metrics = step(jax.tree.map(jnp.copy, state), batch)
        losses[name] = float(metrics["loss"])
    np.testing.assert_allclose(losses["weighted"], losses["memory"] + 0.5 * losses["softmax"],
                               rtol=1e-5)
    assert losses["softmax"] > 0


def test_predict_video_agrees_with_the_split_evaluation(tiny_exp, tmp_path):
    exp = tiny_exp
    assert len(exp.views) == 6  # the smoke config keeps the default's 3 offsets x mirror
    split = exp.classification_evaluator().outputs(exp.restore_final())["memory"]
    for i in range(3):
        path = str(tmp_path / f"clip{i}.npy")
        np.save(path, exp.data.source("test")[i]["video"])
        out = exp.predict_video(path)
        pred = split["memory_pred"][i]
        assert out["class"] == exp.class_names[pred]
        votes = [out["votes"].get(name, 0) for name in exp.class_names]
        np.testing.assert_array_equal(votes, split["memory_votes"][i])
        assert out["domain"]["nearest_reference_distance"] == pytest.approx(
            split["memory_nearest"][i], rel=1e-5)
        probs = np.exp(split["memory_logp"][i])
        assert out["score"] == pytest.approx(probs[pred], rel=1e-5)
        order = np.argsort(-probs)[:5]
        assert [name for name, _ in out["top_k"]] == [exp.class_names[c] for c in order]
        np.testing.assert_allclose([p for _, p in out["top_k"]], probs[order], rtol=1e-5)


def test_one_loader_pass_feeds_both_models_without_mixing_them(tiny_exp):
    exp = tiny_exp
    models = exp.restore_final()
    assert set(models) == {"memory", "baseline"} and models["baseline"][1] is None
    views, passes = exp.views[-2:], []

    def counting_loader(*args):
        passes.append(args)
        return exp.eval_loader(*args)

    evaluator = dataclasses.replace(exp.classification_evaluator(), loader=counting_loader)
    both = evaluator.outputs(models, views=views)
    assert len(passes) == len(views)
    assert "memory_pred" in both["memory"] and "memory_pred" not in both["baseline"]
    for name, model in models.items():
        alone = evaluator.outputs({name: model}, views=views)[name]
        assert set(alone) == set(both[name])
        for key, value in alone.items():
            np.testing.assert_array_equal(both[name][key], value, err_msg=f"{name}/{key}")
    # The two models really differ, so equality above is not one model's outputs twice.
    assert not np.array_equal(both["memory"]["softmax_logp"], both["baseline"]["softmax_logp"])


# ----------------------------------------------------------------------------- it learns


def test_memory_phase_learns_a_small_problem(tmp_path):
    """Three joint-motion classes (one wrist rises, waves or stays still). From an untrained
    encoder whose features fill the memory, the memory phase alone (memory loss only, reference
    refreshes, written-back features), run by the training loop, makes its loss fall and its
    accuracy rise, as the step's metrics logged by the loop show. Seen (seed 0): loss 2.1 ->
    0.4, accuracy 0.64 -> 1.0; chance is a loss of 2 ln 3 = 2.2 and an accuracy of 1/3."""
    config = jhmdb_memory.get_config("smoke")
    config.data.train_path = synthetic_joint_split(tmp_path / "train.npz", 16, 0)
    config.data.test_path = synthetic_joint_split(tmp_path / "test.npz", 2, 1)
    for field in ("mirror_prob", "rotation_degrees", "scale_range"):
        config.data[field] = 0.0
    config.data.features = ("coords", "distances", "motion")  # the setup the numbers were seen on
    config.model.dropout_rate = 0.0
    config.train.batch_size = 16
    config.train.learning_rate = 1e-2
    config.train.num_steps = 28
    config.train.log_every = 1
    exp = classifier.Experiment(config, str(tmp_path / "run"))
    assert exp.memory.loss_on == "all" and exp.memory.softmax_loss_weight == 0.0
    state = exp.fill_memory(exp.with_memory(exp.init_state()))
    filled = np.asarray(jax.device_get(state.memory.valid)).sum(axis=1)
    assert np.all(filled > 0), filled  # every class has references from the start
    refresh_every = exp.memory.refresh_every
    state = exp.run_phase(
        "memory", state, exp.programs.memory_step, exp.train_loader(1), config.train.num_steps,
        on_step=lambda s, step: exp.programs.refresh(s) if step % refresh_every == 0 else s)
    assert int(state.step) == config.train.num_steps

    with open(os.path.join(exp.workdir, "metrics.jsonl")) as f:
        memory = [json.loads(line) for line in f]
    assert [r["step"] for r in memory] == list(range(1, config.train.num_steps + 1))
    first, last = memory[:5], memory[-5:]

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    assert mean(first, "loss") > 1.8, memory  # starts near chance
    assert mean(last, "loss") < 0.4 * mean(first, "loss"), memory
    assert mean(last, "accuracy") >= mean(first, "accuracy") + 0.2, memory
    assert mean(last, "accuracy") >= 0.9, memory
    assert all(r["trained_fraction"] == 1.0 for r in memory)  # loss_on='all'
    # Correctly classified clips were written back: the bank holds more than the fill.
    written = np.asarray(jax.device_get(state.memory.count))
    assert np.all(written > filled), (written, filled)
