"""Train-step time of each experiment on this machine's devices; prints a table.

Run from the repository root:

  python -m benchmarks.step_time                                    # default configs
  python -m benchmarks.step_time --variant=smoke --steps=5          # seconds, for a smoke check
  python -m benchmarks.step_time --experiments=detector --variant=resnet50

One real batch from each experiment's train loader is fed repeatedly, so the numbers are the
compiled step alone (the input pipeline is timed by the training logs' steps/s). The first call
(compilation) is reported separately.
"""

import os
import time

import jax
from absl import app, flags

from configs import classroom_detector, maneuvers_memory
from jaxact.train import classifier, detector

_EXPERIMENTS = flags.DEFINE_list("experiments", ["memory", "softmax", "detector"],
                                 "Steps to time: memory, softmax (classifier), detector.")
_VARIANT = flags.DEFINE_string("variant", "", "Config variant ('' = default, 'tiny', ...).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after the compiling one.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Global batch (0 = the config's).")
_MODE = flags.DEFINE_enum("mode", "jit", ["jit", "pmap"], "parallel.mode")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxact_step_time", "Scratch directory.")


def _config(module, variant):
    config = module.get_config(variant) if variant else module.get_config()
    config.parallel.mode = _MODE.value
    if _BATCH.value:
        config.train.batch_size = _BATCH.value
    return config


def _time(step, state, batch) -> tuple[float, float]:
    """(compile + first step seconds, mean seconds per later step)."""
    start = time.perf_counter()
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    return first, (time.perf_counter() - start) / _STEPS.value


def classifier_step(kind: str):
    """The memory or softmax train step of the classifier, a state it takes, one batch."""
    config = _config(maneuvers_memory, _VARIANT.value)
    exp = classifier.Experiment(config, os.path.join(_WORKDIR.value, "classifier"))
    batch = exp.data_parallel.batch(next(exp.train_loader()))
    state = exp.init_state()
    if kind == "memory":
        return config, exp, exp.programs.memory_step, exp.fill_memory(exp.with_memory(state)), batch
    return config, exp, exp.programs.softmax_step, state, batch


def detector_step():
    config = _config(classroom_detector, _VARIANT.value)
    exp = detector.Experiment(config, os.path.join(_WORKDIR.value, "detector"))
    loader = exp.make_loader("train", exp.data.transform(train=True), train=True)
    batch = exp.data_parallel.batch(next(loader))
    return config, exp, exp.programs.train_step, exp.init_state(), batch


def main(argv):
    del argv
    devices = jax.devices()
    rows = []
    for name in _EXPERIMENTS.value:
        if name in ("memory", "softmax"):
            config, exp, step, state, batch = classifier_step(name)
        elif name == "detector":
            config, exp, step, state, batch = detector_step()
        else:
            raise app.UsageError(f"--experiments: unknown {name!r}")
        first, per_step = _time(step, state, batch)
        batch_size = config.train.batch_size
        rows.append((name, exp.data.description, batch_size, first, per_step * 1e3,
                     batch_size / per_step))

    print(f"\n{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
          f"parallel.mode={_MODE.value}, variant={_VARIANT.value or 'default'}")
    print(f"{'step':>9} | {'dataset':>18} | {'batch':>5} | {'compile+1st s':>13} | "
          f"{'ms/step':>8} | {'clips/s':>8}")
    for name, data, batch, first, ms, clips in rows:
        print(f"{name:>9} | {data:>18} | {batch:>5} | {first:>13.1f} | {ms:>8.1f} | "
              f"{clips:>8.1f}")


if __name__ == "__main__":
    app.run(main)
