"""Building blocks of the shared U-Net backbone (§3.2): layers, encoder, decoder.

The backbone follows Myronenko's SegResNet as the paper does (MONAI's layout, so parameter
counts can be checked against it): a 3x3 stem, ResNet blocks (GroupNorm, ReLU, 3x3 conv,
twice, identity skip), strided 3x3 convs going down, and a decoder of one block per level
with a 1x1 conv halving the filters, bilinear x2 upsampling and an additive skip.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def upsample2x_bilinear(x: Array) -> Array:
  """x2 bilinear upsampling with half-pixel centres (PyTorch align_corners=False).

  Written as shifted 0.75/0.25 blends (edges clamped) rather than jax.image.resize, whose
  dense interpolation matrices cost O(size^2) per line at 704x1136.
  """

  def along(v: Array, axis: int) -> Array:
    n = v.shape[axis]
    prev = jnp.concatenate([jax.lax.slice_in_dim(v, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(v, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(v, 1, n, axis=axis),
                           jax.lax.slice_in_dim(v, n - 1, n, axis=axis)], axis=axis)
    even = 0.75 * v + 0.25 * prev
    odd = 0.75 * v + 0.25 * nxt
    stacked = jnp.stack([even, odd], axis=axis + 1)
    shape = list(v.shape)
    shape[axis] = 2 * n
    return stacked.reshape(shape)

  return along(along(x, 1), 2)


def conv(features: int, kernel_size: tuple[int, int], dtype: Any, **kwargs: Any) -> nn.Conv:
  """nn.Conv whose products accumulate in float32 when computing in bfloat16.

  Without it XLA:CPU accumulates bfloat16 convolutions in bfloat16, which cost validation
  Dice on camus224 (BENCHMARKS.md); float32 runs are unchanged.
  """
  if dtype != jnp.float32:
    kwargs["conv_general_dilated"] = functools.partial(jax.lax.conv_general_dilated,
                                                       preferred_element_type=jnp.float32)
  return nn.Conv(features, kernel_size, dtype=dtype, **kwargs)


class GroupNorm(nn.Module):
  """GroupNorm as one affine map per (image, channel): y = x * a + b.

  Same function and parameters (`scale`, `bias`) as flax's GroupNorm, computed the way
  XLA:CPU runs fast: per-channel sums of x and x^2 over the spatial axes (contiguous,
  channels-last reductions instead of a grouped one), summed into groups on (B, C)-sized
  arrays, and one fused x * a + b pass, so the normalised tensor is never materialised for
  the backward pass. BENCHMARKS.md has the measured gain.
  """

  num_groups: int = 8
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    batch, channels = x.shape[0], x.shape[-1]
    per_group = channels // self.num_groups
    scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    spatial = tuple(range(1, x.ndim - 1))
    x32 = x.astype(jnp.float32)
    count = per_group * math.prod(x.shape[1:-1])
    sums = jnp.sum(x32, axis=spatial).reshape(batch, self.num_groups, per_group)
    squares = jnp.sum(x32 * x32, axis=spatial).reshape(batch, self.num_groups, per_group)
    mean = jnp.sum(sums, axis=-1, keepdims=True) / count  # (B, G, 1)
    var = jnp.maximum(jnp.sum(squares, axis=-1, keepdims=True) / count - mean**2, 0.0)
    a = scale.reshape(self.num_groups, per_group) * jax.lax.rsqrt(var + self.epsilon)
    b = bias.reshape(self.num_groups, per_group) - mean * a  # (B, G, C/G)
    shape = (batch,) + (1,) * (x.ndim - 2) + (channels,)
    # In float32: x * a + b cancels the mean, which bfloat16 would round away.
    return (x32 * a.reshape(shape) + b.reshape(shape)).astype(self.dtype)


class ResBlock(nn.Module):
  """GroupNorm-ReLU-conv twice with an identity skip (pre-activation, as SegResNet)."""

  features: int
  num_groups: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = x
    for _ in range(2):
      y = GroupNorm(self.num_groups, 1e-5, self.dtype)(y)
      y = nn.relu(y)
      y = conv(self.features, (3, 3), self.dtype, use_bias=False)(y)
    return x + y


class Encoder(nn.Module):
  """Stem plus one stage per level; returns the feature map of every level, finest first."""

  init_features: int = 16
  blocks_down: Sequence[int] = (1, 2, 2, 4)
  num_groups: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    x = conv(self.init_features, (3, 3), self.dtype, use_bias=False, name="stem")(x)
    skips = []
    for level, num_blocks in enumerate(self.blocks_down):
      features = self.init_features * 2**level
      if level > 0:
        x = conv(features, (3, 3), self.dtype, strides=(2, 2), use_bias=False,
                 name=f"down_{level}")(x)
      for b in range(num_blocks):
        x = ResBlock(features, self.num_groups, self.dtype, name=f"enc_{level}_{b}")(x)
      skips.append(x)
    return skips


class Decoder(nn.Module):
  """One ResNet block per level on the way up; optional skips (the VAE branch has none)."""

  init_features: int = 16
  num_levels: int = 4
  num_groups: int = 8
  use_skips: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, skips: Sequence[Array] | None = None) -> Array:
    for i, level in enumerate(range(self.num_levels - 2, -1, -1)):
      features = self.init_features * 2**level
      # A 1x1 conv without bias commutes with bilinear upsampling, so it runs first, at the
      # coarse resolution: the same function as the paper's order at a quarter of the cost.
      x = conv(features, (1, 1), self.dtype, use_bias=False, name=f"reduce_{i}")(x)
      x = upsample2x_bilinear(x)
      if self.use_skips:
        x = x + skips[level]
      x = ResBlock(features, self.num_groups, self.dtype, name=f"dec_{i}")(x)
    return x


class OutputConv(nn.Module):
  """GroupNorm, ReLU and a 1x1 conv with bias to `features` channels."""

  features: int
  num_groups: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.relu(GroupNorm(self.num_groups, 1e-5, self.dtype)(x))
    return conv(self.features, (1, 1), self.dtype)(x).astype(jnp.float32)
