"""Runs survive what clusters do to them: NaN/inf updates are skipped and counted; SIGTERM saves at
the next step and exits 0; after SIGKILL at a random step the same command resumes to
bitwise-identical params."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import jhmdb_memory
from jaxact.train import checkpoint, classifier, loop
from jaxact.train.state import TrainState, make_optimizer
from tests.test_sequences import synthetic_joint_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- non-finite guard


def tiny_softmax_setup():
    config = jhmdb_memory.get_config("smoke")
    config.train.max_nonfinite_steps = 3
    model = classifier.build_model(config.model, num_classes=3)
    video = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 30)), jnp.float32)
    params = model.init(jax.random.key(0), video)["params"]
    state = TrainState.create(apply_fn=model.apply, params=params,
                              tx=make_optimizer(config.train), rng=jax.random.key(1))
    step = jax.jit(classifier.make_softmax_step(model, config.train.frame_loss_weight))
    batch = {"video": video, "label": jnp.array([0, 1, 2, 0]), "mask": jnp.ones(4, bool)}
    return config, state, step, batch


def test_nonfinite_update_is_skipped_and_counted():
    config, state, step, batch = tiny_softmax_setup()
    bad = {**batch, "video": batch["video"].at[1, 3, 5].set(jnp.nan)}
    before = jax.device_get(state.params)
    state, metrics = step(state, bad)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)
    assert int(metrics["nonfinite_streak"]) == 1 and int(metrics["nonfinite_total"]) == 1
    assert int(state.step) == 1  # the batch is consumed: data position and step stay aligned
    for _ in range(2):  # the schedule's first learning rate is 0 (warmup from 0)
        state, metrics = step(state, batch)
    assert int(metrics["nonfinite_streak"]) == 0 and int(metrics["nonfinite_total"]) == 1
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(state.params),
                           before)
    assert any(jax.tree.leaves(changed))


def test_nonfinite_streak_stops_with_a_clear_error():
    config, state, step, batch = tiny_softmax_setup()
    bad = {**batch, "video": jnp.full_like(batch["video"], jnp.inf)}
    for _ in range(config.train.max_nonfinite_steps):
        state, metrics = step(state, bad)
    with pytest.raises(FloatingPointError, match="3 updates in a row.*max_nonfinite_steps=3"):
        loop.check_nonfinite("aux", 3, jax.device_get(metrics), config.train.max_nonfinite_steps)
    loop.check_nonfinite("aux", 2, {"nonfinite_streak": 2}, 3)  # below the limit: no error


# ----------------------------------------------------------------------------- kill / preempt


@pytest.fixture(scope="module")
def run_command(tmp_path_factory):
    data = tmp_path_factory.mktemp("joints")
    train = synthetic_joint_split(data / "train.npz", 12, 0)
    test = synthetic_joint_split(data / "test.npz", 4, 1)

    def command(workdir):
        return [sys.executable, os.path.join(ROOT, "launch.py"),
                "--config=" + os.path.join(ROOT, "configs/jhmdb_memory.py:smoke"),
                f"--workdir={workdir}", f"--config.data.train_path={train}",
                f"--config.data.test_path={test}", "--config.train.num_steps=16",
                "--config.memory.aux_steps=6", "--config.train.checkpoint_every=4",
                "--config.train.log_every=1", "--config.eval.observation_ratios=(1.0,)"]

    return command


def final_params(workdir):
    """phase -> (latest step, params, memory bank or None) of the run's checkpoints."""
    out = {}
    for phase in ("memory", "baseline"):
        mgr = checkpoint.manager(os.path.join(workdir, "checkpoints", phase))
        step = mgr.latest_step()
        restored = mgr.restore(step)  # raw arrays, no target needed to compare bits
        out[phase] = (step, restored["state"]["params"], restored["state"].get("memory"))
    return out


def wait_for_lines(path, count, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {count} steps")
        if os.path.exists(path) and sum(1 for _ in open(path)) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} lines after {timeout}s")


@pytest.fixture(scope="module")
def reference_run(run_command, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    subprocess.run(run_command(workdir), check=True, capture_output=True, timeout=300)
    return final_params(workdir)


def assert_same_final_state(workdir, reference):
    got = final_params(workdir)
    for phase in ("memory", "baseline"):
        assert got[phase][0] == reference[phase][0] == 16
        jax.tree.map(np.testing.assert_array_equal, got[phase][1], reference[phase][1])
    assert got["memory"][2] is not None and got["baseline"][2] is None  # only memory has a bank
    jax.tree.map(np.testing.assert_array_equal, got["memory"][2], reference["memory"][2])


@pytest.mark.slow  # 2.5-3.5 min on 2 cores with its reference run: `make test-slow`
def test_sigterm_then_sigkill_resume_to_the_uninterrupted_result(run_command, reference_run,
                                                                 tmp_path):
    """One run is preempted (SIGTERM) inside the memory phase, restarted, killed (SIGKILL) at a
    random later step, and restarted again: it must end exactly where an uninterrupted run ends."""
    workdir = str(tmp_path / "interrupted")
    metrics = os.path.join(workdir, "metrics.jsonl")
    proc = subprocess.Popen(run_command(workdir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for_lines(metrics, 9, proc)  # aux has 6 steps: this is inside the memory phase
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    with open(os.path.join(workdir, "launch.INFO")) as f:
        assert "preempted: saved step" in f.read()
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    saved = checkpoint.manager(os.path.join(workdir, "checkpoints", "memory")).latest_step()
    with open(metrics) as f:
        records = [json.loads(line) for line in f]
    # The checkpoint is the step at which the signal was seen, not the last periodic one.
    assert records[-1]["phase"] == "memory" and saved == records[-1]["step"] < 16

    # Lines so far + a random number more (memory 10 + baseline 10 steps in all; log_every=1).
    kill_at = len(records) + int(np.random.default_rng().integers(1, 26 - len(records)))
    proc = subprocess.Popen(run_command(workdir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_lines(metrics, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    subprocess.run(run_command(workdir), check=True, capture_output=True, timeout=300)
    assert os.path.exists(os.path.join(workdir, "results.json"))
    assert_same_final_state(workdir, reference_run)
