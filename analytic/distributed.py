r"""Statistics beyond one device and one machine: a device mesh in one process, and JAX's multi-controller runtime.

The statistics are sums, so scale is a reduction: each device (or process) forms the moments of its rows and a
collective adds them,

.. math::
    G = \sum_{p} X_p^\top X_p, \qquad B = \sum_p X_p^\top Y_p,

exactly in fixed precision (integer words, any order), to rounding in float.

- One process, several devices: put the batch's rows on a mesh (:func:`shard_rows`) and call
  ``jax.jit(analytic.accumulate)``; XLA splits the product by rows and adds the partial moments with an all-reduce.
- Several processes (``jax.distributed.initialize``; over loopback on CPU with the gloo collectives): each process
  accumulates its own rows, any number of them, and :func:`sum_over_processes` adds the states across processes,
  leaving the total on every process. Rows already laid out as one global array (:func:`global_rows`) work with
  ``jax.jit(analytic.accumulate)`` as in one process.

``python -m benchmarks.multihost`` is a launcher that runs N processes over loopback and checks the state hash.
Use this engine for a data-parallel cluster you control; use ``federated`` (Flower) for parties that do not share
data or trust one another.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from analytic import words
from analytic.errors import InputError
from analytic.state import Statistics, check_leaves

ROWS = "rows"  # the mesh axis that rows are split along


def row_mesh(devices=None) -> Mesh:
    """A one-axis mesh (axis ``"rows"``) over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (ROWS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a whole copy on every device of ``mesh`` (how states live on a mesh)."""
    return NamedSharding(mesh, PartitionSpec())


def shard_rows(array, mesh: Mesh) -> jax.Array:
    """``array`` with its rows split across the devices of ``mesh`` (their number must divide the rows).

    Args:
      array: an array whose leading axis is the rows.
      mesh: a mesh with a ``"rows"`` axis, e.g. :func:`row_mesh`.

    Returns:
      A JAX array sharded by rows over the mesh.

    Raises:
      InputError: the number of rows is not a multiple of the number of devices.

    Example:
      >>> mesh = row_mesh()  # every device: one on a plain CPU, all of them on a GPU host
      >>> features = np.random.default_rng(0).normal(size=(8 * mesh.devices.size, 3)).astype(np.float32)
      >>> labels = np.arange(features.shape[0]) % 2
      >>> stats = analytic.init_statistics(3, class_ids=[0, 1], precision="fixed")
      >>> stats = jax.jit(analytic.accumulate)(jax.device_put(stats, replicated(mesh)),
      ...                                      shard_rows(features, mesh), shard_rows(labels, mesh))
      >>> int(stats.count) == features.shape[0]
      True
    """
    array = jnp.asarray(array)
    devices = mesh.devices.size
    if array.shape[0] % devices:
        raise InputError(f"{array.shape[0]} rows cannot be split evenly across {devices} devices")
    return jax.device_put(array, NamedSharding(mesh, PartitionSpec(ROWS)))


def global_rows(local_rows, mesh: Mesh) -> jax.Array:
    """One global array whose rows are every process's ``local_rows`` in process order (each process passes its own;
    the local row counts must be equal and divisible by the process's devices)."""
    local_rows = np.asarray(local_rows)
    return jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec(ROWS)), local_rows)


def sum_over_processes(stats: Statistics) -> Statistics:
    """The sum of every process's ``stats`` (same configuration and classes everywhere), on every process.

    Each leaf is stacked along a process axis and summed by one jitted reduction (a collective across processes);
    integer words are then carried back to canonical form. Call it in every process, like any collective.

    Raises:
      IntegrityError: the state's leaves do not match its precision.
    """
    check_leaves(stats)
    mesh = Mesh(np.asarray([jax.local_devices(process_index=p)[0] for p in range(jax.process_count())]), ("process",))
    stacked = NamedSharding(mesh, PartitionSpec("process"))
    leaves, treedef = jax.tree.flatten(stats)
    global_leaves = [
        jax.make_array_from_process_local_data(stacked, np.asarray(leaf)[None], (jax.process_count(), *np.shape(leaf)))
        for leaf in leaves
    ]

    def total(stacked_leaves):
        sums = [leaf.sum(axis=0, dtype=leaf.dtype) for leaf in stacked_leaves]
        return [words.canonical(s) if s.dtype == jnp.int32 else s for s in sums]

    summed = jax.jit(total, out_shardings=replicated(mesh))(global_leaves)
    return jax.tree.unflatten(treedef, [np.asarray(leaf.addressable_data(0)) for leaf in summed])
