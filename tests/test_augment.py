"""On-device augmentation: geometry against scipy, image and mask aligned, exact resume."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import ndimage as sp_ndimage

from conftest import tiny_config
from echokld.configs import base
from echokld.data import augment
from echokld.train import loop


def disc(shape, center, radius):
  rows, cols = np.mgrid[:shape[0], :shape[1]]
  return ((rows - center[0]) ** 2 + (cols - center[1]) ** 2 < radius ** 2).astype(np.float32)


def test_warp_equals_scipy_affine_transform_and_moves_the_centroid_by_the_forward_map():
  h, w = 48, 56
  image = disc((h, w), (20.3, 31.7), 7) * 0.8 + 0.1
  angle, scale, shift = np.deg2rad(17.0), 1.12, np.array([0.06, -0.04])
  matrix, offset = augment.similarity(jnp.float32(angle), jnp.float32(scale),
                                      jnp.asarray(shift, jnp.float32))
  out = np.asarray(augment.warp(jnp.asarray(image), matrix, offset))
  # scipy: out(o) = in(M o + c) with M = A^-1, c = apex - A^-1 (apex + shift * h).
  a = np.asarray(matrix, np.float64)
  apex = np.array([0.0, (w - 1) / 2])
  inv = np.linalg.inv(a)
  want = sp_ndimage.affine_transform(image, inv, offset=apex - inv @ (apex + shift * h),
                                     order=1, mode="grid-constant", cval=0.0)
  np.testing.assert_allclose(out, want, atol=1e-4)
  # The disc's centroid lands where the forward map sends it.
  spot = disc((h, w), (20.3, 31.7), 7)
  moved = np.asarray(augment.warp(jnp.asarray(spot), matrix, offset))
  forward = a @ (np.array([20.3, 31.7]) - apex) + apex + shift * h
  np.testing.assert_allclose(sp_ndimage.center_of_mass(moved), forward, atol=0.15)


def test_image_and_mask_move_together():
  cfg = base.get_config().augment
  cfg.update(enabled=True, gamma=0.0, contrast=0.0, brightness=0.0, rotation_deg=25.0,
             scale=0.15, translate=0.08)
  masks = np.stack([disc((64, 64), (28 + 3 * i, 30 - 2 * i), 9 + i) for i in range(4)])
  images = jnp.asarray(masks * 0.8 + 0.1)[..., None]
  x, y = augment.augment_batch(jax.random.PRNGKey(5), images, jnp.asarray(masks)[..., None],
                               cfg)
  x, y = np.asarray(x[..., 0]), np.asarray(y[..., 0])
  assert set(np.unique(y)) <= {0.0, 1.0}
  for i in range(4):
    moved = np.subtract(sp_ndimage.center_of_mass(y[i]), sp_ndimage.center_of_mass(masks[i]))
    assert np.abs(moved).max() > 0.5  # It moved...
    inside = x[i] > 0.5  # ...and the bright disc of the image moved with it.
    assert (inside & (y[i] > 0)).sum() / (inside | (y[i] > 0)).sum() > 0.95
  again = augment.augment_batch(jax.random.PRNGKey(5), images, jnp.asarray(masks)[..., None],
                                cfg)
  np.testing.assert_array_equal(np.asarray(again[0][..., 0]), x)  # Same key, same draw.


def test_intensity_changes_keep_the_range_and_speckle_has_mean_one():
  cfg = ml_collections.ConfigDict(dict(rotation_deg=0.0, scale=0.0, translate=0.0, flip=0.0,
                                       gamma=0.0, contrast=0.0, brightness=0.0, speckle=20.0,
                                       blur=0.0))
  image = jnp.full((1, 64, 64, 1), 0.5)
  mask = jnp.zeros((1, 64, 64, 1))
  x, _ = augment.augment_batch(jax.random.PRNGKey(0), image, mask, cfg)
  x = np.asarray(x)
  assert x.min() >= 0 and x.max() <= 1
  assert x[0, 8:-8, 8:-8].mean() == pytest.approx(0.5, abs=0.01)  # Gamma(k)/k has mean 1.
  assert x[0, 8:-8, 8:-8].std() == pytest.approx(0.5 / np.sqrt(20), rel=0.1)


def test_a_resumed_run_augments_as_an_uninterrupted_one(tmp_path):
  overrides = {"augment.enabled": True, "augment.speckle": 8.0, "augment.blur": 0.5}
  whole = loop.train_and_evaluate(tiny_config(**{**overrides, "train.max_epochs": 2}),
                                  str(tmp_path / "whole"))
  loop.train_and_evaluate(tiny_config(**{**overrides, "train.max_epochs": 1}),
                          str(tmp_path / "parts"))
  parts = loop.train_and_evaluate(tiny_config(**{**overrides, "train.max_epochs": 2}),
                                  str(tmp_path / "parts"))
  rows = lambda d: [json.loads(l) for l in open(os.path.join(tmp_path, d, "metrics.jsonl"))]
  keys = ("train_total", "val_dice")
  assert [[r[k] for k in keys] for r in rows("whole")] == \
      [[r[k] for k in keys] for r in rows("parts")]
  assert whole["test"]["dice"] == parts["test"]["dice"]
  # It acted: without augmentation this run's first epoch is the recorded one.
  recorded = json.load(open(os.path.join(os.path.dirname(__file__), "data",
                                         "two_epoch_numbers.json")))["runs"]["dice"]
  assert abs(rows("whole")[0]["train_total"] - recorded["train_total"][0]) > 1e-3


class PointwiseModel:
  """logits = 8 (x - 0.5) + ramp: pointwise in the image (equivariant to any warp) plus a
  fixed left-right ramp `tilt` * (col / W - 0.5), which is not."""

  def __init__(self, tilt=0.0):
    self.tilt = tilt

  def apply(self, variables, x, inject=None):
    cols = jnp.arange(x.shape[2]) / x.shape[2] - 0.5
    return {"logits": 8.0 * (x - 0.5) + self.tilt * cols[None, None, :, None]}


@pytest.mark.parametrize("mode", ["flip", "affine"])
def test_tta_of_an_equivariant_model_equals_plain_prediction(mode):
  from echokld.train import step as step_lib
  config = tiny_config()
  rows, cols = np.mgrid[:32, :32]
  smooth = 0.5 + 0.4 * np.sin(rows / 5.0) * np.cos(cols / 6.0)  # Smooth: bilinear is exact-ish.
  images = jnp.asarray(np.round(np.stack([smooth, smooth[::-1]]) * 255).astype(np.uint8))
  plain = np.asarray(step_lib.make_predict(PointwiseModel(), config, 2)({}, images, None))
  config.augment.tta = mode
  tta = np.asarray(step_lib.make_predict(PointwiseModel(), config, 2)({}, images, None))
  if mode == "flip":
    np.testing.assert_allclose(tta, plain, atol=1e-6)
  else:  # Views mapped back agree inside the frame (the borders see the outside).
    np.testing.assert_allclose(tta[:, 6:-6, 6:-6], plain[:, 6:-6, 6:-6], atol=0.02)
  # A model that is not equivariant gets its views averaged: flip averages the ramp away.
  config.augment.tta = "flip"
  tilted = np.asarray(step_lib.make_predict(PointwiseModel(3.0), config, 2)({}, images, None))
  x = images.astype(np.float32) / 255.0
  sig = lambda v: 1 / (1 + np.exp(-v))
  ramp = 3.0 * (np.arange(32) / 32 - 0.5)
  want = 0.5 * (sig(8 * (x - 0.5) + ramp) + sig(8 * (x - 0.5) + ramp[::-1]))
  np.testing.assert_allclose(tilted, want, atol=1e-5)
