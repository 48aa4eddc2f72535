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
    config = maneuvers_memory.get_config("tiny")
    config.data.data_dir = os.environ.get("JAXACT_DATA_DIR",
                                          str(tmp_path_factory.mktemp("tfds")))
    with open(os.path.join(workdir, "config.json"), "w") as f:  # as launch.py writes it
        f.write(config.to_json_best_effort())
    results = classifier.train_and_evaluate(config, workdir)
    return config, workdir, results
