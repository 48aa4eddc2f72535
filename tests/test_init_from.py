"""`train.init_from` (fine-tuning a detector from another run's parameters): the source run is
checked before anything is built, and training starts from its parameters with a fresh
optimizer state and step."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import classroom_detector, maneuvers_memory
from jaxact.train import checkpoint, detector


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return os.environ.get("JAXACT_DATA_DIR", str(tmp_path_factory.mktemp("tfds")))


def _write_run(workdir, config, class_names=None):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(json.loads(config.to_json_best_effort()), f)  # as launch.py saves it
    if class_names is not None:
        with open(os.path.join(workdir, "class_names.json"), "w") as f:
            json.dump(class_names, f)


def _config(data_dir, **train):
    config = classroom_detector.get_config("smoke")
    config.data.data_dir = data_dir
    config.train.update(train)
    return config


def test_the_source_run_is_checked_before_anything_is_built(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    config = _config(str(tmp_path / "tfds"), init_from=src)

    def fails(error, match):
        with pytest.raises(error, match=match):
            detector.Experiment(config, dst)
        assert not os.path.exists(dst) and not os.path.exists(tmp_path / "tfds")

    fails(FileNotFoundError, "train.init_from=.*no config.json")
    _write_run(src, maneuvers_memory.get_config("smoke"))
    fails(ValueError, "train.init_from=.*'memory_classifier' run")
    other = _config(str(tmp_path / "tfds"))
    other.model.fpn_dim = 32
    other.model.backbone.widths = (8, 16, 16)
    _write_run(src, other)
    fails(ValueError, r"its model differs in model\.backbone\.widths, model\.fpn_dim$")
    same = _config(str(tmp_path / "tfds"))
    same.model.dtype = "bfloat16"  # compute dtype only: the parameters fit
    same.model.head.spatial = "keyframe"  # which frames the spatial branch reads: they fit
    _write_run(src, same)  # the same model (tuples saved as lists)
    fails(FileNotFoundError, "train.init_from=.*no 'detector' checkpoint")


def test_training_starts_from_the_source_parameters(tmp_path, data_dir):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    source = detector.Experiment(_config(data_dir), src)
    trained = source.init_state()
    trained = trained.replace(params=jax.tree.map(lambda p: p + 0.5, trained.params),
                              step=trained.step + 7)
    mgr = checkpoint.manager(os.path.join(src, "checkpoints", detector.PHASE))
    checkpoint.save(mgr, 7, trained)
    mgr.wait_until_finished()
    _write_run(src, source.config, list(source.class_names))

    tuned = detector.Experiment(_config(data_dir, init_from=src), dst)
    start, fresh = tuned.initial_state(), tuned.init_state()
    jax.tree.map(np.testing.assert_array_equal, start.params, trained.params)
    jax.tree.map(np.testing.assert_array_equal, start.opt_state, fresh.opt_state)
    assert int(start.step) == 0
    # Without init_from the run starts from its own initialisation.
    plain = detector.Experiment(_config(data_dir), str(tmp_path / "plain"))
    jax.tree.map(np.testing.assert_array_equal, plain.initial_state().params, fresh.params)

    _write_run(src, source.config, ["sit", "stand"])
    with pytest.raises(ValueError, match="train.init_from=.*trained on classes"):
        detector.Experiment(_config(data_dir, init_from=src), dst).initial_state()

    # Once the run has a checkpoint of its own (a resume, eval, analysis), the source is never
    # read again: it may be gone.
    own = checkpoint.manager(os.path.join(dst, "checkpoints", detector.PHASE))
    checkpoint.save(own, 1, fresh)
    own.wait_until_finished()
    shutil.rmtree(src)
    resumed = detector.Experiment(_config(data_dir, init_from=src), dst)
    jax.tree.map(np.testing.assert_array_equal, resumed.initial_state().params, fresh.params)


def test_class_names_are_recorded_once_and_then_checked(tmp_path):
    from jaxact.train import loop

    assert loop.recorded_class_names(str(tmp_path)) is None
    loop.check_class_names(str(tmp_path), ["sit", "stand"])
    assert loop.recorded_class_names(str(tmp_path)) == ["sit", "stand"]
    loop.check_class_names(str(tmp_path), ["sit", "stand"])  # the same: fine
    with pytest.raises(ValueError, match=r"trained on classes \['sit', 'stand'\], but the data "
                                         r"now has \['stand', 'sit'\]"):
        loop.check_class_names(str(tmp_path), ["stand", "sit"])
