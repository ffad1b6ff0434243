"""Models 6-7 (issue 14): the alignment term depends on the image and reaches the encoder;
Model 7 never reads ground truth at inference; its training-time source is a switch."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from echokld.data import pipeline
from echokld.objectives import alignment, conditioning, intensity
from echokld.objectives import terms as loss_terms
from echokld.train import build, loop, step as step_lib


def _setup(name, **overrides):
  config = tiny_config(name, **overrides)
  splits, _ = pipeline.build_splits(config)
  train = splits["train"]
  reference = conditioning.reference_params(train.images, train.masks, config.loss.num_bins,
                                            config.loss.family)
  return config, train, build.build(config, train.images.shape[1:], reference)


def _align_grads(config, setup, x, y):
  """Gradient of the dist_align term alone for the batch (x, y)."""
  batch = {"images": x, "masks": y, **setup.conditioning.train(
      x, y, step_lib.first_pass_of(setup.model, setup.state.params))}

  def loss(params):
    out = setup.model.apply({"params": params}, x, batch["dist_inject"])
    return loss_terms.total_loss(out, batch, config.loss, ("dist_align",))[0]

  return jax.grad(loss)(setup.state.params)


def _flat(tree):
  return np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("source", ["latent", "prediction"])
def test_alignment_gradient_reaches_the_encoder_and_differs_per_image(source):
  config, train, setup = _setup("rd_vae", **{"model.align_source": source})
  x = step_lib.to_unit(jnp.asarray(train.images[:2]))
  y = jnp.asarray(train.masks[:2], jnp.float32)[..., None]
  per_image = [_flat(_align_grads(config, setup, x[i:i + 1], y[i:i + 1])["encoder"])
               for i in range(2)]
  for g in per_image:
    assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 0
  # Two frames, two different gradients: not a constant target met by a bias.
  cosine = per_image[0] @ per_image[1] / np.prod([np.linalg.norm(g) for g in per_image])
  assert cosine < 0.99
  # The aligned parameters themselves differ per image.
  out = setup.model.apply({"params": setup.state.params}, x,
                          jnp.broadcast_to(setup.reference, (2, 3)))
  params = np.asarray(alignment.aligned_params(
      {**out, "probs": jax.nn.sigmoid(out["logits"])}, {"images": x}, config.loss))
  assert np.abs(params[0] - params[1]).max() > 1e-3


def test_latent_alignment_directional_derivative_matches_finite_differences():
  """Along a random direction of the encoder's stem, in float64 (binning puts kinks every
  1/255 in the values, and float32 differences would need a large step; docs/MODELS.md)."""
  with jax.enable_x64(True):
    config, train, setup = _setup("rd_vae")
    x = step_lib.to_unit(jnp.asarray(train.images[:2]))
    y = jnp.asarray(train.masks[:2], jnp.float32)[..., None]
    batch = {"images": x, "masks": y, **setup.conditioning.train(x, y)}
    params = setup.state.params
    direction = jax.tree_util.tree_map(jnp.zeros_like, params)
    kernel = params["encoder"]["stem"]["kernel"]
    direction["encoder"]["stem"]["kernel"] = jax.random.normal(jax.random.PRNGKey(7),
                                                               kernel.shape)

    def loss(t):
      moved = jax.tree_util.tree_map(lambda p, d: p + t * d, params, direction)
      out = setup.model.apply({"params": moved}, x, batch["dist_inject"])
      return loss_terms.total_loss(out, batch, config.loss, ("dist_align",))[0]

    analytic = float(jax.grad(loss)(0.0))
    numeric = float(loss(1e-4) - loss(-1e-4)) / 2e-4
  assert analytic == pytest.approx(numeric, rel=0.03)


@pytest.mark.parametrize("source, depends", [("ground_truth", True), ("prediction", False)])
def test_model7_training_source_switch(source, depends):
  config, train, setup = _setup("bd_vae", **{"model.batch_source": source})
  x = step_lib.to_unit(jnp.asarray(train.images[:4]))
  y = jnp.asarray(train.masks[:4], jnp.float32)[..., None]
  first = step_lib.first_pass_of(setup.model, setup.state.params)
  right = setup.conditioning.train(x, y, first)["dist_inject"]
  wrong = setup.conditioning.train(x, 1.0 - y, first)["dist_inject"]
  assert (np.abs(np.asarray(right) - np.asarray(wrong)).max() > 1e-3) == depends
  if not depends:  # The fit of the model's own soft-thresholded first-pass prediction.
    probs = first(x, jnp.broadcast_to(setup.reference, (4, 3)))
    weights = intensity.soft_threshold(probs, config.loss.soft_threshold_temperature,
                                       config.loss.soft_threshold_cut)
    expected = jax.jit(conditioning.batch_params, static_argnums=(2, 3))(
        x, weights, config.loss.num_bins, config.loss.family)
    np.testing.assert_allclose(right[0], expected, rtol=1e-4, atol=1e-5)


def test_model7_test_predictions_ignore_the_test_labels(tmp_path, monkeypatch):
  """A wrong test label changes the test Dice, never the prediction."""
  config = tiny_config("bd_vae", **{"train.max_epochs": 1})
  loop.train_and_evaluate(config, str(tmp_path / "right"))
  real = pipeline.build_splits

  def wrong_test_labels(*args, **kwargs):
    splits, cases = real(*args, **kwargs)
    splits["test"] = dataclasses.replace(splits["test"], masks=1 - splits["test"].masks)
    return splits, cases

  monkeypatch.setattr(pipeline, "build_splits", wrong_test_labels)
  loop.train_and_evaluate(config, str(tmp_path / "wrong"))
  right, wrong = (np.load(tmp_path / d / "test_predictions.npz") for d in ("right", "wrong"))
  np.testing.assert_array_equal(right["pred"], wrong["pred"])
  assert not np.array_equal(right["masks"], wrong["masks"])
  dice = [json.load(open(tmp_path / d / "summary.json"))["test"]["dice"]
          for d in ("right", "wrong")]
  assert dice[0] != pytest.approx(dice[1], abs=1e-3)


def test_table_8_counts_of_models_6_and_7_at_the_poor_frames():
  """Shapes only: Model 7 within 1% of Table 8's 38,088,420 at 1152 x 496 (the count's
  arithmetic is in test_variants), Model 6's additions 62 above the paper's 12,643."""
  from echokld import registry

  def count(name):
    return build.build(registry.load_config(name), (1152, 496), reference=[0.5, 0.3, 0.1],
                       abstract=True).num_params

  assert count("bd_vae") == 38_210_866
  assert abs(count("bd_vae") / 38_088_420 - 1) < 0.01
  assert count("rd_vae") - count("dice") == 12_705


def test_model7_prediction_does_not_depend_on_the_other_frames_of_its_batch():
  config, train, setup = _setup("bd_vae")
  images = jnp.asarray(train.images[:4])
  alone = step_lib.make_predict(setup.model, config, 1)(setup.state.params, images,
                                                        setup.reference)
  together = step_lib.make_predict(setup.model, config, 4)(setup.state.params, images,
                                                           setup.reference)
  # Up to float32 summation order inside the batched fit (3e-4 seen with the alpha family).
  np.testing.assert_allclose(np.asarray(alone), np.asarray(together), atol=2e-3)
