"""Per-image segmentation metrics on the host (numpy/scipy): overlap, distances and shape.

Overlap: Dice, recall, precision. Distances: contours are the mask pixels with a 4-neighbour
outside the mask; distances between contours use Euclidean distance transforms with the
pixel spacing, so mm and pixels come from one code path. MHD is Dubuisson and Jain's (1994)
modified Hausdorff distance: the larger of the two mean directed contour distances. HD95 is
the 95th percentile of the pooled distances of both directions (the convention of medpy's
hd95).

Empty masks are scored, never skipped, so that a model that fails is not flattered: an
empty prediction of a non-empty truth has Dice 0, recall 0, precision 0 (scikit-learn's
zero_division=0) and MHD = HD95 = the image diagonal, the distance between opposite corner
pixel centres, sqrt(((rows-1) sy)^2 + ((cols-1) sx)^2) for spacing (sy, sx): no pair of
pixels is farther apart, so no prediction scores worse. The same holds for a non-empty
prediction of an empty truth; two empty masks agree perfectly (Dice 1, distances 0).
`empty` marks an empty prediction so that reports can still count them.

Shape (the paper's "smoother, anatomically plausible" claim, §4-5), of the predicted mask:
- components: 8-connected foreground regions (pixels touching at a corner are one region);
- holes: 4-connected background regions that do not touch the image border (the partner
  connectivity of 8-connected foreground, so components - holes is the Euler number);
- contour_ratio: of the largest component with its holes filled, the length of its
  marching-squares contour (level 0.5: the polygon through the midpoints between inside and
  outside pixel centres) divided by the perimeter of that polygon's convex hull. It is 1 for
  an axis-aligned rectangle, about 1.05 for a digitised disk of radius 5-40 px (the pixel
  staircase of a curved edge), 1.02-1.10 (mean 1.049) for the 900 ground-truth LV masks of
  camus224, and grows with jagged or indented outlines (radius 30 px modulated by 5 lobes of
  +-40%: 1.34; by 16 bumps of +-10%: 1.40). Scale-free, so frames of any size compare; a
  concave but smooth outline also scores above 1, so read a model's value against the
  ground truth's own (`truth_contour_ratio`). NaN for an empty mask.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage, spatial

EIGHT = np.ones((3, 3), bool)  # 8-connectivity structure for ndimage.label.
FOUR = ndimage.generate_binary_structure(2, 1)
# Marching-squares segment length in a 2x2 cell with k foreground corners at level 0.5:
# k = 1 or 3 cuts a corner (sqrt(2)/2); k = 2 adjacent crosses the cell (1); k = 2
# diagonal (a saddle) cuts two corners (sqrt(2), either way the saddle is resolved).
HALF_DIAGONAL = math.sqrt(2) / 2


def overlap_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Dice, recall (sensitivity) and precision of two binary masks.

  An empty prediction has precision 0 when the truth is not empty (nothing found is not a
  perfect precision); recall is NaN for an empty truth, precision NaN when both are empty.
  """
  pred, truth = pred.astype(bool), truth.astype(bool)
  tp = float(np.logical_and(pred, truth).sum())
  p, t = float(pred.sum()), float(truth.sum())
  return {"dice": 2 * tp / (p + t) if p + t else 1.0,
          "recall": tp / t if t else float("nan"),
          "precision": tp / p if p else (0.0 if t else float("nan"))}


def mean_dice(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
  """The mean over frames of each frame's Dice (frames may differ in size)."""
  return float(np.mean([overlap_metrics(p, t)["dice"] for p, t in zip(preds, truths)]))


def contour(mask: np.ndarray) -> np.ndarray:
  """Boolean map of the mask's boundary pixels (those with a 4-neighbour outside)."""
  mask = mask.astype(bool)
  return mask & ~ndimage.binary_erosion(mask, border_value=0)


def diagonal(shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0)) -> float:
  """Distance between opposite corner pixel centres: the largest distance in the image."""
  return float(math.hypot((shape[0] - 1) * spacing[0], (shape[1] - 1) * spacing[1]))


def _directed(src: np.ndarray, dst: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
  """Distances from each contour pixel of src to the nearest contour pixel of dst."""
  return ndimage.distance_transform_edt(~dst, sampling=spacing)[src]


def _contour_distances(cp: np.ndarray, ct: np.ndarray,
                       spacing: Sequence[float]) -> dict[str, float]:
  if not cp.any() or not ct.any():
    worst = 0.0 if cp.any() == ct.any() else diagonal(cp.shape, spacing)
    return {"mhd": worst, "hd95": worst}
  d_pt, d_tp = _directed(cp, ct, spacing), _directed(ct, cp, spacing)
  return {"mhd": float(max(d_pt.mean(), d_tp.mean())),
          "hd95": float(np.percentile(np.concatenate([d_pt, d_tp]), 95))}


def contour_distances(pred: np.ndarray, truth: np.ndarray,
                      spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, float]:
  """MHD and HD95 between the masks' contours; the image diagonal when one mask is empty."""
  return _contour_distances(contour(pred), contour(truth), spacing)


def components(mask: np.ndarray) -> int:
  """Number of 8-connected foreground regions."""
  return int(ndimage.label(mask.astype(bool), structure=EIGHT)[1])


def holes(mask: np.ndarray) -> int:
  """Number of 4-connected background regions that do not touch the image border."""
  labels, count = ndimage.label(~mask.astype(bool), structure=FOUR)
  border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
  return count - len(np.setdiff1d(np.unique(border), [0]))


def largest_component(mask: np.ndarray) -> np.ndarray:
  """The largest 8-connected region (first in scan order on ties); all False when empty."""
  labels, count = ndimage.label(mask.astype(bool), structure=EIGHT)
  if not count:
    return np.zeros(mask.shape, bool)
  return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def lv_region(mask: np.ndarray) -> np.ndarray:
  """The largest 4-connected region of `mask != 0` with its holes filled; all False when empty.

  The LV cavity of an apical view is one region without holes, so this is the mask cleaned
  for measurement (clinical.geometry) and `--postprocess=largest` in prediction. 4-connected
  on both counts: a pixel touching the region only at a corner is not part of it.
  """
  labels, count = ndimage.label(np.asarray(mask) != 0, structure=FOUR)
  if not count:
    return np.zeros(np.shape(mask), bool)
  largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
  return ndimage.binary_fill_holes(largest, structure=FOUR)


def contour_length(mask: np.ndarray) -> float:
  """Length of the marching-squares contour at level 0.5 (pixel units), over 2x2 cells."""
  m = np.pad(mask.astype(np.int8), 1)
  a, b, c, d = m[:-1, :-1], m[:-1, 1:], m[1:, :-1], m[1:, 1:]  # Cell corners.
  k = a + b + c + d
  odd = (k == 1) | (k == 3)
  saddle = (k == 2) & (a == d)
  straight = (k == 2) & (a != d)
  return float(HALF_DIAGONAL * odd.sum() + 2 * HALF_DIAGONAL * saddle.sum() + straight.sum())


def contour_points(mask: np.ndarray) -> np.ndarray:
  """(N, 2) vertices of the marching-squares contour: midpoints of inside-outside pairs."""
  m = np.pad(mask.astype(bool), 1)
  rows, cols = np.nonzero(m[:, :-1] != m[:, 1:])
  across = np.stack([rows, cols + 0.5], 1)
  rows, cols = np.nonzero(m[:-1] != m[1:])
  down = np.stack([rows + 0.5, cols], 1)
  return np.concatenate([across, down]) - 1.0  # Back to unpadded pixel coordinates.


def contour_ratio(mask: np.ndarray) -> float:
  """Contour length / convex hull perimeter of the largest region, holes filled; NaN if empty."""
  region = ndimage.binary_fill_holes(largest_component(mask), structure=FOUR)
  if not region.any():
    return float("nan")
  hull = spatial.ConvexHull(contour_points(region))  # In 2-D, `area` is the perimeter.
  return contour_length(region) / float(hull.area)


def shape_metrics(pred: np.ndarray) -> dict[str, float]:
  """Components, holes and contour ratio of a predicted mask (module docstring)."""
  pred = pred.astype(bool)
  return {"components": float(components(pred)), "holes": float(holes(pred)),
          "contour_ratio": contour_ratio(pred)}


def frame_metrics(pred: np.ndarray, truth: np.ndarray,
                  spacing_mm: Sequence[float] | None) -> dict[str, float]:
  """All per-frame metrics; mm distances are NaN when the spacing is unknown."""
  pred, truth = pred.astype(bool), truth.astype(bool)
  out = overlap_metrics(pred, truth)
  cp, ct = contour(pred), contour(truth)  # Once, for both the pixel and the mm distances.
  px = _contour_distances(cp, ct, (1.0, 1.0))
  out.update(mhd_px=px["mhd"], hd95_px=px["hd95"])
  out["mhd_mm"] = (_contour_distances(cp, ct, spacing_mm)["mhd"] if spacing_mm
                   else float("nan"))
  out["empty"] = float(not pred.any())
  out.update(shape_metrics(pred))
  out["truth_contour_ratio"] = contour_ratio(truth)
  return out
