"""The training loop shared by every experiment: steps, metric logs, checkpoints, resume."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable

import jax
import ml_collections
from absl import logging

from jaxact import console, files
from jaxact.train import checkpoint, parallel
from jaxact.train.state import learning_rate_schedule


def recorded_class_names(workdir: str) -> list[str] | None:
    """The class names a run recorded in `WORKDIR/class_names.json`, or None."""
    path = os.path.join(workdir, "class_names.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_class_names(workdir: str, class_names: list[str]) -> None:
    """Records a run's class names (index order = label ids) in `WORKDIR/class_names.json`, or
    checks that the data still has the recorded ones, so ids never silently change meaning."""
    path = os.path.join(workdir, "class_names.json")
    recorded = recorded_class_names(workdir)
    if recorded is not None:
        if recorded != class_names:
            raise ValueError(f"{path}: this run was trained on classes {recorded}, but the data "
                             f"now has {class_names}")
    elif jax.process_index() == 0:
        write_json(path, class_names)


def write_json(path: str, obj, **kwargs) -> None:
    """Writes via a temporary file and a rename, so a kill mid-write never leaves a truncated
    file where a finished one was (resume and eval read these)."""
    files.write_json(path, obj, indent=2, **kwargs)


# Fields added to the configs after workdirs were written with them, and the value that those
# runs used: `upgrade_config` fills them in, so the code reads every field directly.
_ADDED_FIELDS = {
    "memory_classifier": {
        "memory.margin": 0.0,
        "memory.softmax_loss_weight": 0.0,
        "memory.entropy_temperature": 0.1,
        "memory.clustering": "kmeans",
        "data.train_observation": 1.0,
        "memory.aux_data": "",
        "memory.cluster_threshold": 0.5,
        "model.normalize_features": False,
        "model.temporal_kernel": 3,
        "model.temporal_dilations": [1, 2, 4, 8],
        "model.dtype": "float32",
        "model.param_dtype": "float32",
        "eval.temporal_views": 1,
        "eval.flip_view": False,
        "train.optimizer": "adamw",
        "train.eval_every": 0,
        "train.eval_split": "validation",
        "train.ema_decay": 0.0,
    },
    "action_detector": {
        "train.optimizer": "adamw",
        "train.init_from": "",
        "loss.map": 0.0,
        "loss.l1_coords": "cxcywh",
        "eval.map_score_threshold": 0.5,
        "eval.map_cell": 1,
        "loss.flops": 1.0,
        "loss.flops_target": 0.0,
        "loss.reuse_cost": 0.0,
        "loss.relation": 0.1,
        "train.temperature_start": 5.0,
        "train.temperature_end": 0.5,
        "analyze.stride": 4,
        "analyze.fps": 8.0,
        "analyze.iou_threshold": 0.3,
        "analyze.max_missed": 3,
        "analyze.min_score": 0.5,
        "analyze.min_hits": 2,
        "analyze.smooth_seconds": 1.0,
        "analyze.on": 0.6,
        "analyze.off": 0.4,
        "analyze.min_duration": 0.5,
        "analyze.max_gap": 2.0,
        "analyze.merge_iou": 0.5,
        "analyze.seat_min_coverage": 0.0,
        "analyze.per_behaviour": {},
        "analyze.map_size": 64,
        "eval.gate_budget": 0.0,
        "analyze.video": True,
        "analyze.ensemble_with": "",
        "train.eval_every": 0,
        "train.eval_split": "validation",
        "train.ema_decay": 0.0,
    },
}


def upgrade_config(raw: dict) -> dict:
    """A config dict saved by an older version -> today's layout (a new dict; today's passes
    unchanged): fields added since get the value those runs used, and the detector's flat
    `model.*` fields move to its nested sub-configs."""
    raw = json.loads(json.dumps(raw))
    for field, value in _ADDED_FIELDS.get(raw.get("experiment"), {}).items():
        section, name = field.split(".")
        raw.setdefault(section, {}).setdefault(name, value)
    if raw.get("experiment") == "action_detector" and "model" in raw:
        from jaxact.models.detector import upgrade_flat_model_config

        raw["model"] = upgrade_flat_model_config(raw["model"])
    return raw


def read_config(workdir: str, what: str = "workdir") -> ml_collections.ConfigDict:
    """The `ml_collections.ConfigDict` a run saved in `WORKDIR/config.json`, upgraded to today's
    layout (`upgrade_config`); `what` names where the workdir came from (a flag, a config field)
    in the error when there is none."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}={workdir!r}: no config.json there")
    with open(path) as f:
        return ml_collections.ConfigDict(upgrade_config(json.load(f)))


def previous_results(workdir: str) -> dict:
    """`WORKDIR/results.json` of an earlier run, or {} (eval keeps e.g. its train time)."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


class MetricWriter:
    """Scalars to `WORKDIR/metrics.jsonl` and TensorBoard event files in `WORKDIR/tensorboard`
    (tag `PHASE/NAME`); process 0 writes, the others do nothing."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.enabled = jax.process_index() == 0
        self._tb = None
        if self.enabled:
            import tensorboardX

            self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, phase: str, step: int, metrics: dict) -> None:
        if not self.enabled or not metrics:
            return
        record = {"phase": phase, "step": step, **{k: float(v) for k, v in metrics.items()}}
        with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in metrics.items():
            self._tb.add_scalar(f"{phase}/{name}", float(value), step)
        self._tb.flush()

    def write_image(self, tag: str, step: int, image) -> None:
        """An `[H, W, 3|4]` image (uint8 or float in [0, 1]) under `tag` in TensorBoard."""
        if self.enabled:
            self._tb.add_image(tag, image, step, dataformats="HWC")
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Preempted(Exception):  # noqa: N818 (a signal, not an error)
    """Raised after the checkpoint that a SIGTERM (preemption notice) or a Ctrl-C asked for is
    saved."""


class PreemptionWatch:
    """Turns SIGTERM and the first Ctrl-C (SIGINT) into a flag the loop reads at each step
    boundary, so the run saves and exits cleanly; a second Ctrl-C exits at once.

    Single process: our own handlers. Multi-host: JAX's preemption sync manager (started by
    `jax.distributed.initialize`) makes every host agree on the step, read through orbax's
    `reached_preemption`.
    """

    def __init__(self):
        self.requested = threading.Event()
        self._previous = {}
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_sigterm),
                              signal.SIGINT: signal.signal(signal.SIGINT, self._on_sigint)}

    def _on_sigterm(self, *_):
        self.requested.set()

    def _on_sigint(self, *_):
        if self.requested.is_set():  # the second Ctrl-C: the user means now
            console.say("interrupted again: exiting without saving")
            os._exit(130)
        self.requested.set()
        console.say("Ctrl-C: saving at the end of this step (press Ctrl-C again to quit now)")

    def reached(self, mgr, step: int) -> bool:
        if self.requested.is_set():
            return True
        return jax.process_count() > 1 and mgr.reached_preemption(step)

    def close(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def check_nonfinite(phase: str, step: int, metrics: dict, max_in_a_row: int) -> None:
    """Raises once `max_in_a_row` updates in a row were skipped for NaN/inf gradients. Called
    before every checkpoint, so a diverged state is never saved over a good one."""
    streak = int(metrics.get("nonfinite_streak", 0))
    if streak >= max_in_a_row:
        raise FloatingPointError(
            f"[{phase}] step {step}: {streak} updates in a row had NaN/inf gradients (limit "
            f"train.max_nonfinite_steps={max_in_a_row}); last metrics {metrics}")


def run_phase(*, workdir: str, data_parallel: parallel.DataParallel, train_config, phase: str,
              state, step_fn, loader, end_step: int, on_step: Callable | None = None,
              progress=None, validate: Callable | None = None):
    """Trains `state` until `end_step`, resuming from this phase's latest checkpoint if any.

    `step_fn(state, batch) -> (state, metrics)` is compiled by `data_parallel`, which also lays
    out each batch; `loader` yields numpy batches and has
    `get_state`/`set_state` (its position is checkpointed with the state); `on_step(state, step) ->
    state` runs before every step (e.g. a memory-reference refresh), with `step` the Python count
    of steps done, so it never waits on the device. `train_config` gives `log_every`,
    `checkpoint_every`, `max_to_keep`. Checkpoints go to `WORKDIR/checkpoints/PHASE`.
    `progress` (a `console.bar` over the whole run, or None) advances by every step of this
    phase, those done before a resume included. `validate(state) -> (name, metrics)` runs every
    `eval_every` steps and at the end (0: never); its metrics go to the logs as `PHASE/name`.
    The learning rate is logged with the training metrics.
    """
    c = train_config
    mgr = checkpoint.manager(os.path.join(workdir, "checkpoints", phase), c.max_to_keep)
    first_step = int(state.step)
    restored = checkpoint.restore(mgr, state)
    if restored is not None:
        state, meta = restored
        if "loader" in meta:
            loader.set_state(meta["loader"])
        logging.info("[%s] resumed from step %d", phase, int(state.step))
    if progress is not None:
        progress.update(int(state.step) - first_step)
    writer, preemption = MetricWriter(workdir), PreemptionWatch()
    start_step, start_time = int(state.step), time.time()
    try:
        state, last = _train_until(mgr, writer, preemption, c, phase, state, step_fn, loader,
                                   end_step, on_step, data_parallel, progress, validate)
    finally:
        preemption.close()
        writer.close()
    mgr.wait_until_finished()
    if start_step < end_step:
        metrics = " ".join(f"{k} {float(v):.4g}" for k, v in last.items()
                           if k in ("loss", "accuracy"))
        console.say(f"[{phase}] steps {start_step}-{end_step} done in "
                    f"{time.time() - start_time:.0f} s: {metrics}")
    else:
        console.say(f"[{phase}] already trained ({end_step} steps)")
    return state


def _train_until(mgr, writer, preemption, c, phase, state, step_fn, loader, end_step, on_step,
                 data_parallel, progress, validate):
    """Returns the trained state and the last logged metrics (host values)."""
    learning_rate = learning_rate_schedule(c)
    step = int(state.step)
    start_step, start_time = step, time.time()
    last = {}
    while step < end_step:
        if on_step is not None:
            state = on_step(state, step)
        batch = data_parallel.batch(next(loader))
        state, metrics = step_fn(state, batch)
        step += 1
        save = step % c.checkpoint_every == 0 or step == end_step
        if step % c.log_every == 0 or save:
            last = jax.device_get(metrics)
            check_nonfinite(phase, step, last, c.max_nonfinite_steps)
        if step % c.log_every == 0 or step == end_step:
            last["learning_rate"] = float(learning_rate(step - 1))  # the update just made
            rate = (step - start_step) / max(time.time() - start_time, 1e-9)
            logging.info("[%s] step %d/%d %s | %.2f steps/s, ETA %.0fs", phase, step, end_step,
                         " ".join(f"{k}={float(v):.4f}" for k, v in last.items()), rate,
                         (end_step - step) / max(rate, 1e-9))
            writer.write(phase, step, last)
            if progress is not None:
                progress.set_postfix_str(f"{phase} loss {float(last['loss']):.4g}",
                                         refresh=False)
        if progress is not None:
            progress.update(1)
        if validate is not None and c.eval_every and (step % c.eval_every == 0
                                                      or step == end_step):
            name, scores = validate(state)
            logging.info("[%s] step %d %s: %s", phase, step, name,
                         " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
            writer.write(f"{phase}/{name}", step, scores)
        preempted = preemption.reached(mgr, step)
        if save or preempted:
            if preempted and not save:
                check_nonfinite(phase, step, jax.device_get(metrics), c.max_nonfinite_steps)
            checkpoint.save(mgr, step, state, {"loader": loader.get_state()})
        if preempted:
            mgr.wait_until_finished()
            logging.warning("[%s] preempted: saved step %d; rerun the same command to resume",
                            phase, step)
            raise Preempted(f"[{phase}] stopped at step {step}: checkpoint saved; rerun the "
                            "same command to resume")
    return state, last
