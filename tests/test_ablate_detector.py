"""benchmarks/ablate_detector.py: its rows' configs validate, and the table is built from finished
workdirs (results.json + bench_meta.json written here by hand) without training or compiling."""

import json
import os

import numpy as np
import pytest

from benchmarks import ablate_detector as ab
from configs import classroom_detector
from jaxact import detection_losses
from jaxact.models.detector import check_model_fields

CLASSES = ("sit", "raise_hand", "stand", "write", "turn_to_neighbour")


def test_rows_and_their_configs():
    assert ab.ROW_NAMES == ("pooled", "sum", "concat", "gram", "gram_no_enc", "gram_xyxy",
                            "temporal", "gate_head", "gate_backbone", "relation", "full",
                            "gate_head_budget", "gate_backbone_budget", "full_budget")
    columns = {}
    for row in ab.ROWS:
        config = classroom_detector.get_config("smoke," + row.variant)
        for path, value in row.overrides.items():
            section, *rest = path.split(".")
            node = config[section]
            for part in rest[:-1]:
                node = node[part]
            assert rest[-1] in node, path
            node[rest[-1]] = value
        check_model_fields(config.model)
        detection_losses.as_weights(config.loss)
        made = ab.make_config(row, "smoke", seed=3)  # the benchmark's own config: the same
        assert made.seed == 3
        assert made.model.to_dict() == config.model.to_dict()
        assert made.loss.to_dict() == config.loss.to_dict()
        assert made.train.num_steps == config.train.num_steps
        columns[row.name] = ab.setting_columns(made)
    assert columns["pooled"] == {"fusion": "pooled", "encodings": None, "gate": "off",
                                 "relation": False, "temporal_layers": 0, "gate_policy": None,
                                 "l1_coords": "cxcywh", "flops_target": 0.0}
    base = ab.ADAPTIVE_FUSION
    adaptive = ("temporal", "gate_head", "gate_backbone", "relation", "full")
    assert {columns[n]["fusion"] for n in adaptive} == {base}
    assert [(columns[n]["gate"], columns[n]["relation"], columns[n]["temporal_layers"])
            for n in adaptive] == [("off", False, 2), ("head", False, 2), ("backbone", False, 0),
                                   ("off", True, 0), ("both", True, 2)]
    assert columns["gate_head"]["gate_policy"] == columns["full"]["gate_policy"] == "input"
    for name in ("gate_head", "gate_backbone", "full"):  # the budget rows: the same plus a budget
        budget = columns[f"{name}_budget"]
        assert budget == {**columns[name], "flops_target": 0.5}
    assert [columns[n]["fusion"] for n in ("sum", "concat", "gram")] == ["sum", "concat", "gram"]
    assert columns["gram"]["encodings"] is True and columns["gram_no_enc"]["encodings"] is False
    assert columns["gram"]["l1_coords"] == "cxcywh" and columns["gram_xyxy"]["l1_coords"] == "xyxy"
    assert ab.row_variant(ab.get_row("gram")) == "fusion=gram"
    with pytest.raises(ValueError, match="fusion"):
        ab.make_config("gram", "smoke,fusion=sum")
    with pytest.raises(ValueError, match="unknown row"):
        ab.get_row("gated")


def _write_run(root, row, seed, frame_map, person, per_class, miou=None, meta=True):
    workdir = ab.run_dir(str(root), row, seed)
    os.makedirs(workdir)
    results = {"frame_map": frame_map, "person_ap50": person,
               "per_class_ap": dict(zip(CLASSES, per_class, strict=True)),
               "num_params": 1000 + len(row), "gflops_per_clip": 0.5, "train_seconds": 60.0,
               "config_name": f"classroom_detector:{row}"}
    if miou is not None:
        results["map_miou"] = miou
        results["per_class_map_iou"] = dict(zip(CLASSES, [miou] * 5, strict=True))
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f)
    if meta:
        with open(os.path.join(workdir, "bench_meta.json"), "w") as f:
            json.dump({"machine": "box: 2 CPU cores", "date": "2026-12-06",
                       "device": f"note {seed}"}, f)
    return workdir


@pytest.fixture
def finished(tmp_path, monkeypatch):
    """2 rows x 2 seeds and 1 row x 1 seed of fake finished runs; training and latency
    measurement fail if anything calls them."""
    def no(*args, **kwargs):
        raise AssertionError("nothing may train or compile here")

    for name in ("train_run", "row_latency", "measure_latency", "get_experiment"):
        monkeypatch.setattr(ab, name, no)
    _write_run(tmp_path, "pooled", 0, 0.5, 0.9, [0.4, 0.5, 0.6, None, 0.5])
    _write_run(tmp_path, "pooled", 1, 0.7, 0.8, [0.6, 0.7, 0.8, None, None], meta=False)
    _write_run(tmp_path, "gram", 0, 0.6, 0.95, [0.5] * 5, miou=0.3)
    _write_run(tmp_path, "gram", 1, 0.8, 0.85, [0.7] * 5, miou=0.5)
    _write_run(tmp_path, "sum", 0, 0.4, 0.7, [0.1] * 5, miou=0.2)
    with open(os.path.join(tmp_path, "gram", "latency.json"), "w") as f:
        json.dump({"latency_ms": 12.5, "device": "cpu (2 cores)", "machine": "box"}, f)
    gated = _write_run(tmp_path, "gate_head", 0, 0.6, 0.9, [0.5] * 5, miou=0.3)
    with open(os.path.join(gated, "results.json")) as f:
        results = json.load(f)
    results.update(gated_flops_fraction=0.5, model_flops_fraction=0.9)
    with open(os.path.join(gated, "results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(tmp_path, "gate_head", "latency.json"), "w") as f:
        json.dump({"latency_ms": 20.0, "latency_ms_compact": 15.0, "gate_budget": 40}, f)
    os.makedirs(ab.run_dir(str(tmp_path), "concat", 0))  # started, not finished: not counted
    return tmp_path


def test_build_table_from_finished_runs(finished):
    table = ab.build_table(str(finished), ab.ROW_NAMES, [0, 1])
    assert set(table) >= {"date", "machine", "rows"} and table["seeds_asked"] == [0, 1]
    rows = {r["name"]: r for r in table["rows"]}
    assert list(rows) == list(ab.ROW_NAMES)

    pooled = rows["pooled"]
    assert pooled["seeds"] == [0, 1] and pooled["missing_seeds"] == []
    assert pooled["frame_map"] == pytest.approx(0.6)
    assert pooled["frame_map_std"] == pytest.approx(np.std([0.5, 0.7]))  # population: 0.1
    assert pooled["frame_map_std"] == pytest.approx(0.1)
    assert pooled["person_ap50"] == pytest.approx(0.85)
    assert pooled["per_class_ap"] == pytest.approx(
        {"sit": 0.5, "raise_hand": 0.6, "stand": 0.7, "write": None, "turn_to_neighbour": 0.5})
    assert pooled["map_miou"] is None and pooled["per_class_map_iou"] is None
    assert pooled["params"] == 1006 and pooled["gflops_per_clip"] == 0.5
    assert pooled["latency_ms"] is None
    assert (pooled["fusion"], pooled["encodings"], pooled["gate"], pooled["relation"],
            pooled["l1_coords"]) == ("pooled", None, "off", False, "cxcywh")
    assert pooled["runs"] == [
        {"seed": 0, "machine": "box: 2 CPU cores", "date": "2026-12-06", "device": "note 0",
         "train_seconds": 60.0, "frame_map": 0.5},
        {"seed": 1, "machine": None, "date": None, "device": None, "train_seconds": 60.0,
         "frame_map": 0.7}]

    gram = rows["gram"]
    assert gram["frame_map"] == pytest.approx(0.7) and gram["frame_map_std"] == pytest.approx(0.1)
    assert gram["map_miou"] == pytest.approx(0.4)
    assert gram["per_class_ap"] == pytest.approx(dict.fromkeys(CLASSES, 0.6))
    assert gram["encodings"] is True and gram["latency_ms"] == 12.5
    assert gram["latency"]["device"] == "cpu (2 cores)"

    one = rows["sum"]  # fewer seeds than asked: says so, no spread
    assert one["seeds"] == [0] and one["missing_seeds"] == [1]
    assert one["frame_map"] == pytest.approx(0.4) and one["frame_map_std"] is None

    for name in ("concat", "gram_no_enc", "gram_xyxy", "gate_backbone", "relation", "full"):
        r = rows[name]
        assert r["seeds"] == [] and r["missing_seeds"] == [0, 1] and r["runs"] == []
        assert all(r[k] is None for k in ("frame_map", "frame_map_std", "person_ap50",
                                          "per_class_ap", "map_miou", "params",
                                          "gflops_per_clip", "latency_ms"))
    assert rows["gram_no_enc"]["encodings"] is False
    assert rows["gram_xyxy"]["l1_coords"] == "xyxy"

    only_seed_1 = {r["name"]: r for r in ab.build_table(str(finished), ["pooled"], [1])["rows"]}
    assert only_seed_1["pooled"]["frame_map"] == pytest.approx(0.7)

    gate = rows["gate_head"]
    assert gate["gated_flops_fraction"] == pytest.approx(0.5)
    assert gate["model_flops_fraction"] == pytest.approx(0.9)
    assert gate["latency_ms_masked"] == 20.0 and gate["latency_ms_compact"] == 15.0
    assert gram["latency_ms_masked"] is None and gram["latency_ms_compact"] is None

    text = ab.format_table(table)
    adaptive = 8  # temporal, gate_head, gate_backbone, relation, full, 3 budget rows
    assert "0.600 ± 0.100" in text
    assert len(text.splitlines()) == 3 + len(ab.ROWS) + 4 + adaptive


def test_read_only_benchmark_writes_the_table(finished, tmp_path):
    output = str(tmp_path / "out" / "ablate.json")
    table = ab.run_benchmark(str(finished), [0, 1], ["pooled", "gram"], "", train=False,
                             output=output)
    with open(output) as f:
        assert json.load(f) == json.loads(json.dumps(table))
    assert os.listdir(tmp_path / "out") == ["ablate.json"]  # the temp file was renamed
    assert not os.path.exists(os.path.join(finished, "concat", "seed_0", "config.json"))


def test_a_run_of_another_config_is_not_read(finished):
    workdir = ab.run_dir(str(finished), "gram", 0)
    with open(os.path.join(workdir, "config.json"), "w") as f:  # as launch.py writes it
        f.write(ab.make_config("gram", "smoke", 0).to_json_best_effort())
    ab.build_table(str(finished), ["gram"], [0, 1], variant="smoke")
    with pytest.raises(ab.ConfigMismatch, match="another run's config"):
        ab.build_table(str(finished), ["gram"], [0, 1])  # the default config: other budget
