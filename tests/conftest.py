"""Test setup: simulate 8 CPU devices before JAX initialises its backend."""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()


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
