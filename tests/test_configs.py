"""Every config file under configs/ loads, passes its experiment's checks and builds its model;
config variants combine.

Models are built with `jax.eval_shape` on the input shape the config's data would give, so nothing
is computed and no dataset is generated.
"""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common, jhmdb_memory, maneuvers_memory
from jaxact.data import builders, sequences
from jaxact.models.detector import build_detector, model_fields
from jaxact.train import EXPERIMENTS, classifier, experiment, get_experiment

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in ("__init__", "common"))
# Variants beyond '', 'tiny' and 'smoke'.
EXTRA_VARIANTS = {"classroom_detector": ("resnet50", "fusion=concat", "gate=backbone", "lessons",
                                          "fusion=gram,gate=both,relation"),
                  "jhmdb_memory": ("split=2", "split=3,tiny", "split=2,smoke"),
                  "ava_detector": ("fusion=pooled", "smoke,fusion=sum")}
# The JHMDB npz files may be absent; the model does not depend on the class count.
PLACEHOLDER_NUM_CLASSES = 14


def _has_variant(name: str, variant: str) -> bool:
    try:
        importlib.import_module(f"configs.{name}").get_config(variant)
    except ValueError as e:
        assert "unknown variant" in str(e) or "unknown config variant" in str(e), e
        return False
    return True


CASES = [(name, variant) for name in CONFIG_NAMES
         for variant in ("", "tiny", "smoke", *EXTRA_VARIANTS.get(name, ()))
         if _has_variant(name, variant)]


def _model_and_input(config):
    """(model, abstract input `[1, T, ...]`) of a config, from its data section's metadata."""
    data = config.data
    if config.experiment == "action_detector" and data.name == "ava_format":  # frame_size frames
        shape = (1, data.num_frames, *data.frame_size, 3)
        return build_detector(config.model, PLACEHOLDER_NUM_CLASSES), shape
    if config.experiment == "action_detector":
        num_actions = len(builders.BUILDERS[data.name].CLASS_NAMES)
        shape = (1, data.num_frames, *builders.BUILDERS[data.name].frame_shape(data.builder_config))
        return build_detector(config.model, num_actions), shape
    if config.experiment == "memory_classifier":
        if data.name in builders.BUILDERS:
            num_classes = len(builders.BUILDERS[data.name].CLASS_NAMES)
            shape = (1, data.num_frames, *builders.BUILDERS[data.name].frame_shape(data.builder_config))
        elif data.name in ("video_files", "video_folder"):  # user clips at a fixed frame size
            num_classes = PLACEHOLDER_NUM_CLASSES
            size = data.frame_size if data.name == "video_files" else (data.crop_size,) * 2
            shape = (1, data.num_frames, *size, 3)
        else:  # ragged_npz of 2-D joints: run the config's own transform on a dummy clip
            joints = len(sequences.JOINT_ORDERS[data.joint_order])
            transform = sequences.SequenceTransform(num_frames=data.num_frames, train=False,
                                                    features=tuple(data.features),
                                                    joint_order=data.joint_order)
            example = transform({"video": np.zeros((20, joints, 2), np.float32), "label": 0}, None)
            num_classes, shape = PLACEHOLDER_NUM_CLASSES, (1, *example["video"].shape)
        return classifier.build_model(config.model, num_classes), shape
    raise AssertionError(f"no model builder for experiment {config.experiment!r}; add one here")


def test_config_files_found():
    assert {"maneuvers_memory", "classroom_detector"} <= set(CONFIG_NAMES)
    for name in ("classroom_detector", "maneuvers_memory", "jhmdb_memory", "video_files_memory",
                 "video_folder_memory", "ava_detector"):
        assert (name, "tiny") in CASES and (name, "smoke") in CASES, name


class _Validated(Exception):  # noqa: N818 (a signal, not an error)
    """Raised where an experiment starts reading its data: every config check passed."""


def _user_files(data, folder) -> None:
    """Points the paths a user must set at a minimal dataset in `folder`: an AVA-format label
    map and CSV for `ava_format` (validation reads them; no frames are needed)."""
    if data.name == "ava_format":
        (folder / "labelmap.pbtxt").write_text('item {\n  name: "sit"\n  id: 1\n}\n')
        (folder / "keyframes.csv").write_text("v,1,0.1,0.1,0.5,0.9,1,0\n")
        data.train_csv = data.test_csv = str(folder / "keyframes.csv")
        data.label_map, data.frame_dir = str(folder / "labelmap.pbtxt"), str(folder)


def _validate(config, monkeypatch) -> None:
    """Runs every check an experiment makes on its config (the shared ones and its own
    `validate`), stopping where it would start reading its data (then its workdir and model)."""
    def stop(*args, **kwargs):
        raise _Validated

    with monkeypatch.context() as patch:
        patch.setattr(experiment.sources, "make", stop)
        patch.setattr(experiment.os, "makedirs", stop)  # must not come first
        with pytest.raises(_Validated):
            get_experiment(config.experiment)(config, "/nonexistent/workdir")


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}:{v}" if v else n for n, v in CASES])
def test_config_loads_and_builds_model(name, variant, monkeypatch, tmp_path):
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    assert config.experiment in EXPERIMENTS
    assert config.config_name == name + (f":{variant}" if variant else "")
    _user_files(config.data, tmp_path)
    _validate(config, monkeypatch)
    model, shape = _model_and_input(config)
    video = jax.ShapeDtypeStruct(shape, jnp.float32)
    out, variables = jax.eval_shape(lambda v: model.init_with_output(jax.random.key(0), v), video)
    leaves = jax.tree.leaves(variables["params"])
    assert leaves and sum(int(np.prod(x.shape)) for x in leaves) > 0
    if config.experiment == "action_detector":
        assert out["boxes"].shape == (1, config.model.num_queries, 4)


def test_detector_config_mirrors_model_fields():
    # Every hyper-parameter of the detector and its sub-modules is a config field (and nothing
    # else is), so a new model field cannot silently keep its class default.
    from configs import classroom_detector

    model = classroom_detector.get_config().model
    fields = model_fields(model.head.name)
    assert set(model) == set(fields[""])
    for section in ("backbone", "localizer", "head"):
        assert set(model[section]) == set(fields[section]), section


def test_variants_combine_and_name_the_run():
    config = jhmdb_memory.get_config("split=3,tiny")
    assert (config.data.train_path, config.data.test_path) == jhmdb_memory.split_paths(3)
    assert config.config_name == "jhmdb_memory:split=3,tiny"
    tiny = jhmdb_memory.get_config("tiny")
    assert config.model.to_dict() == tiny.model.to_dict()
    assert config.train.to_dict() == tiny.train.to_dict()
    assert tiny.data.train_path == jhmdb_memory.split_paths(1)[0]  # split 1 by default
    split2 = jhmdb_memory.get_config("split=2")
    assert split2.data.train_path == jhmdb_memory.split_paths(2)[0]
    assert split2.model.to_dict() == jhmdb_memory.get_config().model.to_dict()
    # The old form is gone, and bad values fail naming the variant.
    with pytest.raises(ValueError, match="unknown config variant 'split2'"):
        jhmdb_memory.get_config("split2")
    with pytest.raises(ValueError, match="split=4"):
        jhmdb_memory.get_config("split=4")
    with pytest.raises(ValueError, match="unknown config variant 'huge'.*tiny"):
        maneuvers_memory.get_config("huge")
    smoke = jhmdb_memory.get_config("split=2,smoke")
    assert smoke.data.train_path == jhmdb_memory.split_paths(2)[0]
    assert smoke.model.to_dict() == tiny.model.to_dict() and smoke.train.num_steps == 8
    with pytest.raises(ValueError, match="tiny and smoke exclude each other"):
        jhmdb_memory.get_config("tiny,smoke")


def test_smoke_keeps_the_seconds_long_budgets_and_tiny_learns():
    # The tests run `smoke` for speed and rely on its sizes; `tiny` is the under-a-minute run that
    # learns (measured in the config docstrings), on the larger `small` synthetic presets.
    from configs import classroom_detector

    smoke = maneuvers_memory.get_config("smoke")
    assert smoke.data.builder_config == "tiny" and smoke.train.num_steps == 8
    assert (smoke.memory.aux_steps, smoke.memory.init_batches, smoke.train.batch_size) == (4, 2, 8)
    assert smoke.model.frame_encoder_kwargs.widths == (8, 16) and smoke.data.num_frames == 8
    detector = classroom_detector.get_config("smoke")
    assert detector.data.builder_config == "tiny" and detector.train.num_steps == 6
    assert detector.model.backbone.widths == (8, 8, 16) and detector.train.fast_compile
    tiny = maneuvers_memory.get_config("tiny")
    assert tiny.data.builder_config == "small" and tiny.train.num_steps > tiny.memory.aux_steps
    # The fill reads enough training clips that every class gets memory vectors.
    classes = len(builders.BUILDERS["maneuvers"].CLASS_NAMES)
    assert tiny.memory.init_batches * tiny.train.batch_size >= 16 * classes
    assert classroom_detector.get_config("tiny").data.builder_config == "small"


def test_parse_variant_reads_literals_strings_and_flags():
    variant = common.parse_variant(" split=2, tiny ,name=abc,ratio=0.5", split=1, tiny=False,
                                   name="", ratio=1.0)
    assert variant.to_dict() == {"split": 2, "tiny": True, "name": "abc", "ratio": 0.5}
    assert common.parse_variant("", split=1, tiny=False).to_dict() == {"split": 1, "tiny": False}
    with pytest.raises(ValueError, match=r"unknown config variant 'x' in 'x=1'.*\['split'\]"):
        common.parse_variant("x=1", split=1)


def test_detector_adaptive_variants():
    from configs import classroom_detector

    full = classroom_detector.get_config("fusion=gram,gate=head,relation")
    assert full.model.gate == "head" and full.model.head.temporal_layers == 2
    assert full.model.head.relation
    plain = classroom_detector.get_config("fusion=gram")
    assert plain.model.gate == "off" and plain.model.head.temporal_layers == 0
    assert not plain.model.head.relation
    backbone = classroom_detector.get_config("fusion=pooled,gate=backbone")
    assert backbone.model.gate == "backbone" and backbone.model.head.name == "pooled"
    default = classroom_detector.get_config()
    assert default.model.head.name == "decoupled"
    assert default.model.head.fusion == classroom_detector.DEFAULT_FUSION
    assert default.loss.l1_coords == classroom_detector.DEFAULT_L1_COORDS
    both = classroom_detector.get_config("fusion=sum,gate=both")
    assert both.model.head.temporal_layers == 2
    for bad, match in (("fusion=pooled,gate=head", "need a fusion= head"),
                       ("fusion=pooled,relation", "need a fusion= head"),
                       ("fusion=sum,gate=all", "gate='all'")):
        with pytest.raises(ValueError, match=match):
            classroom_detector.get_config(bad)


def test_classroom_analysis_thresholds_are_the_calibrated_ones():
    import json

    from configs import ava_detector, classroom_detector
    from jaxact.analysis import report

    path = CONFIG_DIR.parent / "benchmarks" / "results" / "analysis_calibration.json"
    calibrated = json.loads(path.read_text())["per_behaviour_settings"]
    per_behaviour = classroom_detector.get_config().analyze.per_behaviour.to_dict()
    assert per_behaviour == calibrated
    settings = report.AnalysisSettings(per_behaviour=per_behaviour)
    settings.check_behaviours(builders.BUILDERS["classroom"].CLASS_NAMES)
    # Detectors fine-tuned on lesson clips have their own calibration.
    path = path.with_name("analysis_calibration_lessons.json")
    calibrated = json.loads(path.read_text())["per_behaviour_settings"]
    assert classroom_detector.get_config("lessons").analyze.per_behaviour.to_dict() == calibrated
    path = path.with_name("analysis_calibration_crowded.json")
    calibrated = json.loads(path.read_text())["per_behaviour_settings"]
    crowded = classroom_detector.get_config("crowded")
    assert crowded.analyze.per_behaviour.to_dict() == calibrated
    assert crowded.data.builder_config == "lessons_crowded"
    assert crowded.train.num_steps == classroom_detector.get_config("lessons").train.num_steps
    # AVA's behaviours are others: the classroom's thresholds must not follow it there.
    assert ava_detector.get_config("smoke").analyze.per_behaviour.to_dict() == {}
