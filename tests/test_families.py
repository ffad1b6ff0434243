"""scipy's alpha distribution in jnp (objectives.families.alpha) and the family switch,
against scipy.stats.alpha, finite differences and the configs.

Raw-sample fits share one padded length (zero weights) so that they compile once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from conftest import tiny_config
from echokld import registry
from echokld.objectives import distributions as dist
from echokld.objectives import intensity
from echokld.objectives.families import alpha

PAD = 2048


def _padded(x, w=None):
  x = np.asarray(x, np.float64)
  w = np.ones_like(x) if w is None else np.asarray(w, np.float64)
  xp, wp = np.full(PAD, x.max()), np.zeros(PAD)
  xp[:x.size], wp[:x.size] = x, w
  return jnp.asarray(xp, jnp.float32), jnp.asarray(wp, jnp.float32)


def _loglik(x, params):
  return float(np.sum(scipy.stats.alpha.logpdf(x, *params)))


def test_logpdf_equals_scipy_on_a_grid():
  x = np.linspace(-0.5, 4.0, 91)
  for a in (0.3, 1.0, 2.5, 6.4, 20.0):
    for loc, scale in ((-0.45, 4.5), (0.0, 1.0), (0.2, 0.3), (1.0, 0.05)):
      ref = scipy.stats.alpha.logpdf(x, a, loc, scale)
      got = np.asarray(alpha.alpha_logpdf(jnp.asarray(x, jnp.float32), a, loc, scale), float)
      assert np.all(np.isneginf(got[~np.isfinite(ref)]))  # -inf at and below loc.
      assert np.all(np.isfinite(got[ref > -1e4]))
      ok = np.isfinite(ref) & (ref > -40.0)  # float32: absolute error ~ 1e-7 |log f|.
      np.testing.assert_allclose(got[ok], ref[ok], rtol=0, atol=1e-4)
      with jax.enable_x64(True):
        got64 = np.asarray(alpha.alpha_logpdf(jnp.asarray(x), a, loc, scale))
      fin = np.isfinite(ref)
      np.testing.assert_allclose(got64[fin], ref[fin], rtol=1e-10, atol=1e-8)
  # The density integrates to 1 (scipy's normalization, Phi(a) included).
  grid = np.linspace(1e-4, 60.0, 600_001)
  with jax.enable_x64(True):
    p = np.exp(np.asarray(alpha.alpha_logpdf(jnp.asarray(grid), 0.7, 0.0, 1.0)))
  assert np.trapezoid(p, grid) == pytest.approx(scipy.stats.alpha.cdf(60.0, 0.7), abs=1e-5)


@pytest.mark.parametrize("a,loc,scale,n", [(6.4, -0.45, 4.5, 600), (2.0, 0.1, 0.5, 400),
                                           (0.8, 0.0, 1.0, 300), (15.0, -1.0, 20.0, 500)])
def test_fit_reaches_scipy_likelihood(a, loc, scale, n):
  rng = np.random.default_rng(int(a * 10))
  x = scipy.stats.alpha.rvs(a, loc, scale, size=n, random_state=rng)
  ours = [float(v) for v in alpha.fit_alpha(*_padded(x))]
  theirs = scipy.stats.alpha.fit(x)
  assert ours[0] > 0 and ours[1] < x.min()
  assert _loglik(x, ours) >= _loglik(x, theirs) - 1e-3 * abs(_loglik(x, theirs))
  assert _loglik(x, ours) >= _loglik(x, theirs) - 1e-4 * n  # Per sample: float32 rounding.
  # Held-back samples of the same law: the fit generalizes like scipy's.
  held = scipy.stats.alpha.rvs(a, loc, scale, size=n, random_state=rng)
  assert _loglik(held, ours) >= _loglik(held, theirs) - 1e-2 * abs(_loglik(held, theirs))


def test_weights_histogram_and_edge_cases():
  rng = np.random.default_rng(3)
  levels = np.round(np.clip(scipy.stats.alpha.rvs(6.0, -0.4, 4.2, size=1500,
                                                  random_state=rng), 0, 1) * 255)
  x = levels / 255.0
  w = (rng.random(x.size) < 0.5).astype(float)
  fit_w = np.asarray(alpha.fit_alpha(*_padded(x, w)))
  fit_sub = np.asarray(alpha.fit_alpha(*_padded(x[w > 0])))
  np.testing.assert_allclose(fit_w, fit_sub, rtol=2e-3)
  # The 256-bin histogram is a sufficient statistic for 8-bit data: same likelihood.
  grid = dist.histogram_grid()
  counts = dist.weighted_histogram(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
  from_hist = [float(v) for v in dist.fit_alpha_hist(grid, counts)]
  sub = x[w > 0]
  assert _loglik(sub, from_hist) == pytest.approx(_loglik(sub, fit_w), abs=1e-4 * sub.size)
  # Empty mask: the unweighted fit, finite. Constant data: finite.
  empty = alpha.fit_alpha(*_padded(x, np.zeros(x.size)))
  assert np.all(np.isfinite(np.asarray(empty)))
  const = alpha.fit_alpha_hist(grid, jnp.zeros(256).at[80].set(30.0))
  assert np.all(np.isfinite(np.asarray(const)))


def test_fit_gradients_match_finite_differences():
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    x = jnp.asarray(scipy.stats.alpha.rvs(5.0, -0.3, 3.0, size=200, random_state=rng))
    w = jnp.asarray(rng.uniform(0.2, 1.0, 200))
    vx, vw = jnp.asarray(rng.normal(size=200)) * 1e-2, jnp.asarray(rng.normal(size=200))
    coef = jnp.asarray([0.7, 1.3, -0.4])

    def f(x, w):
      a, loc, scale = alpha.fit_alpha(x, w, num_steps=30)
      return coef @ jnp.stack([jnp.log(a), loc, jnp.log(scale)])

    f_and_grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
    gx, gw = f_and_grad(x, w)[1]
    h = 1e-6
    fd_x = (f_and_grad(x + h * vx, w)[0] - f_and_grad(x - h * vx, w)[0]) / (2 * h)
    fd_w = (f_and_grad(x, w + h * vw)[0] - f_and_grad(x, w - h * vw)[0]) / (2 * h)
    assert float(gx @ vx) == pytest.approx(float(fd_x), rel=1e-5, abs=1e-8)
    assert float(gw @ vw) == pytest.approx(float(fd_w), rel=1e-5, abs=1e-8)
    assert abs(float(fd_w)) > 1e-3 and abs(float(fd_x)) > 1e-3  # Not a vacuous check.


def test_kl_of_alpha_fits_gradient_matches_finite_differences():
  """The KLD-alpha path: weighted histogram -> alpha fit -> density on the grid -> KL."""
  rng = np.random.default_rng(8)
  with jax.enable_x64(True):
    grid = dist.histogram_grid()
    image = jnp.asarray(np.round(np.clip(scipy.stats.alpha.rvs(
        6.0, -0.4, 4.2, size=400, random_state=rng), 0, 1) * 255) / 255.0)
    w_true = (np.arange(400) < 250).astype(float)
    w_pred = jnp.asarray(np.clip(w_true + rng.normal(0, 0.2, 400), 0.05, 1.0))
    target = dist.alpha_density_grid(6.0, -0.4, 4.2, grid)
    v = jnp.asarray(rng.normal(size=400))

    def kl(w):
      fit = dist.fit_hist("alpha", grid, dist.weighted_histogram(image, w))
      return dist.kl_divergence(dist.density_grid("alpha", fit, grid), target)

    kl_and_grad = jax.jit(jax.value_and_grad(kl))
    value, g = kl_and_grad(w_pred)
    h = 1e-6
    fd = (kl_and_grad(w_pred + h * v)[0] - kl_and_grad(w_pred - h * v)[0]) / (2 * h)
    assert float(value) > 1e-4
    assert float(g @ v) == pytest.approx(float(fd), rel=1e-4, abs=1e-9)


def test_family_switch_picks_the_fitted_law():
  """kld_alpha fits scipy's alpha, kld_pearson3 Pearson III (eq. 1-2): the loss equals the
  KL of scipy densities at the fitted parameters; the name alpha never means Pearson III."""
  rng = np.random.default_rng(0)
  images = (np.round(np.clip(scipy.stats.alpha.rvs(6.0, -0.4, 4.2, size=(2, 16, 16, 1),
                                                   random_state=rng), 0, 1) * 255) / 255.0)
  masks = np.zeros((2, 16, 16, 1), np.float32)
  masks[:, 3:13, 4:12] = 1.0
  probs = np.clip(masks + rng.normal(0, 0.3, masks.shape), 0, 1)
  images, probs, masks = (jnp.asarray(v, jnp.float32) for v in (images, probs, masks))
  grid = np.linspace(0, 1, 256)
  values = {}
  for name, law in (("kld_alpha", scipy.stats.alpha), ("kld_pearson3", scipy.stats.pearson3)):
    cfg = tiny_config(name).loss
    assert cfg.family == {"kld_alpha": "alpha", "kld_pearson3": "pearson3"}[name]
    w_pred = intensity.soft_threshold(probs, cfg.soft_threshold_temperature,
                                      cfg.soft_threshold_cut)

    def density(w):
      counts = dist.weighted_histogram(images.ravel(), w.ravel())
      params = [float(v) for v in dist.fit_hist(cfg.family, dist.histogram_grid(), counts)]
      d = law.pdf(grid, *params)
      return d / d.sum()

    p, q = density(w_pred) + 1e-8, density(masks) + 1e-8
    p, q = p / p.sum(), q / q.sum()
    values[name] = float(intensity.intensity_kld(images, probs, masks, cfg))
    assert values[name] == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-3, abs=1e-6)
  assert values["kld_alpha"] != pytest.approx(values["kld_pearson3"], rel=1e-2)
  spec = registry.get("kld_pearson3")
  assert spec.paper_number == 4 and spec.variant and "kld_pearson3" not in registry.paper_models()


def test_soft_threshold_cut_removes_background_from_the_support():
  """Item 2 of issue 14: with the cut, confident background weighs exactly 0, so the
  predicted region's fit no longer has to cover the image's dark background."""
  cfg = tiny_config("kld_alpha").loss
  t, cut = cfg.soft_threshold_temperature, cfg.soft_threshold_cut
  p = np.array([0.0, 0.2, 0.5 + t * np.log(cut / (1 - cut)) - 1e-3, 0.3, 0.5, 0.9, 1.0])
  got = np.asarray(intensity.soft_threshold(jnp.asarray(p, jnp.float32), t, cut))
  s = 1 / (1 + np.exp(-(p - 0.5) / t))
  np.testing.assert_allclose(got, np.maximum(s - cut, 0) / (1 - cut), rtol=1e-5, atol=1e-7)
  assert np.all(got[:3] == 0) and np.all(got[3:] > 0)
  assert float(intensity.soft_threshold(jnp.float32(0.0), t)) == pytest.approx(
      1 / (1 + np.exp(0.5 / t)))  # cut 0: the plain sigmoid, floor 4.5e-5 at T = 0.05.
  # An LV of mid-grey pixels on a black background, predicted perfectly.
  rng = np.random.default_rng(2)
  image = np.zeros((1, 32, 32, 1))
  mask = np.zeros_like(image)
  mask[0, 8:24, 10:22] = 1
  roi = scipy.stats.alpha.rvs(6.0, 0.15, 1.5, size=int(mask.sum()), random_state=rng)
  image[mask > 0] = np.round(np.clip(roi, 1 / 255, 1) * 255) / 255
  image, mask = jnp.asarray(image, jnp.float32), jnp.asarray(mask, jnp.float32)
  grid = dist.histogram_grid()
  roi_only = np.asarray(dist.fit_alpha_hist(grid, dist.weighted_histogram(
      image.ravel(), mask.ravel())))
  fits = {c: np.asarray(dist.fit_alpha_hist(grid, dist.weighted_histogram(
      image.ravel(), intensity.soft_threshold(mask, t, c).ravel()))) for c in (cut, 0.0)}
  np.testing.assert_allclose(fits[cut], roi_only, rtol=1e-3)
  assert fits[0.0][1] < 0 < roi_only[1]  # Without the cut the edge must go below black.
  cfg_no_cut = tiny_config("kld_alpha", **{"loss.soft_threshold_cut": 0.0}).loss
  assert float(intensity.intensity_kld(image, mask, mask, cfg)) < 1e-6
  assert float(intensity.intensity_kld(image, mask, mask, cfg_no_cut)) > 1e-3
