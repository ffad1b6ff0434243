"""Helpers of experiments/fit_families.py: scipy's ML fits, and the checks of echokld's jnp
fits (Pearson III and alpha, histogram route) against them on the same pixels."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import scipy.stats

from echokld.errors import InputError

LEVELS = np.arange(256) / 255.0


def subsample(values: np.ndarray, max_pixels: int, rng: np.random.Generator) -> np.ndarray:
  if values.size <= max_pixels:
    return values
  return rng.choice(values, max_pixels, replace=False)


def fit(name: str, x: np.ndarray) -> tuple[tuple[float, ...], float]:
  """scipy MLE, refined once from its own answer (Nelder-Mead stops early on 200k points)."""
  family = getattr(scipy.stats, name)
  results = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    params = family.fit(x)
    restart = family.fit(x, *params[:-2], loc=params[-2], scale=params[-1])
    for candidate in (params, restart):
      ll = float(np.sum(family.logpdf(x, *candidate)))
      results.append((ll if not np.isnan(ll) else -np.inf, tuple(map(float, candidate))))
  best_ll, best = max(results, key=lambda r: r[0])
  return best, best_ll


def jnp_cross_check(train_rois, scipy_params) -> dict:
  """echokld's Pearson III ML fit on the histogram of all training ROI pixels, and its
  log-likelihood gain on those pixels over scipy's pearson3 fit of the subsample."""
  import jax.numpy as jnp
  from echokld.objectives import distributions
  counts = np.bincount(np.concatenate(train_rois), minlength=256).astype(np.float64)
  ours = [float(v) for v in distributions.fit_pearson3_hist(
      distributions.histogram_grid(), jnp.asarray(counts, jnp.float32))]
  keep = counts > 0
  loglik = lambda p: float(np.sum(counts[keep] * scipy.stats.pearson3.logpdf(LEVELS[keep], *p)))
  return dict(params=ours, gain=loglik(ours) - loglik(scipy_params), n=int(counts.sum()))


def jnp_alpha_check(train_rois, val_rois, max_pixels: int, seed: int, num_frames: int,
                    batch: int = 2) -> dict:
  """echokld's jnp alpha fit (histogram route, float32, as the loss runs it) against
  scipy.stats.alpha.fit (restarted once, `fit`): on the pooled subsample of `study` (same
  pixels), on single frames and on batches of `batch` frames (the loss fits per batch);
  log-likelihoods in float64 by scipy. Held-back: the val frames under each pooled fit."""
  import jax
  import jax.numpy as jnp
  from echokld.objectives import distributions
  grid = distributions.histogram_grid()
  fit_hist = jax.jit(distributions.fit_alpha_hist)

  def ours(values: np.ndarray):
    counts = np.bincount(values, minlength=256).astype(np.float32)
    return tuple(float(v) for v in fit_hist(grid, jnp.asarray(counts)))

  def loglik(values: np.ndarray, params) -> float:
    return float(np.sum(scipy.stats.alpha.logpdf(values.astype(np.float64) / 255.0, *params)))

  rng = np.random.default_rng(seed)
  pooled = subsample(np.concatenate(train_rois), max_pixels, rng)  # = study's pixels.
  theirs_p, _ = fit("alpha", pooled.astype(np.float64) / 255.0)
  ours_p = ours(pooled)
  out = dict(pooled=dict(n=pooled.size, ours=ours_p, theirs=theirs_p,
                         ll_ours=loglik(pooled, ours_p), ll_theirs=loglik(pooled, theirs_p)))
  if val_rois:
    val = np.concatenate(val_rois)
    out["held_back"] = dict(n=val.size, ll_ours=loglik(val, ours_p),
                            ll_theirs=loglik(val, theirs_p))
  rng = np.random.default_rng(seed + 3)
  order = rng.permutation(len(train_rois))
  for key, size in (("frames", 1), ("batches", batch)):
    rel = []
    for k in range(num_frames):
      values = np.concatenate([train_rois[i] for i in order[k * size:(k + 1) * size]])
      theirs, _ = fit("alpha", values.astype(np.float64) / 255.0)
      a, b = loglik(values, ours(values)), loglik(values, theirs)
      rel.append((a - b) / abs(b))
    rel = np.asarray(rel)
    out[key] = dict(count=len(rel), worst=float(rel.min()), median=float(np.median(rel)),
                    at_least=int(np.sum(rel >= -1e-3)), better=int(np.sum(rel > 0)))
  return out


def alpha_check_lines(check: dict) -> list[str]:
  """The markdown section on the jnp alpha fit (docs/FIT_FAMILIES.md)."""
  p = check["pooled"]
  fmt = lambda params: ", ".join(f"{v:.4f}" for v in params)
  lines = ["## echokld's jnp alpha fit against scipy (`fit_alpha`, histogram route)", "",
           "The loss fits scipy's alpha in float32 on a 256-bin histogram "
           "(echokld.objectives.families.alpha); log-likelihoods below are float64 by "
           "scipy.stats.alpha.logpdf on the pixels, scipy's fit restarted once.", "",
           f"- Pooled training subsample ({p['n']} pixels, the ranking's): echokld "
           f"(a, loc, scale) = ({fmt(p['ours'])}), log-lik {p['ll_ours']:.2f}; scipy "
           f"({fmt(p['theirs'])}), log-lik {p['ll_theirs']:.2f}; difference "
           f"{p['ll_ours'] - p['ll_theirs']:+.2f} (relative "
           f"{(p['ll_ours'] - p['ll_theirs']) / abs(p['ll_theirs']):+.1e})."]
  if "held_back" in check:
    h = check["held_back"]
    lines.append(f"- Held back (the {h['n']} val-frame LV pixels, under the pooled fits): "
                 f"echokld {h['ll_ours']:.2f}, scipy {h['ll_theirs']:.2f} "
                 f"({(h['ll_ours'] - h['ll_theirs']) / abs(h['ll_theirs']):+.1e} relative).")
  for key, label in (("frames", "single training frames"),
                     ("batches", "batches of 2 training frames (the paper's batch)")):
    c = check[key]
    lines.append(f"- {c['count']} {label}, each fitted alone: echokld's log-lik is at least "
                 f"scipy's within 1e-3 relative on {c['at_least']} / {c['count']}, higher on "
                 f"{c['better']}; relative difference median {c['median']:+.1e}, worst "
                 f"{c['worst']:+.1e}.")
  return lines + [""]


def replace_alpha_section(path: pathlib.Path, alpha_check: dict) -> None:
  """--only_alpha_check: rewrite just the jnp-alpha section of an existing report."""
  text = path.read_text()
  head = "## echokld's jnp alpha fit"
  start = text.find(head)
  end = text.find("## Caveats")
  if end < 0:
    raise InputError(path, "no '## Caveats' section: run the full study first")
  start = end if start < 0 else start
  path.write_text(text[:start] + "\n".join(alpha_check_lines(alpha_check)) + "\n"
                  + text[end:])
