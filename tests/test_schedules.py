"""Learning-rate schedules beside the paper's plateau: the rates a run used, by hand."""

import json
import math
import os

import pytest

from conftest import tiny_config
from echokld.train import loop, state as state_lib


def cosine_by_hand(t, peak, warmup, total):
  if t < warmup:
    return peak * t / warmup
  end = peak * 1e-2
  return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def test_a_cosine_run_uses_the_rates_of_its_formula(tmp_path):
  config = tiny_config(**{"train.schedule": "cosine", "train.warmup_epochs": 1,
                          "train.max_epochs": 3})
  loop.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(l) for l in open(os.path.join(tmp_path, "metrics.jsonl"))]
  steps_per_epoch = rows[0]["step"]
  total, peak = 3 * steps_per_epoch, config.train.learning_rate
  for row in rows:  # The rate of the epoch's last step (optax counts from 0).
    want = cosine_by_hand(row["step"] - 1, peak, steps_per_epoch, total)
    assert row["learning_rate"] == pytest.approx(want, rel=1e-5), row["epoch"]


def test_onecycle_rises_then_falls_and_plateau_stays_constant():
  config = tiny_config(**{"train.max_epochs": 10})
  assert state_lib.make_schedule(config.train, 5) == config.train.learning_rate
  config.train.schedule = "onecycle"
  schedule = state_lib.make_schedule(config.train, 5)
  rates = [float(schedule(t)) for t in range(0, 50, 5)]
  peak = rates.index(max(rates))
  assert 0 < peak < 9 and max(rates) == pytest.approx(config.train.learning_rate, rel=0.05)
  assert rates[:peak + 1] == sorted(rates[:peak + 1])
  assert rates[peak:] == sorted(rates[peak:], reverse=True)


def test_params_ema_follows_its_recursion_by_hand():
  import jax.numpy as jnp
  import numpy as np
  tx = state_lib.track_params_ema(0.95)
  params = {"w": jnp.array([1.0, -2.0])}
  ema_state = tx.init(params)
  ema, p = np.array([1.0, -2.0]), np.array([1.0, -2.0])
  for t, u in enumerate([[0.5, 0.1], [-0.2, 0.3], [0.1, 0.1], [0.4, -0.6]]):
    updates = {"w": jnp.array(u)}
    out, ema_state = tx.update(updates, ema_state, params)
    assert out["w"] is updates["w"]  # The updates pass unchanged.
    params = {"w": params["w"] + updates["w"]}
    p = p + np.array(u)
    d = min(0.95, (1 + t) / (10 + t))
    ema = d * ema + (1 - d) * p
    np.testing.assert_allclose(np.asarray(ema_state.ema["w"]), ema, rtol=1e-6)


def test_an_ema_run_validates_and_checkpoints_the_average(tmp_path):
  import jax
  import numpy as np
  from echokld.train import build as build_lib, checkpoints
  config = tiny_config(**{"train.ema_decay": 0.9, "train.max_epochs": 2})
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(summary["test"]["dice"])
  manager = checkpoints.make_manager(os.path.join(tmp_path, "checkpoints"))
  setup = build_lib.build(config, (32, 32))
  restored = checkpoints.restore(manager, manager.latest_step(), setup.state)
  ema, live = state_lib.eval_params(restored), restored.params
  leaves = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
  assert leaves(ema).shape == leaves(live).shape and not np.allclose(leaves(ema), leaves(live))
  assert state_lib.eval_params(setup.state) is not setup.state.params
  plain = build_lib.build(tiny_config(), (32, 32)).state
  assert state_lib.eval_params(plain) is plain.params
  # Prediction restores the average: the run's test Dice is that of its EMA parameters.
  from echokld.infer import runs as runs_lib
  run = runs_lib.load_run(str(tmp_path))
  best = checkpoints.restore(manager, run.step, setup.state)
  np.testing.assert_array_equal(leaves(run.params), leaves(state_lib.eval_params(best)))
