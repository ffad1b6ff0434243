"""One run's folder: every file a run reads or writes, in one object.

  config.json         the run's config; a rerun with another config is refused
  split.json          the frames of each split (by case)
  preprocessing.json  what prediction must repeat (shape, resize, the Models 6-7 reference)
  metrics.jsonl       one row per epoch (train.writers)
  checkpoints/        the latest and the best epoch (train.checkpoints)
  test_metrics.csv, test_predictions.npz, summary.json   written when the run finishes

In a multi-process run only process 0 writes files other than the checkpoints.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any, Sequence

import ml_collections
import numpy as np

from echokld import registry
from echokld.data import pipeline
from echokld.errors import InputError
from echokld.evaluation import test_set
from echokld.train import checkpoints, mesh, writers

# Keys that may change when a run in an existing workdir is continued.
# train.data_parallel: a run may resume on another number of devices (same numbers).
RESUMABLE_CHANGES = ("train.max_epochs", "train.data_parallel", "log.", "profile_steps")


def same_value(a: Any, b: Any) -> bool:
  """a == b for config values read back from JSON, where NaN equals NaN (a NaN-valued key
  must not make a rerun of the same command look like another config)."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
  if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
    return True
  return a == b


class RunDir:
  """The folder of one run; creating it proves the folder writable before any work."""

  def __init__(self, workdir: str, tensorboard: bool = False, label: str = ""):
    self.path, self.label = workdir, label  # label: how the console names it ("seed 3").
    self.main = mesh.is_main_process()
    try:
      os.makedirs(workdir, exist_ok=True)
      probe = os.path.join(workdir, f".write_test.{os.getpid()}")  # Processes may share it.
      with open(probe, "w") as f:
        f.write("ok")
      os.remove(probe)
    except OSError as exc:
      raise InputError(workdir, f"workdir is not writable ({exc.strerror})") from None
    self._closed = False
    self._lock = lock_workdir(workdir) if self.main else None
    try:
      self.manager = checkpoints.make_manager(self.file("checkpoints"))
    except InputError:
      self._unlock()
      raise
    self.writer = writers.MetricWriter(workdir, tensorboard, enabled=self.main)

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  # ---- Before training ----------------------------------------------------------------------

  def latest_epoch(self) -> int | None:
    return self.manager.latest_step()

  def check_or_write_config(self, config: ml_collections.ConfigDict) -> None:
    """Writes config.json; refuses to resume a run whose config differs in substance."""
    path = self.file("config.json")
    current = json.loads(config.to_json())
    if self.latest_epoch() is not None and os.path.exists(path):
      try:
        with open(path) as f:
          saved = registry.flatten(registry.upgrade(json.load(f)))
      except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError,
              KeyError) as exc:
        raise InputError(path, f"damaged ({type(exc).__name__}: {exc}), so the saved run's "
                         "config cannot be compared; use a new --workdir") from None
      now = registry.flatten(current)
      changed = sorted(k for k in set(saved) | set(now) if not same_value(saved.get(k),
                                                                            now.get(k))
                       and not k.startswith(RESUMABLE_CHANGES))
      if changed:
        raise InputError(path, f"this workdir holds a run with another config ({changed[0]} "
                         f"differs); use a new --workdir")
    self.write_json("config.json", current)

  def write_split(self, split_cases: dict[str, list[str]]) -> None:
    self.write_json("split.json", split_cases)

  def write_preprocessing(self, image_shape: Sequence[int], config: Any, reference: Any,
                          frame_shapes: Sequence[Sequence[int]] = ()) -> None:
    """preprocessing.json: what prediction must repeat to see frames as training did.

    `frame_shapes`: the training frames' sizes before preprocessing, recorded as their
    range (train_frames), so prediction can say when a frame is unlike any seen in training.
    """
    shapes = np.asarray(frame_shapes, np.int64).reshape(-1, 2)
    self.write_json("preprocessing.json", {
        "image_shape": list(image_shape), "resize": bool(config.data.image_size),
        "lv_label": pipeline.LV_LABEL, "intensity": "uint8; min-max if not 8-bit",
        "dist_reference": None if reference is None else [float(v) for v in
                                                          np.asarray(reference)],
        "train_frames": None if not len(shapes) else {
            "count": int(len(shapes)), "min_shape": [int(v) for v in shapes.min(axis=0)],
            "max_shape": [int(v) for v in shapes.max(axis=0)]}})

  def resume(self, state: Any) -> Any:
    """The latest checkpoint restored into `state`'s structure (or `state` when none).

    A damaged latest checkpoint falls back to the other one (the best), and a damaged
    one is moved aside to damaged_checkpoints/ (said in one line); when none restores,
    one InputError. Metrics rows past the restored epoch (a kill between an epoch's row
    and its checkpoint, or a fallback) are dropped: those epochs are trained again.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    epoch, restored, failed = checkpoints.restore_first(self.manager, steps, state)
    if failed and epoch is None:
      raise InputError(self.file("checkpoints"), f"no checkpoint can be restored (epoch "
                       f"{failed[0][0]}: {failed[0][1]}); use a new --workdir")
    if failed:
      self._set_aside([step for step, _ in failed])
      print(f"{self.path}: checkpoint of epoch {failed[0][0]} is damaged "
            f"({failed[0][1][:120]}); moved to damaged_checkpoints/, resuming from epoch "
            f"{epoch}", flush=True)
    self.writer.truncate_after(epoch or 0)
    return restored

  def _set_aside(self, steps: Sequence[int]) -> None:
    """Moves damaged step folders out of checkpoints/ (kept for inspection, never reused)."""
    if not self.main:
      return
    aside = self.file("damaged_checkpoints")
    os.makedirs(aside, exist_ok=True)
    for step in steps:
      target = os.path.join(aside, str(step))
      n = 1
      while os.path.lexists(target):
        n += 1
        target = os.path.join(aside, f"{step}.{n}")
      os.replace(os.path.join(self.file("checkpoints"), str(step)), target)
    self.manager.reload()

  # ---- During training ----------------------------------------------------------------------

  def save(self, epoch: int, state: Any, val_dice: float) -> None:
    checkpoints.save(self.manager, epoch, state, val_dice)

  def best(self, state: Any) -> Any:
    """The best epoch's state (the current one before any epoch is recorded).

    A damaged best checkpoint falls back to `state` (the last epoch), said in one line.
    """
    best_epoch = int(state.best_epoch)
    return self._restore_or(best_epoch, state) if best_epoch else state

  def _restore_or(self, epoch: int, state: Any) -> Any:
    step, restored, failed = checkpoints.restore_first(self.manager, [epoch], state)
    if step is None:
      print(f"{self.path}: best checkpoint (epoch {epoch}) cannot be restored "
            f"({failed[0][1][:120]}); testing the last epoch ({int(state.epoch)}) instead",
            flush=True)
    return restored

  # ---- After training -----------------------------------------------------------------------

  def write_test_results(self, split: pipeline.ArraySplit, probs: np.ndarray,
                         rows: list[dict[str, Any]]) -> None:
    """test_metrics.csv, and test_predictions.npz for the report's panels."""
    if not self.main:
      return
    with open(self.file("test_predictions.npz"), "wb") as f:
      np.savez_compressed(f, cases=np.asarray(split.cases, dtype=str), images=split.images,
                          masks=split.masks, pred=(probs > 0.5).astype(np.uint8))
    test_set.write_csv(rows, self.file("test_metrics.csv"))

  def history(self) -> list[dict[str, Any]]:
    return writers.read_metrics(self.path)

  def write_json(self, name: str, obj: Any) -> None:
    """Atomic (other processes of a multi-process run read it); process 0 only."""
    if not self.main:
      return
    path = self.file(name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2)
    os.replace(tmp, path)

  def close(self) -> None:
    """Closes the writers and the checkpoint manager and releases the lock (once)."""
    if self._closed:
      return
    self._closed = True
    self.writer.close()
    self.manager.close()
    self._unlock()

  def _unlock(self) -> None:
    if self._lock is not None:
      os.close(self._lock)  # Closing the descriptor releases the flock.
      self._lock = None


LOCK_FILE = ".lock"


def lock_workdir(workdir: str) -> int:
  """An exclusive flock on <workdir>/.lock, held until closed; InputError if another holds it.

  Two runs in one workdir would interleave metrics.jsonl and, with different configs,
  bypass the config check. The kernel drops the lock when the process dies (kill -9
  included), so a stale lock never blocks a rerun. In a multi-process run process 0 holds it.
  """
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
  except OSError as exc:
    raise InputError(path, f"cannot open the workdir lock ({exc.strerror})") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    os.close(fd)
    raise InputError(workdir, f"another run is using this workdir (process {holder or '?'} "
                     f"holds {LOCK_FILE}); wait for it to end or use a new --workdir") from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  return fd
