"""Files in and out of `echokld.predict`: finding frames, reading them, writing masks.

Frames are read in the training convention (rows = depth, apex at the top): a NIfTI frame is
brought to the CAMUS layout by its affine (infer.orient; a CAMUS file is untouched), a .mhd
frame by the CAMUS reader, a DICOM by infer.dicom. Masks are written back in each input's
own format, shape and orientation (the reorientation undone), with its header: NIfTI affine
and header, MetaImage spacing, origin and direction; a DICOM's mask is a PNG of its pixel
grid. Nothing is ever unpickled.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import re
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image

from echokld.data import camus, files, folder, pipeline
from echokld.errors import InputError
from echokld.evaluation import overlays
from echokld.infer import dicom, orient

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
MHD_EXTENSIONS = (".mhd",)
IMAGE_EXTENSIONS = tuple(folder.IMAGE_EXTENSIONS)
EXTENSIONS = NIFTI_EXTENSIONS + MHD_EXTENSIONS + dicom.EXTENSIONS + IMAGE_EXTENSIONS
# Stems a folder walk skips: CAMUS ground truth and sequences, and this tool's own outputs.
SKIPPED_STEM = re.compile(r"(_gt|sequence|_mask|_overlay|_uncertainty)$", re.IGNORECASE)
# JPEG is lossy: 0/1 masks of JPEG inputs are written as PNG; so are DICOM inputs' masks.
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
PNG_MASK_EXTENSIONS = LOSSY_EXTENSIONS + dicom.EXTENSIONS
CAMUS_FRAME = re.compile(r"(patient\d+)_(2CH|4CH)_(ED|ES)", re.IGNORECASE)
AREA_COLUMNS = ("file", "frame", "lv_area_px", "lv_area_mm2", "disagreement")
CONTOUR_RGB = overlays.PREDICTION_RGB


@dataclasses.dataclass
class Frame:
  """One input frame in the training convention, and where its outputs go."""

  path: str
  rel_dir: str  # Sub-folder of the output folder (mirrors the input folder's layout).
  stem: str
  ext: str
  image: np.ndarray  # 2-D, rows = depth.
  spacing_mm: tuple[float, float] | None
  quality: str | None = None
  out_stem: str | None = None  # Stem of its outputs (output_stems); the input's by default.
  notes: tuple[str, ...] = ()  # Said once per command over all frames (dicom.NO_SPACING, ...).

  @property
  def name(self) -> str:
    """The input file relative to --input (the `file` column of areas.csv)."""
    return os.path.join(self.rel_dir, self.stem + self.ext)


def split_ext(name: str) -> tuple[str, str]:
  """("x", ".nii.gz") for x.nii.gz; os.path.splitext for anything else."""
  if name.lower().endswith(".nii.gz"):
    return name[:-7], name[-7:]
  return os.path.splitext(name)


def is_supported(name: str) -> bool:
  return name.lower().endswith(EXTENSIONS)


def find_inputs(root: str, exclude: str | None = None) -> list[tuple[str, str]]:
  """(path, sub-folder) of every frame under `root`; a file given by name is never skipped.

  A folder is walked recursively in sorted order; hidden folders, `exclude` (the output
  folder, when it lies inside the input) and files whose stem ends in _gt, sequence, _mask
  or _overlay are left out.
  """
  if os.path.isfile(root):
    if not is_supported(root):
      raise InputError(root, f"unsupported file type; expected one of {', '.join(EXTENSIONS)}")
    return [(root, "")]
  if not os.path.isdir(root):
    raise InputError(root, "input does not exist")
  exclude = os.path.realpath(exclude) if exclude else None
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and
                         os.path.realpath(os.path.join(dirpath, d)) != exclude)
    rel = os.path.relpath(dirpath, root)
    for name in sorted(filenames):
      if is_supported(name) and not SKIPPED_STEM.search(split_ext(name)[0]):
        found.append((os.path.join(dirpath, name), "" if rel == "." else rel))
  if not found:
    raise InputError(root, "no frames found (.nii.gz, .nii, .mhd, .dcm, .png, .jpg, .bmp, "
                     ".tif)")
  return found


class Metadata:
  """Quality (and, for plain images, spacing) of frames, from files beside them.

  CAMUS frames (patientXXXX_<view>_<phase>) take ImageQuality from Info_<view>.cfg; plain
  images take image_quality and spacing from a metadata.csv of the `folder` source format.
  Each file is parsed once. Quality is looked up only when `quality` is set (quality
  gating), so a broken cfg cannot fail a frame that does not need it.
  """

  def __init__(self, quality: bool = True):
    self.quality = quality
    self._cache: dict[str, Any] = {}

  def _cached(self, path: str, parse) -> Any:
    if path not in self._cache:
      self._cache[path] = parse(path) if os.path.isfile(path) else None
    return self._cache[path]

  def camus_quality(self, path: str) -> str | None:
    match = CAMUS_FRAME.fullmatch(split_ext(os.path.basename(path))[0])
    if not match or not self.quality:
      return None
    cfg_path = os.path.join(os.path.dirname(path), f"Info_{match.group(2).upper()}.cfg")
    cfg = self._cached(cfg_path, camus.parse_cfg)
    return None if cfg is None else cfg.get("quality")

  def table_row(self, path: str) -> dict:
    table = self._cached(os.path.join(os.path.dirname(path), "metadata.csv"),
                         folder.read_metadata)
    return (table or {}).get(split_ext(os.path.basename(path))[0], {})


def read_frame(path: str, rel_dir: str, metadata: Metadata | None = None) -> Frame:
  """Reads one frame (InputError naming the file if it is unreadable or not 2-D)."""
  files.check_name(path)
  stem, ext = split_ext(os.path.basename(path))
  lower = ext.lower()
  quality = None
  notes: tuple[str, ...] = ()
  if lower in NIFTI_EXTENSIONS:
    stored, spacing = orient.read_nifti(path)  # Reoriented to the CAMUS layout.
    if stored.ndim != 2:
      raise InputError(path, f"expected a single 2-D frame, got array shape {stored.shape}")
    image = np.ascontiguousarray(stored.T)
    if metadata is not None:
      quality = metadata.camus_quality(path)
  elif lower in MHD_EXTENSIONS:
    image, spacing = camus.read_mhd(pathlib.Path(path))
    if metadata is not None:
      quality = metadata.camus_quality(path)
  elif lower in dicom.EXTENSIONS:
    read = dicom.read_dicom(path)
    if len(read.frames) != 1:
      raise InputError(path, f"a cine loop of {len(read.frames)} frames, not a single 2-D "
                       "frame: give it alone as --input to segment it as a loop")
    image, spacing, notes = read.frames[0], read.spacing_mm, read.notes
    if metadata is not None:  # A metadata.csv beside it, as for plain images.
      row = metadata.table_row(path)
      quality = row.get("quality") if metadata.quality else None
      if spacing is None and row.get("spacing_mm") is not None:
        spacing, notes = row["spacing_mm"], tuple(n for n in notes if n != dicom.NO_SPACING)
  else:
    image, spacing = folder.read_image(path), None
    if metadata is not None:
      row = metadata.table_row(path)
      spacing = row.get("spacing_mm")
      quality = (row.get("quality") if metadata.quality else None) or \
          metadata.camus_quality(path)
  if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
    raise InputError(path, f"image dtype {image.dtype} is not a real number type")
  if not np.all(np.isfinite(image)):
    raise InputError(path, "image has NaN or infinite values")
  return Frame(path, rel_dir, stem, ext, image, spacing, quality, notes=notes)


def output_stems(inputs: Sequence[tuple[str, str]]) -> dict[str, str]:
  """Input path -> stem of its outputs, distinct within each output sub-folder.

  a.png and a.jpg would both write a_mask.png: inputs sharing a stem (case-insensitively,
  for case-insensitive file systems) get their extension appended (a_png, a_jpg).
  """
  groups: dict[tuple[str, str], list[str]] = {}
  for path, rel_dir in inputs:
    groups.setdefault((rel_dir, split_ext(os.path.basename(path))[0].lower()), []).append(path)
  out, taken = {}, set()
  for path, rel_dir in inputs:
    stem, ext = split_ext(os.path.basename(path))
    if len(groups[(rel_dir, stem.lower())]) > 1:
      stem = f"{stem}_{ext.lstrip('.').replace('.', '_')}"
    candidate, n = stem, 1
    while (rel_dir, candidate.lower()) in taken:
      n += 1
      candidate = f"{stem}_{n}"
    taken.add((rel_dir, candidate.lower()))
    out[path] = candidate
  return out


def output_names(frame: Frame) -> tuple[str, str]:
  """(mask name, overlay name) of a frame; the mask keeps the input's extension."""
  stem = frame.out_stem or frame.stem
  ext = ".png" if frame.ext.lower() in PNG_MASK_EXTENSIONS else frame.ext
  return f"{stem}_mask{ext}", f"{stem}_overlay.png"


def write_mask(frame: Frame, mask: np.ndarray, path: str) -> None:
  """Writes a 0/1 uint8 mask (training convention) in the frame's format and geometry."""
  mask = np.asarray(mask, np.uint8)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  lower = frame.ext.lower()
  if lower in NIFTI_EXTENSIONS:
    ref = nib.load(frame.path)
    data = orient.put_back(mask.T, ref)  # CAMUS (width, depth) -> the input's own layout.
    image = nib.Nifti1Image(data, ref.affine, ref.header)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, 1
    nib.save(image, path)
  elif lower in MHD_EXTENSIONS:
    ref = sitk.ImageFileReader()  # The header only: its data file was read and checked.
    ref.SetFileName(frame.path)
    ref.ReadImageInformation()
    image = sitk.GetImageFromArray(mask.reshape(ref.GetSize()[::-1]))
    image.SetSpacing(ref.GetSpacing())
    image.SetOrigin(ref.GetOrigin())
    image.SetDirection(ref.GetDirection())
    sitk.WriteImage(image, path)
  else:
    Image.fromarray(mask, mode="L").save(path)


def write_overlay(frame: Frame, mask: np.ndarray, path: str) -> None:
  """The 8-bit frame in grey with the predicted LV contour in red (training orientation)."""
  rgb = overlays.overlay(pipeline.to_uint8(np.asarray(frame.image)), [mask], [CONTOUR_RGB])
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(rgb, mode="RGB").save(path)


def patient_phase(frame: Frame, metadata: Metadata | None) -> tuple[str, str] | None:
  """(patient and view, ED|ES) of a frame, from a CAMUS name (patientXXXX_2CH_ED ->
  patientXXXX_2CH) or from the `patient`, `view` and `phase` columns of a metadata.csv
  beside it; None when unknown. Volumes are single-plane, so each view is measured apart."""
  match = CAMUS_FRAME.fullmatch(frame.stem)
  if match:
    return f"{match.group(1)}_{match.group(2).upper()}", match.group(3).upper()
  row = metadata.table_row(frame.path) if metadata is not None else {}
  patient, phase = row.get("patient"), str(row.get("phase") or "").upper()
  if not patient or phase not in ("ED", "ES"):
    return None
  return (f"{patient}_{row['view']}" if row.get("view") else str(patient)), phase


def area_row(frame: Frame, mask: np.ndarray, disagreement: float = float("nan")
             ) -> dict[str, Any]:
  """One areas.csv row: LV pixels, mm^2 when the frame's spacing is known, and the
  ensemble's disagreement (runs.member_disagreement; empty with one run)."""
  pixels = int(np.count_nonzero(mask))
  mm2 = None
  if frame.spacing_mm is not None:
    mm2 = pixels * float(frame.spacing_mm[0]) * float(frame.spacing_mm[1])
  return {"file": frame.name, "frame": frame.stem, "lv_area_px": pixels,
          "lv_area_mm2": "" if mm2 is None else f"{mm2:.4f}",
          "disagreement": "" if np.isnan(disagreement) else f"{disagreement:.4f}"}


def write_areas(rows: Sequence[dict[str, Any]], path: str,
                columns: Sequence[str] = AREA_COLUMNS) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
