"""Test-set evaluation: per-frame metrics to test_metrics.csv and a summary per quality."""

from __future__ import annotations

import csv
import math
from typing import Any

import numpy as np

from echokld.evaluation import metrics
from echokld.data.pipeline import ArraySplit

CSV_COLUMNS = ("case", "quality", "dice", "recall", "precision", "mhd_px", "mhd_mm",
               "hd95_px")
SUMMARY_METRICS = ("dice", "recall", "precision", "mhd_px", "mhd_mm", "hd95_px")


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


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Means over all frames and per quality group (NaN distances, e.g. empty masks, skipped)."""
  out: dict[str, Any] = {"frames": len(rows)}
  out.update({k: _mean([r[k] for r in rows]) for k in SUMMARY_METRICS})
  out["empty_predictions"] = sum(1 for r in rows if math.isnan(r["mhd_px"]))
  groups = sorted({r["quality"] for r in rows})
  out["by_quality"] = {g: {"frames": sum(r["quality"] == g for r in rows),
                           **{k: _mean([r[k] for r in rows if r["quality"] == g])
                              for k in SUMMARY_METRICS}} for g in groups}
  return out
