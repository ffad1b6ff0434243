"""Per-model inputs beyond the image: the distribution parameters of Models 6 and 7.

`config.model.dist_injection` says where the (shape, loc, scale) of `config.loss.family` that
enter the bottleneck come from: `none`, `reference` (Model 6: the fit of all training LV
pixels, fitted once) or `batch` (Model 7: a fit per mini-batch). The same parameters are the
target of the `dist_align` loss term. For `batch`, `config.model.batch_source` says which LV
region is fitted while training: the mini-batch's `ground_truth` or the model's own
`prediction` (a first pass with the reference injected, weighted as the pseudo output). At
inference no ground truth is ever read: each image's own predicted LV is fitted the same
way, per image, so a prediction never depends on the other frames of its batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from echokld.objectives import distributions as dist
from echokld.objectives import intensity

SOURCES = ("none", "reference", "batch")
BATCH_SOURCES = ("ground_truth", "prediction")
# first_pass(images, inject) -> probabilities (B, H, W, 1), without gradient: the model run
# once with `inject` (B, 3) entering the bottleneck.
FirstPass = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """How a model's extra inputs are made.

  train(images, masks, first_pass) -> dict of batch entries (`dist_inject`, `dist_target`)
  for the train step; infer(images, first_pass) -> the injection at inference (None: the
  model takes none). `first_pass` is needed only where the model's own prediction is fitted.
  """

  train: Callable[..., dict[str, jax.Array]] | None = None
  infer: Callable[..., jax.Array] | None = None


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


# Fit of `family` to the intensities of images (in [0, 1]) weighted by an LV mask, pooled:
# batch_params(images, weights, num_bins, family).
batch_params = dist.fit_weighted


def predicted_region(images: jax.Array, inject: jax.Array, first_pass: FirstPass,
                     loss_config: Any) -> jax.Array:
  """Weights of the model's own predicted LV (its pseudo output's), without gradient."""
  if first_pass is None:
    raise ValueError("fitting the predicted LV needs the model's first pass")
  probs = jax.lax.stop_gradient(first_pass(images, inject))
  return intensity.soft_threshold(probs, loss_config.soft_threshold_temperature,
                                  loss_config.soft_threshold_cut)


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

  def own_fit(images, first_pass):
    return predicted_region(images, broadcast(reference, images), first_pass, config.loss)

  if config.model.dist_injection == "batch":
    family = config.loss.family

    def infer(images, first_pass=None):
      weights = own_fit(images, first_pass)
      return jax.vmap(lambda x, w: batch_params(x, w, num_bins, family))(images, weights)

    from_truth = config.model.batch_source == "ground_truth"

    def train(images, masks, first_pass=None):
      weights = masks if from_truth else own_fit(images, first_pass)
      params = jax.lax.stop_gradient(batch_params(images, weights, num_bins, family))
      return {"dist_inject": broadcast(params, images), "dist_target": params}
  else:
    def infer(images, first_pass=None):
      del first_pass
      return broadcast(reference, images)

    def train(images, masks, first_pass=None):
      del masks, first_pass
      return {"dist_inject": broadcast(reference, images), "dist_target": reference}
  inject = config.model.dist_injection != "none"
  return Conditioning(train=train, infer=infer if inject else None)
