"""benchmarks/maneuvers_early.py: configs of every mode, and the table of finished runs."""

import json
import os

import pytest

from benchmarks import maneuvers_early as bench
from benchmarks.runs import ConfigMismatch


def test_modes_make_the_configs_they_name():
    full, prefix, first = (bench.make_config(m, "smoke", 2) for m in ("full", "prefix", "first30"))
    assert full.seed == prefix.seed == first.seed == 2
    assert (full.data.min_fraction, full.data.train_observation) == (1.0, 1.0)
    assert (prefix.data.min_fraction, prefix.data.train_observation) == (0.2, 1.0)
    assert (first.data.min_fraction, first.data.train_observation) == (1.0, 0.3)
    measured = bench.make_config("full", "", 0)
    assert measured.data.builder_config == "cues_brake_lights"
    assert bench.make_config("full", "brake_lights=False", 0).data.builder_config == "cues"
    assert measured.data.target_only and measured.train.num_steps == 2400
    assert measured.data.extra_train_clips == 4800
    tiny = bench.make_config("full", "tiny", 0)
    assert (tiny.train.num_steps, tiny.data.extra_train_clips) == (300, 0)  # tiny keeps its budget
    assert first.config_name == "maneuvers_early:train=first30,smoke"
    with pytest.raises(ValueError, match="train='fast'"):
        bench.make_config("fast", "", 0)


def _write(root, mode, seed, memory, baseline):
    workdir = bench.run_dir(str(root), mode, seed)
    os.makedirs(workdir)
    results = {"top1": memory["1.0"], "baseline_top1": baseline["1.0"],
               "early_prediction": {"memory": memory, "baseline": baseline,
                                    "bayes_limit": {"0.2": 0.43, "1.0": 1.0}}}
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f)


def test_table_averages_the_finished_seeds(tmp_path):
    _write(tmp_path, "first30", 0, {"0.2": 0.4, "1.0": 0.9}, {"0.2": 0.3, "1.0": 0.8})
    _write(tmp_path, "first30", 1, {"0.2": 0.2, "1.0": 1.0}, {"0.2": 0.3, "1.0": 0.9})
    table = bench.build_table(str(tmp_path), ["full", "first30"], [0, 1], "")
    assert table["bayes_limit"] == {"0.2": 0.43, "1.0": 1.0}
    rows = {(r["train_mode"], r["method"]): r for r in table["runs"]}
    assert rows[("full", "memory")]["seeds"] == [] and rows[("full", "memory")]["top1"] == {}
    memory = rows[("first30", "memory")]
    assert memory["seeds"] == [0, 1]
    assert memory["top1"] == pytest.approx({"0.2": 0.3, "1.0": 0.95})
    assert memory["top1_std"]["0.2"] == pytest.approx(0.1)
    assert rows[("first30", "baseline")]["full_clip_top1"] == pytest.approx(0.85)
    text = bench.format_table(table)
    assert "Bayes limit" in text and "0.430" in text and "0.300" in text


def test_a_run_of_other_settings_stops_the_table(tmp_path):
    workdir = bench.run_dir(str(tmp_path), "prefix", 1)
    os.makedirs(workdir)
    config = bench.make_config("prefix", "smoke", 1)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    bench.check_runs(str(tmp_path), [0, 1], "smoke")  # the same settings: read as they are
    config.data.target_crop = 8  # an older or edited config
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    with pytest.raises(ConfigMismatch, match=r"prefix/seed_1.*data.target_crop.*--early_root"):
        bench.check_runs(str(tmp_path), [0, 1], "smoke")
