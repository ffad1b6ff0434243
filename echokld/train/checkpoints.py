"""Orbax checkpoints of the whole TrainState: the latest (for resuming) and the best.

orbax 0.12's `max_to_keep` together with `best_fn` can delete the latest checkpoint, which
breaks resuming, so the preservation policy keeps "latest 1 OR best 1" explicitly.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

BEST_METRIC = "val_dice"


def make_manager(directory: str) -> ocp.CheckpointManager:
  policies = ocp.checkpoint_managers
  preservation = policies.AnyPreservationPolicy([
      policies.LatestN(n=1),
      policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation, best_fn=lambda m: m[BEST_METRIC], best_mode="max",
      create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, val_dice: float) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), metrics={BEST_METRIC: val_dice})
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores `step` into the structure (and shardings) of `target`.

  Leaves without a sharding (e.g. from `jax.eval_shape`) go to the default device: orbax
  would otherwise reuse the saved sharding, which names devices of the saving run (a
  data-parallel run over 4 devices cannot be restored for one-device prediction).
  """
  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def abstract_leaf(leaf: Any) -> jax.ShapeDtypeStruct:
    spec = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(spec, "sharding", None) is None:
      spec = jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=default)
    return spec

  abstract = jax.tree_util.tree_map(abstract_leaf, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))
