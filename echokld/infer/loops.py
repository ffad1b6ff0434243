"""Cine loops in prediction: every frame segmented, the LV area curve, ED, ES and the EF.

A loop is a NIfTI whose frames are its last axis (a CAMUS half-sequence, stored (width,
depth, frames); other layouts are reoriented by the affine, infer.orient), a multi-page
TIFF or a multi-frame DICOM (infer.dicom). Frames are segmented in batches like single
frames; the outputs are the mask loop in the input's format and geometry (a DICOM's as a
multi-page TIFF of its pixel grid), `<stem>_area_curve.csv` and `.png` (clinical.cine: ED
and ES as the largest and smallest LV) and `volumes.csv`.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageSequence

from echokld.clinical import cine, volumes
from echokld.data import camus, files
from echokld.errors import InputError
from echokld.infer import dicom, io, orient, outputs
from echokld.infer.runs import Run, predict_masks

TIFF_EXTENSIONS = (".tif", ".tiff")


def is_loop(path: str) -> bool:
  """Whether `path` holds several frames (a NIfTI with a frame axis, a multi-page TIFF, a
  multi-frame DICOM, a .mhd half-sequence)."""
  ext = io.split_ext(os.path.basename(path))[1].lower()
  try:
    if ext in io.NIFTI_EXTENSIONS:
      shape = [n for n in nib.load(path).shape]
      while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
      return len(shape) == 3
    if ext in TIFF_EXTENSIONS:
      with Image.open(path) as image:
        return getattr(image, "n_frames", 1) > 1
    if ext in dicom.EXTENSIONS:
      return dicom.number_of_frames(path) > 1
    if ext in io.MHD_EXTENSIONS:  # A CAMUS 2019 half-sequence: one slice per frame.
      reader = sitk.ImageFileReader()
      reader.SetFileName(path)
      reader.ReadImageInformation()
      return reader.GetDimension() == 3 and reader.GetSize()[2] > 1
  except Exception:  # pylint: disable=broad-except  # Unreadable: the frame reader says why.
    return False
  return False


def read_loop(path: str, notes: list[str] | None = None
              ) -> tuple[np.ndarray, tuple[float, float] | None]:
  """(frames (T, rows = depth, cols), spacing in mm or None) of a loop file; what the
  reader noticed (dicom.NO_SPACING, ...) is appended to `notes`."""
  files.check_name(path)
  ext = io.split_ext(os.path.basename(path))[1].lower()
  if ext in dicom.EXTENSIONS:
    read = dicom.read_dicom(path)
    frames, spacing = read.frames, read.spacing_mm
    if notes is not None:
      notes.extend(read.notes)
  elif ext in io.MHD_EXTENSIONS:
    frames, spacing = camus.read_mhd(pathlib.Path(path), frames=True)
    if frames.ndim != 3:
      raise InputError(path, f"expected (frames, depth, width), got shape {frames.shape}")
  elif ext in io.NIFTI_EXTENSIONS:
    data, spacing = orient.read_nifti(path)  # Reoriented to (width, depth, frames).
    if data.ndim != 3:
      raise InputError(path, f"expected (width, depth, frames), got array shape {data.shape}")
    frames = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
  else:
    files.check_regular(path)
    try:
      with Image.open(path) as image:
        frames = np.stack([np.asarray(page.convert("L")) for page in
                           ImageSequence.Iterator(image)])
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
      raise InputError(path, f"cannot read the loop: {exc}") from None
    spacing = None
  if not np.issubdtype(frames.dtype, np.number) or not np.all(np.isfinite(frames)):
    raise InputError(path, "the loop has non-numeric, NaN or infinite values")
  return frames, spacing


def _write_masks(path: str, masks: np.ndarray, out: str) -> None:
  ext = io.split_ext(os.path.basename(path))[1].lower()
  masks = masks.astype(np.uint8)
  if ext in io.NIFTI_EXTENSIONS:
    ref = nib.load(path)
    data = orient.put_back(np.transpose(masks, (2, 1, 0)), ref)
    image = nib.Nifti1Image(data, ref.affine, ref.header)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    nib.save(image, out)
  else:  # TIFF, DICOM and .mhd inputs: a multi-page TIFF (named .tif for DICOM and .mhd).
    pages = [Image.fromarray(m, mode="L") for m in masks]
    pages[0].save(out, save_all=True, append_images=pages[1:])


def segment_loop(runs: Sequence[Run], path: str, out_dir: str, batch_size: int,
                 overwrite: bool = False, postprocess: str = "none") -> dict[str, Any]:
  """Segments every frame of the loop at `path` into out_dir; returns the loop's summary.

  Returns:
    {"frames", "ed_frame", "es_frame", "volumes": volumes.csv rows}.
  """
  notes: list[str] = []
  frames, spacing = read_loop(path, notes)
  for note in notes:
    kind = "note" if note == dicom.COLOUR else "warning"
    print(f"{kind}: {path}: {note}", file=sys.stderr, flush=True)
  stem, ext = io.split_ext(os.path.basename(path))
  mask_ext = ".tif" if ext.lower() in dicom.EXTENSIONS + io.MHD_EXTENSIONS else ext
  names = [f"{stem}_mask{mask_ext}", f"{stem}_area_curve.csv", f"{stem}_area_curve.png",
           "volumes.csv"]
  output = outputs.OutputFolder(out_dir, overwrite)
  output.check_free("", names)
  masks = np.stack([mask for start in range(0, len(frames), batch_size)
                    for mask in predict_masks(runs, frames[start:start + batch_size],
                                              spacing_mm=spacing,
                                              postprocess=postprocess)])
  curve, rows = cine.measure_loop(masks, spacing, name=stem)

  def write(staging: str) -> None:
    _write_masks(path, masks, os.path.join(staging, names[0]))
    cine.write_curve_csv(os.path.join(staging, names[1]), curve)
    cine.plot_curve(os.path.join(staging, names[2]), curve, stem)
    volumes.write_volumes_csv(os.path.join(staging, names[3]), rows)

  output.write("", write)
  phases = {r["phase"]: r["frame"] for r in curve if r["phase"]}
  return {"frames": len(frames), "ed_frame": phases["ED"], "es_frame": phases["ES"],
          "volumes": rows}
