"""Model 6: the training set's reference Pearson III parameters injected at the bottleneck."""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = (
      "rd_vae", "RD-like-VAE", 6)
  config.model.heads = ("dist",)
  config.model.dist_injection = "reference"
  config.loss.terms = ("dice", "dist_align")
  return config
