"""Data parallelism with `jax.sharding`: one mesh axis, 'data', over all devices.

Parameters and optimizer state are replicated (P()), each step's gathered batch is split
over the devices (P('data')), and XLA inserts the all-reduce of the gradients. The training
frames stay whole on every device, so gathering a batch by the epoch's permutation remains
a local gather (no cross-device traffic for data); only the gathered batch is sharded, by a
sharding constraint inside the step (steps.make_train_step's `batch_sharding`). Validation
and test prediction run replicated: their cost is small next to training.

With one device, or config.train.data_parallel False, no mesh is made and placement is plain
`jax.device_put`: exactly the single-device program. A multi-process run
(`jax.distributed.initialize`, see echokld.main) uses the same mesh over the global devices;
every process reads the same data and builds identical host arrays, so replicated global
arrays are assembled from each process's own copy (no per-process data sharding).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from echokld.errors import InputError

DATA_AXIS = "data"


def make_mesh(devices: list[Any] | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices. Auto axes: sharding constraints steer GSPMD."""
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host or single-device values -> global arrays replicated on every device of `mesh`.

  Built with `make_array_from_callback` from each process's own copy, so it also works when
  the mesh spans devices of other processes (where `device_put` of a local value cannot).
  """
  sharding = NamedSharding(mesh, P())

  def put(leaf: Any) -> jax.Array:
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree_util.tree_map(put, tree)


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where training puts arrays: one device (mesh None) or a data-parallel mesh."""

  mesh: Mesh | None = None

  @property
  def num_devices(self) -> int:
    return 1 if self.mesh is None else self.mesh.size

  @property
  def batch_sharding(self) -> NamedSharding | None:
    """Sharding of a gathered batch (leading axis over 'data'); None on one device."""
    return None if self.mesh is None else NamedSharding(self.mesh, P(DATA_AXIS))

  def sharding_for(self, batch_size: int) -> NamedSharding | None:
    """`batch_sharding` when `batch_size` divides over the devices, else None (replicated)."""
    return self.batch_sharding if batch_size % self.num_devices == 0 else None

  def put(self, tree: Any) -> Any:
    """Device arrays of `tree`: `jax.device_put` on one device, else replicated on the mesh."""
    return jax.device_put(tree) if self.mesh is None else replicate(tree, self.mesh)


def is_main_process() -> bool:
  """Only process 0 writes files other than checkpoints (orbax coordinates those itself)."""
  return jax.process_index() == 0


def first_devices(count: int) -> Placement:
  """Data parallel over the first `count` devices (one device: plain placement)."""
  return Placement(make_mesh(jax.devices()[:count])) if count > 1 else Placement()


def for_inference(batch_size: int) -> Placement:
  """Prediction's placement: the batch split over this process's devices when it divides."""
  devices = jax.local_devices()
  if len(devices) == 1 or batch_size % len(devices) or jax.process_count() > 1:
    return Placement()
  return Placement(make_mesh(devices))


def setup(train_config: Any) -> Placement:
  """The placement a run uses; one-line InputErrors for settings that cannot be sharded."""
  devices, processes = jax.device_count(), jax.process_count()
  if processes > 1 and not train_config.data_parallel:
    raise InputError("config.train.data_parallel", f"a {processes}-process run needs data "
                     f"parallelism; set it to True")
  if devices == 1 or not train_config.data_parallel:
    return Placement()
  if train_config.batch_size % devices:
    raise InputError("config.train.batch_size", f"batch size {train_config.batch_size} does "
                     f"not divide over {devices} devices (data parallel); use a multiple of "
                     f"{devices} or --config.train.data_parallel=False")
  return Placement(make_mesh())
