"""benchmarks/memory_parts.py: each row's config, and the paired table of scored runs."""

import json
import os

import numpy as np
import pytest

from benchmarks import memory_parts as bench


def test_rows_change_one_field_and_drop_the_baseline():
    default = bench.make_config("default", "smoke", 1)
    assert default.seed == 1 and not default.baseline.enabled and default.train.eval_every == 0
    changed = {"misclassified": ("loss_on", "misclassified"),
               "threshold": ("clustering", "threshold"), "aux_data": ("aux_data", "validation")}
    for row, (field, value) in changed.items():
        config = bench.make_config(row, "smoke", 1)
        assert config.memory[field] == value != default.memory[field]
        others = {k: v for k, v in config.memory.items() if k != field}
        assert others == {k: v for k, v in default.memory.items() if k != field}


def _write(root, row, seed, correct, clusters=(4, 4), clips=(1200, 4)):
    workdir = bench.run_dir(str(root), row, seed)
    os.makedirs(workdir)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"top1": 0.9}, f)
    np.savez(os.path.join(workdir, "parts_eval.npz"), clips=np.array(clips),
             correct=np.array(correct, bool), clusters_per_class=np.array(clusters))


def test_table_pairs_rows_with_default_on_the_same_seeds(tmp_path):
    _write(tmp_path, "default", 0, [1, 1, 0, 0])
    _write(tmp_path, "default", 1, [1, 1, 1, 0])
    _write(tmp_path, "threshold", 0, [1, 0, 1, 1], clusters=(1, 2))
    _write(tmp_path, "threshold", 1, [1, 1, 1, 1], clusters=(1, 1))
    _write(tmp_path, "aux_data", 0, [0, 0, 0, 0], clips=(0, 4))  # another clip range: left out
    table = bench.build_table(str(tmp_path), [0, 1], "", 1200, 4)
    rows = {r["row"]: r for r in table["rows"]}
    assert rows["default"]["top1"] == pytest.approx(0.625)
    assert rows["default"]["diff_vs_default"] is None
    t = rows["threshold"]
    assert t["seeds"] == [0, 1] and t["top1"] == pytest.approx(0.875)
    assert t["diff_vs_default"] == pytest.approx(0.25) and t["diff_std"] == pytest.approx(0.0)
    assert (t["only_row_right"], t["only_default_right"]) == (3, 1)
    assert t["mcnemar_p"] == pytest.approx(0.625)  # two-sided binomial, 3 of 4
    assert t["clusters_per_class"] == pytest.approx(1.25)
    assert rows["aux_data"]["seeds"] == [] and rows["misclassified"]["top1"] is None
    text = bench.format_table(table)
    assert "+0.2500" in text and "3 / 1" in text and "0.625" in text
