"""benchmarks/early_cue_groups.py: records matched to their latent draws, cue groups."""

import dataclasses
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import early_cue_groups as groups
from jaxact.data import builders
from jaxact.data import maneuvers as m

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CUES = dataclasses.replace(builders.Maneuvers.preset("tiny").render, cues=True)


def test_records_find_their_latents_in_any_order():
    clips = [m.render_clip(builders.example_seed("validation", i), i % 6, TINY_CUES)
             for i in range(12)]
    order = np.random.default_rng(0).permutation(12)  # TFDS stores records shuffled
    source = [{k: clips[i][k] for k in ("label", "onset", "boxes")} for i in order]
    lat = groups.record_latents(source, "validation", TINY_CUES)
    for j, i in enumerate(order):
        assert lat["label"][j] == i % 6
        assert lat["onset"][j] == clips[i]["onset"]
        assert all(lat[k][j] == v for k, v in clips[i]["cues"].items())
    with pytest.raises(ValueError, match="test record 0: 0 seeds"):
        groups.record_latents(source, "test", TINY_CUES)


def test_groups_by_the_cues_seen():
    summary = np.array([[0, 0, 0, -1], [1, 1, 0, -1], [1, 1, 0, -1], [0, 0, -1, 3]])
    assert [groups.cue_name(r) for r in summary] == [
        "no cue", "indicator + braking", "indicator + braking", "drift, manoeuvre begun"]
    correct = {"bayes": np.array([1, 1, 0, 1], bool), "memory": np.array([0, 1, 1, 1], bool)}
    rows = groups.group_table(summary, correct)
    assert rows[0] == {"cues": "indicator + braking", "clips": 2, "bayes": 0.5, "memory": 1.0}
    assert [r["cues"] for r in rows[1:]] == ["drift, manoeuvre begun", "no cue"]


@pytest.mark.parametrize("config_arg", ["maneuvers_memory:smoke", "jhmdb_memory:smoke"])
def test_a_run_without_cues_is_refused_before_anything_loads(tmp_path, config_arg):
    module, variant = config_arg.split(":")
    config = importlib.import_module(f"configs.{module}").get_config(variant)
    (tmp_path / "config.json").write_text(config.to_json_best_effort())
    done = subprocess.run([sys.executable, "-m", "benchmarks.early_cue_groups",
                           f"--groups_workdir={tmp_path}", f"--groups_json={tmp_path}/out.json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode != 0
    assert "--groups_workdir" in done.stderr and "has no cues to group by" in done.stderr
    assert not (tmp_path / "out.json").exists()
