"""Model 4: Dice + 0.1 KL between fitted Pearson III ("alpha") intensity densities (eq. 3-6)."""

from configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name = "kld_alpha"
  config.loss.kld_estimator = "alpha"
  return config
