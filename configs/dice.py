"""Model 1: Dice loss only (the baseline)."""

from configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name = "dice"
  return config
