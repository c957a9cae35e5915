"""Data parallelism in one place: a 1-D ``data`` mesh over every device of every host.

The batch is sharded along ``data``. The train state (parameters, EMA, optimizer moments) is either
replicated, or, with ``train.shard_state``, split over the same ``data`` axis FSDP/ZeRO-3 style
(``fsdp``): each large array along its largest dimension that the device count divides. ``jax.jit``
with these ``NamedSharding``s makes XLA average the gradients across devices and, for a sharded
state, gather each weight where it is used; the model code is the same either way.
"""

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gcd_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A mesh with one axis, ``data``, over ``devices`` (default ``jax.devices()``: every device
    of every host)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def fsdp(shape: tuple[int, ...], itemsize: int, mesh: Mesh, min_bytes: int) -> NamedSharding:
    """One array's FSDP sharding (big_vision's ``fsdp`` rule): split over ``data`` along its
    largest dimension divisible by the device count, when the array has at least ``min_bytes``;
    smaller or indivisible arrays stay replicated."""
    if math.prod(shape) * itemsize < min_bytes:
        return replicated(mesh)
    for axis in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[axis] % mesh.size == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA_AXIS
            return NamedSharding(mesh, PartitionSpec(*spec))
    return replicated(mesh)


def state_shardings(abstract_state, mesh: Mesh, shard: bool, min_bytes: int):
    """The sharding of every leaf of ``abstract_state`` (``ShapeDtypeStruct`` leaves): ``fsdp``
    when ``shard``, else replicated."""

    def leaf(a):
        if not shard:
            return replicated(mesh)
        return fsdp(tuple(a.shape), np.dtype(a.dtype).itemsize, mesh, min_bytes)

    return jax.tree.map(leaf, abstract_state)


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def per_device_batch(global_batch_size: int, mesh: Mesh) -> int:
    """The batch each device sees; the global batch must split evenly."""
    if global_batch_size % mesh.size:
        raise ConfigError(
            f"train.global_batch_size={global_batch_size} must be divisible by the number of "
            f"devices ({mesh.size})."
        )
    return global_batch_size // mesh.size


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Lays this host's part of the global batch on its devices along ``data``.

    Args:
      batch: host-local arrays ``[b, ...]`` with ``b = global batch / process count``.
    Returns:
      global ``jax.Array``s ``[B, ...]`` sharded over the mesh.
    """
    sharding = batch_sharded(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, value)
        for name, value in batch.items()
    }
