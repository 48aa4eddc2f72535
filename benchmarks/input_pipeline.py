"""Is the input pipeline ever the bottleneck? Clips/s the train loader delivers against clips/s the
compiled train step consumes, for each default config, in one sitting.

  python -m benchmarks.input_pipeline                        # the default configs
  python -m benchmarks.input_pipeline --ip_configs=detector --ip_batches=20

Loader: batches pulled from a fresh train loader as fast as they come (`data.num_threads` grain
threads, `data.prefetch` batches ahead, as training builds it), timed after the first batch, which
pays for opening the data; median of `--ip_repeats` passes over `--ip_batches` batches. Step: the
jitted train step fed one real batch repeatedly after compilation (`benchmarks.step_time`);
median of `--ip_repeats` passes over `--ip_steps` steps. Both are measured alone: in training they
share the cores, so `loader_over_step` >= 2 leaves the step at least half the machine's time.

JSON (`--ip_output`): `{"date", "machine", "note", "rows": [{"config", "dataset", "batch",
"num_threads", "loader_clips_per_s", "step_clips_per_s", "loader_over_step"}], "ratios":
{"loader_over_step_clips_per_s": smallest over the rows}}`.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
from absl import app, flags, logging

from benchmarks.machine import machine_description, now
from configs import classroom_detector, jhmdb_memory, maneuvers_memory
from jaxact import files
from jaxact.train import classifier, detector

CONFIGS = {
    "maneuvers_memory": (maneuvers_memory, classifier, "memory"),
    "jhmdb_memory": (jhmdb_memory, classifier, "memory"),
    "classroom_detector": (classroom_detector, detector, "train"),
}
_CONFIGS = flags.DEFINE_list("ip_configs", list(CONFIGS), "Default configs to measure "
                             "(jhmdb_memory is skipped when its data is absent).")
_BATCHES = flags.DEFINE_integer("ip_batches", 30, "Loader batches per pass.")
_STEPS = flags.DEFINE_integer("ip_steps", 10, "Train steps per pass.")
_REPEATS = flags.DEFINE_integer("ip_repeats", 3, "Passes (the median counts).")
_NOTE = flags.DEFINE_string("ip_note", "", "How busy the machine was.")
_WORKDIR = flags.DEFINE_string("ip_workdir", "/tmp/jaxact_input_pipeline", "Scratch directory.")
_OUTPUT = flags.DEFINE_string("ip_output", "benchmarks/results/input_pipeline.json", "JSON path.")


def loader_clips_per_s(make_loader, batch_size: int, num_batches: int) -> float:
    """Clips/s of one pass over `num_batches` batches of a fresh loader, after its first."""
    loader = iter(make_loader())
    next(loader)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(loader)
    return num_batches * batch_size / (time.perf_counter() - start)


def step_clips_per_s(step, state, batch, batch_size: int, num_steps: int):
    """(clips/s over `num_steps` steps, the state after them)."""
    start = time.perf_counter()
    for _ in range(num_steps):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    return num_steps * batch_size / (time.perf_counter() - start), state


def measure(name: str) -> dict | None:
    module, experiment, step_name = CONFIGS[name]
    config = module.get_config()
    try:
        exp = experiment.Experiment(config, os.path.join(_WORKDIR.value, name))
    except FileNotFoundError as e:  # jhmdb_memory without ../shared/data
        print(f"{name}: skipped ({e})")
        return None

    def make_loader():
        return exp.make_loader("train", exp.data.transform(train=True), train=True)

    batch = exp.data_parallel.batch(next(iter(make_loader())))
    state = exp.init_state()
    if step_name == "memory":
        step, state = exp.programs.memory_step, exp.fill_memory(exp.with_memory(state))
    else:
        step = exp.programs.train_step
    state, _ = step(state, batch)  # compiles
    jax.block_until_ready(state)
    size = config.train.batch_size
    loader_rates, step_rates = [], []
    for _ in range(_REPEATS.value):  # interleaved: a busy spell slows both alike
        loader_rates.append(loader_clips_per_s(make_loader, size, _BATCHES.value))
        rate, state = step_clips_per_s(step, state, batch, size, _STEPS.value)
        step_rates.append(rate)
    loader_rate, step_rate = statistics.median(loader_rates), statistics.median(step_rates)
    return {"config": name, "dataset": exp.data.description, "batch": size,
            "num_threads": config.data.num_threads, "loader_clips_per_s": round(loader_rate, 1),
            "step_clips_per_s": round(step_rate, 1),
            "loader_over_step": round(loader_rate / step_rate, 2)}


def format_table(rows: list[dict]) -> str:
    head = (f"{'config':<20} | {'dataset':<24} | {'batch':>5} | {'threads':>7} | "
            f"{'loader clips/s':>14} | {'step clips/s':>12} | {'loader/step':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['config']:<20} | {r['dataset'][:24]:<24} | {r['batch']:>5} | "
                     f"{r['num_threads']:>7} | {r['loader_clips_per_s']:>14.1f} | "
                     f"{r['step_clips_per_s']:>12.1f} | {r['loader_over_step']:>11.2f}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_CONFIGS.value) - set(CONFIGS))
    if unknown:
        raise app.UsageError(f"--ip_configs: unknown {unknown}; expected some of {list(CONFIGS)}")
    logging.set_verbosity(logging.WARNING)
    rows = [row for row in map(measure, _CONFIGS.value) if row is not None]
    if not rows:
        raise app.UsageError("no config could be measured")
    table = {"date": now(), "machine": machine_description(), "note": _NOTE.value,
             "repeats": _REPEATS.value, "rows": rows,
             "ratios": {"loader_over_step_clips_per_s": min(r["loader_over_step"] for r in rows)}}
    print(format_table(rows))
    files.write_json(_OUTPUT.value, table)
    print(f"\nwritten: {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
