"""Model 4: Dice + 0.1 KL between fitted Pearson III ("alpha") intensity densities (eq. 3-6)."""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = (
      "kld_alpha", "KLD-alpha", 4)
  config.loss.terms = ("dice", "kld")
  config.loss.kld_estimator = "alpha"
  return config
