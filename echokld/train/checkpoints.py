"""Orbax checkpoints of the whole TrainState: the latest (for resuming) and the best.

orbax 0.12's `max_to_keep` together with `best_fn` can delete the latest checkpoint, which
breaks resuming, so the preservation policy keeps "latest 1 OR best 1" explicitly.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import jax
import orbax.checkpoint as ocp

from echokld.cli import one_line
from echokld.errors import InputError

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
  try:
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)
  except Exception as exc:  # A damaged checkpoints/ folder can fail orbax's scan.
    raise InputError(directory, f"unreadable checkpoint folder "
                     f"({one_line(f'{type(exc).__name__}: {exc}', 180)})") from None


def save(manager: ocp.CheckpointManager, step: int, state: Any, val_dice: float) -> None:
  """Saves `step`; a failed save (e.g. a full disk) is one InputError naming the folder.

  Orbax writes into a temporary folder and renames it on success, so a failed save leaves
  the earlier checkpoints as they were.
  """
  try:
    manager.save(step, args=ocp.args.StandardSave(state), metrics={BEST_METRIC: val_dice})
    manager.wait_until_finished()
  except Exception as exc:  # orbax/tensorstore raise many types; ENOSPC among them.
    raise InputError(os.path.join(str(manager.directory), str(step)),
                     f"cannot save checkpoint ({one_line(f'{type(exc).__name__}: {exc}', 220)})"
                     ) from None


def restore_first(manager: ocp.CheckpointManager, steps: Sequence[int], target: Any,
                  ) -> tuple[int | None, Any, list[tuple[int, str]]]:
  """(step, state) of the first of `steps` that restores, and the (step, why) that did not.

  A damaged checkpoint (torn by a crash, a full disk, a bad copy) raises one of many
  orbax/tensorstore/JSON errors; the caller falls back to the other checkpoint.
  """
  _ignore_late_callbacks()  # Before the first read: a late callback can beat the except.
  failed = []
  for step in steps:
    try:
      return step, restore(manager, step, target), failed
    except Exception as exc:  # pylint: disable=broad-except
      failed.append((step, one_line(f"{type(exc).__name__}: {exc}", 180)))
  return None, target, failed


def _ignore_late_callbacks() -> None:
  """Silences the reads still in flight when a restore failed.

  When one read of a damaged checkpoint fails, orbax closes its event loop while
  tensorstore's other reads are pending; each then reports RuntimeError('Event loop is
  closed') through sys.unraisablehook, dozens of tracebacks after the one-line error.
  Only that exact error is dropped; anything else goes to the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_echokld_filter", False):
    return

  def hook(unraisable: Any) -> None:
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    previous(unraisable)

  hook._echokld_filter = True  # type: ignore[attr-defined]
  sys.unraisablehook = hook


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
