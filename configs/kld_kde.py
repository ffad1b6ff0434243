"""Model 5: Dice + 0.1 KL between Gaussian-KDE intensity densities."""

from configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name = "kld_kde"
  config.loss.kld_estimator = "kde"
  return config
