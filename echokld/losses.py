"""Loss terms of the seven models, each a pure function of model outputs and a batch.

`total_loss` adds the terms a config asks for: Dice always (eq. 7), the VAE terms for
Model 3, the intensity-distribution KL for Models 4-5 (eq. 3-6) and the distribution
alignment for Models 6-7. Terms are returned separately for logging.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from echokld import kld_losses

Array = jax.Array


def soft_dice_loss(probs: Array, target: Array, eps: float = 1e-5,
                   per_image: bool = False) -> Array:
  """Eq. (7): 1 - (2 sum(y p) + eps) / (sum y + sum p + eps), pooled or per image."""
  axes = tuple(range(1, probs.ndim)) if per_image else tuple(range(probs.ndim))
  inter = jnp.sum(probs * target, axis=axes)
  denom = jnp.sum(probs, axis=axes) + jnp.sum(target, axis=axes)
  return jnp.mean(1.0 - (2.0 * inter + eps) / (denom + eps))


def total_loss(outputs: dict[str, Array], images: Array, masks: Array, loss_config: Any,
               extras: dict[str, Array] | None = None) -> tuple[Array, dict[str, Array]]:
  """Sum of the configured terms. images in [0, 1], masks in {0, 1}, both (B, H, W, 1)."""
  probs = jax.nn.sigmoid(outputs["logits"])
  terms = {"dice": soft_dice_loss(probs, masks, loss_config.dice_eps,
                                  loss_config.dice_reduction == "image")}
  total = terms["dice"]
  if loss_config.kld_estimator != "none":
    terms["kld"] = kld_losses.intensity_kld(images, probs, masks, loss_config)
    total = total + loss_config.kld_weight * terms["kld"]
  if "recon" in outputs:
    recon, kl = kld_losses.vae_terms(outputs, images)
    terms["recon"], terms["vae_kl"] = recon, kl
    total = total + loss_config.vae_recon_weight * recon + loss_config.vae_kl_weight * kl
  if "dist_pred" in outputs and extras is not None and "dist_target" in extras:
    terms["dist_align"] = kld_losses.dist_alignment(outputs["dist_pred"],
                                                    extras["dist_target"], loss_config)
    total = total + loss_config.kld_weight * terms["dist_align"]
  terms["total"] = total
  return total, terms
