"""Heads that turn the shared backbone into Models 3, 6 and 7, and their registry.

VAEBranch (Model 3, Myronenko 2018): reconstructs the input from the bottleneck through a
Gaussian latent. DistInjection and DistHead (Models 6-7): Pearson III parameters of the LV
intensities enter the bottleneck, and the pooled bottleneck predicts them back.

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
