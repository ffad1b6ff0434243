"""Epoch-end bookkeeping: plateau halving, early stopping and the best epoch, by hand."""

import jax.numpy as jnp
import pytest

from conftest import tiny_config
from echokld.train import build, state as state_lib


def run_epochs(val_dices, **train_overrides):
  config = tiny_config(**{f"train.{k}": v for k, v in train_overrides.items()})
  setup = build.build(config, (32, 32))
  state = setup.state
  end_epoch = state_lib.make_end_epoch(setup.plateau, config.train)
  history = []
  for dice in val_dices:
    state = end_epoch(state, jnp.float32(dice))
    history.append((float(state_lib.learning_rate(state)), int(state.best_epoch),
                    int(state.bad_epochs), bool(state.stopped)))
  return history


def test_learning_rate_halves_after_patience_epochs_without_a_gain_above_min_delta():
  # Epoch 1 sets the reference 0.5; gains of 0.0005 are below min_delta 0.001 and count as
  # bad epochs: the 3rd bad epoch (epoch 4) halves the rate, the 6th (epoch 7) again.
  dices = [0.5, 0.5005, 0.5008, 0.5009, 0.5, 0.5, 0.5]
  history = run_epochs(dices, plateau_patience=3, early_stop_patience=100,
                       learning_rate=1e-3)
  rates = [h[0] for h in history]
  assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4])
  # The best checkpoint follows any improvement, however small.
  assert [h[1] for h in history] == [1, 2, 3, 4, 4, 4, 4]


def test_early_stopping_after_patience_bad_epochs_and_reset_on_a_real_gain():
  dices = [0.5, 0.5, 0.6, 0.6, 0.6005, 0.6]
  history = run_epochs(dices, plateau_patience=100, early_stop_patience=3)
  assert [h[2] for h in history] == [0, 1, 0, 1, 2, 3]
  assert [h[3] for h in history] == [False] * 5 + [True]
