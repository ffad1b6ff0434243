"""Per-image segmentation metrics on the host (numpy/scipy): Dice, recall, precision, MHD, HD95.

Contours are the mask pixels with a 4-neighbour outside the mask. Distances between
contours use Euclidean distance transforms with the pixel spacing, so mm and pixels come
from one code path. MHD is Dubuisson and Jain's (1994) modified Hausdorff distance: the
larger of the two mean directed contour distances. HD95 is the 95th percentile of the
pooled distances of both directions (the convention of medpy's hd95).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


def overlap_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Dice, recall (sensitivity) and precision of two binary masks."""
  pred, truth = pred.astype(bool), truth.astype(bool)
  tp = float(np.logical_and(pred, truth).sum())
  p, t = float(pred.sum()), float(truth.sum())
  return {"dice": 2 * tp / (p + t) if p + t else 1.0,
          "recall": tp / t if t else float("nan"),
          "precision": tp / p if p else float("nan")}


def contour(mask: np.ndarray) -> np.ndarray:
  """Boolean map of the mask's boundary pixels (those with a 4-neighbour outside)."""
  mask = mask.astype(bool)
  return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _directed(src: np.ndarray, dst: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
  """Distances from each contour pixel of src to the nearest contour pixel of dst."""
  return ndimage.distance_transform_edt(~dst, sampling=spacing)[src]


def _contour_distances(cp: np.ndarray, ct: np.ndarray,
                       spacing: Sequence[float]) -> dict[str, float]:
  if not cp.any() or not ct.any():
    return {"mhd": float("nan"), "hd95": float("nan")}
  d_pt, d_tp = _directed(cp, ct, spacing), _directed(ct, cp, spacing)
  return {"mhd": float(max(d_pt.mean(), d_tp.mean())),
          "hd95": float(np.percentile(np.concatenate([d_pt, d_tp]), 95))}


def contour_distances(pred: np.ndarray, truth: np.ndarray,
                      spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, float]:
  """MHD and HD95 between the masks' contours; NaN when either mask is empty."""
  return _contour_distances(contour(pred), contour(truth), spacing)


def frame_metrics(pred: np.ndarray, truth: np.ndarray,
                  spacing_mm: Sequence[float] | None) -> dict[str, float]:
  """All per-frame metrics; mm distances are NaN when the spacing is unknown."""
  out = overlap_metrics(pred, truth)
  cp, ct = contour(pred), contour(truth)  # Once, for both the pixel and the mm distances.
  px = _contour_distances(cp, ct, (1.0, 1.0))
  out.update(mhd_px=px["mhd"], hd95_px=px["hd95"])
  out["mhd_mm"] = (_contour_distances(cp, ct, spacing_mm)["mhd"] if spacing_mm
                   else float("nan"))
  return out
