"""Intensity distributions on a grid (paper §3.1): histograms, parametric fits, KDE and KL.

The KLD losses compare the intensity distribution inside the predicted mask with the one
inside the label, every step, for every image of the batch. So everything here is pure jnp,
works on 1-D inputs (batch with jax.vmap), has a fixed cost (no data-dependent Python loops)
and is accurate in float32.

Conventions:
  * Parametric families by name (`FAMILIES`, `config.loss.family`): "alpha" is
    scipy.stats.alpha (objectives.families.alpha), "pearson3" is scipy.stats.pearson3 (the
    paper's eq. 1-2, objectives.families.pearson3); parameters are 3-vectors in scipy's order
    (shape, loc, scale).
  * Intensities are expected in [0, 1] (uint8 / 255). With the default 256-node grid on
    [0, 1], 8-bit data sit exactly on the nodes, so `weighted_histogram` is an exact
    sufficient statistic for the fits and the KDE.
  * Weights are soft-mask values >= 0; only their ratios matter. A point with weight > 0 must
    lie inside the fitted support (exact weighted maximum likelihood); weight 0 drops it.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from echokld.objectives import mle
from echokld.objectives.families import alpha, pearson3

Array = jax.Array

# Re-exported: the Pearson III and alpha functions live in objectives.families.
pearson3_logpdf = pearson3.pearson3_logpdf
fit_pearson3 = pearson3.fit_pearson3
fit_pearson3_hist = pearson3.fit_pearson3_hist
pearson3_density_grid = pearson3.pearson3_density_grid
alpha_logpdf = alpha.alpha_logpdf
fit_alpha = alpha.fit_alpha
fit_alpha_hist = alpha.fit_alpha_hist
alpha_density_grid = alpha.alpha_density_grid
_as_float = mle.as_float


class Family(NamedTuple):
  """A parametric family: logpdf(x, p0, p1, p2) and fit(x, weights) -> (p0, p1, p2)."""

  logpdf: Callable[..., Array]
  fit: Callable[..., tuple[Array, Array, Array]]


FAMILIES = {"alpha": Family(alpha.alpha_logpdf, alpha.fit_alpha),
            "pearson3": Family(pearson3.pearson3_logpdf, pearson3.fit_pearson3)}


def get_family(name: str) -> Family:
  if name not in FAMILIES:
    raise ValueError(f"unknown distribution family {name!r} ({', '.join(FAMILIES)})")
  return FAMILIES[name]


def fit_hist(family: str, grid, counts) -> Array:
  """(3,) ML parameters of `family` from a weighted histogram (nodes = samples)."""
  return jnp.stack(get_family(family).fit(grid, counts))


def fit_weighted(values, weights, num_bins: int = 256, family: str = "pearson3") -> Array:
  """(3,) ML parameters of `family` for `values` in [0, 1] under `weights`, all pooled,
  through the weighted histogram on the `num_bins` intensity grid."""
  counts = weighted_histogram(jnp.ravel(values), jnp.ravel(weights), num_bins)
  return fit_hist(family, histogram_grid(num_bins), counts)


def family_logpdf(family: str, x, params) -> Array:
  """log-density of `family` with params = (shape, loc, scale)."""
  return get_family(family).logpdf(x, params[0], params[1], params[2])


def density_grid(family: str, params, grid) -> Array:
  """Density of `family` on a uniform grid, renormalized so that sum(p) * spacing = 1."""
  grid = _as_float(grid)
  return mle.normalized_on_grid(family_logpdf(family, grid, params), grid)


def histogram_grid(num_bins: int = 256, lo: float = 0.0, hi: float = 1.0) -> Array:
  """The nodes of `weighted_histogram`: num_bins points from lo to hi inclusive."""
  return jnp.linspace(lo, hi, num_bins, dtype=_as_float(lo).dtype)


def weighted_histogram(x, weights, num_bins: int = 256, lo: float = 0.0,
                       hi: float = 1.0) -> Array:
  """Linear-binned weighted counts on `histogram_grid(num_bins, lo, hi)`.

  Each sample splits its weight between its two neighbouring nodes in proportion to
  proximity, so the counts are differentiable in x and in the weights, keep the weighted
  mean exactly, and are exact for data on the nodes (8-bit data / 255 with 256 nodes).
  Samples outside [lo, hi] are clamped to the end nodes.
  """
  x, w = _as_float(x), _as_float(weights)
  pos = jnp.clip((x - lo) * ((num_bins - 1) / (hi - lo)), 0.0, num_bins - 1.0)
  left = jnp.clip(jnp.floor(pos), 0, num_bins - 2).astype(jnp.int32)
  frac = pos - left
  # One scatter of 2-wide windows (left, right node): ~4x faster on CPU than two scatters.
  updates = jnp.stack([w * (1.0 - frac), w * frac], axis=-1)
  dims = jax.lax.ScatterDimensionNumbers(
      update_window_dims=(1,), inserted_window_dims=(), scatter_dims_to_operand_dims=(0,))
  return jax.lax.scatter_add(jnp.zeros(num_bins, w.dtype), left[:, None], updates, dims,
                             mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def scott_bandwidth(x, weights) -> Array:
  """scipy.stats.gaussian_kde's default kernel std with weights: n_eff**-0.2 * weighted std,
  n_eff = (sum w)^2 / sum w^2, variance with numpy's aweights (unbiased) correction."""
  x, w = _as_float(x), _as_float(weights)
  wsum = jnp.sum(w)
  wn = w / jnp.where(wsum > 0, wsum, 1.0)
  sum_w2 = jnp.sum(wn * wn)
  mean = jnp.sum(wn * x)
  var = jnp.sum(wn * (x - mean) ** 2) / jnp.maximum(1.0 - sum_w2, 1e-12)
  ok = (var > 0) & (sum_w2 > 0)
  sd = jnp.where(ok, jnp.sqrt(jnp.where(ok, var, 1.0)), 0.0)
  return jnp.where(ok, jnp.where(ok, sum_w2, 1.0) ** 0.2, 0.0) * sd


@functools.partial(jax.jit, static_argnames=("num_bins",))
def gaussian_kde_grid(x, weights, grid_lo: float, grid_hi: float, num_bins: int,
                      bandwidth=None) -> Array:
  """Weighted Gaussian KDE on `histogram_grid(num_bins, grid_lo, grid_hi)`.

  Linear binning then a discrete Gaussian convolution: O(N + num_bins^2), never an
  N x num_bins matrix. `bandwidth` is the kernel std in data units (None: Scott's rule as
  scipy.stats.gaussian_kde), floored at half the grid spacing. Exact at the nodes for data on
  the nodes; otherwise binning adds a relative error of about spacing^2 / (8 bandwidth^2).
  Renormalized so that sum(p) * spacing = 1; uniform for an empty mask.
  """
  x, w = _as_float(x), _as_float(weights)
  spacing = (grid_hi - grid_lo) / (num_bins - 1)
  h = scott_bandwidth(x, w) if bandwidth is None else _as_float(bandwidth)
  h = jnp.maximum(h, 0.5 * spacing)
  counts = weighted_histogram(x, w, num_bins, grid_lo, grid_hi)
  offsets = jnp.arange(1 - num_bins, num_bins, dtype=x.dtype) * spacing
  kernel = jnp.exp(-0.5 * (offsets / h) ** 2)
  dens = jnp.convolve(counts, kernel, mode="valid")
  total = jnp.sum(dens) * spacing
  ok = total > 0
  return jnp.where(ok, dens / jnp.where(ok, total, 1.0), 1.0 / (num_bins * spacing))


def kl_divergence(p, q, eps: float = 1e-8) -> Array:
  """Discrete KL(p || q) = sum p log(p / q) over the last axis (paper eq. 6).

  Both are smoothed by eps and renormalized first, so empty bins (and even an all-zero
  input, which becomes uniform) give finite values and gradients. Pass densities or
  probabilities of comparable scale: eps is absolute.
  """
  p, q = _as_float(p) + eps, _as_float(q) + eps
  p = p / jnp.sum(p, axis=-1, keepdims=True)
  q = q / jnp.sum(q, axis=-1, keepdims=True)
  return jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=-1)
