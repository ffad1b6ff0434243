"""Benchmark: batched jnp ML fit vs scipy.stats.<family>.fit on the same ROI pixels.

The KLD losses fit the ROI intensity distribution of every image at every step, so the fit
must be far cheaper than scipy's (the issue asks for >= 50x on CPU for a batch, at equal or
better log-likelihood). `--family` is alpha (Model 4, default) or pearson3 (eq. 1-2).
Images are synthetic 8-bit: an LV-like ellipse (~12 % of the image) whose pixels follow the
family (alpha: around camus224's pooled LV fit) on a brighter speckle background; with
`--camus_root` the 224x224 batch is 2 real camus224 frames and their LV labels instead.

  python experiments/bench_fit.py [--family=alpha] [--camus_root=DIR] [--repeats=30]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from PIL import Image

from echokld.objectives import distributions

SIZES = ((224, 224), (704, 1136))
BATCH = 2
FAMILY = ["alpha"]  # Set from --family in main().


def roi_sample(shape, rng) -> np.ndarray:
  """ROI intensities of the benchmarked family."""
  if FAMILY[0] == "alpha":  # camus224's pooled LV fit is about (6.4, -0.45, 4.55).
    return scipy.stats.alpha.rvs(rng.uniform(5.0, 8.0), loc=-0.45, scale=4.5, size=shape,
                                 random_state=rng)
  return scipy.stats.pearson3.rvs(rng.uniform(0.8, 1.4), loc=0.3, scale=0.1, size=shape,
                                  random_state=rng)


def camus_batch(root: pathlib.Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """BATCH random camus224 frames in [0, 1] and their LV-cavity masks (label 1)."""
  cases = sorted(p.stem for p in (root / "labels").glob("*.png"))
  chosen = np.random.default_rng(seed).choice(len(cases), BATCH, replace=False)
  read = lambda folder, i: np.asarray(Image.open(root / folder / f"{cases[i]}.png"))
  images = np.stack([read("images", i) for i in chosen]).astype(np.float32) / 255.0
  masks = np.stack([read("labels", i) == 1 for i in chosen]).astype(np.float32)
  return images, masks


def synth_batch(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(images in [0, 1] on the 8-bit grid, binary ellipse masks), both (BATCH, H, W)."""
  rng = np.random.default_rng(seed)
  rows, cols = shape
  yy, xx = np.mgrid[:rows, :cols]
  images, masks = [], []
  for _ in range(BATCH):
    frac = rng.uniform(0.10, 0.15)  # Area of the ellipse / image.
    ry = rows * rng.uniform(0.30, 0.38)
    rx = frac * rows * cols / (np.pi * ry)
    cy, cx = rows * rng.uniform(0.45, 0.55), cols * rng.uniform(0.45, 0.55)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    roi = roi_sample(shape, rng)
    background = rng.gamma(2.0, 0.2, size=shape)
    image = np.where(mask, roi, background)
    images.append(np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0)
    masks.append(mask)
  return np.stack(images).astype(np.float32), np.stack(masks).astype(np.float32)


@jax.jit
def jnp_fit_batch(images: jax.Array, masks: jax.Array):
  """Histogram (exact for 8-bit data) then the Newton ML fit, per image."""
  grid = distributions.histogram_grid()

  def one(image, mask):
    counts = distributions.weighted_histogram(image.ravel(), mask.ravel())
    return distributions.fit_hist(FAMILY[0], grid, counts)

  return jax.vmap(one)(images, masks)


@jax.jit
def jnp_fit_raw_batch(samples: jax.Array, weights: jax.Array):
  """The same ML fit on the raw ROI samples (no histogram), padded with zero weights."""
  return jax.vmap(distributions.get_family(FAMILY[0]).fit)(samples, weights)


def median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def loglik(samples: np.ndarray, params) -> float:
  """float64 log-likelihood by scipy: the same yardstick for both fits."""
  return float(np.sum(getattr(scipy.stats, FAMILY[0]).logpdf(samples, *map(float, params))))


def run(shape, repeats: int, scipy_repeats: int, seed: int, camus_root=None) -> dict:
  images, masks = (camus_batch(camus_root, seed) if camus_root and shape == (224, 224)
                   else synth_batch(shape, seed))
  rois = [img[m > 0].astype(np.float64) for img, m in zip(images, masks)]
  j_images, j_masks = jnp.asarray(images), jnp.asarray(masks)
  jax.block_until_ready(jnp_fit_batch(j_images, j_masks))  # Compile.
  t_jnp = median_time(lambda: jax.block_until_ready(jnp_fit_batch(j_images, j_masks)),
                      repeats)
  ours = np.asarray(jnp_fit_batch(j_images, j_masks))

  size = max(r.size for r in rois)
  raw = np.zeros((BATCH, size), np.float32)
  raw_w = np.zeros((BATCH, size), np.float32)
  for i, r in enumerate(rois):
    raw[i, :r.size], raw_w[i, :r.size] = r, 1.0
  raw, raw_w = jnp.asarray(raw), jnp.asarray(raw_w)
  jax.block_until_ready(jnp_fit_raw_batch(raw, raw_w))
  t_raw = median_time(lambda: jax.block_until_ready(jnp_fit_raw_batch(raw, raw_w)),
                      max(1, repeats // 2))
  ours_raw = np.stack([np.asarray(p) for p in jnp_fit_raw_batch(raw, raw_w)], axis=1)

  scipy_fit = getattr(scipy.stats, FAMILY[0]).fit
  scipy_fit(rois[0][:1000])  # Warm-up.
  theirs = [scipy_fit(r) for r in rois]
  t_scipy = median_time(lambda: [scipy_fit(r) for r in rois], scipy_repeats)
  return dict(
      shape=shape, roi=[r.size for r in rois], t_jnp=t_jnp, t_raw=t_raw, t_scipy=t_scipy,
      ll_jnp=[loglik(r, p) for r, p in zip(rois, ours)],
      ll_raw=[loglik(r, p) for r, p in zip(rois, ours_raw)],
      ll_scipy=[loglik(r, p) for r, p in zip(rois, theirs)],
      params_jnp=ours, params_scipy=np.asarray(theirs))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--scipy_repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--family", choices=sorted(distributions.FAMILIES), default="alpha")
  parser.add_argument("--camus_root", type=pathlib.Path, default=None,
                      help="camus224 folder: its frames for the 224x224 batch")
  args = parser.parse_args()
  FAMILY[0] = args.family
  print(f"family {args.family}; jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"scipy {scipy.__version__}; "
        f"batch of {BATCH}, medians of {args.repeats} (jnp) / {args.scipy_repeats} (scipy)")
  print()
  print("| image | ROI px per image | jnp hist+fit (ms) | jnp raw fit (ms) | scipy fit (ms) "
        "| speedup hist | speedup raw | loglik jnp - scipy (per image) |")
  print("|---|---|---|---|---|---|---|---|")
  results = [run(s, args.repeats, args.scipy_repeats, args.seed, args.camus_root)
             for s in SIZES]
  for r in results:
    diffs = ", ".join(f"{a - b:+.1e}" for a, b in zip(r["ll_jnp"], r["ll_scipy"]))
    print(f"| {r['shape'][0]}x{r['shape'][1]} | {', '.join(map(str, r['roi']))} "
          f"| {r['t_jnp'] * 1e3:.2f} | {r['t_raw'] * 1e3:.1f} | {r['t_scipy'] * 1e3:.0f} "
          f"| {r['t_scipy'] / r['t_jnp']:.0f}x | {r['t_scipy'] / r['t_raw']:.1f}x | {diffs} |")
  print()
  for r in results:
    for i in range(BATCH):
      print(f"{r['shape']} image {i}: loglik jnp-hist {r['ll_jnp'][i]:.4f}, jnp-raw "
            f"{r['ll_raw'][i]:.4f}, scipy {r['ll_scipy'][i]:.4f}; (shape, loc, scale) jnp "
            f"{np.round(r['params_jnp'][i], 5).tolist()}, scipy "
            f"{np.round(r['params_scipy'][i], 5).tolist()}")


if __name__ == "__main__":
  main()
