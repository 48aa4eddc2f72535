"""benchmarks/jhmdb.py: the configs and workdirs of `--jhmdb_validation`, and its table.

The benchmark defines unprefixed absl flags (`config`, `splits`, `workdir_root`) that other
benchmarks share, so it is imported in a subprocess of its own."""

import json
import os
import subprocess
import sys

from configs import jhmdb_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import json, sys
from absl import flags
from benchmarks import jhmdb
flags.FLAGS(sys.argv)
base = jhmdb._CONFIG.value
wider = base.copy_and_resolve_references()
with wider.unlocked():
    wider.data.validation_fraction = 0.3
configs = {"validation": jhmdb.make_config(base, 2, jhmdb._VALIDATION.value),
           "test": jhmdb.make_config(base, 2, False),
           "wider": jhmdb.make_config(wider, 1, True),
           "videos": jhmdb.make_config(wider, 3, True, "videos")}
result = {"early_prediction": {"memory": {"0.2": 0.3, "1.0": 0.5},
                                                    "baseline": {"0.2": 0.2, "1.0": 0.4}},
          "top1": 0.5, "baseline_top1": 0.4, "num_params": 1234, "train_seconds": 10.0,
          "total_train_seconds": 20.0}
print(json.dumps({
    "flag": jhmdb._VALIDATION.value,
    "configs": {k: {"fraction": c.data.validation_fraction, "seed": c.data.validation_seed,
                    "validation_path": c.data.validation_path, "part": jhmdb.part_name(c),
                    "eval_split": c.eval.split, "eval_every": c.train.eval_every,
                    "paths": [c.data.train_path, c.data.test_path], "name": c.config_name,
                    "num_steps": c.train.num_steps}
                for k, c in configs.items()},
    "roots": [jhmdb.run_root(jhmdb._WORKDIR_ROOT.value, v, b)
              for v, b in ((True, "fraction"), (False, "fraction"), (True, "videos"))],
    "tables": [jhmdb.format_tables({2: result}, jhmdb.part_name(configs[k]))
               for k in ("validation", "test")]}))
"""


def test_validation_flag_sets_the_validation_part_and_its_workdirs(tmp_path):
    args = ["--jhmdb_validation", "--config=configs/jhmdb_memory.py:smoke",
            "--config.data.validation_seed=4", f"--workdir_root={tmp_path}"]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["flag"] is True
    smoke_steps = jhmdb_memory.get_config("smoke").train.num_steps
    val, test, wider, videos = (out["configs"][k]
                                for k in ("validation", "test", "wider", "videos"))
    assert (val["fraction"], val["eval_split"], val["eval_every"]) == (0.2, "validation", 0)
    assert val["seed"] == 4 and val["num_steps"] == smoke_steps  # --config overrides kept
    assert val["paths"] == list(jhmdb_memory.split_paths(2))
    assert val["name"] == test["name"] == "jhmdb_memory:split=2"
    assert (test["fraction"], test["eval_split"]) == (0.0, "test")
    assert (wider["fraction"], wider["eval_split"]) == (0.3, "validation")  # a set one is kept
    # Other videos: split 3's train clips that are in split 1's test file; no random part.
    assert (videos["fraction"], videos["eval_split"]) == (0.0, "validation")
    assert videos["validation_path"] == jhmdb_memory.split_paths(1)[1]
    assert videos["paths"] == list(jhmdb_memory.split_paths(3))
    assert "split1_test.npz: other videos" in videos["part"]
    assert val["validation_path"] == test["validation_path"] == ""
    assert out["roots"] == [os.path.join(str(tmp_path), "validation"), str(tmp_path),
                            os.path.join(str(tmp_path), "validation_videos")]
    validation_table, test_table = out["tables"]
    assert "validation part (0.2 of each train file, not trained on) top-1 per split" in \
        validation_table
    assert "test top-1: not comparable to the validation part" in validation_table
    assert "JHMDB (14 classes, 2-D joints): test top-1 per split" in test_table
    assert "validation" not in test_table and "0.500 ± 0.000" in test_table
