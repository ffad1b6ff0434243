"""Per-model inputs beyond the image: the distribution parameters of Models 6 and 7.

`config.model.dist_injection` says where the (shape, loc, scale) of `config.loss.family` that
enter the bottleneck come from: `none`, `reference` (Model 6: the fit of all training LV pixels,
fitted once) or `batch` (Model 7: the fit of each mini-batch's ground-truth LV pixels while
training). The same parameters are the target of the `dist_align` loss term. At inference
no ground truth exists, so both sources inject the training-set reference: for `batch` a
train/test mismatch that this design implies and that may explain the paper's poor Model 7.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from echokld.objectives import distributions as dist

SOURCES = ("none", "reference", "batch")


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """How a model's extra inputs are made.

  train(images, masks) -> dict of batch entries (`dist_inject`, `dist_target`) for the train
  step; infer(images) -> the injection at inference (None: the model takes none).
  """

  train: Callable[[jax.Array, jax.Array], dict[str, jax.Array]] | None = None
  infer: Callable[[jax.Array], jax.Array] | None = None


def reference_params(images: np.ndarray, masks: np.ndarray, num_bins: int = 256,
                     family: str = "pearson3") -> jax.Array:
  """ML parameters of `family` (config.loss.family) for the LV intensities of uint8 frames
  under masks (8-bit grid)."""
  values = np.asarray(images)[np.asarray(masks) > 0].astype(np.int64)
  counts = np.bincount(values, minlength=256).astype(np.float32)
  if num_bins != 256:
    counts = np.asarray(dist.weighted_histogram(jnp.arange(256) / 255.0, counts, num_bins))
  grid = dist.histogram_grid(num_bins)
  return dist.fit_hist(family, grid, jnp.asarray(counts))


def batch_params(images: jax.Array, masks: jax.Array, num_bins: int = 256,
                 family: str = "pearson3") -> jax.Array:
  """Fit of a mini-batch's ground-truth LV intensities (images in [0, 1])."""
  counts = dist.weighted_histogram(images.ravel(), masks.ravel(), num_bins)
  return dist.fit_hist(family, dist.histogram_grid(num_bins), counts)


def needs_reference(config: Any) -> bool:
  """Whether the model needs the training-set fit (injection or alignment target)."""
  return config.model.dist_injection != "none" or "dist_align" in config.loss.terms


def make_conditioning(config: Any, reference: Any = None) -> Conditioning:
  """The configured model's Conditioning; `reference` from reference_params when needed."""
  if not needs_reference(config):
    return Conditioning()
  if reference is None:
    raise ValueError(f"model {config.model.name!r} needs the training-set reference fit")
  num_bins = config.loss.num_bins
  reference = jnp.asarray(reference, jnp.float32)

  def broadcast(params, images):
    return jnp.broadcast_to(params, (images.shape[0], 3))

  def infer(images):
    return broadcast(reference, images)

  if config.model.dist_injection == "batch":
    def train(images, masks):
      params = jax.lax.stop_gradient(batch_params(images, masks, num_bins,
                                                  config.loss.family))
      return {"dist_inject": broadcast(params, images), "dist_target": params}
  else:
    def train(images, masks):
      return {"dist_inject": broadcast(reference, images), "dist_target": reference}
  inject = config.model.dist_injection != "none"
  return Conditioning(train=train, infer=infer if inject else None)
