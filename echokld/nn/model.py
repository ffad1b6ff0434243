"""The segmentation model: the shared backbone plus the heads a config names.

Every model of the paper is this one network; a variant adds registered heads
(`config.model.heads`, plus the head `config.model.align_source` needs, echokld.nn.heads) or a
bottleneck injection of intensity-distribution parameters (`config.model.dist_injection`,
through `config.model.inject_via`). The network is never copied.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from echokld.nn import heads as heads_lib
from echokld.nn.layers import Decoder, Encoder, OutputConv

Array = jax.Array
DIST_DIM = 3  # (skew, loc, scale) of the injected intensity distribution.
# model.align_source -> the head whose output the dist_align term reads (none: the term
# reads the prediction itself, or there is no alignment).
ALIGN_HEADS = {"none": (), "prediction": (), "latent": ("latent_dist",), "head": ("dist",)}
INJECTIONS = ("broadcast", "flat_latent")  # model.inject_via


class SegModel(nn.Module):
  """Backbone plus heads.

  Outputs: `logits` (B, H, W, 1) float32 always, plus each head's outputs (`recon`, `mu`,
  `logvar` for the VAE head; `dist_pred` (B, 3) for the distribution head; `latent_values`
  (B, h, w) for the latent head). With `inject` ('broadcast' or 'flat_latent', '' for none),
  the `dist_params` (B, 3) given to the call enter the bottleneck. Heads read the encoder's
  own bottleneck, before any injection, and run after the decoder.
  """

  init_features: int = 16
  blocks_down: Sequence[int] = (1, 2, 2, 4)
  num_groups: int = 8
  heads: Sequence[str] = ()
  inject: str = ""
  vae_latent: int = 128
  flat_latent: int = 512
  dist_hidden: int = 48
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: Array, dist_params: Array | None = None,
               rng: Array | None = None, train: bool = False) -> dict[str, Array]:
    x = images.astype(self.dtype)
    skips = Encoder(self.init_features, self.blocks_down, self.num_groups, self.dtype,
                    name="encoder")(x)
    encoded = skips[-1]
    bottleneck = encoded
    if self.inject == "broadcast":
      bottleneck = heads_lib.DistInjection(hidden=self.dist_hidden, dtype=self.dtype,
                                           name="dist_injection")(encoded, dist_params)
    elif self.inject == "flat_latent":
      bottleneck = heads_lib.FlatLatentInjection(self.flat_latent, self.num_groups, self.dtype,
                                                 name="dist_injection")(encoded, dist_params)
    elif self.inject:
      raise ValueError(f"unknown injection {self.inject!r} ({', '.join(INJECTIONS)})")
    skips = list(skips[:-1]) + [bottleneck]
    features = Decoder(self.init_features, len(self.blocks_down), self.num_groups, True,
                       self.dtype, name="decoder")(bottleneck, skips)
    outputs = {"logits": OutputConv(1, self.num_groups, self.dtype, name="head")(features)}
    for head in self.heads:
      outputs.update(heads_lib.get_head(head)(self)(encoded, rng, train))
    return outputs


def build_model(model_config: Any, dtype: Any = jnp.float32) -> SegModel:
  """The SegModel a `config.model` block describes."""
  return SegModel(init_features=model_config.init_features,
                  blocks_down=tuple(model_config.blocks_down),
                  num_groups=model_config.num_groups,
                  heads=tuple(model_config.heads) + ALIGN_HEADS[model_config.align_source],
                  inject=("" if model_config.dist_injection == "none" else
                          model_config.inject_via),
                  vae_latent=model_config.vae_latent,
                  flat_latent=model_config.flat_latent,
                  dist_hidden=model_config.dist_hidden,
                  dtype=dtype)


def count_params(params: Any) -> int:
  return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))
