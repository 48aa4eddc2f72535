"""The training loop shared by every experiment: steps, metric logs, checkpoints, resume."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

import jax
from absl import logging
from jax.sharding import Mesh

from jaxact.train import checkpoint, parallel


def log_metrics(workdir: str, phase: str, step: int, metrics: dict) -> None:
    """Appends one JSON line to `WORKDIR/metrics.jsonl` (process 0 only)."""
    if jax.process_index() != 0:
        return
    record = {"phase": phase, "step": step, **{k: float(v) for k, v in metrics.items()}}
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def run_phase(*, workdir: str, mesh: Mesh, train_config, phase: str, state, step_fn, loader,
              end_step: int, on_step: Callable | None = None):
    """Trains `state` until `end_step`, resuming from this phase's latest checkpoint if any.

    `step_fn(state, batch) -> (state, metrics)` is jitted; `loader` yields numpy batches and has
    `get_state`/`set_state` (its position is checkpointed with the state); `on_step(state) -> state`
    runs before every step (e.g. a memory-reference refresh). `train_config` gives `log_every`,
    `checkpoint_every`, `max_to_keep`. Checkpoints go to `WORKDIR/checkpoints/PHASE`.
    """
    c = train_config
    mgr = checkpoint.manager(os.path.join(workdir, "checkpoints", phase), c.max_to_keep)
    restored = checkpoint.restore(mgr, state)
    if restored is not None:
        state, meta = restored
        if "loader" in meta:
            loader.set_state(meta["loader"])
        logging.info("[%s] resumed from step %d", phase, int(state.step))
    step = int(state.step)
    start_step, start_time = step, time.time()
    while step < end_step:
        if on_step is not None:
            state = on_step(state)
        batch = parallel.shard_batch(next(loader), mesh)
        state, metrics = step_fn(state, batch)
        step += 1
        if step % c.log_every == 0 or step == end_step:
            last = jax.device_get(metrics)
            rate = (step - start_step) / max(time.time() - start_time, 1e-9)
            if not all(math.isfinite(v) for v in last.values()):
                raise FloatingPointError(f"[{phase}] non-finite metrics at step {step}: {last}")
            logging.info("[%s] step %d/%d %s | %.2f steps/s, ETA %.0fs", phase, step, end_step,
                         " ".join(f"{k}={float(v):.4f}" for k, v in last.items()), rate,
                         (end_step - step) / max(rate, 1e-9))
            log_metrics(workdir, phase, step, last)
        if step % c.checkpoint_every == 0 or step == end_step:
            checkpoint.save(mgr, step, state, {"loader": loader.get_state()})
    mgr.wait_until_finished()
    return state
