"""Model 7: per-mini-batch Pearson III parameters injected at the bottleneck."""

from configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name = "bd_vae"
  config.model.inject_dist = True
  config.model.dist_head = True
  return config
