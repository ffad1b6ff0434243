"""Many replicas in one program: runs of one model that differ only by seed, trained together.

  python -m echokld.replicas --config=configs/dice.py --seeds=0,1,2,3 \
      --workdir='runs/sweep/dice_seed{seed}' [--replica_mode=unroll] [--config.<key>=...]

Replica k is exactly the run `python -m echokld.main --config.seed=k`: its own split (the
paper split draws patients by seed, and the synthetic data set itself depends on the seed),
initialisation, data order, learning-rate plateau, early stopping and best checkpoint, and it
writes the same workdir files (config.json with its seed, split.json, metrics.jsonl,
checkpoints/, test_metrics.csv, summary.json), so the report reads it unchanged and
`echokld.main` can resume it alone. The group shares one copy of the data on the device: the
train and validation frames of all replicas are pooled (deduplicated by case and content) and
each replica indexes the pool with its own index arrays, so no replica uses another's split.

The group's state is a tuple of S ordinary TrainStates (slicing and re-stacking one stacked
state inside the step cost ~40% more CPU per step at 32x32 on this machine). A replica that
stopped early (or reached max_epochs, or has fewer steps in an epoch) is masked by `jnp.where`
and left unchanged by later steps; once half of the group is done the group is compacted (one
recompile). `--replica_mode` picks how one step runs over the replicas (`replicate`); timings
on this project's CPU are in BENCHMARKS.md ("Replica groups"). A group runs on one device;
`experiments/sweep.py --replicas=S --shard=i/n` spreads groups over machines.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from echokld import checkpointing, models, parallel, steps, train, variants, writers
from echokld.data import pipeline
from echokld.errors import InputError, TrainingDiverged
from echokld.replicate import DEFAULT_MODE, MODES, replicate


def _select(mask: jax.Array, new: Any, old: Any) -> Any:
  """`new` where the scalar `mask` holds, else `old` (a masked replica keeps its state)."""
  return jax.tree_util.tree_map(lambda n, o: jnp.where(mask, n, o), new, old)


def make_group_step(model: Any, tx: Any, config: ml_collections.ConfigDict) -> Callable:
  """One replica's masked step(state, images, masks, aux, index) -> (state, terms).

  aux = (perm, num_steps, reference): the replica's epoch order (indices into the pool),
  its steps this epoch (0 when it is not training) and its Models 6-7 reference fit. A
  replica that has stopped, or has no step `index` this epoch, keeps its state unchanged.
  """

  def step(state, images, masks, aux, index):
    perm, num_steps, reference = aux
    extras_fn, _ = variants.make_extras(config, reference)
    one = steps.make_train_step(model, tx, config.loss, config.train.batch_size, extras_fn)
    new, terms = one(state, images, masks, perm, index)
    return _select(~state.stopped & (index < num_steps), new, state), terms

  return step


def make_group_chunk(model: Any, tx: Any, config: ml_collections.ConfigDict,
                     mode: str = DEFAULT_MODE) -> Callable:
  """jit(chunk)(states, images, masks, auxes, start, num_steps) -> (states, terms).

  states, auxes and terms are tuples with one entry per replica; the states are donated.
  """
  replicated = replicate(make_group_step(model, tx, config), (0, None, None, 0, None), mode)

  def step(*args):  # S (state, terms) pairs -> (S states, S terms).
    outs = replicated(*args)
    return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

  return jax.jit(steps.chunk_of_steps(step), static_argnames="num_steps", donate_argnums=0)


# ---- Data: one pool of frames, per-replica index arrays ----------------------------------

class Pool:
  """Frames of several splits stored once; `add` returns a split's indices into the pool."""

  def __init__(self):
    self.images: list[np.ndarray] = []
    self.masks: list[np.ndarray] = []
    self._where: dict[str, list[int]] = {}

  def add(self, split: pipeline.ArraySplit) -> np.ndarray:
    index = []
    for case, image, mask in zip(split.cases, split.images, split.masks):
      same = [p for p in self._where.get(case, []) if np.array_equal(self.images[p], image)
              and np.array_equal(self.masks[p], mask)]
      if not same:
        same = [len(self.images)]
        self.images.append(image)
        self.masks.append(mask)
        self._where.setdefault(case, []).append(same[0])
      index.append(same[0])
    return np.asarray(index, np.int32)


def with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.seed = int(seed)
  return out


def _val_dice(predict_for: Callable) -> Callable:
  @jax.jit
  def val_dice(params, reference, images, masks, index):
    return steps.hard_dice(predict_for(reference)(params, images[index]), masks[index]).mean()
  return val_dice


# ---- The group's training loop -------------------------------------------------------------

def train_replicas(config: ml_collections.ConfigDict, seeds: Sequence[int],
                   workdirs: Sequence[str], mode: str = DEFAULT_MODE) -> list[dict[str, Any]]:
  """Trains (or resumes) one run per seed in its workdir as one program; returns summaries.

  A replica whose loss becomes non-finite leaves the group (its last good checkpoint is
  kept); the others finish, then TrainingDiverged names it.
  """
  if len(set(seeds)) != len(seeds) or len(seeds) != len(workdirs) or not seeds:
    raise InputError("--seeds", f"need distinct seeds, one per workdir (got {list(seeds)})")
  if mode not in MODES:
    raise InputError("--replica_mode", f"unknown mode {mode!r} ({', '.join(MODES)})")
  if jax.process_count() > 1:
    raise InputError("--seeds", "replica groups run in one process")
  configs = [with_seed(config, s) for s in seeds]
  for workdir in workdirs:
    train.prepare_workdir(workdir)
  records = (None if config.data.source == "synthetic"  # Synthetic frames depend on the seed.
             else pipeline.load_records(config.data, config.seed))
  built = [pipeline.build_splits(c, records) for c in configs]
  shapes = {b[0]["train"].images.shape[1:] for b in built}
  if len(shapes) > 1:
    raise InputError("--seeds", f"the seeds' frames have different shapes {sorted(shapes)}")
  image_shape, batch, size = shapes.pop(), config.train.batch_size, len(seeds)
  steps_per_epoch = [len(b[0]["train"]) // batch for b in built]
  if min(steps_per_epoch) == 0:
    raise InputError("config.train.batch_size", f"batch size {batch} exceeds the "
                     f"{min(len(b[0]['train']) for b in built)} training frames")
  dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
  model = models.model_from_config(config.model, dtype)
  tx, plateau = steps.make_optimizer(config.train), steps.make_plateau(config.train)
  placement = parallel.Placement()

  states, managers, writer_list, references = [], [], [], []
  for c, workdir, (splits, split_cases) in zip(configs, workdirs, built):
    state = steps.create_train_state(model, tx, plateau, c.seed, image_shape)
    manager = checkpointing.make_manager(os.path.join(workdir, "checkpoints"))
    latest = manager.latest_step()
    train.check_or_write_config(c, workdir, latest is not None)
    train._write_json(split_cases, os.path.join(workdir, "split.json"))
    writer = writers.MetricWriter(workdir, c.log.tensorboard)
    writer.truncate_after(latest or 0)  # Rows past the checkpoint are redone.
    if latest is not None:
      state = checkpointing.restore(manager, latest, state)
    reference = (variants.reference_params(splits["train"], c.loss.num_bins)
                 if variants.needs_reference(c) else None)
    train.write_preprocessing(workdir, image_shape, c, reference)
    states.append(state), managers.append(manager), writer_list.append(writer)
    references.append(np.zeros(3, np.float32) if reference is None else np.asarray(reference))
  num_params = models.count_params(states[0].params)

  pool = Pool()
  train_index = [pool.add(b[0]["train"]) for b in built]
  val_index = [jnp.asarray(pool.add(b[0]["val"])) for b in built]
  images, masks = jax.device_put(np.stack(pool.images)), jax.device_put(np.stack(pool.masks))
  longest = max(len(i) for i in train_index)  # Equal perm lengths, so vmap modes can stack.
  refs = [jnp.asarray(r, jnp.float32) for r in references]

  shared_predict = steps.make_predict(model, config.train.eval_batch_size)

  def predict_for(reference):  # Models 6-7 inject the replica's own training-set fit.
    if not variants.needs_reference(config):
      return shared_predict  # One compile for the whole group.
    return steps.make_predict(model, config.train.eval_batch_size,
                              variants.make_extras(config, reference)[1])

  chunk_fn = make_group_chunk(model, tx, config, mode)
  end_epoch = steps.make_end_epoch(plateau, config.train)
  val_dice_fn = _val_dice(predict_for)
  data_keys = [jax.random.PRNGKey(s + 1) for s in seeds]
  group, members = tuple(states), list(range(size))  # group[i] is replica members[i].
  final: dict[int, Any] = {}
  diverged: dict[int, str] = {}
  max_epochs = config.train.max_epochs

  while True:
    epochs = [int(s.epoch) for s in group]
    live = [k for i, k in enumerate(members) if not bool(group[i].stopped) and
            epochs[i] < max_epochs and k not in diverged]
    if not live:
      break
    if len(live) <= len(members) // 2:  # Compact: finished replicas stop costing compute.
      final.update({k: group[i] for i, k in enumerate(members) if k not in live})
      group = tuple(group[members.index(k)] for k in live)
      epochs = [epochs[members.index(k)] for k in live]
      members = live
    t0 = time.perf_counter()
    counts = [steps_per_epoch[k] if k in live else 0 for k in members]
    auxes = []
    for i, k in enumerate(members):
      perm = np.zeros(longest, np.int32)
      if k in live:
        order = jax.random.permutation(jax.random.fold_in(data_keys[k], epochs[i] + 1),
                                       len(train_index[k]))
        perm[:len(train_index[k])] = train_index[k][np.asarray(order)]
      auxes.append((jnp.asarray(perm), jnp.int32(counts[i]), refs[k]))
    auxes = tuple(auxes)
    sums = [dict() for _ in members]
    pending = None

    def consume(item):
      start, terms = item
      for i, k in enumerate(members):
        host = jax.tree_util.tree_map(np.asarray, terms[i])  # Leaves (steps,).
        valid = max(0, min(counts[i] - start, host["total"].shape[0]))
        if k in diverged or valid == 0:
          continue
        bad = ~np.isfinite(host["total"][:valid])
        if bad.any():
          diverged[k] = (f"loss became {host['total'][np.argmax(bad)]} at step "
                         f"{steps_per_epoch[k] * epochs[i] + start + int(np.argmax(bad)) + 1} "
                         f"(epoch {epochs[i] + 1}); the last good checkpoint is kept in "
                         f"{os.path.join(workdirs[k], 'checkpoints')}")
          continue
        for name, v in host.items():
          sums[i][name] = sums[i].get(name, 0.0) + float(v[:valid].sum())

    for start, length in train._chunks(max(counts), config.train.steps_per_call):
      group, terms = chunk_fn(group, images, masks, auxes, jnp.int32(start), num_steps=length)
      if pending is not None:
        consume(pending)
      pending = (start, terms)
    consume(pending)
    trained = [k for k in live if k not in diverged]
    vals = {}
    for i, k in enumerate(members):
      if k in trained:
        vals[k] = val_dice_fn(group[i].params, refs[k], images, masks, val_index[k])
        group = group[:i] + (end_epoch(group[i], vals[k]),) + group[i + 1:]
    seconds = (time.perf_counter() - t0) / max(len(trained), 1)  # This replica's share.
    for i, k in enumerate(members):
      if k not in trained:
        continue
      state = group[i]
      row = {"epoch": int(state.epoch), "step": int(state.step), "val_dice": float(vals[k]),
             "learning_rate": float(steps.learning_rate(state)), "epoch_seconds": seconds,
             "images_per_second": steps_per_epoch[k] * batch / seconds,
             "replicas_training": len(trained),
             **{f"train_{n}": v / steps_per_epoch[k] for n, v in sums[i].items()}}
      writer_list[k].write(row)
      checkpointing.save(managers[k], row["epoch"], state, row["val_dice"])
      print(f"seed {seeds[k]}  epoch {row['epoch']:3d}  train loss {row['train_total']:.4f}"
            f"  val Dice {row['val_dice']:.4f}  lr {row['learning_rate']:.2e}  "
            f"{seconds:.1f}s", flush=True)
  final.update({k: group[i] for i, k in enumerate(members)})

  summaries = []
  for k, (c, workdir, (splits, split_cases)) in enumerate(zip(configs, workdirs, built)):
    writer_list[k].close()
    if k in diverged:
      continue
    predict = predict_for(refs[k])
    summaries.append(train.finish_run(c, workdir, final[k], managers[k], predict, placement,
                                      splits, split_cases, num_params, image_shape))
  if diverged:
    first = min(diverged)
    raise TrainingDiverged(f"seed {seeds[first]}: {diverged[first]}" +
                           (f" (and {len(diverged) - 1} more seeds)" if len(diverged) > 1
                            else ""))
  return summaries


# ---- Command line ------------------------------------------------------------------------

def parse_seeds(spec: str) -> list[int]:
  """'0,1,2' or '0-3' -> distinct ints; InputError otherwise."""
  try:
    if "-" in spec.strip("-") and "," not in spec:
      lo, hi = (int(v) for v in spec.split("-"))
      seeds = list(range(lo, hi + 1))
    else:
      seeds = [int(v) for v in spec.split(",") if v.strip()]
  except ValueError:
    raise InputError("--seeds", f"expected a comma list of integers, got {spec!r}") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise InputError("--seeds", f"expected distinct seeds, got {spec!r}")
  return seeds


def main(argv: list[str]) -> None:
  from absl import flags, logging
  from echokld import main as cli
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  flag_values = flags.FLAGS
  try:
    seeds = parse_seeds(flag_values.seeds or "")
    stem = cli.default_workdir(flag_values["config"].config_filename)
    template = flag_values.workdir or stem + "_seed{seed}"
    if "{seed}" not in template:
      raise InputError("--workdir", "must contain {seed}, e.g. runs/dice_seed{seed}")
    train_replicas(flag_values.config, seeds, [template.format(seed=s) for s in seeds],
                   flag_values.replica_mode)
  except InputError as exc:
    cli.fail(str(exc), InputError.exit_code)
  except TrainingDiverged as exc:
    cli.fail(str(exc), TrainingDiverged.exit_code)


if __name__ == "__main__":
  from absl import app, flags
  from echokld import main as _cli
  flags.DEFINE_string("seeds", None, "Seeds of the group: '0,1,2,3' or '0-3'.")
  flags.DEFINE_enum("replica_mode", DEFAULT_MODE, MODES, "How one step runs over replicas.")
  app.run(main, flags_parser=_cli.parse_flags)
