"""Training and evaluation loop: `train_and_evaluate(config, workdir)` is the unit under test.

Data flows one way: source -> pipeline -> device arrays -> jitted chunk of steps ->
per-epoch metrics -> writers and checkpoints. Each epoch's data order, and each step's
random key, derive from (seed, epoch) and (seed, step), so a run resumed from its latest
checkpoint ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging

from echokld import checkpointing, evaluate, models, parallel, steps, variants, writers
from echokld.data import pipeline
from echokld.errors import InputError, TrainingDiverged

# Keys that may change when a run in an existing workdir is continued.
# train.data_parallel: a run may resume on another number of devices (same numbers).
RESUMABLE_CHANGES = ("train.max_epochs", "train.data_parallel", "log.", "profile_steps")


def prepare_workdir(workdir: str) -> None:
  """Creates the workdir and proves it writable before any work is done."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")  # Processes may share it.
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as exc:
    raise InputError(workdir, f"workdir is not writable ({exc.strerror})") from None


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def check_or_write_config(config: ml_collections.ConfigDict, workdir: str,
                          has_checkpoint: bool) -> None:
  """Writes config.json; refuses to resume a run whose config differs in substance."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json())
  if has_checkpoint and os.path.exists(path):
    with open(path) as f:
      saved = _flatten(json.load(f))
    now = _flatten(current)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k)
                     and not k.startswith(RESUMABLE_CHANGES))
    if changed:
      raise InputError(path, f"this workdir holds a run with another config ({changed[0]} "
                       f"differs); use a new --workdir")
  _write_json(current, path)  # Atomic: other processes of a multi-process run read it.


def _write_json(obj: Any, path: str) -> None:
  if not parallel.is_main_process():  # Multi-process runs: process 0 writes.
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _chunks(num_steps: int, per_call: int) -> list[tuple[int, int]]:
  """(start, length) of each device call; at most two distinct lengths, so two compiles."""
  return [(s, min(per_call, num_steps - s)) for s in range(0, num_steps, per_call)]


class StepProfiler:
  """Writes a jax.profiler trace of the chunks that cover steps a..b (config.profile_steps)."""

  def __init__(self, spec: str, logdir: str):
    self.logdir, self.active, self.range = logdir, False, None
    if spec:
      try:
        self.range = tuple(int(v) for v in str(spec).split(","))
        assert len(self.range) == 2
      except (ValueError, AssertionError):
        raise InputError("config.profile_steps", f"expected 'a,b', got {spec!r}") from None

  def before(self, step: int, length: int) -> None:
    if self.range and not self.active and step + length >= self.range[0] and \
        step < self.range[1]:
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after(self, step_end: int, state: Any) -> None:
    if self.active and step_end >= self.range[1]:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active, self.range = False, None


def train_epoch(chunk_fn, state, data, perm, steps_per_epoch: int, config, epoch: int,
                profiler: StepProfiler, workdir: str):
  """Dispatches one epoch; fetches each chunk's losses one chunk late (the device never idles)."""
  batch = config.train.batch_size
  bar = tqdm.tqdm(total=steps_per_epoch * batch, unit="img", desc=f"epoch {epoch}",
                  leave=False, disable=not config.log.progress, dynamic_ncols=True)
  sums: dict[str, float] = {}
  pending = None
  first_step = int(state.step)

  def consume(item):
    start, length, terms = item
    host = jax.tree_util.tree_map(np.asarray, terms)
    bad = ~np.isfinite(host["total"])
    if bad.any():
      step = first_step + start + int(np.argmax(bad)) + 1
      raise TrainingDiverged(f"loss became {host['total'][np.argmax(bad)]} at step {step} "
                             f"(epoch {epoch}); the last good checkpoint is kept in "
                             f"{os.path.join(workdir, 'checkpoints')}")
    for k, v in host.items():
      sums[k] = sums.get(k, 0.0) + float(v.sum())
    bar.update(length * batch)
    bar.set_postfix(loss=f"{host['total'][-1]:.4f}")

  for start, length in _chunks(steps_per_epoch, config.train.steps_per_call):
    profiler.before(first_step + start, length)
    state, terms = chunk_fn(state, data["images"], data["masks"], perm, jnp.int32(start),
                            num_steps=length)
    profiler.after(first_step + start + length, state)
    if pending is not None:
      consume(pending)
    pending = (start, length, terms)
  consume(pending)
  bar.close()
  return state, {k: v / steps_per_epoch for k, v in sums.items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) a run in `workdir`, then evaluates its best checkpoint on test."""
  prepare_workdir(workdir)
  profiler = StepProfiler(config.profile_steps, os.path.join(workdir, "profile"))
  splits, split_cases = pipeline.build_splits(config)
  train, val = splits["train"], splits["val"]
  batch = config.train.batch_size
  steps_per_epoch = len(train) // batch
  if steps_per_epoch == 0:
    raise InputError("config.train.batch_size", f"batch size {batch} exceeds the "
                     f"{len(train)} training frames")
  image_shape = train.images.shape[1:]
  dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
  model = models.model_from_config(config.model, dtype)
  tx, plateau = steps.make_optimizer(config.train), steps.make_plateau(config.train)
  placement = parallel.setup(config.train)  # Data parallel over >1 device, else one device.
  state = placement.put(steps.create_train_state(model, tx, plateau, config.seed, image_shape))
  num_params = models.count_params(state.params)

  manager = checkpointing.make_manager(os.path.join(workdir, "checkpoints"))
  latest = manager.latest_step()
  check_or_write_config(config, workdir, latest is not None)
  _write_json(split_cases, os.path.join(workdir, "split.json"))
  writer = writers.MetricWriter(workdir, config.log.tensorboard,
                                enabled=parallel.is_main_process())
  writer.truncate_after(latest or 0)  # A kill between an epoch's row and its checkpoint.
  if latest is not None:
    state = checkpointing.restore(manager, latest, state)
    logging.info("Resumed from epoch %d in %s", latest, workdir)

  reference = (variants.reference_params(train, config.loss.num_bins)
               if variants.needs_reference(config) else None)
  extras_fn, inject_fn = variants.make_extras(config, reference)
  write_preprocessing(workdir, image_shape, config, reference)
  chunk_fn = steps.make_train_chunk(model, tx, config.loss, batch, extras_fn,
                                    placement.batch_sharding)
  predict = steps.make_predict(model, config.train.eval_batch_size, inject_fn)
  end_epoch = steps.make_end_epoch(plateau, config.train)
  data = {"images": placement.put(train.images), "masks": placement.put(train.masks)}
  val_images, val_masks = placement.put(val.images), placement.put(val.masks)
  val_dice_fn = jax.jit(lambda p, x, m: steps.hard_dice(predict(p, x), m).mean())
  data_key = jax.random.PRNGKey(config.seed + 1)

  while not bool(state.stopped) and int(state.epoch) < config.train.max_epochs:
    epoch = int(state.epoch) + 1
    t0 = time.perf_counter()
    perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), len(train))
    state, train_terms = train_epoch(chunk_fn, state, data, perm, steps_per_epoch, config,
                                     epoch, profiler, workdir)
    val_dice = val_dice_fn(state.params, val_images, val_masks)
    state = end_epoch(state, val_dice)
    seconds = time.perf_counter() - t0
    row = {"epoch": epoch, "step": int(state.step), "val_dice": float(val_dice),
           "learning_rate": float(steps.learning_rate(state)), "epoch_seconds": seconds,
           "images_per_second": steps_per_epoch * batch / seconds,
           **{f"train_{k}": v for k, v in train_terms.items()}}
    writer.write(row)
    checkpointing.save(manager, epoch, state, float(val_dice))
    logging.info("epoch %d  train loss %.4f  val Dice %.4f  lr %.2e  %.1fs", epoch,
                 row["train_total"], row["val_dice"], row["learning_rate"], seconds)
    print(f"epoch {epoch:3d}  train loss {row['train_total']:.4f}  val Dice "
          f"{row['val_dice']:.4f}  lr {row['learning_rate']:.2e}  {seconds:.1f}s", flush=True)
  writer.close()
  return finish_run(config, workdir, state, manager, predict, placement, splits, split_cases,
                    num_params, image_shape)


def write_preprocessing(workdir: str, image_shape: tuple[int, ...],
                        config: ml_collections.ConfigDict, reference: Any) -> None:
  """preprocessing.json: what prediction must repeat (shared with echokld.replicas)."""
  _write_json({"image_shape": list(image_shape), "resize": bool(config.data.image_size),
               "lv_label": pipeline.LV_LABEL, "intensity": "uint8; min-max if not 8-bit",
               "dist_reference": None if reference is None else
                                 [float(v) for v in np.asarray(reference)]},
              os.path.join(workdir, "preprocessing.json"))


def finish_run(config: ml_collections.ConfigDict, workdir: str, state: Any, manager: Any,
               predict: Any, placement: Any, splits: dict, split_cases: dict,
               num_params: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
  """Tests the best checkpoint; writes the test files and summary.json (also used by
  echokld.replicas, so a replica's workdir is a single run's)."""
  test = splits["test"]
  best_epoch = int(state.best_epoch)
  best = checkpointing.restore(manager, best_epoch, state) if best_epoch else state
  probs = np.asarray(predict(best.params, placement.put(test.images)))
  rows = evaluate.frame_rows(probs, test)
  if parallel.is_main_process():  # Multi-process runs: process 0 writes.
    with open(os.path.join(workdir, "test_predictions.npz"), "wb") as f:  # For report panels.
      np.savez_compressed(f, cases=np.asarray(test.cases, dtype=str), images=test.images,
                          masks=test.masks, pred=(probs > 0.5).astype(np.uint8))
    evaluate.write_csv(rows, os.path.join(workdir, "test_metrics.csv"))
  history = writers.read_metrics(workdir)
  timed = history[1:] or history  # Epoch 1 includes compilation.
  summary = {
      "model": config.model.name, "num_params": num_params, "epochs": int(state.epoch),
      "stopped_early": bool(state.stopped), "image_shape": list(image_shape),
      "frames": {k: len(v) for k, v in splits.items()},
      "test_is_val": config.data.split == "official" and split_cases["test"] ==
                     split_cases["val"],
      "train_seconds": float(sum(r["epoch_seconds"] for r in history)),
      "train_images_per_second": float(sum(r["images_per_second"] * r["epoch_seconds"]
                                           for r in timed) /
                                       max(sum(r["epoch_seconds"] for r in timed), 1e-9)),
      "val": {"best_dice": float(state.best_dice), "best_epoch": best_epoch},
      "test": evaluate.summarize(rows),
  }
  _write_json(summary, os.path.join(workdir, "summary.json"))
  t = summary["test"]
  shown = "  ".join(f"{k} {t[k]:.4f}" for k in ("dice", "recall", "precision", "mhd_px")
                    if t[k] is not None)
  print(f"test ({t['frames']} frames): {shown}  (best val Dice "
        f"{summary['val']['best_dice']:.4f} at epoch {best_epoch})", flush=True)
  return summary
