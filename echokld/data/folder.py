"""The `folder` source: images/<case>.png, labels/<case>.png and an optional metadata.csv.

metadata.csv columns: `case` (required), and optionally `split` (train/val/test), `patient`,
`view`, `phase`, `image_quality` (Good/Medium/Poor or empty), `spacing_row_mm`,
`spacing_col_mm`. Without it the patient is the case name up to its first underscore.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from echokld.data import files
from echokld.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_VALUES = (0, 1, 2, 3)
_SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val",
           "valid": "val", "test": "test", "testing": "test", "": None}
_QUALITIES = {"good": "Good", "medium": "Medium", "poor": "Poor", "": None}


def read_image(path: str) -> np.ndarray:
  """A 2-D grayscale array from an image file, or an InputError naming the file.

  Only regular files are opened (a FIFO would hang), and PIL's decompression-bomb limit
  (Image.MAX_IMAGE_PIXELS, checked from the header before decoding) stays in force:
  a 20000x20000 PNG is one line, not a traceback.
  """
  files.check_name(path)
  files.check_regular(path)
  try:
    with Image.open(path) as img:
      img.load()
      if img.mode not in ("L", "I;16", "I", "F", "P"):
        img = img.convert("L")
      array = np.asarray(img)
  except Image.DecompressionBombError as exc:
    raise InputError(path, f"image refused as too large ({str(exc).rstrip('.')})") from None
  except (OSError, ValueError, SyntaxError) as exc:
    raise InputError(path, f"unreadable image ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
  if array.ndim != 2:
    raise InputError(path, f"expected a 2-D grayscale image, got shape {array.shape}")
  return files.check_finite(array, path)


def check_label(label: np.ndarray, image_shape: tuple[int, ...], path: str) -> np.ndarray:
  """Checks a label map against its image: same shape, values in {0, 1, 2, 3}."""
  if label.shape != tuple(image_shape):
    raise InputError(path, f"label shape {label.shape} differs from image shape "
                     f"{tuple(image_shape)}")
  bad = np.setdiff1d(np.unique(label), LABEL_VALUES)
  if bad.size:
    raise InputError(path, f"label values {bad[:5].tolist()} outside {{0, 1, 2, 3}}")
  return label.astype(np.uint8)


def read_metadata(path: str) -> dict[str, dict]:
  """case -> fields of a metadata.csv (a UTF-8 BOM, as spreadsheets write, is accepted).

  A case listed twice, or a spacing that is not finite and positive, is an InputError.
  """
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.DictReader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as exc:
    raise InputError(path, f"unreadable metadata ({exc})") from None
  if rows and "case" not in rows[0]:
    raise InputError(path, "metadata.csv has no 'case' column")
  table, first_line = {}, {}
  for line, row in enumerate(rows, start=2):
    split = (row.get("split") or "").strip().lower()
    quality = (row.get("image_quality") or row.get("quality") or "").strip().lower()
    if split not in _SPLITS:
      raise InputError(path, f"line {line}: unknown split {row['split']!r}")
    if quality not in _QUALITIES:
      raise InputError(path, f"line {line}: unknown image_quality {quality!r}")
    spacing = None
    if row.get("spacing_row_mm") and row.get("spacing_col_mm"):
      try:
        spacing = (float(row["spacing_row_mm"]), float(row["spacing_col_mm"]))
      except ValueError:
        raise InputError(path, f"line {line}: spacing is not a number") from None
      files.check_spacing(spacing, f"{path}: line {line}")
    case = (row["case"] or "").strip()
    if case in first_line:
      raise InputError(path, f"line {line}: case {case!r} is already on line "
                       f"{first_line[case]}")
    first_line[case] = line
    table[case] = dict(split=_SPLITS[split], quality=_QUALITIES[quality],
                                      spacing_mm=spacing, patient=row.get("patient"),
                                      view=row.get("view"), phase=row.get("phase"))
  return table


def _case_files(folder: str) -> dict[str, str]:
  out = {}
  for name in sorted(os.listdir(folder)):
    if name.lower().endswith(IMAGE_EXTENSIONS):
      files.check_name(os.path.join(folder, name))
      out[os.path.splitext(name)[0]] = os.path.join(folder, name)
  return out


def read_folder(root: str) -> list[dict]:
  """Reads every labelled frame of a folder source into frame records."""
  if not os.path.isdir(root):
    raise InputError(root, "data folder does not exist")
  image_dir, label_dir = os.path.join(root, "images"), os.path.join(root, "labels")
  if not os.path.isdir(image_dir):
    raise InputError(image_dir, "missing folder: expected images/<case>.png and "
                     "labels/<case>.png")
  images = _case_files(image_dir)
  if not images:
    raise InputError(image_dir, "no images (.png, .jpg, .tif) found")
  labels = _case_files(label_dir) if os.path.isdir(label_dir) else {}
  for case in images:
    if case not in labels:
      raise InputError(os.path.join(label_dir, case + ".png"), "missing label for image "
                       f"{os.path.basename(images[case])}")
  meta_path = os.path.join(root, "metadata.csv")
  metadata = read_metadata(meta_path) if os.path.exists(meta_path) else {}

  def load(case: str) -> dict:
    image = read_image(images[case])
    label = check_label(read_image(labels[case]), image.shape, labels[case])
    meta = metadata.get(case, {})
    parts = case.split("_")
    return dict(case=case, patient=meta.get("patient") or parts[0],
                view=meta.get("view") or (parts[1] if len(parts) > 2 else "2CH"),
                phase=meta.get("phase") or (parts[-1] if len(parts) > 1 else ""),
                quality=meta.get("quality"), image=image, label=label,
                spacing_mm=meta.get("spacing_mm"), split=meta.get("split"))

  with ThreadPoolExecutor(max_workers=8) as pool:
    records = list(pool.map(load, images))
  check_patient_splits(records, meta_path)
  return records


def check_patient_splits(records: list[dict], where: str) -> None:
  """InputError if one patient's frames are in two splits (train/val/test must not share
  a patient: that would leak the patient into validation or test)."""
  seen: dict[str, tuple[str, str]] = {}
  for r in records:
    if r.get("split") is None:
      continue
    first = seen.setdefault(r["patient"], (r["split"], r["case"]))
    if first[0] != r["split"]:
      raise InputError(where, f"patient {r['patient']!r} is in two splits: {first[1]} in "
                       f"{first[0]}, {r['case']} in {r['split']}")
