"""LV volumes and ejection fraction from apical two-chamber masks, single plane.

Two formulas, both on the long axis L from the apex to the midpoint of the mitral annulus
(landmarks found from the mask alone, see geometry.py):

- area-length: V = 8 A^2 / (3 pi L), A the LV area. For an ellipse of semi-axes a (along L)
  and b this is the prolate spheroid's 4/3 pi a b^2.
- method of disks (Simpson's rule): L is cut into 20 slabs of height h = L / 20; the disk of
  slab i has the diameter D_i of the mask's chord perpendicular to the axis through the
  slab's middle, V = sum(pi / 4 D_i^2 h). CAMUS computes the biplane version,
  pi / 4 sum(a_i b_i) h with a_i and b_i from the 2CH and 4CH views; with one view a_i = b_i.

Volumes are in mL when the pixel spacing (mm) is known, else in cubic pixels (isotropic
pixels of side 1 assumed). EF = (EDV - ESV) / EDV in percent; it is a ratio, so a spacing
common to both frames cancels exactly when pixels are isotropic.

A mask with no LV pixels, or too small to have a long axis, raises InputError in the
per-frame functions; in the per-patient table (`patient_volumes`) it leaves that volume and
the EF empty with a note, and so does a missing ED or ES frame, so one bad frame does not
stop a folder's table.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
from typing import Iterable, Sequence

import numpy as np

from echokld.clinical import geometry
from echokld.errors import InputError

METHODS = ("area_length", "disks")
N_DISKS = 20
PHASES = ("ED", "ES")
COLUMNS = ("patient", "method", "ed_frame", "es_frame", "edv_ml", "esv_ml", "ef_percent",
           "edv_px3", "esv_px3", "ef_px_percent", "note")
MM3_PER_ML = 1000.0


def area_length_volume(landmarks: geometry.Landmarks) -> float:
  """8 A^2 / (3 pi L), in cubic spacing units."""
  if landmarks.length <= 0:
    return float("nan")
  return 8.0 * landmarks.area ** 2 / (3.0 * math.pi * landmarks.length)


def disk_diameters(landmarks: geometry.Landmarks, n_disks: int = N_DISKS) -> np.ndarray:
  """Chord of the mask across the axis at the middle of each of `n_disks` slabs (apex last)."""
  base_mid = landmarks.to_units(landmarks.base_mid)
  axis = landmarks.axis
  across = np.array([-axis[1], axis[0]])
  field = landmarks.mask.astype(np.float64)
  height = landmarks.length / n_disks
  return np.array([
      geometry.chord_length(field, landmarks.spacing, base_mid + (i + 0.5) * height * axis,
                            across) for i in range(n_disks)])


def disks_volume(landmarks: geometry.Landmarks, n_disks: int = N_DISKS) -> float:
  """Method of disks, sum(pi / 4 D_i^2 h), in cubic spacing units."""
  if landmarks.length <= 0:
    return float("nan")
  diameters = disk_diameters(landmarks, n_disks)
  return float(np.sum(math.pi / 4.0 * diameters ** 2) * landmarks.length / n_disks)


def volumes_of(landmarks: geometry.Landmarks) -> dict[str, float]:
  """{method: volume} in cubic spacing units, for every method of METHODS."""
  return {"area_length": area_length_volume(landmarks), "disks": disks_volume(landmarks)}


def frame_volumes(mask: np.ndarray, spacing_mm: Sequence[float] | None = None,
                  name: str = "mask") -> dict[str, float]:
  """{method: volume} of one mask: mL if `spacing_mm` (row, col) is given, else cubic pixels."""
  landmarks = geometry.find_landmarks(mask, spacing_mm, name=name)
  scale = MM3_PER_ML if spacing_mm is not None else 1.0
  return {method: volume / scale for method, volume in volumes_of(landmarks).items()}


def ejection_fraction(edv: float, esv: float) -> float:
  """(EDV - ESV) / EDV in percent; NaN unless EDV > 0 and both are finite."""
  if not (math.isfinite(edv) and math.isfinite(esv)) or edv <= 0:
    return float("nan")
  return 100.0 * (edv - esv) / edv


@dataclasses.dataclass(frozen=True)
class FrameMask:
  """One LV mask of a patient at end-diastole or end-systole."""

  patient: str
  phase: str  # "ED" or "ES".
  frame: str  # Names the frame in volumes.csv and in errors.
  mask: np.ndarray
  spacing_mm: tuple[float, float] | None = None


def group_by_patient(frames: Iterable[FrameMask]) -> dict[str, dict[str, FrameMask]]:
  """{patient: {phase: frame}}; InputError for an unknown phase or two frames of one phase."""
  patients: dict[str, dict[str, FrameMask]] = collections.defaultdict(dict)
  for frame in frames:
    phase = str(frame.phase).upper()
    if phase not in PHASES:
      raise InputError(frame.frame, f"phase must be ED or ES, got {frame.phase!r}")
    if phase in patients[frame.patient]:
      raise InputError(frame.frame, f"patient {frame.patient} has two {phase} frames: "
                       f"{patients[frame.patient][phase].frame} and {frame.frame}")
    patients[frame.patient][phase] = frame
  return dict(patients)


def measure(frame: FrameMask | None) -> tuple[dict, dict, str]:
  """({method: mL}, {method: px^3}, note) of one frame; empty dicts and a note if unusable."""
  if frame is None:
    return {}, {}, ""
  try:
    in_pixels = volumes_of(geometry.find_landmarks(frame.mask, None, name=frame.frame))
    in_ml = {}
    if frame.spacing_mm is not None:
      rows, cols = geometry.check_spacing(frame.spacing_mm, frame.frame)
      if rows == cols:  # Isotropic: the same landmarks, scaled.
        in_ml = {m: v * rows ** 3 / MM3_PER_ML for m, v in in_pixels.items()}
      else:
        landmarks = geometry.find_landmarks(frame.mask, frame.spacing_mm, name=frame.frame)
        in_ml = {m: v / MM3_PER_ML for m, v in volumes_of(landmarks).items()}
  except InputError as error:
    return {}, {}, str(error)
  return in_ml, in_pixels, ""


def patient_volumes(frames: Iterable[FrameMask]) -> list[dict]:
  """One row (COLUMNS) per patient and method, patients sorted.

  EF needs both frames: a missing frame, or one whose mask is empty, leaves its volume and
  the EF empty and says why in `note`. `ef_percent` needs the spacing of both frames;
  `ef_px_percent` is always computed, with isotropic pixels.
  """
  rows = []
  for patient, phases in sorted(group_by_patient(frames).items()):
    ed, es = phases.get("ED"), phases.get("ES")
    (ed_ml, ed_px, ed_note), (es_ml, es_px, es_note) = measure(ed), measure(es)
    notes = [note for note in (ed_note, es_note) if note]
    notes += [f"no {phase} frame" for phase, frame in (("ED", ed), ("ES", es)) if frame is None]
    if ed is not None and es is not None and not (ed_ml and es_ml) and not notes:
      notes.append("no pixel spacing: volumes in px^3 only")
    for method in METHODS:
      edv_ml, esv_ml = ed_ml.get(method, math.nan), es_ml.get(method, math.nan)
      edv_px, esv_px = ed_px.get(method, math.nan), es_px.get(method, math.nan)
      rows.append({
          "patient": patient, "method": method,
          "ed_frame": ed.frame if ed else "", "es_frame": es.frame if es else "",
          "edv_ml": edv_ml, "esv_ml": esv_ml, "ef_percent": ejection_fraction(edv_ml, esv_ml),
          "edv_px3": edv_px, "esv_px3": esv_px,
          "ef_px_percent": ejection_fraction(edv_px, esv_px), "note": "; ".join(notes)})
  return rows


def write_volumes_csv(path: str | os.PathLike, rows: Sequence[dict]) -> None:
  """Writes `rows` (patient_volumes) as CSV; NaN becomes an empty cell."""

  def cell(value):
    if isinstance(value, float):
      return "" if math.isnan(value) else f"{value:.6g}"
    return value

  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
      writer.writerow({key: cell(row[key]) for key in COLUMNS})
