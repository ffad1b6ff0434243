"""Model 3: Dice + Myronenko's VAE regularisation (0.1 L2 reconstruction + 0.1 KL)."""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = "vae", "VAE", 3
  config.model.heads = ("vae",)
  config.loss.terms = ("dice", "recon", "vae_kl")
  return config
