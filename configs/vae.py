"""Model 3: Dice + Myronenko's VAE regularisation (0.1 L2 reconstruction + 0.1 KL)."""

from configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name = "vae"
  config.model.vae_head = True
  return config
