"""Intensity-distribution regularisers of Models 4-7, built on objectives.distributions.

Models 4-5 (eq. 3-5): the pseudo output is the image weighted by a soft-thresholded
prediction (a steep sigmoid around 0.5), the target the image under the ground-truth mask;
their intensity distributions are estimated on the 8-bit grid (a weighted histogram is a
sufficient statistic) and compared by KL divergence (eq. 6).
Models 6-7: KL between the Pearson III densities of predicted and reference parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from echokld.objectives import distributions as dist

Array = jax.Array


def soft_threshold(probs: Array, temperature: float) -> Array:
  """A differentiable near-binary mask: sigmoid((p - 0.5) / T)."""
  return jax.nn.sigmoid((probs - 0.5) / temperature)


def _density(x: Array, w: Array, cfg: Any) -> Array:
  """Density of the weighted intensities on the grid, by the configured estimator."""
  grid = dist.histogram_grid(cfg.num_bins)
  if cfg.kld_estimator == "alpha":
    counts = dist.weighted_histogram(x, w, cfg.num_bins)
    skew, loc, scale = dist.fit_pearson3_hist(grid, counts)
    return dist.pearson3_density_grid(skew, loc, scale, grid)
  if cfg.kld_estimator == "kde":
    bandwidth = cfg.kde_bandwidth if cfg.kde_bandwidth > 0 else None
    return dist.gaussian_kde_grid(x, w, 0.0, 1.0, cfg.num_bins, bandwidth)
  raise ValueError(f"unknown loss.kld_estimator {cfg.kld_estimator!r} (alpha, kde)")


def intensity_kld(images: Array, probs: Array, masks: Array, cfg: Any) -> Array:
  """KL between the intensity distributions inside the predicted and the true LV.

  images in [0, 1], probs and masks in [0, 1], all (B, H, W, 1). Pooled over the
  mini-batch (cfg.kld_pooling == 'batch', as the paper) or averaged over images.
  """
  weights = soft_threshold(probs, cfg.soft_threshold_temperature)
  truth = jax.lax.stop_gradient(masks)

  def kl(x, w_pred, w_true):
    p_pred = _density(x.ravel(), w_pred.ravel(), cfg)
    p_true = jax.lax.stop_gradient(_density(x.ravel(), w_true.ravel(), cfg))
    if cfg.kld_direction == "pred_gt":
      return dist.kl_divergence(p_pred, p_true)
    return dist.kl_divergence(p_true, p_pred)

  if cfg.kld_pooling == "batch":
    return kl(images, weights, truth)
  return jnp.mean(jax.vmap(kl)(images, weights, truth))


def _log_probs_with_normal_floor(params: Array, grid: Array, floor: float = 0.01) -> Array:
  """log of 0.99 Pearson III + 0.01 normal (same mean and std), normalised on the grid.

  The normal component has full support, so the alignment keeps a gradient towards the
  target even when a predicted skewed density has no mass where the target has (a pure
  grid KL then saturates at log(1/eps) with zero gradient; seen in training).
  """
  skew, loc, scale = params[0], params[1], params[2]
  log_f = dist.pearson3_logpdf(grid, skew, loc, scale)
  lse_f = jax.scipy.special.logsumexp(log_f)
  ok = jnp.isfinite(lse_f)
  log_p3 = jnp.where(ok, log_f - jnp.where(ok, lse_f, 0.0), -jnp.inf)
  log_n = -0.5 * ((grid - loc) / scale) ** 2
  log_n = log_n - jax.scipy.special.logsumexp(log_n)
  weight = jnp.where(ok, 1.0 - floor, 0.0)
  return jnp.logaddexp(jnp.log(weight) + log_p3, jnp.log1p(-weight) + log_n)


def dist_alignment(pred: Array, target: Array, cfg: Any) -> Array:
  """Mean KL(P(target) || P(pred)) between Pearson III densities on the intensity grid.

  pred (B, 3) and target (B, 3) or (3,) hold (skew, loc, scale); the predicted density has a
  1% normal floor (see _log_probs_with_normal_floor).
  """
  grid = dist.histogram_grid(cfg.num_bins)
  target = jnp.broadcast_to(jax.lax.stop_gradient(target), pred.shape)

  def one(p, t):
    t_probs = dist.pearson3_density_grid(t[0], t[1], t[2], grid)
    t_probs = t_probs / jnp.sum(t_probs)
    log_t = jnp.log(jnp.where(t_probs > 0, t_probs, 1.0))
    return jnp.sum(t_probs * (log_t - _log_probs_with_normal_floor(p, grid)))

  return jnp.mean(jax.vmap(one)(pred, target))
