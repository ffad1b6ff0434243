"""Heads that turn the shared backbone into Models 3, 6 and 7, and their registry.

VAEBranch (Model 3, Myronenko 2018): reconstructs the input from the bottleneck through a
Gaussian latent. Models 6-7: DistInjection adds an embedding of the distribution parameters
to every bottleneck position (Model 6); FlatLatentInjection passes the bottleneck through a
dense latent over its flattened, Myronenko-reduced map and injects them there (Model 7, the
reading that matches Table 8's count, docs/MODELS.md). LatentDist maps every bottleneck
position to a value in (0, 1) whose distribution the `dist_align` term pulls towards the
reference (`model.align_source = latent`); DistHead regresses the parameters from the pooled
bottleneck (`align_source = head`, the earlier reading).

A head is registered by name with `register_head`; `config.model.heads` lists the heads a
model has. A head reads the encoder's bottleneck and returns a dict of extra outputs.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from echokld.nn.layers import Decoder, GroupNorm, OutputConv, conv, upsample2x_bilinear

Array = jax.Array
MAX_SKEW = 2.0  # Same bound as the Pearson III fit (objectives.distributions).


class VAEBranch(nn.Module):
  """GN-ReLU-strided conv to 16 channels, dense to (mu, log-variance), sample, dense back,
  then upsampling stages that mirror the decoder without skips, to one channel."""

  init_features: int = 16
  num_levels: int = 4
  num_groups: int = 8
  latent: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, bottleneck: Array, rng: Array | None, train: bool) -> dict[str, Array]:
    top = bottleneck.shape[-1]
    x = nn.relu(GroupNorm(self.num_groups, 1e-5, self.dtype)(bottleneck))
    x = conv(16, (3, 3), self.dtype, strides=(2, 2), name="down")(x)
    b, h, w, c = x.shape
    stats = nn.Dense(2 * self.latent, name="to_latent")(x.reshape(b, -1).astype(jnp.float32))
    mu, logvar = jnp.split(stats, 2, axis=-1)
    logvar = jnp.clip(logvar, -10.0, 10.0)
    z = mu
    if train and rng is not None:
      z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape)
    y = nn.relu(nn.Dense(h * w * c, name="from_latent")(z)).reshape(b, h, w, c)
    y = conv(top, (1, 1), self.dtype, name="expand")(y.astype(self.dtype))
    y = upsample2x_bilinear(y)[:, :bottleneck.shape[1], :bottleneck.shape[2]]
    y = nn.relu(GroupNorm(self.num_groups, 1e-5, self.dtype)(y))
    y = Decoder(self.init_features, self.num_levels, self.num_groups, use_skips=False,
                dtype=self.dtype, name="decoder")(y)
    return {"recon": OutputConv(1, self.num_groups, self.dtype, name="out")(y), "mu": mu,
            "logvar": logvar}


class DistInjection(nn.Module):
  """Adds an embedding of (skew, loc, scale) to every bottleneck position.

  Additive rather than FiLM: the bottleneck is shifted by a learned function of the
  distribution at half the parameters, and a zero embedding leaves the backbone unchanged.
  """

  hidden: int = 48
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, bottleneck: Array, params: Array) -> Array:
    e = nn.relu(nn.Dense(self.hidden, name="embed_in")(params.astype(jnp.float32)))
    e = nn.Dense(bottleneck.shape[-1], name="embed_out")(e)
    return bottleneck + e[:, None, None, :].astype(bottleneck.dtype)


class FlatLatentInjection(nn.Module):
  """Myronenko's VD/VU around a dense latent, with the parameters added in the latent.

  GroupNorm, ReLU, a stride-2 3x3 conv to 16 channels (his VD), flatten, dense to `latent`;
  plus a dense embedding of (3,) parameters; dense back, ReLU, reshape, a 1x1 conv to the
  bottleneck's channels and x2 bilinear upsampling (his VU); the result is added to the
  bottleneck. At the paper's Poor size the two big dense layers hold 2 x 35,712 x 512 =
  36,569,088 weights: Table 8's gap between Models 7 and 6.
  """

  latent: int = 512
  num_groups: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, bottleneck: Array, params: Array) -> Array:
    b, rows, cols, channels = bottleneck.shape
    x = nn.relu(GroupNorm(self.num_groups, 1e-5, self.dtype)(bottleneck))
    x = conv(16, (3, 3), self.dtype, strides=(2, 2), name="down")(x)
    _, h, w, c = x.shape
    z = nn.Dense(self.latent, name="to_latent")(x.reshape(b, -1).astype(jnp.float32))
    z = z + nn.Dense(self.latent, name="embed")(params.astype(jnp.float32))
    y = nn.relu(nn.Dense(h * w * c, name="from_latent")(z)).reshape(b, h, w, c)
    y = conv(channels, (1, 1), self.dtype, name="expand")(y.astype(self.dtype))
    y = upsample2x_bilinear(y)[:, :rows, :cols]
    return bottleneck + y.astype(bottleneck.dtype)


class LatentDist(nn.Module):
  """Per bottleneck position, a value in (0, 1): the latent's own intensity-like sample.

  Two dense layers (channels -> hidden -> 1, sigmoid) applied at every position; the
  `dist_align` term fits the family to each image's values and pulls the fit towards the
  training-set reference, so the alignment depends on the image and reaches the encoder.
  """

  hidden: int = 48

  @nn.compact
  def __call__(self, bottleneck: Array, rng: Array | None = None,
               train: bool = False) -> dict[str, Array]:
    del rng, train  # Deterministic head.
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(bottleneck.astype(jnp.float32)))
    return {"latent_values": jax.nn.sigmoid(nn.Dense(1, name="out")(h))[..., 0]}


class DistHead(nn.Module):
  """Predicts (skew, loc, scale) from the average-pooled bottleneck, within valid ranges."""

  hidden: int = 48

  @nn.compact
  def __call__(self, bottleneck: Array, rng: Array | None = None,
               train: bool = False) -> dict[str, Array]:
    del rng, train  # Deterministic head.
    pooled = jnp.mean(bottleneck.astype(jnp.float32), axis=(1, 2))
    raw = nn.Dense(3, name="out")(nn.relu(nn.Dense(self.hidden, name="hidden")(pooled)))
    skew = MAX_SKEW * jnp.tanh(raw[:, 0])
    loc = jax.nn.sigmoid(raw[:, 1])
    scale = jax.nn.softplus(raw[:, 2]) + 1e-3
    return {"dist_pred": jnp.stack([skew, loc, scale], axis=-1)}


# ---- Registry ------------------------------------------------------------------------------

# name -> factory(model) building the named head module inside SegModel's compact call;
# `model` is the SegModel (its fields configure the head).
HeadFactory = Callable[[Any], nn.Module]
_HEADS: dict[str, HeadFactory] = {}


def register_head(name: str) -> Callable[[HeadFactory], HeadFactory]:
  """Decorator: registers a head factory under `name` (usable in config.model.heads)."""

  def add(factory: HeadFactory) -> HeadFactory:
    _HEADS[name] = factory
    return factory

  return add


def get_head(name: str) -> HeadFactory:
  if name not in _HEADS:
    raise KeyError(f"unknown head {name!r} (registered: {', '.join(sorted(_HEADS))})")
  return _HEADS[name]


def head_names() -> list[str]:
  return sorted(_HEADS)


@register_head("vae")
def _vae_head(model: Any) -> nn.Module:
  return VAEBranch(model.init_features, len(model.blocks_down), model.num_groups,
                   model.vae_latent, model.dtype, name="vae")


@register_head("dist")
def _dist_head(model: Any) -> nn.Module:
  return DistHead(hidden=model.dist_hidden, name="dist_head")


@register_head("latent_dist")
def _latent_dist_head(model: Any) -> nn.Module:
  return LatentDist(hidden=model.dist_hidden, name="latent_dist")
