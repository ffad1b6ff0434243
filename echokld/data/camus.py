"""Reads a user's copy of CAMUS (NIfTI release or 2019 .mhd release) into frame records.

Both releases come back in one convention (see echokld/data/__init__.py): rows = depth with
the apex of the sector at the top, spacing as (row, col) in mm, labels uint8 in {0, 1, 2, 3}.
Every problem with the copy is an InputError naming the offending file, so a broken download
is reported in one line instead of a traceback from deep inside a reader.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import gzip
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Iterator, TypeVar

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from echokld.data import files
from echokld.errors import InputError

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
QUALITIES = ("Good", "Medium", "Poor")

NIFTI = "nifti"
MHD_2019 = "mhd2019"
TEST_PREFIX = "test-"  # 2019 testing/ reuses training's patient ids.

# database_split/subgroup_<name>.txt -> record split.
_SUBGROUPS = {"training": "train", "validation": "val", "testing": "test"}
# cfg keys whose record name is not the plain snake_case of the key.
_CFG_RENAMES = {"ED": "ed_frame", "ES": "es_frame", "ImageQuality": "quality"}
_CFG_INT_KEYS = ("ED", "ES", "NbFrame")
_CORE_KEYS = frozenset(
    ("case", "patient", "view", "phase", "quality", "image", "label", "spacing_mm", "split"))
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_PATIENT = re.compile(r"patient\d+")
_NIFTI_UNITS_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}

_ITEMSIZE = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
             sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkFloat32: 4, sitk.sitkFloat64: 8}

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclasses.dataclass(frozen=True)
class FrameSpec:
  """Where one frame lives and what its cfg says; loading it is a separate, parallel step."""

  patient: str
  view: str
  phase: str
  release: str
  image_path: pathlib.Path
  label_path: pathlib.Path | None
  meta: dict[str, Any]


def read_camus(root: str | os.PathLike, view: str = "2CH",
               workers: int | None = None) -> list[dict[str, Any]]:
  """Returns one record per ED/ES frame of `view`, sorted by patient then phase."""
  return list(iter_camus(root, view=view, workers=workers))


def iter_camus(root: str | os.PathLike, view: str = "2CH",
               workers: int | None = None) -> Iterator[dict[str, Any]]:
  """Yields the records of read_camus in order, loading a few frames ahead on threads.

  Streaming keeps memory flat for the TFDS writer; the folder is checked (files present, cfg
  valid) before the first frame is read, so a broken copy fails fast.
  """
  specs = list_frames(root, view=view)
  workers = workers or min(8, (os.cpu_count() or 1) + 2)
  yield from ordered_map(load_frame, specs, workers=workers, window=4 * workers)


def list_frames(root: str | os.PathLike, view: str = "2CH") -> list[FrameSpec]:
  """Finds every ED/ES frame of `view` and parses the cfg files, reading no image."""
  view = check_view(view)
  release, folders, split_dir = _find_layout(pathlib.Path(root))
  split_of = read_subgroups(split_dir) if split_dir is not None else {}
  specs = []
  for folder, folder_split, has_gt, prefix in folders:
    for patient_dir in sorted(p for p in folder.iterdir()
                              if p.is_dir() and _PATIENT.fullmatch(p.name)):
      specs.extend(_patient_frames(patient_dir, view, release, has_gt, prefix,
                                   split_of.get(patient_dir.name, folder_split)))
  if not specs:
    raise InputError(root, "no patientXXXX folders found in this CAMUS folder")
  return specs


def load_frame(spec: FrameSpec) -> dict[str, Any]:
  """Reads one frame (image and, when present, label) into a record."""
  read = read_nifti if spec.release == NIFTI else read_mhd
  image, spacing = read(spec.image_path)
  label = None
  if spec.label_path is not None:
    label, _ = read(spec.label_path)
    if label.shape != image.shape:
      raise InputError(spec.label_path,
                       f"label shape {label.shape} differs from image shape {image.shape}")
    label = _check_label(spec.label_path, label)
  record = {
      "case": f"{spec.patient}_{spec.view}_{spec.phase}",
      "patient": spec.patient,
      "view": spec.view,
      "phase": spec.phase,
      "image": image,
      "label": label,
      "spacing_mm": spacing,
  }
  record.update(spec.meta)
  return record


def parse_cfg(path: str | os.PathLike) -> dict[str, Any]:
  """Parses an Info_<view>.cfg (`Key: value` lines) into lower_snake_case record fields.

  ED/ES become ed_frame/es_frame (1-based), ImageQuality becomes quality; numbers become
  int/float, anything else stays the raw (stripped) string.
  """
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding="utf-8", errors="strict")
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(path, f"cannot read cfg: {_one_line(e)}") from e
  fields: dict[str, Any] = {}
  for number, line in enumerate(text.splitlines(), start=1):
    line = line.strip()
    if not line:
      continue
    key, sep, value = line.partition(":")
    key, value = key.strip(), value.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_ ]*", key):
      raise InputError(path, f"line {number} is not 'Key: value': {line[:80]!r}")
    name = _cfg_name(key)
    if name in fields:
      raise InputError(path, f"line {number} repeats key {key!r}")
    if key == "ImageQuality":
      fields[name] = _check_quality(path, value)
    elif key in _CFG_INT_KEYS:
      if not re.fullmatch(r"\d+", value):
        raise InputError(path, f"line {number}: {key} must be a frame number, got {value!r}")
      fields[name] = int(value)
    else:
      fields[name] = _parse_value(value)
  return fields


def read_subgroups(split_dir: str | os.PathLike) -> dict[str, str]:
  """Maps patient -> "train"/"val"/"test" from database_split/subgroup_*.txt."""
  split_dir = pathlib.Path(split_dir)
  split_of: dict[str, str] = {}
  for subgroup, split in _SUBGROUPS.items():
    path = split_dir / f"subgroup_{subgroup}.txt"
    if not path.is_file():
      continue
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
      name = line.strip()
      if not name:
        continue
      if re.fullmatch(r"\d+", name):
        name = f"patient{int(name):04d}"
      if not _PATIENT.fullmatch(name):
        raise InputError(path, f"line {number} is not a patient id: {name[:80]!r}")
      if split_of.get(name, split) != split:
        raise InputError(path, f"{name} is also listed in the {split_of[name]} subgroup")
      split_of[name] = split
  return split_of


def ordered_map(fn: Callable[[_T], _R], items: Iterable[_T], workers: int,
                window: int) -> Iterator[_R]:
  """Like ThreadPoolExecutor.map, but with at most `window` results waiting in memory."""
  items = iter(items)
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
  pending: collections.deque[concurrent.futures.Future[_R]] = collections.deque()
  try:
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= window:
        break
    while pending:
      result = pending.popleft().result()
      for item in items:
        pending.append(pool.submit(fn, item))
        break
      yield result
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def check_view(view: str) -> str:
  """Returns "2CH" or "4CH" for any case of it; anything else is a user error."""
  normalized = str(view).upper()
  if normalized not in VIEWS:
    raise InputError("view", f"unknown CAMUS view {view!r}; expected one of {', '.join(VIEWS)}")
  return normalized


def _find_layout(
    root: pathlib.Path
) -> tuple[str, list[tuple[pathlib.Path, str | None, bool, str]], pathlib.Path | None]:
  """Returns (release, [(patients folder, split, has gt, id prefix)], split folder).

  The 2019 testing/ folder numbers its patients patient0001-0050 again, so they get the
  prefix "test-" to keep `patient` and `case` unique and patient-level splits correct.
  """
  if not root.is_dir():
    raise InputError(root, "CAMUS folder does not exist" if not root.exists()
                     else "is not a folder; expected the CAMUS folder")
  if (root / "database_nifti").is_dir():
    nifti_dir = root / "database_nifti"
  elif root.name == "database_nifti" or any(root.glob("patient*/patient*.nii.gz")):
    nifti_dir = root
  else:
    nifti_dir = None
  if nifti_dir is not None:
    split_dir = nifti_dir.parent / "database_split"
    return NIFTI, [(nifti_dir, None, True, "")], split_dir if split_dir.is_dir() else None
  folders = []
  if (root / "training").is_dir():
    folders.append((root / "training", None, True, ""))
  if (root / "testing").is_dir():
    folders.append((root / "testing", "test", False, TEST_PREFIX))
  if not folders:
    raise InputError(root, "not a CAMUS folder: expected database_nifti/ (NIfTI release) "
                     "or training/ and testing/ (2019 release)")
  return MHD_2019, folders, None


def _patient_frames(patient_dir: pathlib.Path, view: str, release: str, has_gt: bool,
                    prefix: str, split: str | None) -> list[FrameSpec]:
  patient = patient_dir.name
  cfg_path = patient_dir / f"Info_{view}.cfg"
  if not cfg_path.is_file():
    raise InputError(cfg_path, f"missing: {patient} has no {view} cfg file")
  cfg = parse_cfg(cfg_path)
  meta = {"quality": cfg.pop("quality", None), "split": split}
  meta.update({k if k not in _CORE_KEYS else f"cfg_{k}": v for k, v in cfg.items()})
  suffix = ".nii.gz" if release == NIFTI else ".mhd"
  specs = []
  for phase in PHASES:
    stem = patient_dir / f"{patient}_{view}_{phase}"
    image_path = stem.with_name(stem.name + suffix)
    if not image_path.is_file():
      raise InputError(image_path, f"missing: {patient} has no {view} {phase} frame")
    label_path = stem.with_name(stem.name + "_gt" + suffix)
    if not label_path.is_file():
      if has_gt:
        raise InputError(label_path, f"missing ground truth for {patient} {view} {phase}")
      label_path = None
    specs.append(FrameSpec(prefix + patient, view, phase, release, image_path, label_path,
                           dict(meta)))
  return specs


def read_nifti(path: pathlib.Path) -> tuple[np.ndarray, tuple[float, float]]:
  """Reads a CAMUS NIfTI frame; the release stores it (width, depth), so it is transposed."""
  data, spacing = read_nifti_stored(path)
  if data.ndim != 2 and not (frames and data.ndim == 3):
    raise InputError(path, f"expected a single 2-D frame, got array shape {data.shape}")
  return files.check_finite(np.ascontiguousarray(data.T), path), spacing


def read_nifti_stored(path: pathlib.Path) -> tuple[np.ndarray, tuple[float, float]]:
  """A NIfTI image as stored ((width, depth[, frames]), trailing 1s dropped) and its
  (row, col) = (depth, width) spacing in mm. A CAMUS half-sequence has the frames last."""
  files.check_regular(path)
  try:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
      raw = gzip.decompress(raw)  # In one call (not nib.load's stream): threads overlap.
    image = nib.Nifti1Image.from_bytes(raw)
    data = np.asanyarray(image.dataobj)
    zooms = image.header.get_zooms()
    unit = image.header.get_xyzt_units()[0]
  except Exception as e:  # nibabel/zlib raise many types for a damaged file.
    raise InputError(path, f"cannot read NIfTI image: {_one_line(e)}") from e
  while data.ndim > 2 and data.shape[-1] == 1:
    data = data[..., 0]
  # pixdim is float32: keep its shortest decimal (0.31, not 0.3100000023841858).
  row, col = (float(str(np.float32(z))) * _NIFTI_UNITS_TO_MM.get(unit, 1.0)
              for z in (zooms[1], zooms[0]))
  return data, files.check_spacing((row, col), path)


def read_mhd(path: pathlib.Path, frames: bool = False
             ) -> tuple[np.ndarray, tuple[float, float]]:
  """Reads a 2019 .mhd/.raw frame (a 3-D volume with one slice) with SimpleITK; with
  `frames`, a half-sequence too: (T, depth, width), one slice per frame."""
  files.check_mhd_data_file(path)
  reader = sitk.ImageFileReader()
  reader.SetFileName(str(path))
  try:
    reader.ReadImageInformation()
    _check_raw_size(path, reader)
    image = reader.Execute()
    data = sitk.GetArrayFromImage(image)  # (z, y, x) = (1, depth, width)
    spacing = image.GetSpacing()  # (x, y, z) = (col, row, slice)
  except InputError:
    raise
  except Exception as e:  # SimpleITK raises RuntimeError with a multi-line ITK trace.
    raw = path.with_suffix(".raw")
    if reader.GetSize() and not raw.exists() and not path.with_suffix(".zraw").exists():
      raise InputError(raw, f"missing: the data file of {path.name}") from e
    raise InputError(path, f"cannot read MetaImage: {_itk_message(e)}") from e
  while data.ndim > 2 and data.shape[0] == 1:
    data = data[0]
  if data.ndim != 2 and not (frames and data.ndim == 3):
    raise InputError(path, f"expected a single 2-D frame, got array shape {data.shape}")
  return (files.check_finite(data, path),
          files.check_spacing((float(spacing[1]), float(spacing[0])), path))


def _check_raw_size(path: pathlib.Path, reader: sitk.ImageFileReader) -> None:
  """Reports a short .raw in one line; ITK's MetaIO would also print to stderr on it."""
  raw = path.with_suffix(".raw")
  if not raw.is_file():
    return  # other data file names (or none) are left to ITK.
  itemsize = _ITEMSIZE.get(reader.GetPixelID())
  if itemsize is None:
    return
  needed = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents() * itemsize
  size = raw.stat().st_size
  if size < needed:
    with raw.open("rb") as f:
      if f.read(1) == b"\x78":
        return  # a zlib stream (CompressedData = True): shorter by design.
    raise InputError(raw, f"truncated: {size} bytes where {path.name} needs {needed}")


def _check_label(path: pathlib.Path, label: np.ndarray) -> np.ndarray:
  if label.size == 0:
    return label.astype(np.uint8)
  if not np.issubdtype(label.dtype, np.number) or np.issubdtype(label.dtype, np.complexfloating):
    raise InputError(path, f"label dtype {label.dtype} is not numeric")
  if not np.issubdtype(label.dtype, np.integer) and not np.array_equal(label, np.round(label)):
    raise InputError(path, "label has non-integer values; expected {0, 1, 2, 3}")
  low, high = label.min(), label.max()
  if low < 0 or high > 3:
    bad = np.unique(label[(label < 0) | (label > 3)])[:5].tolist()
    raise InputError(path, f"label values {bad} outside {{0, 1, 2, 3}}")
  return label.astype(np.uint8, copy=False)


def _check_quality(path: pathlib.Path, value: str) -> str:
  for quality in QUALITIES:
    if value.lower() == quality.lower():
      return quality
  raise InputError(path, f"unknown ImageQuality {value!r}; expected Good, Medium or Poor")


def _cfg_name(key: str) -> str:
  if key in _CFG_RENAMES:
    return _CFG_RENAMES[key]
  name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key.strip())
  return re.sub(r"[\s_]+", "_", name).lower()


def _parse_value(value: str) -> int | float | str:
  if _NUMBER.fullmatch(value):
    return int(value) if re.fullmatch(r"[-+]?\d+", value) else float(value)
  return value


def _itk_message(error: BaseException) -> str:
  """Keeps the reason of an ITK exception, without its source location and object address."""
  match = re.search(r"(?:ITK |sitk::)ERROR:(.*)", str(error), flags=re.DOTALL)
  text = match.group(1) if match else str(error)
  return _one_line(re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", text))


def _one_line(error: BaseException | str) -> str:
  text = " ".join(str(error).split()) or type(error).__name__
  return text if len(text) <= 200 else text[:197] + "..."
