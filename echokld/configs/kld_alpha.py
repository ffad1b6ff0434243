"""Model 4: Dice + 0.1 KL between ML fits of scipy's alpha distribution to the intensities
of the predicted and the true LV (eq. 3-6; the family the paper names and ranks first)."""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = (
      "kld_alpha", "KLD-alpha", 4)
  config.loss.terms = ("dice", "kld")
  config.loss.kld_estimator = "fit"
  config.loss.family = "alpha"
  return config
