"""Model 7: per-mini-batch Pearson III parameters injected at the bottleneck.

Model 6's network; only how the injected parameters are obtained differs (echokld/variants.py).
"""

from configs import rd_vae


def get_config(arg: str = ""):
  config = rd_vae.get_config(arg)
  config.model.name = "bd_vae"
  return config
