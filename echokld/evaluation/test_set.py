"""Test-set evaluation: per-frame metrics to test_metrics.csv and a summary per quality.

Every frame counts in every mean (metrics.py scores empty masks instead of skipping them);
the summary also counts empty, fragmented (more than one component) and holed predictions.
"""

from __future__ import annotations

import csv
import math
from typing import Any, Sequence

import numpy as np

from echokld.evaluation import metrics
from echokld.data.pipeline import ArraySplit

CSV_COLUMNS = ("case", "quality", "dice", "recall", "precision", "mhd_px", "mhd_mm",
               "hd95_px", "empty", "components", "holes", "contour_ratio",
               "truth_contour_ratio")
SUMMARY_METRICS = ("dice", "recall", "precision", "mhd_px", "mhd_mm", "hd95_px",
                   "components", "holes", "contour_ratio", "truth_contour_ratio")


def frame_rows(probs: np.ndarray, split: ArraySplit) -> list[dict[str, Any]]:
  """One metrics row per frame of the 0.5-thresholded probabilities."""
  rows = []
  for i, case in enumerate(split.cases):
    m = metrics.frame_metrics(probs[i] > 0.5, split.masks[i] > 0,
                              split.geometries[i].spacing_mm)
    rows.append(dict(case=case, quality=split.qualities[i], **m))
  return rows


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})


def _mean(values: list[float]) -> float | None:
  finite = [v for v in values if not math.isnan(v)]
  return float(np.mean(finite)) if finite else None


def is_empty(row: dict[str, Any]) -> bool:
  """An empty prediction; rows written before `empty` existed had NaN distances instead."""
  flag = row.get("empty", float("nan"))
  return bool(flag) if not math.isnan(flag) else math.isnan(row["mhd_px"])


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
  return {"empty_predictions": sum(is_empty(r) for r in rows),
          "fragmented_predictions": sum(r.get("components", 0) > 1 for r in rows),
          "predictions_with_holes": sum(r.get("holes", 0) > 0 for r in rows)}


def _block(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
  return {"frames": len(rows),
          **{k: _mean([r.get(k, float("nan")) for r in rows]) for k in SUMMARY_METRICS},
          **_counts(rows)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Means over all frames and per quality group, with the empty/fragmented/holed counts.

  contour_ratio is undefined for an empty mask, so its mean is over non-empty predictions.
  """
  out = _block(rows)
  groups = sorted({r["quality"] for r in rows})
  out["by_quality"] = {g: _block([r for r in rows if r["quality"] == g]) for g in groups}
  return out
