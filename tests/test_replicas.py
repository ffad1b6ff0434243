"""Replica groups: replica k is the sequential run of seed k; masking; uneven resume; sweep."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from echokld import cli
from echokld.data import pipeline
from echokld.errors import InputError
from echokld.study import sweep
from echokld.train import build, loop, replicate, step as step_lib

SEEDS = (0, 1)
# Per-replica schedule: halve after 1 bad epoch, stop after 1 epoch without a 0.05 gain. On
# this tiny set seed 1 stops at epoch 3 (lr halved) while seed 0 trains all 4 epochs.
SCHEDULE = {"train.max_epochs": 4, "train.plateau_patience": 1,
            "train.early_stop_patience": 1, "train.min_delta": 0.05}
# Hard val Dice moves in steps of about one pixel (~4e-4 here); replicas agree with the
# sequential runs up to float reassociation (parameters within ~1e-7 after a few steps).
DICE_TOL = 2e-3


def rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def load(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def assert_same_epochs(seq_dir, rep_dir):
  """The replica's epochs, learning rates, val Dice and train losses are the sequential run's."""
  want, got = rows(seq_dir), rows(rep_dir)
  assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
  assert [r["learning_rate"] for r in got] == [r["learning_rate"] for r in want]
  np.testing.assert_allclose([r["val_dice"] for r in got], [r["val_dice"] for r in want],
                             atol=DICE_TOL)
  np.testing.assert_allclose([r["train_total"] for r in got],
                             [r["train_total"] for r in want], rtol=1e-4)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
  out = tmp_path_factory.mktemp("sequential")
  for seed in SEEDS:
    loop.train_and_evaluate(tiny_config(seed=seed, **SCHEDULE), str(out / f"seed{seed}"))
  return [str(out / f"seed{s}") for s in SEEDS]


@pytest.fixture(scope="module")
def resumed_group(tmp_path_factory):
  """A group stopped after 2 epochs, seed 1 losing its epoch-2 checkpoint (as when a kill
  lands between the replicas' saves), then resumed to the end: replicas at other epochs."""
  out = tmp_path_factory.mktemp("group")
  workdirs = [str(out / f"seed{s}") for s in SEEDS]
  loop.train(tiny_config(**{**SCHEDULE, "train.max_epochs": 2}), workdirs, SEEDS)
  shutil.rmtree(os.path.join(workdirs[1], "checkpoints", "2"))
  summaries = loop.train(tiny_config(**SCHEDULE), workdirs, SEEDS)
  return workdirs, summaries


def test_each_replica_is_the_sequential_run_of_its_seed(sequential, resumed_group):
  workdirs, summaries = resumed_group
  stopped = []
  for seed, seq_dir, rep_dir, summary in zip(SEEDS, sequential, workdirs, summaries):
    assert load(rep_dir, "config.json")["seed"] == seed
    assert load(rep_dir, "split.json") == load(seq_dir, "split.json")
    assert sorted(os.listdir(rep_dir)) == sorted(os.listdir(seq_dir))
    assert_same_epochs(seq_dir, rep_dir)
    seq = load(seq_dir, "summary.json")
    assert summary == load(rep_dir, "summary.json")
    for key in ("epochs", "stopped_early", "num_params", "frames"):
      assert summary[key] == seq[key], key
    assert summary["val"]["best_epoch"] == seq["val"]["best_epoch"]
    assert summary["test"]["dice"] == pytest.approx(seq["test"]["dice"], abs=DICE_TOL)
    stopped.append((summary["epochs"], summary["stopped_early"]))
  # The schedule differs per replica: seed 1 stopped early while seed 0 went on.
  assert stopped == [(4, False), (3, True)], stopped
  lrs = [[r["learning_rate"] for r in rows(d)] for d in workdirs]
  assert lrs[0] == [pytest.approx(1e-3)] * 4 and lrs[1][-1] == pytest.approx(5e-4)


def test_a_stopped_replica_is_left_unchanged_by_later_steps():
  config = tiny_config()
  split = pipeline.build_splits(config)[0]["train"]
  setups = [build.build(config, split.images.shape[1:], seed=s) for s in SEEDS]
  fresh = [s.state for s in setups]
  images, masks = jax.device_put(split.images), jax.device_put(split.masks)
  perm = jnp.arange(len(split))
  aux = ((perm, jnp.int32(5), jnp.zeros(3)),) * 2
  single = step_lib.make_train_chunk(setups[0].model, setups[0].tx, config)
  alone = single(jax.tree_util.tree_map(jnp.copy, fresh[0]), images, masks, aux[0],
                 jnp.int32(1), num_steps=1)[0]
  before = jax.tree_util.tree_map(np.asarray, fresh[1])
  group = (jax.tree_util.tree_map(jnp.copy, fresh[0]), fresh[1].replace(stopped=jnp.bool_(True)))
  chunk = loop.make_group_chunk(setups[0], config, 2, None)
  group, _ = chunk(group, images, masks, aux, jnp.int32(1), num_steps=1)
  # Replica 0's step is the single run's step, bit for bit (unroll mode).
  for a, b in zip(jax.tree_util.tree_leaves(alone.params),
                  jax.tree_util.tree_leaves(group[0].params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  group, _ = chunk(group, images, masks, aux, jnp.int32(2), num_steps=1)
  assert [int(s.step) for s in group] == [2, 0]
  for a, b in zip(jax.tree_util.tree_leaves(before.replace(stopped=True)),
                  jax.tree_util.tree_leaves(group[1])):
    np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.parametrize("mode", replicate.MODES)
def test_replicate_modes_match_per_replica_calls(mode):
  """A conv net's loss and gradient per replica (kernels differ, data shared or not)."""

  def loss_grad(kernel, images, scale):
    def loss(k):
      y = jax.lax.conv_general_dilated(images, k, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return jnp.mean(jax.nn.relu(y) * scale) + jax.jit(jnp.sum)(k ** 2)
    return jax.value_and_grad(loss)(kernel)

  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  kernels = tuple(jax.random.normal(keys[0], (3, 3, 3, 2, 4)))
  images = jax.random.normal(keys[1], (2, 8, 8, 2))
  scales = tuple(jnp.asarray([1.0, 2.0, 3.0]))
  outs = jax.jit(replicate.replicate(loss_grad, (0, None, 0), mode))(kernels, images, scales)
  assert len(outs) == 3
  for k, (value, grad) in enumerate(outs):
    want_value, want_grad = jax.jit(loss_grad)(kernels[k], images, scales[k])
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)


def test_bad_seeds_and_modes_are_one_line_input_errors():
  assert cli.parse_seeds("0-3") == [0, 1, 2, 3]
  assert cli.parse_seeds("4,2") == [4, 2]
  for spec in ("1,1", "a", ""):
    with pytest.raises(InputError, match="--seeds"):
      cli.parse_seeds(spec)
  with pytest.raises(InputError, match="unknown mode 'pmap'"):
    loop.train(tiny_config(), ["unused"], [0], mode="pmap")


def test_sweep_groups_unfinished_seeds_of_one_model(tmp_path):
  runs = sweep.grid(["dice", "vae"], [0, 1, 2], ["all"])
  batches = sweep.replica_batches(runs, 2)
  assert batches == [[("dice", 0, "all"), ("dice", 1, "all")], [("dice", 2, "all")],
                     [("vae", 0, "all"), ("vae", 1, "all")], [("vae", 2, "all")]]
  cmd = sweep.run_command(batches[0], str(tmp_path), ["--config.train.max_epochs=2"])
  assert cmd[1:3] == ["-m", "echokld.main"] and cmd[3].endswith("echokld/configs/dice.py")
  assert f"--workdir={tmp_path}/dice_seed{{seed}}" in cmd and "--seeds=0,1" in cmd
  assert sweep.run_command(batches[1], str(tmp_path), [])[1:3] == ["-m", "echokld.main"]


def test_fused_steps_per_call_give_the_sequential_runs(sequential, tmp_path):
  """steps_per_call > 1 (lax.scan over steps, for accelerators) in a group: same runs."""
  workdirs = [str(tmp_path / f"seed{s}") for s in SEEDS]
  loop.train(tiny_config(**SCHEDULE, **{"train.steps_per_call": 3}), workdirs, SEEDS)
  for seq_dir, rep_dir in zip(sequential, workdirs):
    assert_same_epochs(seq_dir, rep_dir)
