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
