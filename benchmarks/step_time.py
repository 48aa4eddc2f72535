"""Train-step time of each experiment on this machine's devices, in float32 and bfloat16, with
the step's FLOPs (XLA cost analysis) and, on a GPU or TPU, model FLOPs utilisation (MFU).

Run from the repository root:

  python -m benchmarks.step_time                                    # default configs, f32
  python -m benchmarks.step_time --st_dtypes=float32,bfloat16       # on an accelerator
  python -m benchmarks.step_time --st_variant=smoke --st_steps=5    # seconds, a smoke check
  python -m benchmarks.step_time --st_experiments=detector --st_variant=resnet50

One real batch from each experiment's train loader is fed repeatedly, so the numbers are the
compiled step alone (`benchmarks.input_pipeline` times the loader). The first call (compilation)
is reported separately. FLOPs are XLA's count for the compiled step (forward, backward and
update; `parallel.mode=jit` only). MFU = achieved FLOP/s / the chip's dense peak for the
computation dtype (`PEAK_TFLOPS`, the vendor's figure; TF32 tensor cores for float32 on NVIDIA
GPUs, as XLA uses them by default); left out on CPUs and unknown chips.

JSON (`--st_output`): `{"updated", "rows": [{"step", "dataset", "variant", "dtype", "batch",
"compile_s", "ms_per_step", "clips_per_s", "gflops_per_step", "achieved_tflops", "mfu",
"machine", "date", "note"}]}`; a new measurement replaces the row of the same (step, variant,
dtype) on the same machine, so CPU and GPU rows live side by side.
"""

import json
import os
import time

import jax
from absl import app, flags

from benchmarks.machine import machine_description, now
from configs import classroom_detector, maneuvers_memory
from jaxact import files
from jaxact.train import classifier, detector

_EXPERIMENTS = flags.DEFINE_list("st_experiments", ["memory", "softmax", "detector"],
                                 "Steps to time: memory, softmax (classifier), detector.")
_VARIANT = flags.DEFINE_string("st_variant", "", "Config variant ('' = default, 'tiny', ...).")
_DTYPES = flags.DEFINE_list("st_dtypes", ["float32"], "model.dtype values to time.")
_STEPS = flags.DEFINE_integer("st_steps", 20, "Timed steps after the compiling one.")
_BATCH = flags.DEFINE_integer("st_batch_size", 0, "Global batch (0 = the config's).")
_MODE = flags.DEFINE_enum("st_mode", "jit", ["jit", "pmap"], "parallel.mode")
_NOTE = flags.DEFINE_string("st_note", "", "How busy the machine was.")
_WORKDIR = flags.DEFINE_string("st_workdir", "/tmp/jaxact_step_time", "Scratch directory.")
_OUTPUT = flags.DEFINE_string("st_output", "benchmarks/results/step_time.json", "JSON path.")

# Dense peak TFLOP/s per chip by (device kind prefix, dtype); vendor datasheets (NVIDIA: SXM,
# without sparsity; float32 = TF32 tensor cores).
PEAK_TFLOPS = {
    ("NVIDIA H200", "bfloat16"): 989.0, ("NVIDIA H200", "float32"): 494.0,
    ("NVIDIA H100", "bfloat16"): 989.0, ("NVIDIA H100", "float32"): 494.0,
    ("NVIDIA A100", "bfloat16"): 312.0, ("NVIDIA A100", "float32"): 156.0,
    ("TPU v4", "bfloat16"): 275.0, ("TPU v5 lite", "bfloat16"): 197.0,
    ("TPU v5p", "bfloat16"): 459.0,
}


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """The chip's dense peak for `dtype`, or None when unknown (CPUs)."""
    for (prefix, peak_dtype), peak in PEAK_TFLOPS.items():
        if device_kind.startswith(prefix) and peak_dtype == dtype:
            return peak
    return None


def _config(module, dtype: str):
    config = module.get_config(_VARIANT.value) if _VARIANT.value else module.get_config()
    config.parallel.mode = _MODE.value
    config.model.dtype = dtype
    if _BATCH.value:
        config.train.batch_size = _BATCH.value
    return config


def step_flops(step, state, batch) -> float | None:
    """FLOPs of one call of the jitted `step`, by XLA's cost analysis (None where unavailable)."""
    try:
        cost = step.lower(state, batch).compile().cost_analysis()
    except (AttributeError, NotImplementedError):  # pmap, or a backend without cost analysis
        return None
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _time(step, state, batch) -> tuple[float, float, object]:
    """(compile + first step seconds, mean seconds per later step, the state after them: the
    step donates its input)."""
    start = time.perf_counter()
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    return first, (time.perf_counter() - start) / _STEPS.value, state


def classifier_step(kind: str, dtype: str):
    """The memory or softmax train step of the classifier, a state it takes, one batch."""
    config = _config(maneuvers_memory, dtype)
    exp = classifier.Experiment(config, os.path.join(_WORKDIR.value, "classifier"))
    batch = exp.data_parallel.batch(next(exp.train_loader()))
    state = exp.init_state()
    if kind == "memory":
        return config, exp, exp.programs.memory_step, exp.fill_memory(exp.with_memory(state)), batch
    return config, exp, exp.programs.softmax_step, state, batch


def detector_step(dtype: str):
    config = _config(classroom_detector, dtype)
    exp = detector.Experiment(config, os.path.join(_WORKDIR.value, "detector"))
    loader = exp.make_loader("train", exp.data.transform(train=True), train=True)
    batch = exp.data_parallel.batch(next(loader))
    return config, exp, exp.programs.train_step, exp.init_state(), batch


def measure(name: str, dtype: str) -> dict:
    if name in ("memory", "softmax"):
        config, exp, step, state, batch = classifier_step(name, dtype)
    elif name == "detector":
        config, exp, step, state, batch = detector_step(dtype)
    else:
        raise app.UsageError(f"--st_experiments: unknown {name!r}")
    first, per_step, state = _time(step, state, batch)
    flops = step_flops(step, state, batch) if _MODE.value == "jit" else None
    batch_size = config.train.batch_size
    achieved = flops / per_step / 1e12 if flops else None
    devices = jax.devices()
    peak = peak_tflops(devices[0].device_kind, dtype)
    return {"step": name, "dataset": exp.data.description, "variant": _VARIANT.value or "default",
            "dtype": dtype, "batch": batch_size, "compile_s": round(first, 1),
            "ms_per_step": round(per_step * 1e3, 2), "clips_per_s": round(batch_size / per_step, 1),
            "gflops_per_step": round(flops / 1e9, 2) if flops else None,
            "achieved_tflops": round(achieved, 4) if achieved else None,
            "mfu": round(achieved / (peak * len(devices)), 4) if achieved and peak else None}


def format_table(rows: list[dict]) -> str:
    def num(x, spec):
        return "-" if x is None else format(x, spec)

    head = (f"{'step':>9} | {'dataset':>18} | {'dtype':>8} | {'batch':>5} | {'compile s':>9} | "
            f"{'ms/step':>8} | {'clips/s':>8} | {'GFLOP/step':>10} | {'TFLOP/s':>8} | {'MFU':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['step']:>9} | {r['dataset'][:18]:>18} | {r['dtype']:>8} | "
                     f"{r['batch']:>5} | {r['compile_s']:>9.1f} | {r['ms_per_step']:>8.1f} | "
                     f"{r['clips_per_s']:>8.1f} | {num(r['gflops_per_step'], '.2f'):>10} | "
                     f"{num(r['achieved_tflops'], '.3f'):>8} | {num(r['mfu'], '.1%'):>6}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    machine = machine_description()
    rows = [measure(name, dtype) for dtype in _DTYPES.value for name in _EXPERIMENTS.value]
    devices = jax.devices()
    print(f"\n{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
          f"parallel.mode={_MODE.value}, variant={_VARIANT.value or 'default'}")
    print(format_table(rows))
    table = {"rows": []}
    if os.path.exists(_OUTPUT.value):
        with open(_OUTPUT.value) as f:
            table = json.load(f)
    key = ("step", "variant", "dtype")
    fresh = {tuple(r[k] for k in key) for r in rows}
    kept = [r for r in table["rows"]
            if tuple(r[k] for k in key) not in fresh or r.get("machine") != machine]
    for r in rows:
        r.update(machine=machine, date=now(), note=_NOTE.value)
    files.write_json(_OUTPUT.value, {"updated": now(), "rows": kept + rows})
    print(f"\nwritten: {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
