"""The backbone: parameter count against MONAI's SegResNet, upsampling, output contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echokld.nn import layers, model as models


def test_default_backbone_matches_monai_segresnet_parameter_count():
  # MONAI SegResNet(spatial_dims=2, init_filters=16, in_channels=1, out_channels=1,
  # blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1)) has 1,576,385 parameters.
  model = models.SegModel()
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)))
  assert models.count_params(shapes["params"]) == 1_576_385


@pytest.mark.parametrize("shape", [(1, 5, 7, 3), (2, 4, 4, 1), (1, 1, 3, 2)])
def test_upsample_matches_half_pixel_bilinear_resize(shape):
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  ours = layers.upsample2x_bilinear(x)
  ref = jax.image.resize(x, (shape[0], 2 * shape[1], 2 * shape[2], shape[3]), "bilinear")
  np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_upsample_hand_computed_row():
  x = jnp.array([0.0, 4.0, 8.0]).reshape(1, 1, 3, 1)
  row = layers.upsample2x_bilinear(x)[0, 0, :, 0]
  # Half-pixel centres: 0.75/0.25 blends with the edges clamped.
  np.testing.assert_allclose(row, [0.0, 1.0, 3.0, 5.0, 7.0, 8.0], atol=1e-6)


def test_outputs_are_a_dict_of_full_resolution_logits():
  model = models.SegModel(init_features=8, blocks_down=(1, 1, 1, 1))
  x = jnp.ones((2, 32, 48, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  out = model.apply(variables, x)
  assert set(out) == {"logits"}
  assert out["logits"].shape == (2, 32, 48, 1) and out["logits"].dtype == jnp.float32


def test_1x1_conv_commutes_with_upsampling():
  # The decoder applies its bias-free 1x1 conv before upsampling; the paper's order is the
  # reverse. Both are linear maps on different axes, so they must agree.
  x = jax.random.normal(jax.random.PRNGKey(2), (1, 6, 5, 4))
  w = jax.random.normal(jax.random.PRNGKey(3), (4, 2))
  a = layers.upsample2x_bilinear(x @ w)
  b = layers.upsample2x_bilinear(x) @ w
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_group_norm_matches_numpy_and_flax():
  """The one-pass affine GroupNorm against a numpy two-pass reference and flax's module."""
  import flax.linen as nn
  x = np.random.default_rng(0).normal(3.0, 2.0, (2, 5, 6, 16)).astype(np.float32)
  scale = np.linspace(0.5, 2.0, 16).astype(np.float32)
  bias = np.linspace(-1.0, 1.0, 16).astype(np.float32)
  params = {"params": {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}}
  ours = np.asarray(layers.GroupNorm(4, 1e-5).apply(params, jnp.asarray(x)))
  grouped = x.reshape(2, 5, 6, 4, 4).astype(np.float64)
  mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
  var = grouped.var(axis=(1, 2, 4), keepdims=True)
  want = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * scale + bias
  np.testing.assert_allclose(ours, want, rtol=1e-5, atol=2e-5)
  theirs = nn.GroupNorm(num_groups=4, epsilon=1e-5).apply(params, jnp.asarray(x))
  np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-5, atol=2e-5)
  # Gradients agree with flax's too (they come from different graphs).
  cot = jnp.asarray(np.random.default_rng(1).normal(size=x.shape).astype(np.float32))
  g_ours = jax.grad(lambda v: jnp.sum(layers.GroupNorm(4, 1e-5).apply(params, v) * cot))(x)
  g_flax = jax.grad(lambda v: jnp.sum(nn.GroupNorm(num_groups=4, epsilon=1e-5).apply(
      params, v) * cot))(x)
  np.testing.assert_allclose(np.asarray(g_ours), np.asarray(g_flax), rtol=1e-4, atol=1e-5)


def test_group_norm_in_bfloat16_keeps_offset_inputs_precise():
  """Inputs far from zero: normalising after a bfloat16 cast would lose the signal."""
  x = jnp.asarray(np.random.default_rng(2).normal(100.0, 1.0, (2, 8, 8, 16)), jnp.float32)
  params = {"params": {"scale": jnp.ones(16), "bias": jnp.zeros(16)}}
  exact = layers.GroupNorm(4, 1e-5, jnp.float32).apply(params, x)
  half = layers.GroupNorm(4, 1e-5, jnp.bfloat16).apply(params, x)
  assert half.dtype == jnp.bfloat16
  # bfloat16 spacing near 100 is 0.5 (half a standard deviation); near 3 it is 1/64.
  assert float(jnp.max(jnp.abs(half.astype(jnp.float32) - exact))) < 0.03
