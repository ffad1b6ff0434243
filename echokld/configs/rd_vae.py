"""Model 6: the training set's reference fit injected at the bottleneck, and the latent
aligned with that reference distribution (`model.align_source`, docs/MODELS.md)."""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = (
      "rd_vae", "RD-like-VAE", 6)
  config.model.dist_injection = "reference"
  config.model.inject_via = "broadcast"
  config.model.align_source = "latent"  # Or prediction, or head (the earlier reading).
  config.loss.terms = ("dice", "dist_align")
  return config
