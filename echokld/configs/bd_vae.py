"""Model 7: per-mini-batch Pearson III parameters injected at the bottleneck.

Model 6's network; only where the injected parameters come from differs.
"""

from echokld.configs import rd_vae


def get_config(arg: str = ""):
  config = rd_vae.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = (
      "bd_vae", "BD-like-VAE", 7)
  config.model.dist_injection = "batch"
  return config
