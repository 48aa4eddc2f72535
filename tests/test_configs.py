"""Every config file under configs/ loads, passes its experiment's checks and builds its model.

Models are built with `jax.eval_shape` on the input shape the config's data would give, so nothing
is computed and no dataset is generated.
"""

import dataclasses
import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.data import builders, sequences
from jaxact.models.detector import ActionDetector
from jaxact.train import EXPERIMENTS, classifier, detector, get_experiment

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in ("__init__", "common"))
EXTRA_VARIANTS = {"classroom_detector": ("resnet50",)}  # variants beyond '' and 'tiny'
# The JHMDB npz files may be absent; the model does not depend on the class count.
PLACEHOLDER_NUM_CLASSES = 14


def _has_variant(name: str, variant: str) -> bool:
    try:
        importlib.import_module(f"configs.{name}").get_config(variant)
    except ValueError as e:
        assert "unknown variant" in str(e), e
        return False
    return True


CASES = [(name, variant) for name in CONFIG_NAMES
         for variant in ("", "tiny", *EXTRA_VARIANTS.get(name, ()))
         if _has_variant(name, variant)]


def _render_config(config):
    presets = {c.name: c for c in builders.BUILDERS[config.data.name].BUILDER_CONFIGS}
    return presets[config.data.builder_config].render


def _model_and_input(config):
    """(model, abstract input `[1, T, ...]`) of a config, from its data section's metadata."""
    data = config.data
    if config.experiment == "action_detector":
        resolution = _render_config(config).resolution
        num_actions = len(builders.BUILDERS[data.name].CLASS_NAMES)
        shape = (1, data.num_frames, resolution, resolution, 3)
        return detector.build_model(config, num_actions), shape
    if config.experiment == "memory_classifier":
        if data.name in builders.BUILDERS:
            resolution = _render_config(config).resolution
            num_classes = len(builders.BUILDERS[data.name].CLASS_NAMES)
            shape = (1, data.num_frames, resolution, resolution, 3)
        elif data.name == "video_files":  # the user's clips, resized to frame_size
            num_classes = PLACEHOLDER_NUM_CLASSES
            shape = (1, data.num_frames, *data.frame_size, 3)
        else:  # ragged_npz of 2-D joints: run the config's own transform on a dummy clip
            joints = len(sequences.JOINT_ORDERS[data.joint_order])
            transform = sequences.SequenceTransform(num_frames=data.num_frames, train=False,
                                                    features=tuple(data.features))
            example = transform({"video": np.zeros((20, joints, 2), np.float32), "label": 0}, None)
            num_classes, shape = PLACEHOLDER_NUM_CLASSES, (1, *example["video"].shape)
        return classifier.build_model(config, num_classes), shape
    raise AssertionError(f"no model builder for experiment {config.experiment!r}; add one here")


def test_config_files_found():
    assert {"maneuvers_memory", "classroom_detector"} <= set(CONFIG_NAMES)
    assert ("classroom_detector", "tiny") in CASES and ("maneuvers_memory", "tiny") in CASES


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}:{v}" if v else n for n, v in CASES])
def test_config_loads_and_builds_model(name, variant):
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    assert config.experiment in EXPERIMENTS
    experiment = get_experiment(config.experiment)
    experiment.validate_config(config, 1)
    model, shape = _model_and_input(config)
    video = jax.ShapeDtypeStruct(shape, jnp.float32)
    out, variables = jax.eval_shape(lambda v: model.init_with_output(jax.random.key(0), v), video)
    leaves = jax.tree.leaves(variables["params"])
    assert leaves and sum(int(np.prod(x.shape)) for x in leaves) > 0
    if config.experiment == "action_detector":
        assert out["boxes"].shape == (1, config.model.num_queries, 4)


def test_detector_config_mirrors_model_fields():
    # Every ActionDetector hyper-parameter is a config field (and nothing else is), so a new model
    # field cannot silently keep its class default.
    from configs import classroom_detector

    fields = {f.name for f in dataclasses.fields(ActionDetector)} - {"parent", "name", "num_actions"}
    assert set(classroom_detector.get_config().model) == fields
