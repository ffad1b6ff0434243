"""Model 3's regularisers (Myronenko 2018): reconstruction error and KL to N(0, 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def reconstruction_loss(outputs: dict[str, Array], images: Array) -> Array:
  """Mean squared error between the VAE branch's reconstruction and the input."""
  return jnp.mean((outputs["recon"] - images) ** 2)


def gaussian_kl(outputs: dict[str, Array]) -> Array:
  """KL(N(mu, sigma) || N(0, 1)): half the sum over the latent, averaged over latent and batch."""
  mu, logvar = outputs["mu"], outputs["logvar"]
  kl = jnp.mean(jnp.sum(mu ** 2 + jnp.exp(logvar) - logvar - 1.0, axis=-1)) * 0.5
  return kl / mu.shape[-1]

