"""What happens around the steps: the loop calls hooks, in order, at fixed points.

  before_chunk(step, length) / after_chunk(step_end, states)   around each device call
  end_epoch(run, state, row)    once per run and epoch, after validation
  close()                       when training ends

A hook that raises RunDiverged in end_epoch takes its run out of training (the later
hooks of that epoch do not run, so nothing non-finite is written or saved).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp

from echokld import registry
from echokld.errors import InputError
from echokld.evaluation import overlays
from echokld.train import progress


class RunDiverged(Exception):
  """A run's loss or parameters became non-finite; the message says where."""


class Hook:
  """Base class: every method is optional."""

  def before_chunk(self, step: int, length: int) -> None:
    pass

  def after_chunk(self, step_end: int, states: Any) -> None:
    pass

  def end_epoch(self, run: Any, state: Any, row: dict[str, Any]) -> None:
    pass

  def close(self) -> None:
    pass


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


class NanGuard(Hook):
  """Stops a run whose loss or parameters became non-finite, before anything is saved."""

  def end_epoch(self, run, state, row):
    if "nonfinite_step" in row:
      raise RunDiverged(f"loss became {row['nonfinite_value']} at step {row['nonfinite_step']}"
                        f" (epoch {row['epoch']}); the last good checkpoint is kept in "
                        f"{run.file('checkpoints')}")
    if not bool(_all_finite(state.params)):
      raise RunDiverged(f"parameters became non-finite in epoch {row['epoch']}; the last good "
                        f"checkpoint is kept in {run.file('checkpoints')}")


class WriteMetrics(Hook):
  """Appends the epoch's row to metrics.jsonl (and TensorBoard)."""

  def end_epoch(self, run, state, row):
    run.writer.write(row)


class SaveCheckpoint(Hook):
  """Saves the epoch's state; the manager keeps the latest and the best."""

  def end_epoch(self, run, state, row):
    run.save(row["epoch"], state, row["val_dice"])


class PrintEpoch(Hook):
  """One console line per run and epoch (prefixed by the run's label, e.g. its seed)."""

  def end_epoch(self, run, state, row):
    prefix = f"{run.label}  " if run.label else ""
    progress.write(f"{prefix}epoch {row['epoch']:3d}  train loss {row['train_total']:.4f}  "
                   f"val Dice {row['val_dice']:.4f}  lr {row['learning_rate']:.2e}  "
                   f"{row['epoch_seconds']:.1f}s")


class Profile(Hook):
  """Writes a jax.profiler trace of the chunks that cover steps a..b (config.profile_steps)."""

  def __init__(self, spec: str, logdir: str):
    self.logdir, self.active, self.range = logdir, False, None
    if spec:
      try:
        self.range = tuple(int(v) for v in str(spec).split(","))
        assert len(self.range) == 2
      except (ValueError, AssertionError):
        raise InputError("config.profile_steps", f"expected 'a,b', got {spec!r}") from None

  def before_chunk(self, step, length):
    if self.range and not self.active and step + length >= self.range[0] and \
        step < self.range[1]:
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after_chunk(self, step_end, states):
    if self.active and step_end >= self.range[1]:
      jax.block_until_ready(states)
      jax.profiler.stop_trace()
      self.active, self.range = False, None

  def close(self):
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


class TensorBoardExtras(Hook):
  """With TensorBoard on: the run's config as text once, and each epoch a few validation
  frames with the true (green) and predicted (red) LV contours.

  Args:
    frames_of: (run, state) -> (uint8 frames (N, H, W), masks (N, H, W), probabilities)
      of the run's first validation frames, or None to skip; called only when events are
      written.
  """

  def __init__(self, frames_of: Any):
    self.frames_of, self.described = frames_of, set()

  def end_epoch(self, run, state, row):
    if not run.writer.tensorboard_on():
      return
    if run.path not in self.described:
      self.described.add(run.path)
      with open(run.file("config.json")) as f:
        flat = registry.flatten(json.load(f))
      run.writer.write_text("config", "\n".join(f"    {k} = {v!r}" for k, v in
                                                 sorted(flat.items())))
    frames = self.frames_of(run, state)
    if frames is None:
      return
    images, masks, probs = frames
    run.writer.write_images({f"val_overlay/{i}": overlays.overlay(
        images[i], [masks[i] > 0, probs[i] > 0.5], [overlays.TRUTH_RGB,
                                                     overlays.PREDICTION_RGB])
                             for i in range(len(images))}, row["epoch"])