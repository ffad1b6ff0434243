"""Per-model inputs beyond the image: the distribution parameters of Models 6 and 7.

`make_extras` returns (extras_fn, inject_fn). extras_fn(images, masks) gives the train step's
`dist_inject` (bottleneck input) and `dist_target` (alignment target); inject_fn(images) gives
the evaluation-time injection, where no ground truth exists.

Model 6 (rd_vae) injects the Pearson III fit of all training LV pixels, fitted once.
Model 7 (bd_vae) injects the fit of each mini-batch's ground-truth LV pixels while training;
at evaluation it has no ground truth, so the training-set reference is injected: a train/test
mismatch that this design implies and that may explain the paper's poor Model 7 results.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from echokld import distributions as dist
from echokld.data.pipeline import ArraySplit


def reference_params(train: ArraySplit, num_bins: int = 256) -> jax.Array:
  """(skew, loc, scale) of the LV intensities over the whole training split (8-bit grid)."""
  values = train.images[train.masks > 0].astype(np.int64)
  counts = np.bincount(values, minlength=256).astype(np.float32)
  if num_bins != 256:
    counts = np.asarray(dist.weighted_histogram(jnp.arange(256) / 255.0, counts, num_bins))
  grid = dist.histogram_grid(num_bins)
  return jnp.stack(dist.fit_pearson3_hist(grid, jnp.asarray(counts)))


def batch_params(images: jax.Array, masks: jax.Array, num_bins: int = 256) -> jax.Array:
  """Pearson III fit of a mini-batch's ground-truth LV intensities (images in [0, 1])."""
  counts = dist.weighted_histogram(images.ravel(), masks.ravel(), num_bins)
  return jnp.stack(dist.fit_pearson3_hist(dist.histogram_grid(num_bins), counts))


def needs_reference(config: Any) -> bool:
  return bool(config.model.inject_dist or config.model.dist_head)


def make_extras(config: Any, reference: Any = None
                ) -> tuple[Callable | None, Callable | None]:
  """(extras_fn, inject_fn) for the configured model; `reference` from reference_params."""
  if not needs_reference(config):
    return None, None
  num_bins = config.loss.num_bins
  reference = jnp.asarray(reference, jnp.float32)

  def broadcast(params, images):
    return jnp.broadcast_to(params, (images.shape[0], 3))

  def inject_fn(images):
    return broadcast(reference, images)

  if config.model.name == "bd_vae":
    def extras_fn(images, masks):
      params = jax.lax.stop_gradient(batch_params(images, masks, num_bins))
      return {"dist_inject": broadcast(params, images), "dist_target": params}
  else:
    def extras_fn(images, masks):
      return {"dist_inject": broadcast(reference, images), "dist_target": reference}
  return extras_fn, inject_fn
