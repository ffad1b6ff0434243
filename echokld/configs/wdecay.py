"""Model 2: Dice loss with decoupled weight decay (AdamW, eq. 8-10)."""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = "wdecay", "W-decay", 2
  config.train.optimizer = "adamw"
  config.train.weight_decay = 1e-4  # The paper does not state its coefficient.
  return config
