"""Data parallelism: the batch split across devices, the train state replicated.

Two modes (`config.parallel.mode`), same numbers (tested):
  jit   `jax.jit` over a `Mesh` with `NamedSharding` (default). Step functions see the global batch
        and XLA inserts the collectives.
  pmap  `jax.pmap` over this process's devices. Each device sees its `[B / n]` rows; step
        functions reduce explicitly over `axis_name` (gradients and metrics summed, loss
        normalisers global, memory writes gathered).
In both modes the train state is one replicated global array (pmap maps it with in/out axes
None), so checkpoints, evaluation and every function outside the step are shared. Losses know
nothing of devices (they return per-example values, or take their normaliser as an argument);
step functions take `axis_name` (None under jit) and turn losses and metrics into global means
with `masked_share` / `global_count` / `global_metrics`, and gather with `gather_rows`: this is
the one place where the two modes differ.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODES = ("jit", "pmap")


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (all hosts). Auto axes: XLA places the collectives, so a
    batch-sharded update can be written into a replicated memory bank."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, field: str = "train.batch_size"):
    """Fails before any compile when the batch cannot be split evenly over devices."""
    if global_batch_size <= 0 or global_batch_size % mesh.size:
        raise ValueError(f"{field}={global_batch_size} must be a positive multiple of the "
                         f"number of devices ({mesh.size})")


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """This process's numpy batch -> global arrays split along the batch axis."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def all_hosts(tree):
    """This process's rows -> every process's rows, in global batch order (numpy)."""
    if jax.process_count() == 1:
        return tree
    return multihost_utils.process_allgather(tree, tiled=True)


# ----------------------------------------------------------------------------- in step functions


def global_sum(x, axis_name: str | None):
    """Sum over the devices of `axis_name` (identity under jit, where `x` is already global)."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def masked_share(values, weight, axis_name: str | None):
    """This device's share of the global weighted mean of `values` (same shape as `weight`):
    `sum(values * weight) / global sum(weight)`. Summed over devices it is the global mean."""
    weight = weight.astype(jnp.float32)
    total = global_sum(jnp.sum(weight), axis_name)
    return jnp.sum(values.astype(jnp.float32) * weight) / jnp.maximum(total, 1.0)


def global_count(count, axis_name: str | None):
    """A loss normaliser: the global sum of `count`, at least 1."""
    return jnp.maximum(global_sum(count, axis_name), 1.0)


def global_metrics(metrics: dict, axis_name: str | None) -> dict:
    """Metrics of a step -> their global values. A `(sum, count)` pair becomes the global mean
    `sum of sums / max(sum of counts, 1)`; any other value is summed over devices (under pmap, a
    per-device share of a global mean sums to that mean)."""
    def reduce(value):
        if isinstance(value, tuple):
            total, count = global_sum(value, axis_name)
            return total / jnp.maximum(count, 1.0)
        return global_sum(value, axis_name)
    return {name: reduce(value) for name, value in metrics.items()}


def gather_rows(tree, axis_name: str | None):
    """Every device's rows `[B / n, ...]` -> the global batch `[B, ...]` in device order."""
    if axis_name is None:
        return tree
    return jax.tree.map(lambda x: jax.lax.all_gather(x, axis_name, tiled=True), tree)


def device_rng(rng, axis_name: str | None):
    """A key that differs per device under pmap (dropout masks of different rows must differ)."""
    return rng if axis_name is None else jax.random.fold_in(rng, jax.lax.axis_index(axis_name))


# ----------------------------------------------------------------------------- the two modes


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"parallel.mode={mode!r}: expected one of {MODES}")


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """Compiles steps and lays out batches for `mode` over `mesh` (all devices of all hosts)."""

    mesh: Mesh
    mode: str = "jit"

    def __post_init__(self):
        check_mode(self.mode)

    @property
    def axis_name(self) -> str | None:
        return DATA_AXIS if self.mode == "pmap" else None

    def batch(self, local_batch: dict):
        """This process's numpy batch `[B_local, ...]` -> the step's input: a global array split
        along rows (jit), or `[local devices, B_local / local devices, ...]` (pmap)."""
        if self.mode == "jit":
            return shard_batch(local_batch, self.mesh)
        n = jax.local_device_count()
        return jax.tree.map(lambda x: np.asarray(x).reshape(n, -1, *np.shape(x)[1:]), local_batch)

    def train_step(self, step_fn, compiler_options=None):
        """`step_fn(state, batch, axis_name) -> (state, metrics)` compiled. The state (donated)
        and the metrics come back replicated; `step_fn` must reduce over `axis_name` so they are
        the same on every device (pmap does not check it, the equality tests do)."""
        step = functools.partial(step_fn, axis_name=self.axis_name)
        if self.mode == "jit":
            rep = replicated(self.mesh)
            return jax.jit(step, donate_argnums=(0,), out_shardings=(rep, rep),
                           compiler_options=compiler_options)
        stepped = jax.pmap(step, axis_name=DATA_AXIS, in_axes=(None, 0), out_axes=(None, None),
                           donate_argnums=(0,))
        if jax.process_count() == 1:
            return stepped

        def global_step(state, batch):
            # pmap returns this host's copy; checkpointing and the next step want the global
            # replicated array that jit mode produces.
            return multihost_utils.host_local_array_to_global_array(
                stepped(state, batch), self.mesh, PartitionSpec())
        return global_step

    def map_rows(self, fn, num_broadcast: int, compiler_options=None):
        """`fn(*broadcast_args, batch_input)` with per-row outputs, compiled; the result is a
        callable on (broadcast args..., `self.batch(...)` output) returning this process's rows
        as numpy `[B_local, ...]`."""
        if self.mode == "jit":
            compiled = jax.jit(fn, out_shardings=replicated(self.mesh),
                               compiler_options=compiler_options)

            def run(*args):
                rows = len(jax.tree.leaves(args[-1])[0]) // jax.process_count()
                start = jax.process_index() * rows
                return jax.tree.map(lambda x: np.asarray(x)[start:start + rows],
                                    jax.device_get(compiled(*args)))
        else:
            compiled = jax.pmap(fn, axis_name=DATA_AXIS, in_axes=(None,) * num_broadcast + (0,))

            def run(*args):
                return jax.tree.map(_local_rows, compiled(*args))
        return run


def _local_rows(x: jax.Array) -> np.ndarray:
    """A pmap output `[local devices, b, ...]` -> numpy `[local devices * b, ...]`."""
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
    return np.concatenate([np.asarray(s.data) for s in shards]).reshape(-1, *x.shape[2:])
