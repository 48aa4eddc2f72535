"""`model.dtype=bfloat16` (mixed precision): both models train end to end on their smoke configs
with float32 parameters, and the float32 islands (features, logits, boxes, the memory bank) stay
float32; a bad dtype name fails naming the field."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import classroom_detector, maneuvers_memory
from jaxact.train import classifier, detector


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return os.environ.get("JAXACT_DATA_DIR", str(tmp_path_factory.mktemp("tfds")))


def _param_dtypes(params) -> set:
    return {leaf.dtype for leaf in jax.tree.leaves(params)}


def test_classifier_trains_in_bfloat16(data_dir, tmp_path, check_results):
    config = maneuvers_memory.get_config("smoke")
    config.data.data_dir = data_dir
    config.model.dtype = "bfloat16"
    exp = classifier.Experiment(config, str(tmp_path))
    assert exp.model.dtype == jnp.bfloat16
    video = jnp.zeros((2, config.data.num_frames, 64, 64, 3), jnp.float32)
    params = exp.model.init(jax.random.key(0), video)["params"]
    assert _param_dtypes(params) == {jnp.dtype(jnp.float32)}
    feats, logits = exp.model.apply({"params": params}, video)
    assert feats.dtype == logits.dtype == jnp.float32  # what the bank and the losses read
    results = exp.train_and_evaluate()
    assert math.isfinite(results["top1"]) and math.isfinite(results["baseline_top1"])
    _, references = exp.restore_final()["memory"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(references)
               if jnp.issubdtype(leaf.dtype, jnp.floating))
    check_results(exp, results)  # restored bfloat16 models give the numbers results.json holds


@pytest.mark.slow  # ~77 s of a worker; the classifier's bfloat16 run stays in the default suite
def test_detector_trains_in_bfloat16(data_dir, tmp_path):
    config = classroom_detector.get_config("smoke")
    config.data.data_dir = data_dir
    config.model.dtype = "bfloat16"
    config.model.localizer.num_stages = 1  # less compile time; the dtype plumbing is the same
    exp = detector.Experiment(config, str(tmp_path))
    state = exp.init_state()
    assert _param_dtypes(state.params) == {jnp.dtype(jnp.float32)}
    out = exp.programs.predict(state.params, jnp.zeros(exp.input_shape(1), jnp.float32))
    for key in ("boxes", "person_scores", "action_scores"):
        assert out[key].dtype == jnp.float32, key
    results = exp.train_and_evaluate()
    assert np.isfinite(results["person_ap50"]) and results["frame_map"] is not None


@pytest.mark.parametrize("module", [maneuvers_memory, classroom_detector])
def test_unknown_dtype_names_the_field(module, tmp_path):
    config = module.get_config("smoke")
    config.model.dtype = "bf16x"
    experiment = classifier if module is maneuvers_memory else detector
    with pytest.raises(ValueError, match=r"model\.dtype='bf16x'"):
        experiment.Experiment(config, str(tmp_path))
