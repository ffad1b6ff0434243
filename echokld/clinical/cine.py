"""A cine loop's LV: the area curve, its ED and ES frames, and the EF they give.

Over one heart cycle of an apical 2CH loop the LV is largest at end-diastole and smallest
at end-systole, so ED and ES are taken as the frames of largest and smallest LV area (the
usual image-based definition when no ECG is recorded). A running median over three frames
comes first, so that one frame's segmentation failure cannot pick the phase (a moving
average would only dilute it). With several
cycles the global extremes are taken: the loop is measured, not each beat.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Sequence

import numpy as np
from scipy import ndimage

from echokld.clinical import volumes
from echokld.errors import InputError

CURVE_COLUMNS = ("frame", "area_px", "area_mm2", "smoothed_area_px", "phase")


def area_curve(masks: np.ndarray) -> np.ndarray:
  """LV pixels per frame of a (T, H, W) stack of binary masks."""
  masks = np.asarray(masks)
  if masks.ndim != 3:
    raise InputError("cine", f"expected (frames, rows, cols) masks, got shape {masks.shape}")
  return (masks > 0).reshape(len(masks), -1).sum(1).astype(np.int64)


def find_ed_es(areas: Sequence[float], smooth: int = 3) -> tuple[int, int, np.ndarray]:
  """(ED frame, ES frame, smoothed areas): the largest and smallest smoothed LV area.

  Smoothing is a centred running median of `smooth` frames, reflected at the ends.
  """
  areas = np.asarray(areas, np.float64)
  if len(areas) < 2 or not np.all(np.isfinite(areas)):
    raise InputError("cine", f"need >= 2 frames with finite LV areas (got {len(areas)})")
  smoothed = ndimage.median_filter(areas, size=min(smooth, len(areas)), mode="reflect")
  # Ties of the median (flat extremes) go to the frame whose own area is more extreme.
  ed, es = int(np.lexsort((-areas, -smoothed))[0]), int(np.lexsort((areas, smoothed))[0])
  if smoothed[ed] <= 0:
    raise InputError("cine", "no frame has an LV")
  if ed == es:
    raise InputError("cine", "the LV area does not change over the loop")
  return ed, es, smoothed


def measure_loop(masks: np.ndarray, spacing_mm: Sequence[float] | None = None,
                 name: str = "cine") -> tuple[list[dict], list[dict]]:
  """Area curve rows (CURVE_COLUMNS) and volumes.csv rows (volumes.COLUMNS) of one loop.

  Args:
    masks: (T, H, W) binary LV masks of consecutive frames.
    spacing_mm: (row, col) pixel spacing; None gives pixel units only.
    name: the loop's name (the `patient` of the volume rows; frames are `name[t]`).
  """
  areas = area_curve(masks)
  ed, es, smoothed = find_ed_es(areas)
  pixel_mm2 = (float(spacing_mm[0]) * float(spacing_mm[1])) if spacing_mm is not None else None
  curve = [{"frame": t, "area_px": int(a),
            "area_mm2": a * pixel_mm2 if pixel_mm2 is not None else math.nan,
            "smoothed_area_px": float(smoothed[t]),
            "phase": "ED" if t == ed else "ES" if t == es else ""}
           for t, a in enumerate(areas)]
  spacing = None if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
  frames = [volumes.FrameMask(name, phase, f"{name}[{t}]", np.asarray(masks[t]) > 0, spacing)
            for phase, t in (("ED", ed), ("ES", es))]
  return curve, volumes.patient_volumes(frames)


def write_curve_csv(path: str | os.PathLike, rows: Sequence[dict]) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                       for k, v in row.items()})


def plot_curve(path: str | os.PathLike, rows: Sequence[dict], title: str = "") -> None:
  """PNG of the area curve with the ED and ES frames marked."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  in_mm2 = all(not math.isnan(r["area_mm2"]) for r in rows)
  key, unit = ("area_mm2", "mm²") if in_mm2 else ("area_px", "pixels")
  frames = [r["frame"] for r in rows]
  fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
  ax.plot(frames, [r[key] for r in rows], "-o", color="tab:blue", markersize=3)
  for row in rows:
    if row["phase"]:
      ax.axvline(row["frame"], color="tab:red" if row["phase"] == "ES" else "tab:green",
                 linestyle="--", linewidth=1)
      ax.annotate(row["phase"], (row["frame"], row[key]), textcoords="offset points",
                  xytext=(4, 4))
  ax.set_xlabel("frame")
  ax.set_ylabel(f"LV area ({unit})")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
