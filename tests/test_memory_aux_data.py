"""memory.aux_data: the auxiliary videos that pre-train the auxiliary network and fill the bank."""

import os

import pytest

from configs import maneuvers_memory
from jaxact.train import classifier


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return os.environ.get("JAXACT_DATA_DIR", str(tmp_path_factory.mktemp("tfds")))


def _config(data_dir, aux_data):
    config = maneuvers_memory.get_config("smoke")
    config.data.data_dir = data_dir
    config.memory.aux_data = aux_data
    return config


@pytest.mark.parametrize("a, b, same", [
    ("train", "train", True), ("validation", "test", False), ("test[:50%]", "test", True),
    ("validation[:50%]", "validation[50%:]", False), ("validation[:50%]", "validation[:50%]", True)])
def test_same_examples(a, b, same):
    assert classifier._same_examples(a, b) is same


@pytest.mark.parametrize("aux, match", [
    ("test", r"memory.aux_data='test' would train on eval.split='test'"),
    ("validation", r"would train on train.eval_split='validation'"),
    ("nosuch", r"memory.aux_data='nosuch': no such split")])
def test_bad_aux_data_fails_naming_the_field(aux, match, tmp_path, data_dir):
    config = _config(data_dir, aux)
    if aux == "validation":
        config.train.eval_every = 4  # the validation curve would see the auxiliary videos
    with pytest.raises(ValueError, match=match):
        classifier.Experiment(config, str(tmp_path / "run"))


def test_aux_data_fills_the_bank(tmp_path, data_dir, monkeypatch):
    config = _config(data_dir, "validation")
    config.train.eval_every = 0
    exp = classifier.Experiment(config, str(tmp_path / "run"))
    splits = []
    make_loader = exp.make_loader
    monkeypatch.setattr(exp, "make_loader", lambda split, *a, **k: (
        splits.append(split), make_loader(split, *a, **k))[1])
    state = exp.fill_memory(exp.with_memory(exp.init_state()))
    assert splits == ["validation"] and int(state.memory.valid.sum()) > 0
    assert exp.memory.aux_split == "validation"
    assert classifier.Experiment(_config(data_dir, ""), str(tmp_path / "b")).memory \
        .aux_split == "train"
