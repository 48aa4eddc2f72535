"""The moving average of the params (`train.ema_decay`): the update against a numpy loop, the
state without it unchanged, and a memory-classifier run that reports its averaged params."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxact.train import state as train_state


def _state(ema_decay, lr=0.1):
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
    return train_state.TrainState.create(apply_fn=None, params=params, tx=optax.sgd(lr),
                                         rng=jax.random.key(0), ema_decay=ema_decay)


def _grads(t):
    return {"w": jnp.array([np.sin(t), np.cos(t), 1.0]), "b": jnp.array(0.1 * t)}


def test_average_follows_the_documented_update():
    decay, steps = 0.9, 30
    state = _state(decay)
    step = jax.jit(lambda s, g: s.apply_gradients(grads=g))
    params = {k: np.asarray(v, np.float64) for k, v in state.params.items()}
    ema = {k: v.copy() for k, v in params.items()}
    for t in range(steps):
        state = step(state, _grads(t))
        params = {k: params[k] - 0.1 * np.asarray(_grads(t)[k], np.float64) for k in params}
        d = min(decay, (1.0 + t) / (10.0 + t))  # warm start, then the configured decay
        ema = {k: d * ema[k] + (1 - d) * params[k] for k in params}
    for k in params:
        np.testing.assert_allclose(state.params[k], params[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.ema_params[k], ema[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(state.ema_params["w"], state.params["w"])
    assert train_state.eval_params(state) is state.ema_params
    restarted = state.restart_ema()
    np.testing.assert_array_equal(restarted.ema_params["w"], state.params["w"])
    # After a restart (a new phase) the warm start begins again, whatever the global step.
    again = step(restarted, _grads(steps))
    params = {k: params[k] - 0.1 * np.asarray(_grads(steps)[k], np.float64) for k in params}
    d = min(decay, 1.0 / 10.0)
    for k in params:
        np.testing.assert_allclose(again.ema_params[k], d * np.asarray(state.params[k]) +
                                   (1 - d) * params[k], rtol=1e-5, atol=1e-6)
    assert int(again.ema_count) == 1 and int(again.step) == steps + 1


def test_without_the_average_nothing_changes():
    state = _state(0.0)
    assert state.ema_params is None and train_state.eval_params(state) is state.params
    stepped = state.apply_gradients(grads=_grads(1))
    assert stepped.ema_params is None and stepped.restart_ema().ema_params is None
    # The checkpointed pytree has the same leaves as a state that never knew the average.
    plain = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
             "rng": state.rng}
    assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(plain))


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_decay_out_of_range_is_refused(decay):
    with pytest.raises(ValueError, match="train.ema_decay"):
        _state(decay)


@pytest.mark.parametrize("experiment", ["classifier", "detector"])
def test_bad_decay_fails_before_the_run_leaves_files(experiment, tmp_path):
    from configs import classroom_detector, maneuvers_memory
    from jaxact.train import classifier, detector

    config = (maneuvers_memory if experiment == "classifier" else classroom_detector).get_config(
        "smoke")
    config.data.data_dir = str(tmp_path / "tfds")
    config.train.ema_decay = 1.0
    cls = (classifier if experiment == "classifier" else detector).Experiment
    with pytest.raises(ValueError, match=r"train.ema_decay must be in \[0, 1\), got 1.0"):
        cls(config, str(tmp_path / "run"))
    assert not os.listdir(tmp_path)  # neither the workdir nor a dataset was created


def test_memory_run_reports_its_averaged_params(tmp_path, check_results):
    from configs import maneuvers_memory
    from jaxact.train import classifier

    config = maneuvers_memory.get_config("smoke")
    config.data.data_dir = os.environ.get("JAXACT_DATA_DIR", str(tmp_path / "tfds"))
    config.train.ema_decay = 0.9
    exp = classifier.Experiment(config, str(tmp_path / "run"))
    results = exp.train_and_evaluate()
    state = exp.restore("memory", exp.with_memory(exp.init_state()))
    assert state.ema_params is not None  # checkpointed with the run
    models = exp.restore_final()
    assert all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(models["memory"][0]), jax.tree.leaves(state.ema_params), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(state.ema_params), jax.tree.leaves(state.params), strict=True))
    check_results(exp, results)  # the reported numbers are those of the averaged params
