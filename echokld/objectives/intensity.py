"""Intensity-distribution regularisers of Models 4-7, built on objectives.distributions.

Models 4-5 (eq. 3-5): the pseudo output is the image weighted by a soft-thresholded
prediction (a steep sigmoid around 0.5), the target the image under the ground-truth mask;
their intensity distributions are estimated on the 8-bit grid (a weighted histogram is a
sufficient statistic) and compared by KL divergence (eq. 6).
Models 6-7: KL between the densities of predicted and reference parameters.
The parametric family is `cfg.family`: scipy's "alpha" (Model 4 as the paper most likely
ran it) or "pearson3" (the paper's eq. 1-2); see docs/FIT_FAMILIES.md.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from echokld.objectives import distributions as dist

Array = jax.Array


def soft_threshold(probs: Array, temperature: float, cut: float = 0.0) -> Array:
  """The pseudo output's pixel weights: max(0, s - cut) / (1 - cut), s = sigmoid((p - 0.5) / T).

  A near-binary mask that stays differentiable around p = 0.5. The cut gives it the hard
  mask's property that matters for a fit: pixels below p = 0.5 + T logit(cut) weigh exactly
  0, so they leave the support (a plain sigmoid gives every pixel at least sigmoid(-0.5 / T),
  and a support-bounded fit must then cover the background and the padding). Continuous
  at the cut; cut = 0 is the plain sigmoid.
  """
  s = jax.nn.sigmoid((probs - 0.5) / temperature)
  if cut == 0.0:
    return s
  return jnp.maximum(s - cut, 0.0) / (1.0 - cut)


def _density(x: Array, w: Array, cfg: Any) -> Array:
  """Density of the weighted intensities on the grid, by the configured estimator."""
  grid = dist.histogram_grid(cfg.num_bins)
  if cfg.kld_estimator == "fit":
    return dist.density_grid(cfg.family, dist.fit_weighted(x, w, cfg.num_bins, cfg.family),
                             grid)
  if cfg.kld_estimator == "kde":
    bandwidth = cfg.kde_bandwidth if cfg.kde_bandwidth > 0 else None
    return dist.gaussian_kde_grid(x, w, 0.0, 1.0, cfg.num_bins, bandwidth)
  raise ValueError(f"unknown loss.kld_estimator {cfg.kld_estimator!r} (fit, kde)")


def intensity_kld(images: Array, probs: Array, masks: Array, cfg: Any) -> Array:
  """KL between the intensity distributions inside the predicted and the true LV.

  images in [0, 1], probs and masks in [0, 1], all (B, H, W, 1). Pooled over the
  mini-batch (cfg.kld_pooling == 'batch', as the paper) or averaged over images.
  """
  weights = soft_threshold(probs, cfg.soft_threshold_temperature, cfg.soft_threshold_cut)
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


def _log_probs_with_normal_floor(family: str, params: Array, grid: Array,
                                 floor: float = 0.01) -> Array:
  """log of 0.99 family density + 0.01 normal (mean loc, std scale), normalised on the grid.

  The normal component has full support, so the alignment keeps a gradient towards the
  target even when a predicted skewed density has no mass where the target has (a pure
  grid KL then saturates at log(1/eps) with zero gradient; seen in training).
  """
  loc, scale = params[1], params[2]
  log_f = dist.family_logpdf(family, grid, params)
  lse_f = jax.scipy.special.logsumexp(log_f)
  ok = jnp.isfinite(lse_f)
  log_p3 = jnp.where(ok, log_f - jnp.where(ok, lse_f, 0.0), -jnp.inf)
  log_n = -0.5 * ((grid - loc) / scale) ** 2
  log_n = log_n - jax.scipy.special.logsumexp(log_n)
  weight = jnp.where(ok, 1.0 - floor, 0.0)
  return jnp.logaddexp(jnp.log(weight) + log_p3, jnp.log1p(-weight) + log_n)


def dist_alignment(pred: Array, target: Array, cfg: Any) -> Array:
  """Mean KL(P(target) || P(pred)) between densities of cfg.family on the intensity grid.

  pred (B, 3) and target (B, 3) or (3,) hold (shape, loc, scale) in scipy's order; the
  predicted density has a 1% normal floor (see _log_probs_with_normal_floor).
  """
  grid = dist.histogram_grid(cfg.num_bins)
  target = jnp.broadcast_to(jax.lax.stop_gradient(target), pred.shape)

  def one(p, t):
    t_probs = dist.density_grid(cfg.family, t, grid)
    t_probs = t_probs / jnp.sum(t_probs)
    log_t = jnp.log(jnp.where(t_probs > 0, t_probs, 1.0))
    return jnp.sum(t_probs * (log_t - _log_probs_with_normal_floor(cfg.family, p, grid)))

  return jnp.mean(jax.vmap(one)(pred, target))
