"""scipy.stats.alpha: log-density and weighted maximum-likelihood fit (paper §3.1, Model 4).

f(x; a, loc, scale) = phi(a - 1/y) / (y^2 Phi(a) scale), y = (x - loc) / scale > 0: the law
of loc + scale / T for T ~ N(a, 1) truncated to T > 0, a right-skewed law with a heavy
right tail and a density that vanishes faster than any power at the left edge. On the LV
intensities of camus224 it is the best of the paper's families (docs/FIT_FAMILIES.md);
the paper's "alpha" is most likely this, whatever its eq. 1-2 (a gamma) say.

Fitting: with u = 1 / (x - loc) the law is a normal of mean a / scale and std 1 / scale
truncated to u > 0, so for a fixed loc the moments of u give a good (a, scale); a profile
over loc below the smallest sample gives the start, then Newton refines all three.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from echokld.objectives import mle
from echokld.objectives.families import pearson3

Array = jax.Array

NEWTON_STEPS = 10
MAX_A = 1e3  # a in (1 / MAX_A, MAX_A); a -> inf is a normal at infinite loc.
_Y_MIN = 1e-3  # Fit support y > _Y_MIN: below it log f < -4e5, 0 in any float.
_LOC_GRID = 16  # Support edges tried for the starting point.
_MIN_TOTAL_WEIGHT = 1e-6  # Below this the mask is empty: fit the unweighted samples.
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_MAX_A = math.log(MAX_A)


def _logpdf_inside(y: Array, a: Array, scale: Array) -> Array:
  """log f at y = (x - loc) / scale > 0."""
  return (-jnp.log(scale) - 2.0 * jnp.log(y) - jax.scipy.special.log_ndtr(a)
          - _LOG_SQRT_2PI - 0.5 * (a - 1.0 / y) ** 2)


def alpha_logpdf(x, a, loc, scale) -> Array:
  """scipy.stats.alpha.logpdf(x, a, loc, scale); -inf for x <= loc. a > 0 as scipy (the
  formula stays a density for a <= 0, a normal truncated further into its tail)."""
  x, a, loc, scale = (mle.as_float(v) for v in (x, a, loc, scale))
  y = (x - loc) / scale
  inside = y > 0
  return jnp.where(inside, _logpdf_inside(jnp.where(inside, y, 1.0), a, scale), -jnp.inf)


def alpha_density_grid(a, loc, scale, grid) -> Array:
  """Alpha density on a uniform grid, renormalized so that sum(p) * spacing = 1."""
  grid = mle.as_float(grid)
  return mle.normalized_on_grid(alpha_logpdf(grid, a, loc, scale), grid)


def _params(theta: Array, consts: Array):
  """Unconstrained theta -> (a, loc, scale) through centre m = loc + scale / a and width
  s = scale / a^2 (about the median and the spread for large a), normalized by consts =
  (m0, s0) of the start: log a = log(MAX_A) tanh(theta_0), m = m0 + s0 theta_1,
  s = s0 exp(theta_2). With a, loc, scale directly the likelihood has a long curved ridge
  towards the normal limit (a, -loc, scale -> inf) that float32 Newton crawls along."""
  a = jnp.exp(_LOG_MAX_A * jnp.tanh(theta[0]))
  m = consts[0] + consts[1] * theta[1]
  s = consts[1] * jnp.exp(theta[2])
  return a, m - s * a, s * a * a


def _theta_of(a: Array) -> Array:
  return jnp.arctanh(jnp.log(a) / _LOG_MAX_A)


def _inside_logf(theta, consts, x):
  a, loc, scale = _params(theta, consts)
  y = (x - loc) / scale
  inside = y > _Y_MIN
  return inside, _logpdf_inside(jnp.where(inside, y, 1.0), a, scale)


def _weighted_logliks(theta, consts, x, w) -> Array:
  """w * log f per sample; -inf for a weighted sample outside the (fit) support."""
  inside, logf = _inside_logf(theta, consts, x)
  ok = inside & jnp.isfinite(logf)
  return w * jnp.where(ok, logf, 0.0) + jnp.where((w > 0) & ~ok, -jnp.inf, 0.0)


def _mean_nll(theta, consts, x, w) -> Array:
  """Weighted mean negative log-likelihood over the samples inside the support (the line
  search keeps every weighted sample inside)."""
  inside, logf = _inside_logf(theta, consts, x)
  return -jnp.sum(jnp.where(inside, w * logf, 0.0)) / jnp.sum(w)


@functools.lru_cache(maxsize=None)
def _problem(num_steps: int) -> mle.Problem:
  return mle.Problem(_weighted_logliks, mle.autodiff_system(_mean_nll), num_steps)


def _start(x, w):
  """Feasible start and normalization constants: a profile over the support edge.

  For each edge loc below the smallest weighted sample, u = 1 / (x - loc) is a truncated
  normal; its weighted moments give scale = 1 / std(u), a = mean(u) / std(u) (exact for
  a >~ 2, where the truncation is negligible). The most likely edge wins.
  """
  wsum = jnp.sum(w)
  mean = jnp.sum(w * x) / wsum
  sd = jnp.sqrt(jnp.maximum(jnp.sum(w * (x - mean) ** 2) / wsum, 0.0))
  xmin = jnp.min(jnp.where(w > 0, x, jnp.inf))
  span = jnp.maximum(jnp.maximum(mean - xmin, sd), pearson3.MIN_SCALE)
  locs = xmin - span * jnp.logspace(-3.0, 2.0, _LOC_GRID, dtype=x.dtype)

  def moments(loc):
    used = w > 0  # All above loc; zero-weight samples may lie anywhere.
    u = jnp.where(used, 1.0 / jnp.where(used, x - loc, 1.0), 0.0)
    um = jnp.sum(w * u) / wsum
    dev = jnp.where(used, u - um, 0.0)
    us = jnp.sqrt(jnp.maximum(jnp.sum(w * dev * dev) / wsum, (1e-3 * um) ** 2))
    a = jnp.clip(um / us, 1.01 / MAX_A, 0.99 * MAX_A)
    return jnp.stack([a, loc, 1.0 / us])

  cands = jax.vmap(moments)(locs)
  a = cands[:, 0]
  thetas = jnp.stack([_theta_of(a), jnp.zeros_like(locs), jnp.zeros_like(locs)], 1)
  consts = jnp.stack([cands[:, 1] + cands[:, 2] / a, cands[:, 2] / (a * a)], 1)
  logliks = jax.vmap(lambda t, c: jnp.sum(_weighted_logliks(t, c, x, w)))(thetas, consts)
  logliks = jnp.where(jnp.isnan(logliks), -jnp.inf, logliks)
  best = jnp.argmax(logliks)
  return jax.lax.stop_gradient((thetas[best], consts[best]))


@functools.partial(jax.jit, static_argnames=("num_steps",))
def fit_alpha(x, weights, *, num_steps: int = NEWTON_STEPS) -> tuple[Array, Array, Array]:
  """Weighted maximum-likelihood alpha fit; returns (a, loc, scale) like scipy.

  Exact ML on float samples (x, weights: 1-D, same length; weight 0 drops a sample): the
  profile start, then `num_steps` damped Newton steps (fixed cost). a is kept in
  (1e-3, 1e3). Differentiable in x and weights by the implicit function theorem. If the
  total weight is below 1e-6 (empty mask) it fits the unweighted samples.
  """
  x, w = mle.as_float(x), mle.as_float(weights)
  empty = jnp.sum(w) < _MIN_TOTAL_WEIGHT
  w = jnp.where(empty, jnp.ones_like(w), w)
  theta0, consts = _start(x, w)
  return _params(mle.solve(_problem(int(num_steps)), x, w, theta0, consts), consts)


def fit_alpha_hist(grid, counts, **kwargs) -> tuple[Array, Array, Array]:
  """ML fit from a weighted histogram (nodes = samples, counts = weights): exact for 8-bit
  data binned with distributions.weighted_histogram, at the cost of 256 samples."""
  return fit_alpha(grid, counts, **kwargs)
