"""DICOM ultrasound frames and cine loops for `echokld.predict`, read with pydicom.

A file holds one frame or, with NumberOfFrames > 1, a loop. Pixels come back as the
model's grayscale frames (rows = the DICOM rows, depth in an ultrasound image): RGB and
YBR frames (colour Doppler, screen captures) become their ITU-R 601 luminance, as PIL's
"L" does for colour PNGs, and MONOCHROME1 (low = white) is inverted.

Pixel spacing, in this order of trust:
  1. the Sequence of Ultrasound Regions (0018,6011): the first region whose
     RegionSpatialFormat is 1 (a 2-D tissue image; a region without that tag counts too)
     and whose PhysicalUnitsX/YDirection are both 3 (cm): PhysicalDeltaY/X x 10 mm. Scanners
     put the B-mode sector first; later regions are Doppler or M-mode strips whose units
     are seconds or cm/s.
  2. PixelSpacing (0028,0030) = (row, col) in mm.
  3. none: areas and volumes stay in pixels (infer.io first tries a metadata.csv beside the
     file; the caller warns once).
Nothing is unpickled and nothing is written; a file that is not DICOM, is truncated or is
compressed in a syntax no installed decoder handles is an InputError naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from typing import Any

import numpy as np

from echokld.data import files
from echokld.errors import InputError

EXTENSIONS = (".dcm",)
CM = 3  # PhysicalUnitsX/YDirection: 3 = cm (PS3.3 C.8.5.5.1.15).
TISSUE_2D = 1  # RegionSpatialFormat: 1 = 2-D (tissue or flow).
MAX_VALUES = 1 << 30  # Rows x Columns x frames x samples read at most (a decompression bomb).
NO_SPACING = ("has no pixel spacing (no ultrasound region in cm, no PixelSpacing): areas "
              "and volumes in pixels only")
COLOUR = "is colour (RGB/YBR): segmented as its grayscale luminance"


@dataclasses.dataclass
class DicomImage:
  """Frames of one DICOM file, grayscale, and what the file said about them."""

  frames: np.ndarray  # (T, rows, cols); T = 1 for a single frame.
  spacing_mm: tuple[float, float] | None  # (row, col).
  spacing_source: str  # "ultrasound region <i>", "PixelSpacing" or "none".
  colour: bool

  @property
  def notes(self) -> tuple[str, ...]:
    return ((NO_SPACING,) if self.spacing_mm is None else ()) + ((COLOUR,) if self.colour
                                                                 else ())


def _one_line(exc: Exception, limit: int = 200) -> str:
  text = " ".join(f"{type(exc).__name__}: {exc}".split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def _quiet():
  """pydicom's warnings and log lines off: its decoders log a traceback before raising, and
  a reader that recovers (implicit VR where explicit was declared) warns in two lines; the
  caller reports a failure in one."""
  logger = logging.getLogger("pydicom")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      yield
  finally:
    logger.setLevel(level)


def _pydicom():
  try:
    import pydicom  # pylint: disable=import-outside-toplevel  # Only DICOM users need it.
  except ImportError:
    raise InputError("pydicom", "DICOM input needs pydicom: pip install 'pydicom>=2.4'") from None
  return pydicom


def _dataset(path: str, header_only: bool = False) -> Any:
  """The pydicom Dataset of `path`; InputError for a non-DICOM or damaged file."""
  files.check_name(path)
  files.check_regular(path)
  pydicom = _pydicom()
  try:
    with _quiet():
      return pydicom.dcmread(path, stop_before_pixels=header_only)
  except pydicom.errors.InvalidDicomError:
    raise InputError(path, "not a DICOM file (no 'DICM' preamble)") from None
  except Exception as exc:  # pylint: disable=broad-except  # pydicom raises many types.
    raise InputError(path, f"cannot read DICOM: {_one_line(exc)}") from None


def number_of_frames(path: str) -> int:
  """NumberOfFrames from the header alone (1 when absent); pixels are not decoded."""
  ds = _dataset(path, header_only=True)
  try:
    with _quiet():
      return max(int(getattr(ds, "NumberOfFrames", 1) or 1), 1)
  except (TypeError, ValueError):
    raise InputError(path, f"NumberOfFrames {ds.NumberOfFrames!r} is not a number") from None


def _region_spacing(ds: Any) -> tuple[tuple[float, float], str] | None:
  """((row, col) mm, "ultrasound region <i>") of the first 2-D region in cm, or None."""
  for i, region in enumerate(getattr(ds, "SequenceOfUltrasoundRegions", None) or []):
    spatial = getattr(region, "RegionSpatialFormat", TISSUE_2D)
    if spatial != TISSUE_2D:
      continue
    units = (getattr(region, "PhysicalUnitsXDirection", None),
             getattr(region, "PhysicalUnitsYDirection", None))
    deltas = (getattr(region, "PhysicalDeltaY", None), getattr(region, "PhysicalDeltaX", None))
    if units != (CM, CM) or None in deltas:
      continue
    return (abs(float(deltas[0])) * 10.0, abs(float(deltas[1])) * 10.0), \
        f"ultrasound region {i}"
  return None


def spacing(ds: Any, path: str) -> tuple[tuple[float, float] | None, str]:
  """((row, col) spacing in mm or None, where it came from); see the module docstring."""
  try:
    found = _region_spacing(ds)
    if found is None and getattr(ds, "PixelSpacing", None):
      row, col = (float(v) for v in ds.PixelSpacing[:2])
      found = (row, col), "PixelSpacing"
  except (TypeError, ValueError, AttributeError) as exc:
    raise InputError(path, f"unreadable pixel spacing tags ({exc})") from None
  if found is None:
    return None, "none"
  return files.check_spacing(found[0], path), found[1]


def _check_size(ds: Any, path: str) -> None:
  try:
    dims = [int(getattr(ds, key, 1) or 1) for key in ("Rows", "Columns", "NumberOfFrames",
                                                        "SamplesPerPixel")]
  except (TypeError, ValueError):
    raise InputError(path, "Rows, Columns, NumberOfFrames or SamplesPerPixel is not a "
                     "number") from None
  if "PixelData" not in ds:
    raise InputError(path, "no pixel data (a DICOM without an image: a report or SR?)")
  if min(dims) < 1 or int(np.prod(dims, dtype=np.int64)) > MAX_VALUES:
    raise InputError(path, f"declared image size {dims[0]}x{dims[1]}, {dims[2]} frames, "
                     f"{dims[3]} samples is empty or over {MAX_VALUES} values; refused")


def _pixels(ds: Any, path: str) -> np.ndarray:
  """Decoded pixels, colour as RGB; InputError naming the transfer syntax when undecodable."""
  pydicom = _pydicom()
  syntax = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
  try:
    with _quiet():
      pixels = np.asarray(ds.pixel_array)  # pydicom >= 3 returns YBR as RGB by itself.
  except Exception as exc:  # pylint: disable=broad-except  # Missing plugin, bad length, ...
    name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
    detail = _one_line(exc)
    if syntax is not None and getattr(syntax, "is_compressed", False):
      why = (f"compressed ({name}) and no installed decoder read it ({detail}); install "
             "one (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or convert "
             "the file to uncompressed DICOM")
    else:
      why = f"cannot decode the pixels ({detail})"
    raise InputError(path, why) from None
  photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
  major = int(pydicom.__version__.split(".")[0])
  if (major < 3 and photometric.startswith("YBR") and pixels.ndim >= 3
      and not getattr(syntax, "is_compressed", False)):  # pydicom 2.x leaves it YCbCr.
    from pydicom.pixel_data_handlers.util import convert_color_space  # pylint: disable=import-outside-toplevel
    pixels = convert_color_space(pixels, photometric, "RGB")
  return pixels


def _luminance(rgb: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B), rounded; uint8 stays uint8."""
  luma = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  if np.issubdtype(rgb.dtype, np.integer):
    info = np.iinfo(rgb.dtype)
    return np.clip(np.rint(luma), info.min, info.max).astype(rgb.dtype)
  return luma.astype(rgb.dtype)


def read_dicom(path: str) -> DicomImage:
  """The frames (T, rows, cols), spacing and colour flag of a DICOM file.

  Raises:
    InputError: naming `path`, for anything that is not an uncompressed or decodable
      DICOM image of real numbers.
  """
  with _quiet():  # Tag values are parsed (and warned about) lazily, on access.
    return _read(path)


def _read(path: str) -> DicomImage:
  ds = _dataset(path)
  _check_size(ds, path)
  frames_declared = max(int(getattr(ds, "NumberOfFrames", 1) or 1), 1)  # _check_size: ints.
  samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
  pixels = _pixels(ds, path)
  colour = samples > 1
  if colour:  # (rows, cols, 3) or (T, rows, cols, 3) after pydicom's planar handling.
    pixels = _luminance(pixels)
  if frames_declared == 1 and pixels.ndim == 2:
    pixels = pixels[None]
  if pixels.ndim != 3:
    raise InputError(path, f"expected (frames, rows, cols) pixels, got shape {pixels.shape}")
  if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
    pixels = _invert(pixels, ds)
  if not np.issubdtype(pixels.dtype, np.number) or np.iscomplexobj(pixels):
    raise InputError(path, f"pixel dtype {pixels.dtype} is not a real number type")
  files.check_finite(pixels, path)
  found, source = spacing(ds, path)
  return DicomImage(np.ascontiguousarray(pixels), found, source, colour)


def _invert(pixels: np.ndarray, ds: Any) -> np.ndarray:
  """MONOCHROME1 -> MONOCHROME2: unsigned data over its BitsStored range, else min + max."""
  if np.issubdtype(pixels.dtype, np.unsignedinteger):
    top = (1 << int(getattr(ds, "BitsStored", pixels.dtype.itemsize * 8))) - 1
    return (top - pixels.astype(np.int64)).clip(0, top).astype(pixels.dtype)
  return (pixels.max() + pixels.min()) - pixels
