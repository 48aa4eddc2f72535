"""What the temporal channel gate saves in wall-clock time: masked vs compact inference paths of
finished ablation runs, against the ungated model, all measured in one sitting.

  python -m benchmarks.gate_budget                   # the gated rows of benchmarks/ablate_detector
  python -m benchmarks.gate_budget --gb_rows=gate_backbone_budget --gb_budgets=0.5,0.25

For each gated row (seed `--gb_seed` of `WORKDIR_ROOT/ROW`): CPU latency per clip of the masked
path (every channel computed, decisions applied as masks), of the compact path at the exact
budget (the largest kept fraction of any gated layer on the test split: the same detections as
the masked path, tested in tests/test_channel_gate.py) and at each smaller `--gb_budgets`
fraction (only the channels with the highest keep scores are computed: approximate), plus the
frame-mAP of those approximate budgets on the test split (`eval.gate_budget`). The ungated
`--gb_reference` row is timed in the same rounds. Latency: the jitted forward + detection scoring
of one clip on the host CPU, median over `--gb_rounds` x `--gb_calls` calls, rows interleaved
round by round so that a busy machine slows them alike.

JSON (`--gb_output`): `{"date", "machine", "note", "reference": {"row", "latency_ms"}, "rows":
[{"row", "seed", "frame_map" (masked, from results.json), "gated_flops_fraction",
"model_flops_fraction", "latency_ms_masked", "paths": [{"budget", "exact", "latency_ms",
"frame_map"}]}]}`.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags, logging

from benchmarks import ablate_detector as ab
from jaxact import files
from jaxact.train import get_experiment, loop

_ROWS = flags.DEFINE_list("gb_rows", ["gate_head", "gate_backbone", "gate_backbone_budget",
                                      "full", "gate_head_budget", "full_budget"],
                          "Gated ablation rows (those without a finished run are skipped).")
_REFERENCE = flags.DEFINE_string("gb_reference", "gram_xyxy", "The ungated reference row.")
_SEED = flags.DEFINE_integer("gb_seed", 0, "Seed of the runs.")
_BUDGETS = flags.DEFINE_list("gb_budgets", ["0.5", "0.25"],
                             "Approximate budgets, used where below the exact one.")
_ROOT = flags.DEFINE_string("gb_root", "workdirs/ablate_detector", "Ablation workdir root.")
_CALLS = flags.DEFINE_integer("gb_calls", 10, "Timed calls per round.")
_ROUNDS = flags.DEFINE_integer("gb_rounds", 3, "Rounds over all paths.")
_NOTE = flags.DEFINE_string("gb_note", "", "How busy the machine was.")
_OUTPUT = flags.DEFINE_string("gb_output", "benchmarks/results/gate_budget.json", "JSON path.")


def exact_budget(config, results: dict) -> float:
    """The smallest compact budget that holds every kept channel of the test split (as
    `ablate_detector.row_latency` computes it)."""
    needs = list(results.get("gate_clip_kept_max") or [])
    if results.get("gate_people_kept_max"):
        needs += [k / config.model.head.enc_dim for k in results["gate_people_kept_max"]]
    return max(needs) if needs else 1.0


def load(row: str, seed: int, root: str, budget: float = 0.0):
    """(Experiment with `eval.gate_budget=budget`, params, results.json) of a finished run."""
    workdir = ab.run_dir(root, row, seed)
    config = loop.read_config(workdir)
    config.eval.gate_budget = budget
    exp = get_experiment(config.experiment)(config, workdir)
    return exp, exp.restore_final(), ab.read_run(workdir)["results"]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    root, seed = _ROOT.value, _SEED.value
    rows = [r for r in _ROWS.value if ab.read_run(ab.run_dir(root, r, seed)) is not None]
    ref_exp, ref_params, _ = load(_REFERENCE.value, seed, root)
    timed = {("reference", None): (ref_exp.model, ref_params, ref_exp.input_shape(1))}
    table = []
    for row in rows:
        exp, params, results = load(row, seed, root)
        exact = exact_budget(exp.config, results)
        budgets = [exact] + [b for b in sorted({float(x) for x in _BUDGETS.value}, reverse=True)
                             if b < exact]
        paths = []
        for budget in budgets:
            frame_map = results["frame_map"] if budget == exact else None
            if frame_map is None:  # approximate: the test split on the compact path
                approx, _, _ = load(row, seed, root, budget)
                frame_map = approx.evaluators()[0].run(params)[0]["frame_map"]
            paths.append({"budget": budget, "exact": budget == exact, "frame_map": frame_map})
            timed[(row, budget)] = (exp.model, params, exp.input_shape(1))
        timed[(row, None)] = (exp.model, params, exp.input_shape(1))
        table.append({"row": row, "seed": seed, "frame_map": results["frame_map"],
                      "gated_flops_fraction": results.get("gated_flops_fraction"),
                      "model_flops_fraction": results.get("model_flops_fraction"),
                      "paths": paths})
    times = {key: [] for key in timed}
    for _ in range(_ROUNDS.value):  # interleaved: every path sees the same load
        for (row, budget), (model, params, shape) in timed.items():
            times[(row, budget)].append(ab.measure_latency(model, params, shape, _CALLS.value,
                                                           gate_budget=budget))
    ms = {key: round(float(np.median(v)), 2) for key, v in times.items()}
    for entry in table:
        entry["latency_ms_masked"] = ms[(entry["row"], None)]
        for path in entry["paths"]:
            path["latency_ms"] = ms[(entry["row"], path["budget"])]
            path["budget"] = round(path["budget"], 4)
    out = {"date": ab.now(), "machine": ab.machine_description(), "note": _NOTE.value,
           "reference": {"row": _REFERENCE.value, "latency_ms": ms[("reference", None)]},
           "rows": table}
    files.write_json(_OUTPUT.value, out, indent=2)
    print(f"ungated {_REFERENCE.value}: {ms[('reference', None)]:.1f} ms per clip (CPU)")
    print(f"{'row':<22} | {'frame-mAP':>9} | {'masked ms':>9} | path: budget, exact, ms, frame-mAP")
    for entry in table:
        paths = "; ".join(f"{p['budget']:.2f} {'exact' if p['exact'] else 'approx'} "
                          f"{p['latency_ms']:.1f} ms {p['frame_map']:.3f}" for p in entry["paths"])
        print(f"{entry['row']:<22} | {entry['frame_map']:>9.3f} | "
              f"{entry['latency_ms_masked']:>9.1f} | {paths}")
    print(f"\nwritten: {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
