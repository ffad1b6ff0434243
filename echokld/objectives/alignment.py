"""What Models 6-7's `dist_align` term pulls towards the reference distribution.

The paper: the network "is trained to segment the image while aligning its latent
representation with the reference distribution". `config.model.align_source` picks what is
aligned, and the model's outputs carry it:

  latent      `latent_values` (B, h, w): a per-position map of the encoder's bottleneck into
              (0, 1) (nn.heads.LatentDist); each image's values are fitted.
  prediction  no head: each image's intensities under its soft-thresholded prediction (the
              pseudo output of Models 4-5) are fitted.
  head        `dist_pred` (B, 3): parameters regressed from the pooled bottleneck. Its target
              is the same for every image, so the head can meet it with its own biases
              (issue 14); kept to compare.

The fit is the one the `kld` term uses (weighted histogram on the intensity grid, then the
maximum-likelihood fit, differentiable by the implicit function theorem), so the term's
gradient depends on the image and reaches the encoder (latent) or the whole network
(prediction). The comparison is intensity.dist_alignment against `batch["dist_target"]`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from echokld.objectives import distributions as dist
from echokld.objectives import intensity

Array = jax.Array


def aligned_params(outputs: dict[str, Array], batch: dict[str, Array], cfg: Any) -> Array:
  """(B, 3) per-image parameters of what the model aligns (see the module docstring)."""
  if "dist_pred" in outputs:
    return outputs["dist_pred"]
  if "latent_values" in outputs:
    values = outputs["latent_values"]
    weights = jnp.ones_like(values)
  else:
    values = batch["images"]
    weights = intensity.soft_threshold(outputs["probs"], cfg.soft_threshold_temperature,
                                       cfg.soft_threshold_cut)
  b = values.shape[0]
  return jax.vmap(lambda v, w: dist.fit_weighted(v, w, cfg.num_bins, cfg.family))(
      values.reshape(b, -1), weights.reshape(b, -1))


def alignment_loss(outputs: dict[str, Array], batch: dict[str, Array], cfg: Any) -> Array:
  """Mean over images of KL(P_target || P_aligned) on the intensity grid."""
  return intensity.dist_alignment(aligned_params(outputs, batch, cfg), batch["dist_target"],
                                  cfg)
