"""Models 3-7: heads, parameter counts, loss terms against hand/scipy values, training,
checkpoint round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from conftest import tiny_config
from echokld.nn import model as models
from echokld.objectives import conditioning, distributions, intensity, vae
from echokld.objectives import terms as loss_terms
from echokld.train import build, checkpoints, step as step_lib
from echokld.data import pipeline

MODELS = ["dice", "wdecay", "vae", "kld_alpha", "kld_kde", "rd_vae", "bd_vae"]


def init(model, shape=(64, 64)):
  """Parameter shapes only (eval_shape): counting needs no computation."""
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                           jnp.zeros((1,) + shape + (1,)), jnp.zeros((1, 3)),
                                           rng=jax.random.PRNGKey(1)))["params"]


def test_distribution_heads_add_the_hand_counted_parameters():
  base = models.count_params(init(models.SegModel()))
  both = models.count_params(init(models.SegModel(inject="broadcast", heads=("dist",))))
  injection = (3 * 48 + 48) + (48 * 128 + 128)
  head = (128 * 48 + 48) + (48 * 3 + 3)
  assert both - base == injection + head == 12_803
  # Model 6 as configured: the injection plus the latent head (128 -> 48 -> 1 per position).
  latent = models.count_params(init(models.SegModel(inject="broadcast",
                                                    heads=("latent_dist",))))
  assert latent - base == injection + (128 * 48 + 48) + (48 + 1) == 12_705


def test_flat_latent_injection_parameters_by_hand():
  """Model 7's dense latent at 64x64: bottleneck 8x8x128 -> GN, stride-2 conv to 4x4x16 =
  256 values -> dense 512 (+ embedding of 3) -> dense 256 -> 1x1 conv to 128."""
  base = models.count_params(init(models.SegModel()))
  flat = models.count_params(init(models.SegModel(inject="flat_latent")))
  f, l = 256, 512
  assert flat - base == (256 + 9 * 128 * 16 + 16 + f * l + l + 3 * l + l + l * f + f
                         + 16 * 128 + 128)
  # At the paper's Poor frames (1152 x 496) the flattened map is 72 x 31 x 16 = 35,712 and
  # the two big dense layers hold Table 8's Model 7 - Model 6 gap, 35,712 x 1024 weights.
  assert 72 * 31 * 16 * 2 * l == 38_088_420 - 1_519_332


def test_vae_branch_parameters_by_hand_at_64x64():
  plain = init(models.SegModel())
  vae = init(models.SegModel(heads=("vae",)))
  decoder = models.count_params(plain["decoder"])
  # Bottleneck 8x8x128 -> GN (256) -> 3x3 conv to 16 with bias -> 4x4x16 = 256 values.
  expected = (256 + 3 * 3 * 128 * 16 + 16 + 256 * 256 + 256 + 128 * 256 + 256
              + 16 * 128 + 128 + 256 + decoder + 32 + 16 + 1)
  assert models.count_params(vae["vae"]) == expected
  assert models.count_params(vae) - models.count_params(plain) == expected


def test_vae_outputs_and_eval_uses_the_mean():
  model = models.SegModel(init_features=8, blocks_down=(1, 1, 1, 1), heads=("vae",),
                          vae_latent=4)
  x = jax.random.uniform(jax.random.PRNGKey(2), (2, 32, 48, 1))
  params = model.init(jax.random.PRNGKey(0), x, rng=jax.random.PRNGKey(1))["params"]
  out = model.apply({"params": params}, x)
  assert out["recon"].shape == x.shape and out["mu"].shape == (2, 4)
  again = model.apply({"params": params}, x)
  np.testing.assert_array_equal(out["recon"], again["recon"])
  sampled = model.apply({"params": params}, x, rng=jax.random.PRNGKey(5), train=True)
  assert not np.allclose(sampled["recon"], out["recon"])


def test_vae_terms_hand_computed():
  outputs = {"recon": jnp.array([0.5, 0.0]).reshape(1, 1, 2, 1),
             "mu": jnp.array([[1.0, 0.0]]), "logvar": jnp.array([[0.0, np.log(2.0)]])}
  images = jnp.array([1.0, 0.0]).reshape(1, 1, 2, 1)
  recon, kl = vae.reconstruction_loss(outputs, images), vae.gaussian_kl(outputs, 2)
  assert float(recon) == pytest.approx(0.125)
  # Myronenko: (1/N) sum(mu^2 + var - log var - 1), N = 2 pixels: (1 + (2 - ln 2 - 1)) / 2.
  assert float(kl) == pytest.approx((2.0 - np.log(2.0)) / 2.0, rel=1e-6)


def test_vae_kl_term_is_myronenkos_over_the_image_pixels():
  """The registered term against numpy: per image sum over the latent, / (rows x cols),
  averaged over the batch. The old form (half the sum over the latent size) was 196x this
  at 224x224 with a latent of 128; a 24x40 image and latent 7 are checked here."""
  rng = np.random.default_rng(0)
  mu = rng.normal(0, 1.5, (3, 7)).astype(np.float32)
  logvar = rng.normal(0, 1.0, (3, 7)).astype(np.float32)
  sigma2 = np.exp(logvar.astype(np.float64))
  by_hand = np.mean(np.sum(mu.astype(np.float64) ** 2 + sigma2 - np.log(sigma2) - 1, axis=1)
                    / (24 * 40))
  batch = {"images": jnp.zeros((3, 24, 40, 1)), "masks": jnp.zeros((3, 24, 40, 1))}
  outputs = {"logits": jnp.zeros((3, 24, 40, 1)), "mu": jnp.asarray(mu),
             "logvar": jnp.asarray(logvar)}
  cfg = tiny_config("vae").loss
  _, parts = loss_terms.total_loss(outputs, batch, cfg, ("vae_kl",))
  assert float(parts["vae_kl"]) == pytest.approx(by_hand, rel=1e-5)
  assert cfg.vae_kl_weight == 0.1 and cfg.vae_recon_weight == 0.1


def _reference_kl(p, q, eps=1e-8):
  p, q = p + eps, q + eps
  p, q = p / p.sum(), q / q.sum()
  return float(np.sum(p * np.log(p / q)))


def _tiny_case():
  rng = np.random.default_rng(0)
  images = (rng.integers(0, 256, (2, 12, 12)) / 255.0).astype(np.float32)
  masks = np.zeros((2, 12, 12), np.float32); masks[:, 3:9, 2:8] = 1
  probs = np.clip(masks + rng.normal(0, 0.3, masks.shape), 0, 1).astype(np.float32)
  return images[..., None], probs[..., None], masks[..., None]


def test_kde_kld_matches_scipy_gaussian_kde():
  cfg = tiny_config("kld_kde").loss
  cfg.kde_bandwidth = 0.05
  images, probs, masks = _tiny_case()
  ours = float(intensity.intensity_kld(images, probs, masks, cfg))
  grid = np.linspace(0, 1, 256)
  s = 1 / (1 + np.exp(-(probs.ravel() - 0.5) / cfg.soft_threshold_temperature))
  w_pred = np.maximum(s - cfg.soft_threshold_cut, 0) / (1 - cfg.soft_threshold_cut)

  def kde(weights):
    std = np.sqrt(np.cov(images.ravel(), aweights=weights))
    d = scipy.stats.gaussian_kde(images.ravel(), bw_method=0.05 / std, weights=weights)(grid)
    return d / d.sum()

  assert ours == pytest.approx(_reference_kl(kde(w_pred), kde(masks.ravel())), rel=2e-3)


def test_pearson3_kld_is_kl_of_pearson3_fits():
  cfg = tiny_config("kld_pearson3").loss
  images, probs, masks = _tiny_case()
  ours = float(intensity.intensity_kld(images, probs, masks, cfg))
  s = jax.nn.sigmoid((probs.ravel() - 0.5) / cfg.soft_threshold_temperature)
  w_pred = jnp.maximum(s - cfg.soft_threshold_cut, 0) / (1 - cfg.soft_threshold_cut)
  grid = np.linspace(0, 1, 256)

  def density(weights):
    params = distributions.fit_pearson3(jnp.asarray(images.ravel()), jnp.asarray(weights))
    d = scipy.stats.pearson3.pdf(grid, *[float(v) for v in params])
    return d / d.sum()

  # The loss fits 256-bin histograms, the reference the raw pixels: the same likelihood on
  # 8-bit data, reached by different float32 Newton paths.
  assert ours == pytest.approx(_reference_kl(density(w_pred), density(masks.ravel())),
                               rel=1e-2)
  perfect = float(intensity.intensity_kld(images, masks, masks, cfg))
  assert perfect < 1e-4 < ours


def test_dist_alignment_matches_scipy_and_keeps_a_gradient_when_disjoint():
  cfg = tiny_config("rd_vae", **{"loss.family": "pearson3"}).loss
  target = jnp.array([0.8, 0.2, 0.08])
  pred = jnp.array([[0.3, 0.25, 0.1], [0.8, 0.2, 0.08]])
  grid = np.linspace(0, 1, 256)

  def probs(p, floor):
    d = scipy.stats.pearson3.pdf(grid, *np.asarray(p, np.float64))
    n = scipy.stats.norm.pdf(grid, p[1], p[2])
    return (1 - floor) * d / d.sum() + floor * n / n.sum()

  t = probs(target, 0.0)
  expected = 0.5 * sum(float(np.sum(scipy.special.rel_entr(t, probs(p, 0.01)))) for p in pred)
  ours = float(intensity.dist_alignment(pred, target, cfg))
  assert ours == pytest.approx(expected, rel=1e-3)
  # A prediction whose support misses the target's mass (skew 1.99, loc far right) still
  # gets a gradient pulling loc towards the target.
  far = jnp.array([[1.99, 0.65, 0.03]])
  grad = jax.grad(lambda p: intensity.dist_alignment(p, target, cfg))(far)
  assert np.all(np.isfinite(grad)) and float(grad[0, 1]) > 0


def test_reference_params_equal_a_direct_fit_of_training_lv_pixels():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, 16, 16)).astype(np.uint8)
  masks = (rng.random((3, 16, 16)) > 0.6).astype(np.uint8)
  ref = np.asarray(conditioning.reference_params(images, masks))
  direct = distributions.fit_pearson3(jnp.asarray(images[masks > 0] / 255.0, jnp.float32),
                                      jnp.ones(int(masks.sum())))
  np.testing.assert_allclose(ref, np.asarray(direct), rtol=1e-3, atol=1e-4)


def _train_setup(name):
  config = tiny_config(name)
  splits, _ = pipeline.build_splits(config)
  train = splits["train"]
  reference = (conditioning.reference_params(train.images, train.masks)
               if conditioning.needs_reference(config) else None)
  return config, splits, build.build(config, train.images.shape[1:], reference)


@pytest.mark.parametrize("name", MODELS)
def test_each_model_learns_reaches_every_head_and_restores(name, tmp_path):
  config, splits, setup = _train_setup(name)
  model, state = setup.model, setup.state
  train = splits["train"]
  images, masks = jnp.asarray(train.images[:4]), jnp.asarray(train.masks[:4])
  x, y = step_lib.to_unit(images), masks.astype(jnp.float32)[..., None]
  condition = setup.conditioning.train
  batch = {"images": x, "masks": y, **(condition(x, y) if condition else {})}

  def loss_fn(params):
    out = model.apply({"params": params}, x, batch.get("dist_inject"),
                      rng=jax.random.PRNGKey(3), train=True)
    return loss_terms.total_loss(out, batch, config.loss, config.loss.terms)[0]

  grads = jax.grad(loss_fn)(state.params)
  for head in ("vae", "dist_head", "latent_dist", "dist_injection", "encoder", "decoder",
               "head"):
    if head in grads:
      norm = sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads[head]))
      assert norm > 0, head

  chunk = step_lib.make_train_chunk(model, setup.tx, config)
  perm = jnp.tile(jnp.arange(4, dtype=jnp.int32), 12)
  aux = (perm, jnp.int32(12), setup.reference)
  state, terms = chunk(state, images, masks, aux, jnp.int32(0), num_steps=12)
  totals = np.asarray(terms["total"])
  assert np.all(np.isfinite(totals)) and totals[-3:].mean() < totals[:3].mean()

  predict = step_lib.make_predict(model, config, 4)
  before = np.asarray(predict(state.params, images, setup.reference)) > 0.5
  manager = checkpoints.make_manager(str(tmp_path / "ckpt"))
  checkpoints.save(manager, 1, state, 0.5)
  fresh = _train_setup(name)[2].state
  restored = checkpoints.restore(manager, 1, fresh)
  np.testing.assert_array_equal(
      np.asarray(predict(restored.params, images, setup.reference)) > 0.5, before)
