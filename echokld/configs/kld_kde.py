"""Model 5: Dice + 0.1 KL between Gaussian-KDE intensity densities."""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = (
      "kld_kde", "KLD-kde", 5)
  config.loss.terms = ("dice", "kld")
  config.loss.kld_estimator = "kde"
  return config
