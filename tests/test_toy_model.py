"""An eighth model made the way the README says: one config file plus a registered loss term,
nothing else touched. It trains, and the report shows it next to Model 1."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest


from conftest import shrink
from echokld import registry, report
from echokld.objectives import terms
from echokld.train import loop

TOY_CONFIG = '''"""Toy model: Dice plus a penalty on the predicted LV area's distance to the true one."""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = "toy", "Toy", 0
  config.loss.terms = ("dice", "area_prior")
  config.loss.area_weight = 0.5
  return config
'''


@terms.register_loss_term("area_prior", weight="area_weight")
def area_prior(outputs, batch, loss_config):
  """Squared difference of the predicted and true LV area fractions, averaged over images."""
  del loss_config
  pred = jnp.mean(outputs["probs"], axis=(1, 2, 3))
  true = jnp.mean(batch["masks"], axis=(1, 2, 3))
  return jnp.mean((pred - true) ** 2)


def test_area_prior_by_hand():
  probs = jnp.zeros((2, 2, 2, 1)).at[0, 0, 0, 0].set(1.0)  # Areas 1/4 and 0.
  masks = jnp.ones((2, 2, 2, 1))  # Areas 1 and 1.
  value = area_prior({"probs": probs}, {"masks": masks}, None)
  assert float(value) == pytest.approx(((0.75) ** 2 + 1.0) / 2)


def test_a_toy_eighth_model_trains_and_is_reported(tmp_path):
  path = tmp_path / "toy.py"
  path.write_text(TOY_CONFIG)
  toy = shrink(registry.load_config(str(path)), **{"train.max_epochs": 1})
  sweep = tmp_path / "sweep"
  summary = loop.train_and_evaluate(toy, str(sweep / "toy_seed0"))
  from conftest import tiny_config
  loop.train_and_evaluate(tiny_config("dice", **{"train.max_epochs": 1}),
                          str(sweep / "dice_seed0"))
  with open(sweep / "toy_seed0" / "metrics.jsonl") as f:
    row = json.loads(f.readline())
  # The term trained and was logged; the total is Dice plus its weighted value.
  assert 0 < row["train_area_prior"] < 1
  assert row["train_total"] == pytest.approx(row["train_dice"] + 0.5 * row["train_area_prior"],
                                             rel=1e-5)
  assert report.main([f"--sweep_dir={sweep}", f"--out={tmp_path / 'report'}"]) == 0
  text = (tmp_path / "report" / "report.md").read_text()
  toy_rows = [line for line in text.splitlines() if line.startswith("| toy |")]
  assert toy_rows, text[:2000]
  assert f"{summary['test']['dice']:.4f}" in " ".join(toy_rows)
  assert np.isfinite(summary["test"]["dice"])
