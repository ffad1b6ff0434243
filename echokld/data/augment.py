"""Augmentation on the device, inside the jitted train step (config.augment; off by default).

The paper trains without augmentation, so the faithful configs keep it off; `:best`
recipes switch it on. Everything is jnp on the gathered batch: no host work per step, the
data stay device-resident, and the random draws come from a key folded from (run key,
step), so a resumed run augments exactly as an uninterrupted one.

Geometry: one random similarity transform per image (rotation, isotropic scale,
translation) about the sector apex (top centre of the frame), where the probe sits: a
probe tilted or a heart placed deeper looks like this. Image and mask share the transform;
the image is resampled bilinearly, the mask bilinearly then thresholded at 0.5 (nearest
would jag the outline). Pixels mapped from outside the frame are 0 (outside the sector).

Intensity: gamma, contrast about the image mean, brightness; ultrasound-like speckle
(multiplicative gamma noise of shape k, mean 1, k large = mild) and a blur (a random blend
towards a 3x3 binomial smoothing).

Left-right flip: off by default. Apical 2CH frames are displayed with one convention (the
anterior wall on the right in CAMUS): a mirrored frame is a view the test set never holds,
so flipping trains for a case that does not occur; it is offered (`augment.flip`) for data
that mix display conventions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

Array = jax.Array


def similarity(angle: Array, scale: Array, shift: Array) -> tuple[Array, Array]:
  """(2x2 matrix, (2,) offset) of the forward map p -> A (p - apex) + apex + shift.

  Coordinates are (row, col) in units of the frame height, the apex at (0, W/2 / H).
  """
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  return scale * jnp.array([[cos, -sin], [sin, cos]]), shift


def warp(image: Array, matrix: Array, shift: Array, order: int = 1) -> Array:
  """`image` (H, W) moved by the forward map of `similarity`: out(p) = image(map^-1(p))."""
  h, w = image.shape
  apex = jnp.array([0.0, (w - 1) / 2.0])
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                            jnp.arange(w, dtype=jnp.float32), indexing="ij")
  out_points = jnp.stack([rows.ravel(), cols.ravel()])  # (2, H*W), pixels.
  inverse = jnp.linalg.inv(matrix)
  src = inverse @ (out_points - apex[:, None] - shift[:, None] * h) + apex[:, None]
  return ndimage.map_coordinates(image, [src[0], src[1]], order=order,
                                 mode="constant", cval=0.0).reshape(h, w)


def _blur(x: Array) -> Array:
  """3x3 binomial smoothing ([1, 2, 1] / 4 along each axis), edges repeated."""
  p = jnp.pad(x, 1, mode="edge")
  x = 0.25 * p[:-2, 1:-1] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[2:, 1:-1]
  p = jnp.pad(x, 1, mode="edge")
  return 0.25 * p[1:-1, :-2] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[1:-1, 2:]


def augment_one(key: Array, image: Array, mask: Array, cfg: Any) -> tuple[Array, Array]:
  """One (H, W) image in [0, 1] and its (H, W) {0, 1} mask, augmented alike."""
  k = jax.random.split(key, 9)
  uniform = lambda i, lo, hi: jax.random.uniform(k[i], (), jnp.float32, lo, hi)
  angle = jnp.deg2rad(uniform(0, -cfg.rotation_deg, cfg.rotation_deg))
  scale = uniform(1, 1.0 - cfg.scale, 1.0 + cfg.scale)
  shift = jax.random.uniform(k[2], (2,), jnp.float32, -cfg.translate, cfg.translate)
  matrix, shift = similarity(angle, scale, shift)
  flip = jax.random.bernoulli(k[3], cfg.flip)
  image = jnp.where(flip, image[:, ::-1], image)
  mask = jnp.where(flip, mask[:, ::-1], mask)
  image = warp(image, matrix, shift)
  mask = (warp(mask, matrix, shift) > 0.5).astype(mask.dtype)

  gamma = jnp.exp(uniform(4, -cfg.gamma, cfg.gamma))
  image = jnp.clip(image, 0.0, 1.0) ** gamma
  contrast = uniform(5, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
  image = (image - image.mean()) * contrast + image.mean()
  image = image + uniform(6, -cfg.brightness, cfg.brightness)
  if cfg.speckle > 0:
    noise = jax.random.gamma(k[7], cfg.speckle, image.shape) / cfg.speckle
    image = image * noise
  if cfg.blur > 0:
    weight = jax.random.uniform(k[8], (), jnp.float32, 0.0, cfg.blur)
    image = (1.0 - weight) * image + weight * _blur(image)
  return jnp.clip(image, 0.0, 1.0), mask


def augment_batch(key: Array, images: Array, masks: Array, cfg: Any) -> tuple[Array, Array]:
  """(B, H, W, 1) images in [0, 1] and masks, each augmented with its own draw."""
  keys = jax.random.split(key, images.shape[0])
  x, y = jax.vmap(lambda kk, a, b: augment_one(kk, a, b, cfg))(keys, images[..., 0],
                                                                masks[..., 0])
  return x[..., None], y[..., None]


TTA_MODES = ("none", "flip", "affine")
# Small, fixed views for "affine" test-time augmentation: (degrees, scale, row and col shift).
TTA_AFFINE_VIEWS = ((5.0, 1.0, 0.0, 0.0), (-5.0, 1.0, 0.0, 0.0), (0.0, 1.05, 0.0, 0.0),
                    (0.0, 0.95, 0.0, 0.0))


def test_time_views(predict_probs: Any, images: Array, mode: str) -> list[Array]:
  """The probabilities of the identity and of each of `mode`'s views, each mapped back.

  Each view is one member of a test-time ensemble: their spread is a measure of how
  unsure the model is (echokld.infer.qc).

  Args:
    predict_probs: (B, H, W, 1) images in [0, 1] -> (B, H, W) probabilities.
    images: (B, H, W, 1) in [0, 1].
    mode: "none" (1 view), "flip" (left-right mirror: 2 views) or "affine"
      (TTA_AFFINE_VIEWS about the apex, probabilities warped back bilinearly: 5 views).
  """
  if mode not in TTA_MODES:
    raise ValueError(f"unknown test-time augmentation {mode!r} ({', '.join(TTA_MODES)})")
  views = [predict_probs(images)]
  if mode == "flip":
    views.append(predict_probs(images[:, :, ::-1])[:, :, ::-1])
  elif mode == "affine":
    for degrees, scale, d_row, d_col in TTA_AFFINE_VIEWS:
      matrix, shift = similarity(jnp.deg2rad(jnp.float32(degrees)), jnp.float32(scale),
                                 jnp.array([d_row, d_col], jnp.float32))
      inverse = jnp.linalg.inv(matrix)
      moved = jax.vmap(lambda im, m=matrix, s=shift: warp(im, m, s))(images[..., 0])[..., None]
      views.append(jax.vmap(lambda p, m=inverse, s=-inverse @ shift: warp(p, m, s))(
          predict_probs(moved)))
  return views


def mean_of_views(views: list[Array]) -> Array:
  """The views' average, summed in order (the exact numbers of test_time_average)."""
  total = views[0]
  for view in views[1:]:
    total = total + view
  return total if len(views) == 1 else total / len(views)


def test_time_average(predict_probs: Any, images: Array, mode: str) -> Array:
  """Probabilities averaged over the identity and `mode`'s views (test_time_views)."""
  return mean_of_views(test_time_views(predict_probs, images, mode))
