"""Model 3's regularisers, as Myronenko 2018 (§2.3) defines them, with his weights (0.1 each).

L_L2 = mean squared error between the reconstruction and the input; L_KL =
(1/N) sum(mu^2 + sigma^2 - log sigma^2 - 1), N the number of image pixels (his voxels), the
sum over the latent dimensions. Dividing by N (not by the latent size, and without the
textbook 1/2) is his normalisation; it keeps the KL small next to the Dice term at any
resolution, and the paper says it keeps "the same weighting coefficients as in the original".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def reconstruction_loss(outputs: dict[str, Array], images: Array) -> Array:
  """Mean squared error between the VAE branch's reconstruction and the input."""
  return jnp.mean((outputs["recon"] - images) ** 2)


def gaussian_kl(outputs: dict[str, Array], num_pixels: int) -> Array:
  """Myronenko's L_KL: sum over the latent of mu^2 + var - log var - 1, over N pixels.

  Args:
    outputs: the VAE head's `mu` and `logvar`, (B, latent).
    num_pixels: N, the pixels of one input image (rows x cols).

  Returns:
    L_KL averaged over the images of the batch.
  """
  mu, logvar = outputs["mu"], outputs["logvar"]
  per_image = jnp.sum(mu ** 2 + jnp.exp(logvar) - logvar - 1.0, axis=-1) / num_pixels
  return jnp.mean(per_image)
