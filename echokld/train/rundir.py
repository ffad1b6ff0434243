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
    self.manager = checkpoints.make_manager(self.file("checkpoints"))
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
      with open(path) as f:
        saved = registry.flatten(json.load(f))
      now = registry.flatten(current)
      changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k)
                       and not k.startswith(RESUMABLE_CHANGES))
      if changed:
        raise InputError(path, f"this workdir holds a run with another config ({changed[0]} "
                         f"differs); use a new --workdir")
    self.write_json("config.json", current)

  def write_split(self, split_cases: dict[str, list[str]]) -> None:
    self.write_json("split.json", split_cases)

  def write_preprocessing(self, image_shape: Sequence[int], config: Any,
                          reference: Any) -> None:
    """preprocessing.json: what prediction must repeat to see frames as training did."""
    self.write_json("preprocessing.json", {
        "image_shape": list(image_shape), "resize": bool(config.data.image_size),
        "lv_label": pipeline.LV_LABEL, "intensity": "uint8; min-max if not 8-bit",
        "dist_reference": None if reference is None else [float(v) for v in
                                                          np.asarray(reference)]})

  def resume(self, state: Any) -> Any:
    """The latest checkpoint restored into `state`'s structure (or `state` when none).

    Metrics rows past that checkpoint (a kill between an epoch's row and its checkpoint)
    are dropped: those epochs are trained again.
    """
    latest = self.latest_epoch()
    self.writer.truncate_after(latest or 0)
    return state if latest is None else checkpoints.restore(self.manager, latest, state)

  # ---- During training ----------------------------------------------------------------------

  def save(self, epoch: int, state: Any, val_dice: float) -> None:
    checkpoints.save(self.manager, epoch, state, val_dice)

  def best(self, state: Any) -> Any:
    """The best epoch's state (the current one before any epoch is recorded)."""
    best_epoch = int(state.best_epoch)
    return checkpoints.restore(self.manager, best_epoch, state) if best_epoch else state

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
    self.writer.close()
    self.manager.close()
