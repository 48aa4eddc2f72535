"""Multi-host: `launch.py --distributed` as 2 processes on 127.0.0.1 (CPU collectives, 2 devices
each) trains the tiny memory classifier to the same state as 1 process on 4 devices reading the
same global batches, and only process 0 writes logs, metrics, results and plots.

Each process is a subprocess (tests/multihost_worker.py runs launch.py and records the files it
writes) with its own JAX_PLATFORMS / XLA_FLAGS, under a timeout: a process whose peer is missing
aborts (SIGABRT) instead of raising.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxact.train import classifier, loop, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
NUM_PROCESSES, DEVICES_PER_PROCESS = 2, 2
TIMEOUT_S = 420  # ~110 s per run seen with the CPU shared with another job
RTOL, ATOL = 1e-5, 1e-6
# 2 aux + 2 memory steps, both checkpointed; one eval pass; no baseline phase.
FLAGS = ["--config=configs/maneuvers_memory.py:smoke", "--config.train.num_steps=4",
         "--config.memory.aux_steps=2", "--config.train.checkpoint_every=2",
         "--config.baseline.enabled=False", "--config.eval.observation_ratios=(1.0,)"]
# What only process 0 may write (relative to the workdir; a directory covers its contents).
PROCESS0_OUTPUTS = ("config.json", "class_names.json", "metrics.jsonl", "results.json",
                    "confusion_matrix.png", "early_prediction.png", "tensorboard", "launch.")


def _env(num_devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # conftest set 8 devices
    env.update(JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
               # The coordinator is gRPC on 127.0.0.1: keep any HTTP proxy out of it.
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(jobs: list[tuple[list[str], dict]], logdir: str) -> list[list[str]]:
    """Starts every (flags, env) job at once; returns each one's written paths. Fails with the
    log tail of any job that timed out or exited non-zero (134 = SIGABRT: a peer went missing)."""
    procs = []
    for i, (flags, env) in enumerate(jobs):
        log = open(os.path.join(logdir, f"process{i}.log"), "w")
        cmd = [sys.executable, WORKER, os.path.join(logdir, f"writes{i}.json"), *flags]
        procs.append((subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    failures = []
    for i, (proc, log) in enumerate(procs):
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            failures.append(f"process {i}: no exit after {TIMEOUT_S} s, killed all")
            for other, _ in procs:
                other.kill()
            proc.wait()
        log.close()
        if proc.returncode != 0:
            with open(log.name) as f:
                failures.append(f"process {i}: exit {proc.returncode}\n{f.read()[-3000:]}")
    assert not failures, "\n\n".join(failures)
    written = []
    for i in range(len(jobs)):
        with open(os.path.join(logdir, f"writes{i}.json")) as f:
            written.append(json.load(f))
    return written


def _restore(workdir: str, phase: str) -> dict:
    """The phase's latest checkpointed TrainState as a tree of numpy arrays."""
    phase_dir = os.path.join(workdir, "checkpoints", phase)
    steps = [int(s) for s in os.listdir(phase_dir) if s.isdigit()]
    path = os.path.join(phase_dir, str(max(steps)), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                            checkpointer.metadata(path).item_metadata.tree)
    return checkpointer.restore(path, restore_args=as_numpy)


def _metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _under(paths: list[str], workdir: str) -> set[str]:
    workdir = os.path.abspath(workdir)
    return {os.path.relpath(p, workdir) for p in paths if p.startswith(workdir + os.sep)}


@pytest.fixture(scope="module")
def data_flag(tmp_path_factory):
    return "--config.data.data_dir=" + os.environ.get("JAXACT_DATA_DIR",
                                                      str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_flag):
    """1 process, 4 devices, jit, whose batches are the 2 processes' shards concatenated. It
    also builds the dataset first: 2 processes would generate it into one directory at once."""
    tmp = tmp_path_factory.mktemp("single")
    workdir = str(tmp / "workdir")
    env = {**_env(NUM_PROCESSES * DEVICES_PER_PROCESS), "JAXACT_TEST_SHARDS": str(NUM_PROCESSES)}
    [written] = _run([([*FLAGS, data_flag, f"--workdir={workdir}"], env)], str(tmp))
    return workdir, written


# Both modes train a reference run and two processes (~2 min each on 2 cores): `make test-slow`.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_two_processes_match_one(mode, reference, data_flag, tmp_path):
    if mode not in parallel.MODES:
        pytest.skip(f"parallel.mode={mode!r} not implemented yet")
    ref_workdir, ref_written = reference
    workdir = str(tmp_path / "workdir")  # shared, as on a pod: orbax needs one checkpoint dir
    cluster = [f"--coordinator_address=127.0.0.1:{_free_port()}",
               f"--num_processes={NUM_PROCESSES}"]
    written = _run([([*FLAGS, data_flag, f"--workdir={workdir}", f"--config.parallel.mode={mode}",
                      "--distributed", *cluster, f"--process_id={i}"], _env(DEVICES_PER_PROCESS))
                    for i in range(NUM_PROCESSES)], str(tmp_path))

    # Same final state: params, optimizer, memory bank, references, rng, step.
    expected, actual = _restore(ref_workdir, "memory"), _restore(workdir, "memory")
    assert int(actual["step"]) == 4 and np.asarray(actual["memory"]["valid"]).any()
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected),
                                 jax.tree.leaves(actual), strict=True):
        name = jax.tree_util.keystr(path)
        # An inverse covariance amplifies float noise by its condition number (~3e-5 relative
        # seen): compare it relative to its largest entry.
        atol = RTOL * np.abs(want).max() if "inv_cov" in name else ATOL
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=f"{mode}: {name}")
    for want, got in zip(_metrics(ref_workdir), _metrics(workdir), strict=True):
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in got if k != "phase"],
                                   [want[k] for k in want if k != "phase"], rtol=RTOL, atol=ATOL)
    # The metrics the two processes gathered are those one process computes from their state.
    # (Not the reference run's: after 4 steps, float noise at 1e-7 can flip a k-means assignment
    # of the final references, and with it whole votes.)
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    copy = str(tmp_path / "one_process_eval")
    shutil.copytree(workdir, copy)
    again = classifier.Experiment(loop.read_config(copy), copy).evaluate_from_checkpoint()
    for key in ("top1", "mean_class_accuracy", "early_prediction", "eval_views"):
        assert results[key] == again[key], key

    # Process 0 writes what a single process writes; process 1 only its checkpoint shards.
    for paths, where in ((ref_written, ref_workdir), (written[0], workdir)):
        relpaths = _under(paths, where)
        missing = [name for name in PROCESS0_OUTPUTS
                   if not any(p.startswith(name) for p in relpaths)]
        assert not missing, f"{where}: nothing written for {missing}"
    stray = sorted(p for p in _under(written[1], workdir) if not p.startswith("checkpoints"))
    assert not stray, f"process 1 wrote {stray}"
