"""Model 1: Dice loss only (the baseline)."""

from echokld.configs import base


def get_config(arg: str = ""):
  return base.get_config(arg)
