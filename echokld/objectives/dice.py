"""Dice: the soft loss every model trains with (eq. 7) and the hard score validation uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def soft_dice_loss(probs: Array, target: Array, eps: float = 1e-5,
                   per_image: bool = False) -> Array:
  """Eq. (7): 1 - (2 sum(y p) + eps) / (sum y + sum p + eps), pooled or per image."""
  axes = tuple(range(1, probs.ndim)) if per_image else tuple(range(probs.ndim))
  inter = jnp.sum(probs * target, axis=axes)
  denom = jnp.sum(probs, axis=axes) + jnp.sum(target, axis=axes)
  return jnp.mean(1.0 - (2.0 * inter + eps) / (denom + eps))


def hard_dice(probs: Array, masks: Array) -> Array:
  """Per-image Dice of the 0.5-thresholded prediction (1 when both are empty)."""
  pred = (probs > 0.5).astype(jnp.float32)
  truth = masks.astype(jnp.float32)
  inter = jnp.sum(pred * truth, axis=(1, 2))
  denom = jnp.sum(pred, axis=(1, 2)) + jnp.sum(truth, axis=(1, 2))
  return jnp.where(denom > 0, 2.0 * inter / jnp.maximum(denom, 1.0), 1.0)
