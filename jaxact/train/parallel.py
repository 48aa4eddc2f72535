"""Data parallelism over a device mesh: batch split across devices, state replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


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


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
