"""Pearson III (the paper's eq. 1-2): log-density and weighted maximum-likelihood fit.

scipy's parameters (scipy.stats.pearson3): loc = mean, scale = std, skew = skewness; skew < 0
is the mirror image, skew -> 0 the normal. A shifted gamma: the same family as
scipy.stats.gamma. Not scipy's `alpha` (objectives.families.alpha), which the paper's Model
4 most likely fitted (docs/FIT_FAMILIES.md).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from echokld.objectives import mle

Array = jax.Array

# |skew| < 2 is shape alpha = 4 / skew^2 > 1: the density stays bounded at the support edge,
# so the likelihood has a maximum (for alpha < 1 it grows without bound as the edge
# approaches the smallest sample).
MAX_SKEW = 2.0
MIN_SCALE = 1e-4  # Floor on the fitted std (data units): keeps a constant image finite.
NEWTON_STEPS = 10
_EDGE_GRID = 13  # Thresholds tried per side for the starting point.
_MIN_TOTAL_WEIGHT = 1e-6  # Below this the mask is empty: fall back to a wide normal.
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _stirling_correction(c: Array) -> Array:
  """lgamma(a) - ((a - 1/2) log a - a + log(2 pi) / 2) for a = 1 / c, smooth down to c = 0.

  Writing the density around Stirling's formula cancels the huge lgamma(a) of small skews,
  which float32 cannot resolve (a = 4e6 at skew 1e-3). For a < 6 the series is shifted by
  lgamma(a) = lgamma(a + 6) - log(a (a+1) ... (a+5)): elementary functions only.
  """
  def series(c):
    c2 = c * c
    return c * (1 / 12 - c2 * (1 / 360 - c2 * (1 / 1260 - c2 * (1 / 1680 - c2 / 1188))))

  large = c < 1.0 / 6.0
  a = 1.0 / jnp.where(large, 1.0, c)
  rising = a * (a + 1.0) * (a + 2.0) * (a + 3.0) * (a + 4.0) * (a + 5.0)
  shifted = (series(1.0 / (a + 6.0)) + (a - 0.5) * jnp.log1p(6.0 / a)
             + 6.0 * jnp.log(a + 6.0) - 6.0 - jnp.log(rising))
  return jnp.where(large, series(jnp.where(large, c, 0.0)), shifted)


def _log1p_minus_u_over_u2(u: Array) -> Array:
  """(log1p(u) - u) / u**2 for u > -1; a series near 0 avoids the cancellation."""
  small = jnp.abs(u) < 0.2
  us = jnp.where(small, u, 0.0)
  series = jnp.zeros_like(us)
  for k in range(13, -1, -1):  # sum_k (-1)^(k+1) u^k / (k + 2), Horner; unrolled at trace.
    series = series * us + (-1.0) ** (k + 1) / (k + 2)
  ub = jnp.where(small, 1.0, u)
  return jnp.where(small, series, (jnp.log1p(ub) - ub) / (ub * ub))


def pearson3_logpdf(x, skew, loc, scale) -> Array:
  """Pearson III log-density, equal to scipy.stats.pearson3.logpdf; -inf outside the support.

  With z = (x - loc) / scale, u = skew z / 2 and a = 4 / skew^2 the density is
    log f = -log(scale) - log(2 pi)/2 - stirling(a) + z^2 (log1p(u) - u) / u^2 - log1p(u),
  which has no 1/skew anywhere: skew = 0 gives the normal exactly and gradients stay finite
  through 0 (no branch switch). The support is u > -1, i.e. x > loc - 2 scale / skew for
  skew > 0 and x < loc - 2 scale / skew for skew < 0.
  """
  x, skew, loc, scale = (mle.as_float(v) for v in (x, skew, loc, scale))
  z = (x - loc) / scale
  u = 0.5 * skew * z
  inside = u > -1.0
  us = jnp.where(inside, u, 0.0)
  zs = jnp.where(inside, z, 0.0)
  logf = (-jnp.log(scale) - _LOG_SQRT_2PI - _stirling_correction(0.25 * skew * skew)
          + zs * zs * _log1p_minus_u_over_u2(us) - jnp.log1p(us))
  return jnp.where(inside, logf, -jnp.inf)


class _Config(NamedTuple):
  max_skew: float
  min_scale: float
  num_steps: int


def _params(theta: Array, consts: tuple[Array, Array], cfg: _Config):
  """Unconstrained (sigma, mu, rho) -> (skew, loc, scale), |skew| < max_skew, scale >
  min_scale; normalized by the moments so Newton is well scaled in any data units."""
  loc_c, scale_c = consts
  skew = cfg.max_skew * jnp.tanh(theta[0] / cfg.max_skew)
  return skew, loc_c + scale_c * theta[1], cfg.min_scale + scale_c * jnp.exp(theta[2])


def _weighted_logliks(theta, consts, x, w, cfg: _Config) -> Array:
  """w * logpdf per sample; -inf for a weighted sample outside the support.

  The derivative in w is the log-density wherever it is finite (also where w == 0), and
  never 0 * inf.
  """
  logf = pearson3_logpdf(x, *_params(theta, consts, cfg))
  finite = jnp.isfinite(logf)
  return (w * jnp.where(finite, logf, 0.0)
          + jnp.where((w > 0) & ~finite, -jnp.inf, 0.0))


def _newton_system(theta, consts, x, w, cfg: _Config) -> tuple[Array, Array]:
  """Gradient and Hessian in theta of the weighted mean negative log-likelihood.

  Closed-form per-sample derivatives of phi(z, skew) = log f + log(scale), then a single
  weighted contraction: the Newton loop costs one fused pass over the samples, instead of
  the dozens of kernels of autodiff through the summed loss.
  """
  skew, loc, scale = _params(theta, consts, cfg)
  r = 1.0 / scale
  z = (x - loc) * r
  inside = 0.5 * skew * z > -1.0
  z = jnp.where(inside, z, 0.0)
  inv = 1.0 / (1.0 + 0.5 * skew * z)
  h = lambda u: jax.jvp(_log1p_minus_u_over_u2, (u,), (jnp.ones_like(u),))[1]
  h1, h2 = jax.jvp(h, (0.5 * skew * z,), (jnp.ones_like(z),))
  phi_z = -(z + 0.5 * skew) * inv
  phi_zz = (0.25 * skew * skew - 1.0) * inv * inv
  phi_zs = 0.5 * (z * z - 1.0) * inv * inv
  phi_s = 0.5 * z * (z * z * h1 - inv)
  phi_ss = 0.25 * z * z * (z * z * h2 + inv * inv)
  m = jnp.stack([phi_s, phi_ss, phi_z, phi_z * z, phi_zz, phi_zz * z, phi_zz * z * z,
                 phi_zs, phi_zs * z]) @ (jnp.where(inside, w, 0.0) / jnp.sum(w))
  k = lambda t: _stirling_correction(0.25 * t * t)
  dk, ddk = jax.jvp(jax.grad(k), (skew,), (jnp.ones_like(skew),))
  # Mean log-likelihood derivatives in p = (skew, loc, log scale), z = (x - loc) / scale.
  grad_p = jnp.stack([m[0] - dk, -r * m[2], -1.0 - m[3]])
  hess_p = jnp.stack([
      jnp.stack([m[1] - ddk, -r * m[7], -m[8]]),
      jnp.stack([-r * m[7], r * r * m[4], r * (m[5] + m[2])]),
      jnp.stack([-m[8], r * (m[5] + m[2]), m[6] + m[3]])])
  # Chain rule through the diagonal map theta -> p of `_params`.
  t = skew / cfg.max_skew
  q = 1.0 - cfg.min_scale * r
  d1 = jnp.stack([1.0 - t * t, consts[1], q])
  d2 = jnp.stack([-2.0 * t * (1.0 - t * t) / cfg.max_skew, jnp.zeros_like(q), q * (1.0 - q)])
  return -grad_p * d1, -(hess_p * d1[:, None] * d1[None, :] + jnp.diag(grad_p * d2))


@functools.lru_cache(maxsize=None)
def _problem(cfg: _Config) -> mle.Problem:
  """The ML problem for the shared Newton solver (one object per cfg: a static argument)."""
  return mle.Problem(functools.partial(_weighted_logliks, cfg=cfg),
                     functools.partial(_newton_system, cfg=cfg), cfg.num_steps)


def _start(x, w, cfg: _Config):
  """Feasible starting point and the normalization constants (weighted mean, std).

  The ML loc is the weighted mean (a score equation of the 3-parameter gamma), so the
  search is over (skew, scale): the moment fit with its skew shrunk into the feasible set,
  and a profile over the support edge (a grid of thresholds below the smallest sample, or
  mirrored above the largest) with Minka's closed-form gamma shape; the most likely wins.
  Heavy tails (sample skew 3-4 on echo ROIs, ML skew ~1.5) and optima next to the support
  edge would otherwise cost Newton many steps.
  """
  wsum = jnp.sum(w)
  mean = jnp.sum(w * x) / wsum
  dev = x - mean
  var = jnp.sum(w * dev * dev) / wsum
  pos_var = var > 0
  sd = jnp.sqrt(jnp.where(pos_var, var, 1.0))
  skew = jnp.where(pos_var, jnp.sum(w * dev ** 3) / wsum / (sd ** 3), 0.0)
  sd = jnp.where(pos_var, sd, 0.0)
  inside = w > 0
  below = mean - jnp.min(jnp.where(inside, x, jnp.inf))
  above = jnp.max(jnp.where(inside, x, -jnp.inf)) - mean
  hi = jnp.where(below > 0, 2.0 * sd / jnp.where(below > 0, below, 1.0), jnp.inf)
  lo = jnp.where(above > 0, -2.0 * sd / jnp.where(above > 0, above, 1.0), -jnp.inf)
  skews = [jnp.clip(skew, 0.9 * lo, 0.9 * hi)]
  scales = [sd]
  gaps = jnp.logspace(-4.0, 2.0, _EDGE_GRID, dtype=x.dtype)
  for sign, span in ((1.0, below), (-1.0, above)):
    # y = distance from a threshold outside the data; mean(y) = gap + span exactly.
    y = sign * dev[None, :] + span * (1.0 + gaps[:, None])
    ybar = span * (1.0 + gaps)
    logy = jnp.where(inside, jnp.log(jnp.where(inside & (y > 0), y, 1.0)), 0.0)
    stat = jnp.maximum(jnp.log(jnp.where(ybar > 0, ybar, 1.0)) - logy @ w / wsum, 1e-12)
    shape = (3.0 - stat + jnp.sqrt((stat - 3.0) ** 2 + 24.0 * stat)) / (12.0 * stat)
    skews.append(sign * 2.0 / jnp.sqrt(shape))
    scales.append(ybar / jnp.sqrt(shape))
  # Shrinking |skew| at fixed mean and scale moves the edge away: still feasible.
  skews = jnp.clip(jnp.concatenate([jnp.atleast_1d(v) for v in skews]),
                   -0.98 * cfg.max_skew, 0.98 * cfg.max_skew)
  scales = jnp.concatenate([jnp.atleast_1d(v) for v in scales])
  ok = (scales > 0) & jnp.isfinite(skews)
  scale_c = jnp.maximum(sd, cfg.min_scale)
  rho = jnp.log(jnp.maximum(jnp.where(ok, scales, sd) - cfg.min_scale, 1e-3 * scale_c)
                / scale_c)
  sigma = cfg.max_skew * jnp.arctanh(jnp.where(ok, skews, 0.0) / cfg.max_skew)
  thetas = jnp.stack([sigma, jnp.zeros_like(sigma), rho], axis=1)
  consts = (mean, scale_c)
  logliks = jax.vmap(lambda t: jnp.sum(_weighted_logliks(t, consts, x, w, cfg)))(thetas)
  logliks = jnp.where(ok & ~jnp.isnan(logliks), logliks, -jnp.inf)
  return jax.lax.stop_gradient((thetas[jnp.argmax(logliks)], consts))


@functools.partial(jax.jit, static_argnames=("max_skew", "min_scale", "num_steps"))
def fit_pearson3(x, weights, *, max_skew: float = MAX_SKEW, min_scale: float = MIN_SCALE,
                 num_steps: int = NEWTON_STEPS) -> tuple[Array, Array, Array]:
  """Weighted maximum-likelihood Pearson III fit; returns (skew, loc, scale) like scipy.

  Exact ML on arbitrary float samples (x, weights: 1-D, same length): a feasible start, then
  `num_steps` damped Newton steps (fixed cost; 10 reach the optimum on CAMUS LV ROIs to
  ~1e-6 relative log-likelihood). Constraints: |skew| < max_skew (default 2, i.e. gamma shape
  > 1, where the likelihood is bounded) and scale > min_scale. Near the skew bound with the
  support edge on the smallest sample (e.g. a whole image with its 0 background) convergence
  is slower. Differentiable in x and weights by the implicit function theorem. If the total
  weight is below 1e-6 (empty mask) it returns the normal of the unweighted samples.
  """
  cfg = _Config(float(max_skew), float(min_scale), int(num_steps))
  x, w = mle.as_float(x), mle.as_float(weights)
  empty = jnp.sum(w) < _MIN_TOTAL_WEIGHT
  w = jnp.where(empty, 1.0, w)
  theta0, consts = _start(x, w, cfg)
  skew, loc, scale = _params(mle.solve(_problem(cfg), x, w, theta0, consts), consts, cfg)
  return (jnp.where(empty, 0.0, skew), jnp.where(empty, consts[0], loc),
          jnp.where(empty, consts[1], scale))


def fit_pearson3_hist(grid, counts, **kwargs) -> tuple[Array, Array, Array]:
  """ML fit from a weighted histogram: the nodes are the samples, the counts their weights.

  For 8-bit data binned with `weighted_histogram` this is the exact ML fit of the pixels at
  the cost of 256 samples instead of the whole image.
  """
  return fit_pearson3(grid, counts, **kwargs)


def pearson3_density_grid(skew, loc, scale, grid) -> Array:
  """Pearson III density on a uniform grid, renormalized so that sum(p) * spacing = 1
  (zero outside the support; uniform if no node has positive density)."""
  grid = mle.as_float(grid)
  return mle.normalized_on_grid(pearson3_logpdf(grid, skew, loc, scale), grid)

