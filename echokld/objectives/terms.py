"""Loss terms by name: `config.loss.terms` lists the terms a model trains with.

A term is a pure function term(outputs, batch, loss_config) -> scalar, registered with
`register_loss_term(name, weight=...)`, where `weight` names the `config.loss` field that
scales it (None: weight 1). `outputs` is the model's output dict plus `probs`, the sigmoid
of the logits, computed once for all terms; `batch` holds `images` in
[0, 1] and `masks` in {0, 1}, both (B, H, W, 1), plus what the model's conditioning adds
(`dist_target` for Models 6-7). Every term is logged under its name; `total` is their
weighted sum in the configured order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from echokld.objectives import alignment, dice, intensity, vae

Array = jax.Array
TermFn = Callable[[dict, dict, Any], Array]


@dataclasses.dataclass(frozen=True)
class LossTerm:
  fn: TermFn
  weight: str | None  # Field of config.loss holding the term's weight; None means 1.


_TERMS: dict[str, LossTerm] = {}


def register_loss_term(name: str, weight: str | None = None) -> Callable[[TermFn], TermFn]:
  """Decorator: registers `fn` as the loss term `name` (usable in config.loss.terms)."""

  def add(fn: TermFn) -> TermFn:
    _TERMS[name] = LossTerm(fn, weight)
    return fn

  return add


def get_term(name: str) -> LossTerm:
  if name not in _TERMS:
    raise KeyError(f"unknown loss term {name!r} (registered: {', '.join(term_names())})")
  return _TERMS[name]


def term_names() -> list[str]:
  return sorted(_TERMS)


def total_loss(outputs: dict[str, Array], batch: dict[str, Array], loss_config: Any,
               names: Sequence[str]) -> tuple[Array, dict[str, Array]]:
  """Weighted sum of the named terms, and each term (plus `total`) for logging."""
  outputs = {**outputs, "probs": jax.nn.sigmoid(outputs["logits"])}  # Shared by the terms.
  parts: dict[str, Array] = {}
  total = None
  for name in names:
    term = get_term(name)
    value = term.fn(outputs, batch, loss_config)
    parts[name] = value
    weighted = value if term.weight is None else loss_config[term.weight] * value
    total = weighted if total is None else total + weighted
  parts["total"] = total
  return total, parts


@register_loss_term("dice")
def _dice(outputs, batch, cfg):
  return dice.soft_dice_loss(outputs["probs"], batch["masks"], cfg.dice_eps,
                             cfg.dice_reduction == "image")


@register_loss_term("bce", weight="bce_weight")
def _binary_cross_entropy(outputs, batch, cfg):
  """Mean per-pixel sigmoid cross-entropy: not in the paper; the usual partner of Dice.

  Computed from the logits (optax's stable form), so confident pixels keep a gradient that
  the Dice ratio alone gives them only through the sums.
  """
  del cfg
  return jnp.mean(optax.sigmoid_binary_cross_entropy(outputs["logits"], batch["masks"]))


@register_loss_term("kld", weight="kld_weight")
def _intensity_kld(outputs, batch, cfg):
  return intensity.intensity_kld(batch["images"], outputs["probs"], batch["masks"], cfg)


@register_loss_term("recon", weight="vae_recon_weight")
def _reconstruction(outputs, batch, cfg):
  del cfg
  return vae.reconstruction_loss(outputs, batch["images"])


@register_loss_term("vae_kl", weight="vae_kl_weight")
def _vae_kl(outputs, batch, cfg):
  del cfg
  rows, cols = batch["images"].shape[1:3]
  return vae.gaussian_kl(outputs, rows * cols)


@register_loss_term("dist_align", weight="kld_weight")
def _dist_alignment(outputs, batch, cfg):
  return alignment.alignment_loss(outputs, batch, cfg)
