"""Orbax checkpoints of a TrainState (params, optimizer, memory bank, rng, step) plus JSON metadata
(e.g. the data loader's position)."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def has_checkpoint(directory: str) -> bool:
    """Whether `directory` holds a finished checkpoint; creates nothing (unlike `manager`)."""
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def save(mgr: ocp.CheckpointManager, step: int, state, meta: dict | None = None) -> None:
    """Asynchronous save; orbax finalises a checkpoint only when complete, so a crash mid-save
    leaves the previous one restorable."""
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                           meta=ocp.args.JsonSave(meta or {})))


def restore(mgr: ocp.CheckpointManager, target_state, step: int | None = None):
    """Restores (state, meta) into the structure and shardings of `target_state`.

    Entries of the checkpoint that `target_state` lacks are ignored: states of older versions
    carried empty memory fields on every phase's state (a state that lacks an entry the target
    has still fails). Returns None if there is no checkpoint.
    """
    step = mgr.latest_step() if step is None else step
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    state_args = ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True)
    out = mgr.restore(step, args=ocp.args.Composite(state=state_args,
                                                    meta=ocp.args.JsonRestore()))
    return out.state, dict(out.meta or {})
