"""Model 4 as its eq. 1-2 read: KLD-alpha's network and loss with Pearson III (gamma) fits.

The paper writes the Pearson III density for the distribution it fits with scipy's "alpha";
scipy's alpha is another law (docs/FIT_FAMILIES.md). This variant keeps the equations.
"""

from echokld.configs import kld_alpha


def get_config(arg: str = ""):
  config = kld_alpha.get_config(arg)
  config.model.name, config.model.display_name = "kld_pearson3", "KLD-pearson3"
  config.model.variant = "Model 4 with the Pearson III of eq. 1-2 instead of scipy's alpha"
  config.loss.family = "pearson3"
  return config
