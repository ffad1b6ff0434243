"""The training loop: `train(config, workdirs, seeds)` trains one run or a group of seeds.

Data flows one way: source -> pipeline -> device arrays -> jitted chunk of steps -> epoch
metrics -> hooks (metrics rows, checkpoints, console) -> test evaluation. Each epoch's data
order and each step's random key derive from (seed, epoch) and (seed, step), so a run
resumed from its latest checkpoint ends with the same numbers as an uninterrupted one.

With S > 1 seeds (a replica group) the runs train as one program: replica k is exactly the
run `--config.seed=k` (its own split, initialisation, data order, plateau, early stopping,
best checkpoint and run folder), the data are stored once on the device (train.pool), and
`mode` picks how one step runs over the replicas (train.replicate). A replica that stopped
is masked and left unchanged; once half of the group is done the group is compacted (one
recompile). `train_and_evaluate(config, workdir)` is the single run, the unit under test.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from echokld import config_check
from echokld.data import pipeline
from echokld.data.pool import Pool
from echokld.errors import InputError, TrainingDiverged
from echokld.evaluation import test_set
from echokld.objectives import conditioning
from echokld.objectives.dice import hard_dice
from echokld.train import build as build_lib
from echokld.train import environment
from echokld.train import hooks as hooks_lib
from echokld.train import mesh, progress, state as state_lib, step as step_lib
from echokld.train.replicate import DEFAULT_MODE, MODES, replicate
from echokld.train.rundir import RunDir


@dataclasses.dataclass
class Member:
  """One run of the group: its config, folder, data and state bookkeeping."""

  config: ml_collections.ConfigDict
  run: RunDir
  splits: dict[str, pipeline.ArraySplit]
  setup: build_lib.Setup
  steps_per_epoch: int
  data_key: jax.Array
  train_index: np.ndarray | None = None  # Indices into the pool.
  val_index: Any = None
  diverged: str | None = None


def with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.seed = int(seed)
  return out


def chunks(num_steps: int, per_call: int) -> list[tuple[int, int]]:
  """(start, length) of each device call; at most two distinct lengths, so two compiles."""
  return [(s, min(per_call, num_steps - s)) for s in range(0, num_steps, per_call)]


def make_group_chunk(setup: build_lib.Setup, config: Any, size: int, batch_sharding: Any,
                     mode: str = DEFAULT_MODE) -> Any:
  """jit(chunk)(states, images, masks, auxes, start, num_steps) -> (states, terms).

  states, auxes and terms are tuples with one entry per run; the states are donated.
  """
  mesh = None if batch_sharding is None else batch_sharding.mesh
  if mode == "devices" and (mesh is None or size % mesh.size):
    mode = DEFAULT_MODE  # One device, or replicas that do not spread evenly: one program.
  if mode == "devices":
    batch_sharding = None  # Each replica's batch stays on its own device.
  one = step_lib.make_train_step(setup.model, setup.tx, config, batch_sharding,
                                 masked=size > 1)
  replicated = replicate(one, (0, None, None, 0, None), mode, mesh)

  def group_step(*args):  # S (state, terms) pairs -> (S states, S terms).
    outs = replicated(*args)
    return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

  return jax.jit(step_lib.chunk_of_steps(group_step), static_argnames="num_steps",
                 donate_argnums=0)


def _check_group(config: Any, seeds: Sequence[int], workdirs: Sequence[str], mode: str) -> None:
  if not seeds or len(set(seeds)) != len(seeds) or len(seeds) != len(workdirs):
    raise InputError("--seeds", f"need distinct seeds, one per workdir (got {list(seeds)})")
  if mode not in MODES:
    raise InputError("--replica_mode", f"unknown mode {mode!r} ({', '.join(MODES)})")
  if len(seeds) > 1 and jax.process_count() > 1:
    raise InputError("--seeds", "replica groups run in one process")
  if (len(seeds) > 1 and mode not in ("unroll", "devices") and jax.device_count() > 1 and
      config.train.data_parallel):
    raise InputError("--replica_mode", f"mode {mode!r} does not combine with data parallelism "
                     f"over {jax.device_count()} devices; use --replica_mode=unroll or "
                     "--config.train.data_parallel=False")


def _members(config: Any, workdirs: Sequence[str], seeds: Sequence[int]
             ) -> tuple[list[Member], tuple[int, int]]:
  """Reads the data once, splits it per seed and builds each run's state (resumed if saved).

  Each run folder is locked from here on; on any error the folders opened so far are closed
  (and unlocked) before it propagates.
  """
  runs: list[RunDir] = []
  try:
    for w, s in zip(workdirs, seeds):
      runs.append(RunDir(w, config.log.tensorboard, f"seed {s}" if len(seeds) > 1 else ""))
    return _build_members(config, runs, seeds)
  except BaseException:
    for run in runs:
      run.close()
    raise


def _build_members(config: Any, runs: Sequence[RunDir], seeds: Sequence[int]
                   ) -> tuple[list[Member], tuple[int, int]]:
  configs = [with_seed(config, s) for s in seeds]
  records = (None if config.data.source == "synthetic"  # Synthetic frames depend on the seed.
             else pipeline.load_records(config.data, config.seed))
  built = [pipeline.build_splits(c, records) for c in configs]
  shapes = {splits["train"].images.shape[1:] for splits, _ in built}
  if len(shapes) > 1:
    raise InputError("--seeds", f"the seeds' frames have different shapes {sorted(shapes)}")
  image_shape, batch = shapes.pop(), config.train.batch_size
  members = []
  for c, run, (splits, split_cases) in zip(configs, runs, built):
    train = splits["train"]
    if len(train) < batch:
      raise InputError("config.train.batch_size", f"batch size {batch} exceeds the "
                       f"{len(train)} training frames")
    reference = (conditioning.reference_params(train.images, train.masks, c.loss.num_bins,
                                               c.loss.family)
                 if conditioning.needs_reference(c) else None)
    setup = build_lib.build(c, image_shape, reference, steps_per_epoch=len(train) // batch)
    run.check_or_write_config(c)
    run.write_split(split_cases)
    run.write_preprocessing(image_shape, c, reference,
                            [g.orig_shape for g in train.geometries])
    setup = dataclasses.replace(setup, state=run.resume(setup.state))
    run.write_json("environment.json", environment.history(run.file("environment.json")) +
                   [environment.describe(int(setup.state.epoch))])
    _say_where(run, setup.state, c)
    members.append(Member(c, run, splits, setup, len(train) // batch,
                          jax.random.PRNGKey(c.seed + 1)))
  return members, image_shape


def _say_where(run: RunDir, state: Any, config: Any) -> None:
  """Tells whether the run starts, resumes, or is already finished (then only tested)."""
  prefix = f"{run.label}: " if run.label else ""
  epoch = int(state.epoch)
  if epoch == 0:
    return
  if bool(state.stopped) or epoch >= config.train.max_epochs:
    why = "stopped early" if bool(state.stopped) else f"max_epochs {config.train.max_epochs}"
    print(f"{prefix}{run.path} is already finished at epoch {epoch} ({why}); testing its "
          f"best checkpoint (epoch {int(state.best_epoch)})", flush=True)
  else:
    print(f"{prefix}resumed {run.path} from epoch {epoch} of at most "
          f"{config.train.max_epochs}", flush=True)


class _EpochTerms:
  """Sums one run's per-step loss terms; remembers the first non-finite step."""

  def __init__(self, first_step: int):
    self.first_step, self.sums, self.bad = first_step, {}, None

  def add(self, start: int, terms: dict[str, Any], valid: int) -> None:
    host = jax.tree_util.tree_map(lambda t: np.asarray(t)[:valid], terms)
    nonfinite = ~np.isfinite(host["total"])
    if nonfinite.any() and self.bad is None:
      i = int(np.argmax(nonfinite))
      self.bad = (self.first_step + start + i + 1, float(host["total"][i]))
    for name, values in host.items():
      self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())

  def row(self, steps: int) -> dict[str, Any]:
    out = {f"train_{k}": v / steps for k, v in self.sums.items()}
    if self.bad is not None:
      out["nonfinite_step"], out["nonfinite_value"] = self.bad
    return out


def train(config: ml_collections.ConfigDict, workdirs: Sequence[str],
          seeds: Sequence[int] | None = None, mode: str = DEFAULT_MODE,
          extra_hooks: Sequence[hooks_lib.Hook] = ()) -> list[dict[str, Any]]:
  """Trains (or resumes) one run per seed, each in its workdir; returns their summaries.

  Args:
    config: the model's config; each run gets it with its own seed.
    workdirs: one run folder per seed.
    seeds: default (config.seed,) for a single run.
    mode: how a step runs over the S replicas (train.replicate.MODES).
    extra_hooks: hooks called after the default ones (metrics rows, checkpoints, console).

  A run whose loss or parameters become non-finite leaves training (its last good
  checkpoint is kept); the others finish, then TrainingDiverged names it.
  """
  config_check.check(config)
  seeds = [config.seed] if seeds is None else [int(s) for s in seeds]
  _check_group(config, seeds, workdirs, mode)
  members, image_shape = _members(config, workdirs, seeds)
  try:
    return _train_members(config, members, image_shape, mode, extra_hooks)
  finally:  # Whatever happens (a full disk, Ctrl-C), the run folders are closed and unlocked.
    for m in members:
      m.run.close()


def _train_members(config: ml_collections.ConfigDict, members: list[Member],
                   image_shape: tuple[int, int], mode: str,
                   extra_hooks: Sequence[hooks_lib.Hook]) -> list[dict[str, Any]]:
  size, batch = len(members), config.train.batch_size
  placement = mesh.setup(config.train)
  first = members[0].setup
  devices = jax.devices()
  print(f"{config.model.display_name} ({config.model.name}): {first.num_params:,} parameters, "
        f"frames {image_shape[0]}x{image_shape[1]}, {size} run{'s' if size > 1 else ''} on "
        f"{placement.num_devices} of {len(devices)} {devices[0].platform} device(s) "
        f"({devices[0].device_kind})", flush=True)
  pool = Pool()
  for m in members:
    m.train_index = pool.add(m.splits["train"])
    m.val_index = placement.put(pool.add(m.splits["val"]))
  images, masks = placement.put(pool.arrays())
  refs = [placement.put(m.setup.reference) for m in members]
  longest = max(len(m.train_index) for m in members)  # Equal perm lengths, so vmap can stack.

  chunk_fn = make_group_chunk(first, config, size, placement.batch_sharding, mode)
  end_epoch = state_lib.make_end_epoch(first.plateau, config.train)
  predict = step_lib.make_predict(first.model, config, config.train.eval_batch_size,
                                  placement.sharding_for(config.train.eval_batch_size))
  val_dice_fn = jax.jit(lambda p, r, x, y, i: hard_dice(predict(p, x[i], r), y[i]).mean())
  by_path = {m.run.path: k for k, m in enumerate(members)}

  def overlay_frames(run, state):  # A few validation frames for TensorBoard (one process).
    if jax.process_count() > 1:
      return None
    k = by_path[run.path]
    index = members[k].val_index[:4]
    frames, truth = images[index], masks[index]
    probs = predict(state_lib.eval_params(state), frames, refs[k])
    return np.asarray(frames), np.asarray(truth), np.asarray(probs)

  hooks = [hooks_lib.NanGuard(), hooks_lib.WriteMetrics(), hooks_lib.SaveCheckpoint(),
           hooks_lib.TensorBoardExtras(overlay_frames), hooks_lib.PrintEpoch(),
           hooks_lib.Profile(config.profile_steps, members[0].run.file("profile")),
           *extra_hooks]
  group = tuple(placement.put(m.setup.state) for m in members)
  order = list(range(size))  # group[i] is members[order[i]].
  bar = progress.Progress(
      config.log.progress,
      sum(max(0, config.train.max_epochs - int(m.setup.state.epoch)) * m.steps_per_epoch
          for m in members if not bool(m.setup.state.stopped)) * batch,
      min(int(m.setup.state.epoch) for m in members), config.train.max_epochs)
  final: dict[int, Any] = {}

  while True:
    epochs = [int(s.epoch) for s in group]
    live = [k for i, k in enumerate(order) if not bool(group[i].stopped) and
            epochs[i] < config.train.max_epochs and members[k].diverged is None]
    if not live:
      break
    if len(live) <= len(order) // 2:  # Compact: finished runs stop costing compute.
      final.update({k: group[i] for i, k in enumerate(order) if k not in live})
      group = tuple(group[order.index(k)] for k in live)
      epochs = [epochs[order.index(k)] for k in live]
      order = live
    t0 = time.perf_counter()
    counts = [members[k].steps_per_epoch if k in live else 0 for k in order]
    auxes = []
    for i, k in enumerate(order):
      m, perm = members[k], np.zeros(longest, np.int32)
      if k in live:
        shuffled = jax.random.permutation(jax.random.fold_in(m.data_key, epochs[i] + 1),
                                          len(m.train_index))
        perm[:len(m.train_index)] = m.train_index[np.asarray(shuffled)]
      auxes.append((placement.put(perm), np.int32(counts[i]), refs[k]))
    auxes = tuple(auxes)
    first_step = int(group[0].step)
    sums = [_EpochTerms(int(s.step)) for s in group]
    pending = None

    def consume(item):  # One chunk late, so the device never waits for the host.
      start, length, terms = item
      for i in range(len(order)):
        valid = max(0, min(counts[i] - start, length))
        if valid:
          sums[i].add(start, terms[i], valid)
      bar.advance(sum(max(0, min(c - start, length)) for c in counts) * batch)

    for start, length in chunks(max(counts), config.train.steps_per_call):
      for hook in hooks:
        hook.before_chunk(first_step + start, length)
      group, terms = chunk_fn(group, images, masks, auxes, np.int32(start), num_steps=length)
      bar.compiled()
      for hook in hooks:
        hook.after_chunk(first_step + start + length, group)
      if pending is not None:
        consume(pending)
      pending = (start, length, terms)
    consume(pending)
    trained = live
    vals = {}
    for i, k in enumerate(order):
      if k in trained:
        vals[k] = val_dice_fn(state_lib.eval_params(group[i]), refs[k], images, masks,
                              members[k].val_index)
        group = group[:i] + (end_epoch(group[i], vals[k]),) + group[i + 1:]
    seconds = (time.perf_counter() - t0) / len(trained)  # Each run's share of the epoch.
    for i, k in enumerate(order):
      if k not in trained:
        continue
      m, state = members[k], group[i]
      row = {"epoch": int(state.epoch), "step": int(state.step), "val_dice": float(vals[k]),
             "learning_rate": float(state_lib.learning_rate(state)),
             "epoch_seconds": seconds,
             "images_per_second": m.steps_per_epoch * batch / seconds,
             **({"replicas_training": len(trained)} if size > 1 else {}),
             **sums[i].row(m.steps_per_epoch)}
      try:
        for hook in hooks:
          hook.end_epoch(m.run, state, row)
      except hooks_lib.RunDiverged as exc:
        m.diverged = str(exc)
      else:
        bar.end_epoch(row, state, config.train.early_stop_patience)
  bar.close()
  final.update({k: group[i] for i, k in enumerate(order)})
  for hook in hooks:
    hook.close()

  summaries = []
  for k, m in enumerate(members):
    if m.diverged is None:
      summaries.append(finish(m, final[k], predict, placement, refs[k], image_shape))
  failed = [m for m in members if m.diverged is not None]
  if failed:
    where = f"seed {failed[0].config.seed}: " if size > 1 else ""
    more = f" (and {len(failed) - 1} more seeds)" if len(failed) > 1 else ""
    raise TrainingDiverged(where + failed[0].diverged + more)
  return summaries


def finish(member: Member, state: Any, predict: Any, placement: mesh.Placement,
           reference: Any, image_shape: tuple[int, int]) -> dict[str, Any]:
  """Tests the best checkpoint; writes the test files and summary.json."""
  from echokld.evaluation import resources  # Here, so that only finish() changes for it.
  config, run, splits = member.config, member.run, member.splits
  test = splits["test"]
  best = run.best(state)
  probs = np.asarray(predict(state_lib.eval_params(best), placement.put(test.images),
                             reference))
  rows = test_set.frame_rows(probs, test)
  run.write_test_results(test, probs, rows)
  history = run.history()
  timed = history[1:] or history  # Epoch 1 includes compilation.
  timed_seconds = sum(r["epoch_seconds"] for r in timed)
  summary = {
      "model": config.model.name, "num_params": member.setup.num_params,
      "epochs": int(state.epoch), "stopped_early": bool(state.stopped),
      "image_shape": list(image_shape), "frames": {k: len(v) for k, v in splits.items()},
      "test_is_val": config.data.split == "official" and test.cases == splits["val"].cases,
      "train_seconds": float(sum(r["epoch_seconds"] for r in history)),
      "train_images_per_second": float(sum(r["images_per_second"] * r["epoch_seconds"]
                                           for r in timed) / max(timed_seconds, 1e-9)),
      "val": {"best_dice": float(state.best_dice), "best_epoch": int(state.best_epoch)},
      "test": test_set.summarize(rows),
      # Peak host and device memory of this process (evaluation.resources; Table 8's RAM).
      "memory": resources.memory_summary(),
  }
  run.write_json("summary.json", summary)
  t = summary["test"]
  shown = "  ".join(f"{k} {t[k]:.4f}" for k in ("dice", "recall", "precision", "mhd_px")
                    if t[k] is not None)
  if t["empty_predictions"]:
    shown += f"  empty {t['empty_predictions']}"
  progress.write(f"test ({t['frames']} frames): {shown}  (best val Dice "
                 f"{summary['val']['best_dice']:.4f} at epoch {summary['val']['best_epoch']})")
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run of `config` in `workdir`, then tests its best checkpoint."""
  return train(config, [workdir])[0]
