"""echokld.objectives.distributions (Pearson III, KDE, KL) against independent references (scipy, finite differences, hand sums).

Sizes are chosen so that the whole file runs in well under a minute on 2 cores: the raw-sample
fits share one padded shape (zero weights), so they compile once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from echokld.objectives import distributions as dist
from echokld.objectives.families import pearson3 as p3

GRID = dist.histogram_grid()
PAD = 50_000  # Every raw-sample fit below is padded to this length with zero weights.


def _padded(x, w=None):
  x = np.asarray(x, np.float64)
  w = np.ones_like(x) if w is None else np.asarray(w, np.float64)
  xp, wp = np.full(PAD, x[0]), np.zeros(PAD)
  xp[:x.size], wp[:x.size] = x, w
  return jnp.asarray(xp, jnp.float32), jnp.asarray(wp, jnp.float32)


def _fit(x, w=None):
  return tuple(float(v) for v in dist.fit_pearson3(*_padded(x, w)))


def _loglik(x, params):
  return float(np.sum(scipy.stats.pearson3.logpdf(x, *params)))


def _quantized(skew, n, seed, loc=0.3, scale=0.1):
  """8-bit intensities in [0, 1], like an echo ROI."""
  rng = np.random.default_rng(seed)
  x = scipy.stats.pearson3.rvs(skew, loc=loc, scale=scale, size=n, random_state=rng)
  return np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0


# --- log-density -----------------------------------------------------------------------------

@pytest.mark.parametrize("skew", [-1.5, -0.3, -1e-4, 0.0, 1e-6, 1e-4, 0.7, 1.9, 2.5, 5.0])
def test_logpdf_matches_scipy(skew):
  x = np.linspace(-6.0, 8.0, 2001)
  ref = scipy.stats.pearson3.logpdf(x, skew, 0.3, 1.2)
  got = np.asarray(dist.pearson3_logpdf(jnp.asarray(x, jnp.float32), skew, 0.3, 1.2), float)
  # Same support, except possibly a node within float32 rounding of the edge.
  assert np.sum(np.isfinite(ref) != np.isfinite(got)) <= 1
  edge = 0.3 - 2.0 * 1.2 / skew if skew else np.inf
  keep = np.isfinite(ref) & np.isfinite(got) & (np.abs(x - edge) > 1e-2)
  assert keep.sum() > 1000
  np.testing.assert_allclose(got[keep], ref[keep], rtol=2e-5, atol=1e-4)


def test_logpdf_float64_is_exact():
  x = np.linspace(-6.0, 8.0, 501)
  with jax.enable_x64(True):
    for skew in (-1.5, 0.7, 2.5):
      ref = scipy.stats.pearson3.logpdf(x, skew, 0.3, 1.2)
      got = np.asarray(dist.pearson3_logpdf(jnp.asarray(x), skew, 0.3, 1.2))
      keep = np.isfinite(ref)
      assert np.array_equal(keep, np.isfinite(got))
      np.testing.assert_allclose(got[keep], ref[keep], rtol=1e-10, atol=1e-10)


def test_logpdf_gradients_finite_and_continuous_through_zero_skew():
  z = 0.7
  dskew = jax.grad(dist.pearson3_logpdf, argnums=1)
  expected = z ** 3 / 6.0 - z / 2.0  # d/dskew at 0 of the Edgeworth-like expansion.
  for s in (0.0, 1e-8, -1e-8, 1e-3, -1e-3):
    assert float(dskew(jnp.float32(z), jnp.float32(s), 0.0, 1.0)) == pytest.approx(
        expected, abs=2e-3)
  grads = jax.grad(dist.pearson3_logpdf, argnums=(0, 1, 2, 3))(
      jnp.float32(0.2), jnp.float32(0.0), jnp.float32(0.1), jnp.float32(0.5))
  assert all(np.isfinite(float(g)) for g in grads)
  # Outside the support: -inf value, zero (finite) gradients.
  out = dist.pearson3_logpdf(jnp.float32(-5.0), 1.0, 0.0, 1.0)
  assert float(out) == -np.inf
  grads = jax.grad(dist.pearson3_logpdf, argnums=(0, 1, 2, 3))(
      jnp.float32(-5.0), jnp.float32(1.0), jnp.float32(0.0), jnp.float32(1.0))
  assert all(float(g) == 0.0 for g in grads)


# --- fit -------------------------------------------------------------------------------------

@pytest.mark.parametrize("skew,n,seed,loc,scale", [
    (-1.2, 200, 0, 2.0, 1.5),
    (0.0, 1000, 1, 2.0, 1.5),
    (0.8, 5000, 2, 2.0, 1.5),
    (1.5, 50000, 3, 2.0, 1.5),
    (-1.8, 2000, 4, 0.3, 0.1),
    (1.9, 20000, 5, 2.0, 1.5),
    (0.3, 300, 6, -1.0, 3.0),
    (-0.5, 50000, 7, 0.3, 0.1),
    (1.1, 5000, 8, 0.3, 0.1),
])
def test_fit_loglik_at_least_scipy(skew, n, seed, loc, scale):
  rng = np.random.default_rng(seed)
  x = scipy.stats.pearson3.rvs(skew, loc=loc, scale=scale, size=n, random_state=rng)
  ours = _loglik(x, _fit(x))
  theirs = _loglik(x, scipy.stats.pearson3.fit(x))
  assert np.isfinite(ours)
  assert ours >= theirs - 1e-3 * abs(theirs)
  assert (ours - theirs) / n > -2e-5  # Per sample: equal up to float32 rounding.


def test_newton_system_matches_autodiff():
  """The closed-form gradient and Hessian that drive Newton and the implicit VJP."""
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    x = jnp.asarray(scipy.stats.pearson3.rvs(1.0, 0.3, 0.1, size=300, random_state=rng))
    w = jnp.asarray(rng.random(300))
    cfg = p3._Config(2.0, 1e-4, 0)
    consts = (jnp.mean(x), jnp.std(x))
    nll = lambda t: -jnp.sum(p3._weighted_logliks(t, consts, x, w, cfg)) / jnp.sum(w)
    autodiff = jax.jit(lambda t: (nll(t), jax.grad(nll)(t), jax.hessian(nll)(t)))
    closed_form = jax.jit(lambda t: p3._newton_system(t, consts, x, w, cfg))
    for sigma in (-0.3, 0.0, 1e-6, 0.8, 1.5):
      theta = jnp.asarray([sigma, 0.05, 0.3])
      value, grad, hess = autodiff(theta)
      assert np.isfinite(float(value))
      np.testing.assert_allclose(closed_form(theta)[0], grad, rtol=1e-9, atol=1e-12)
      np.testing.assert_allclose(closed_form(theta)[1], hess, rtol=1e-9, atol=1e-12)


def test_fit_on_histogram_equals_fit_on_pixels():
  x = _quantized(1.2, 6000, 11)
  counts = dist.weighted_histogram(jnp.asarray(x, jnp.float32), jnp.ones(x.size))
  np.testing.assert_allclose(np.asarray(counts), np.bincount(np.round(x * 255).astype(int),
                                                              minlength=256), atol=1e-3)
  from_hist = [float(v) for v in dist.fit_pearson3_hist(GRID, counts)]
  from_pixels = _fit(x)
  np.testing.assert_allclose(from_hist, from_pixels, rtol=2e-4, atol=1e-5)
  assert _loglik(x, from_hist) >= _loglik(x, scipy.stats.pearson3.fit(x)) - 1e-3


def test_binary_weights_equal_fit_on_subset():
  rng = np.random.default_rng(3)
  x = rng.gamma(2.0, 0.1, 3000)
  w = (rng.random(3000) < 0.4).astype(float)
  np.testing.assert_allclose(_fit(x, w), _fit(x[w > 0]), rtol=1e-5, atol=1e-6)
  # And the weights really matter: a different subset gives a different fit.
  assert abs(_fit(x, 1.0 - w)[1] - _fit(x, w)[1]) > 1e-4


def test_fit_gradients_match_finite_differences():
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    x = jnp.asarray(scipy.stats.pearson3.rvs(0.9, 0.4, 0.1, size=200, random_state=rng))
    w = jnp.asarray(rng.uniform(0.2, 1.0, 200))
    vx, vw = jnp.asarray(rng.normal(size=200)) * 1e-2, jnp.asarray(rng.normal(size=200))
    coef = jnp.asarray([0.7, 1.3, -0.4])

    def f(x, w):
      skew, loc, scale = dist.fit_pearson3(x, w, num_steps=30)
      return coef @ jnp.stack([skew, loc, jnp.log(scale)])

    # One compiled program serves the gradient and the finite differences.
    f_and_grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
    f = lambda x, w: f_and_grad(x, w)[0]
    gx, gw = f_and_grad(x, w)[1]
    h = 1e-5
    fd_x = (f(x + h * vx, w) - f(x - h * vx, w)) / (2 * h)
    fd_w = (f(x, w + h * vw) - f(x, w - h * vw)) / (2 * h)
    assert float(gx @ vx) == pytest.approx(float(fd_x), rel=1e-5, abs=1e-8)
    assert float(gw @ vw) == pytest.approx(float(fd_w), rel=1e-5, abs=1e-8)
    assert abs(float(fd_w)) > 1e-3 and abs(float(fd_x)) > 1e-3  # Not a vacuous check.


def _kl_to_target(image, w_pred, target):
  """The KLD-alpha path: weighted histogram -> ML fit -> density on the grid -> KL."""
  grid = dist.histogram_grid()
  fit = dist.fit_pearson3_hist(grid, dist.weighted_histogram(image, w_pred), num_steps=30)
  return dist.kl_divergence(dist.pearson3_density_grid(*fit, grid), target)


def test_kl_of_fits_gradient_matches_finite_differences():
  rng = np.random.default_rng(8)
  with jax.enable_x64(True):
    grid = dist.histogram_grid()
    assert grid.dtype == jnp.float64
    image = jnp.asarray(_quantized(1.0, 400, 9))
    w_true = (np.arange(400) < 250).astype(float)
    w_pred = jnp.asarray(np.clip(w_true + rng.normal(0, 0.2, 400), 0.05, 1.0))
    target = dist.pearson3_density_grid(0.9, 0.32, 0.09, grid)  # A fit of a label, say.
    v = jnp.asarray(rng.normal(size=400))
    kl_and_grad = jax.jit(jax.value_and_grad(_kl_to_target, argnums=1))
    kl, g = kl_and_grad(image, w_pred, target)
    h = 1e-5
    fd = (kl_and_grad(image, w_pred + h * v, target)[0]
          - kl_and_grad(image, w_pred - h * v, target)[0]) / (2 * h)
    assert float(kl) > 1e-4
    assert float(g @ v) == pytest.approx(float(fd), rel=1e-4, abs=1e-9)


def test_vmap_matches_loop():
  xs = np.stack([_quantized(s, 4000, i) for i, s in enumerate((-0.8, 0.1, 1.4))])
  ws = np.random.default_rng(0).uniform(0.0, 1.0, xs.shape)
  xs, ws = jnp.asarray(xs, jnp.float32), jnp.asarray(ws, jnp.float32)
  counts = jax.vmap(dist.weighted_histogram)(xs, ws)
  batched = np.stack(jax.vmap(dist.fit_pearson3_hist, in_axes=(None, 0))(GRID, counts), 1)
  looped = np.array([[float(v) for v in dist.fit_pearson3_hist(GRID, c)] for c in counts])
  np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-6)
  assert np.ptp(batched[:, 0]) > 1.0  # The three skews really differ.
  kde = jax.vmap(dist.gaussian_kde_grid, in_axes=(0, 0, None, None, None))(
      xs, ws, 0.0, 1.0, 256)
  for i in range(3):
    np.testing.assert_allclose(kde[i], dist.gaussian_kde_grid(xs[i], ws[i], 0.0, 1.0, 256),
                               rtol=1e-5, atol=1e-6)


# --- histogram, KDE, density, KL -------------------------------------------------------------

def test_weighted_histogram_linear_binning():
  x = jnp.asarray([0.0, 0.25, 1.0, 1.5, -0.2, 0.6], jnp.float32)
  w = jnp.asarray([1.0, 2.0, 0.5, 1.0, 1.0, 0.0], jnp.float32)
  counts = np.asarray(dist.weighted_histogram(x, w, num_bins=5))  # Nodes 0, .25, ..., 1.
  np.testing.assert_allclose(counts, [2.0, 2.0, 0.0, 0.0, 1.5], atol=1e-6)  # Clamped ends.
  x = jnp.asarray([0.1, 0.3], jnp.float32)
  counts = np.asarray(dist.weighted_histogram(x, jnp.ones(2), num_bins=5))
  np.testing.assert_allclose(counts, [0.6, 1.2, 0.2, 0.0, 0.0], atol=1e-6)
  grad = jax.grad(lambda x: dist.weighted_histogram(x, jnp.ones(2), 5)[1])(x)
  np.testing.assert_allclose(grad, [4.0, -4.0], atol=1e-5)


def test_kde_matches_scipy_on_8bit_data_with_weights():
  """Tolerance: max |ours - scipy| on the 256 nodes, both renormalized to sum(p) * dx = 1."""
  x = _quantized(1.3, 3000, 21)
  w = np.random.default_rng(1).uniform(0.0, 1.0, x.size)
  ours = np.asarray(dist.gaussian_kde_grid(jnp.asarray(x, jnp.float32),
                                           jnp.asarray(w, jnp.float32), 0.0, 1.0, 256))
  kde = scipy.stats.gaussian_kde(x, weights=w)
  ref = kde(np.asarray(GRID, float))
  ref /= ref.sum() * (1.0 / 255.0)
  assert np.max(np.abs(ours - ref)) < 1e-3
  h = float(dist.scott_bandwidth(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)))
  assert h == pytest.approx(np.sqrt(kde.covariance[0, 0]), rel=1e-4)


def test_kde_matches_scipy_off_grid_with_fixed_bandwidth():
  rng = np.random.default_rng(2)
  x = rng.beta(2.0, 5.0, 5000)  # Continuous: linear binning is no longer exact.
  h = 0.03
  ours = np.asarray(dist.gaussian_kde_grid(jnp.asarray(x, jnp.float32), jnp.ones(x.size),
                                           0.0, 1.0, 1024, bandwidth=h))
  grid = np.linspace(0.0, 1.0, 1024)
  ref = scipy.stats.gaussian_kde(x, bw_method=h / np.std(x, ddof=1))(grid)
  ref /= ref.sum() * (grid[1] - grid[0])
  assert np.max(np.abs(ours - ref)) < 1e-3


def test_density_grid_matches_scipy_pdf():
  ours = np.asarray(dist.pearson3_density_grid(1.2, 0.3, 0.1, GRID))
  ref = scipy.stats.pearson3.pdf(np.asarray(GRID, float), 1.2, 0.3, 0.1)
  assert ours.sum() / 255.0 == pytest.approx(1.0, rel=1e-5)
  np.testing.assert_allclose(ours, ref / (ref.sum() / 255.0), rtol=1e-4, atol=1e-5)
  # Support entirely off the grid: uniform rather than 0/0.
  np.testing.assert_allclose(dist.pearson3_density_grid(1.0, 5.0, 0.1, GRID), 255.0 / 256.0,
                             rtol=1e-6)


def test_kl_divergence_by_hand():
  p = jnp.asarray([0.5, 0.5, 0.0])
  q = jnp.asarray([0.25, 0.25, 0.5])
  assert float(dist.kl_divergence(p, q)) == pytest.approx(np.log(2.0), abs=1e-5)
  # eps = 0.1: p -> [.6, .6, .1] / 1.3, q -> [.35, .35, .6] / 1.3.
  ps, qs = np.array([0.6, 0.6, 0.1]) / 1.3, np.array([0.35, 0.35, 0.6]) / 1.3
  by_hand = sum(a * np.log(a / b) for a, b in zip(ps, qs))
  assert float(dist.kl_divergence(p, q, eps=0.1)) == pytest.approx(by_hand, rel=1e-6)
  assert float(dist.kl_divergence(q, q)) == pytest.approx(0.0, abs=1e-7)
  batch = dist.kl_divergence(jnp.stack([p, q]), jnp.stack([q, q]))
  np.testing.assert_allclose(batch, [np.log(2.0), 0.0], atol=1e-5)
  grads = jax.grad(lambda p, q: dist.kl_divergence(p, q), argnums=(0, 1))(p, q)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
  zeros = jnp.zeros(3)
  assert np.isfinite(float(dist.kl_divergence(zeros, q)))
  assert np.all(np.isfinite(np.asarray(jax.grad(dist.kl_divergence)(zeros, q))))


# --- degenerate inputs -----------------------------------------------------------------------

@jax.jit
def _both_losses_and_grads(image, w):
  """KLD-alpha and KLD-kde style losses against a fixed target, and their gradients."""
  target = dist.pearson3_density_grid(1.0, 0.4, 0.1, GRID)

  def loss(image, w):
    fit = dist.fit_pearson3_hist(GRID, dist.weighted_histogram(image, w))
    alpha = dist.kl_divergence(dist.pearson3_density_grid(*fit, GRID), target)
    kde = dist.kl_divergence(dist.gaussian_kde_grid(image, w, 0.0, 1.0, 256), target)
    return alpha + kde

  return jax.value_and_grad(loss, argnums=(0, 1))(image, w)


@pytest.mark.parametrize("case", ["empty", "tiny", "constant", "single_intensity", "one_pixel"])
def test_degenerate_inputs_are_finite(case):
  rng = np.random.default_rng(0)
  image = np.round(rng.uniform(0.1, 0.8, 1000) * 255) / 255
  w = np.ones(1000)
  if case == "empty":
    w[:] = 0.0
  elif case == "tiny":
    w[:] = 1e-12
  elif case == "constant":
    image[:] = 0.4
  elif case == "single_intensity":
    image[:500] = 0.2
    w[500:] = 0.0
  elif case == "one_pixel":
    w[:] = 0.0
    w[7] = 1.0
  image, w = jnp.asarray(image, jnp.float32), jnp.asarray(w, jnp.float32)
  value, grads = _both_losses_and_grads(image, w)
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
  fit = dist.fit_pearson3(image, w)
  assert all(np.isfinite(float(v)) for v in fit) and float(fit[2]) > 0
  if case == "empty":  # The wide-normal fallback: skew 0, the moments of the whole image.
    assert float(fit[0]) == 0.0
    assert float(fit[2]) == pytest.approx(float(jnp.std(image)), rel=1e-4)
