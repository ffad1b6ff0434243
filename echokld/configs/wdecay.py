"""Model 2: Dice loss with decoupled weight decay (AdamW, eq. 8-10).

The paper gives no lambda. Its backbone is Myronenko's SegResNet as MONAI ships it (PyTorch),
so the AdamW it "applied directly during optimization" is most likely torch.optim.AdamW with
its default weight_decay = 0.01 (Keras' AdamW defaults to 0.004, optax's to 1e-4).
docs/MODELS.md reports what that decay does at the paper's learning rate.
"""

from echokld.configs import base


def get_config(arg: str = ""):
  config = base.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = "wdecay", "W-decay", 2
  config.train.optimizer = "adamw"
  config.train.weight_decay = 0.01  # torch.optim.AdamW's default (the paper states none).
  return config
