"""Opening user files safely: regular files only, MetaImage data kept beside its header.

A FIFO or device named like an image would hang or stream forever; a MetaImage header can
name any file as its data. These checks run before any reader opens the file.
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import stat

import numpy as np

from echokld.errors import InputError


def check_regular(path: str | os.PathLike) -> None:
  """InputError unless `path` is a regular file (after symlinks): no FIFO, device, folder."""
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    raise InputError(path, f"cannot open ({e.strerror})") from None
  if not stat.S_ISREG(mode):
    raise InputError(path, "not a regular file (a FIFO, device or folder?); skipped")


_MHD_HEADER_BYTES = 1 << 16  # A MetaImage header is a few hundred bytes of text.
_DATA_FILE = re.compile(rb"^[ \t]*ElementDataFile[ \t]*=[ \t]*(.*?)[ \t\r]*$",
                        re.IGNORECASE | re.MULTILINE)


def check_mhd_data_file(path: pathlib.Path) -> None:
  """Accepts only a data file inside the header's folder (or data LOCAL to the header).

  ITK opens whatever ElementDataFile names: an absolute or ../ path (say /etc/passwd)
  would be read as the image. A file list, a file-name pattern, a name resolving
  (through symlinks too) outside the folder, or a data file that is not a regular file
  (a FIFO would hang the read) is refused.
  """
  path = pathlib.Path(path)
  check_regular(path)
  try:
    with open(path, "rb") as f:
      header = f.read(_MHD_HEADER_BYTES)
  except OSError as e:
    raise InputError(path, f"cannot read MetaImage header ({e.strerror})") from None
  match = _DATA_FILE.search(header)
  if match is None:
    raise InputError(path, "MetaImage header has no ElementDataFile")
  name = match.group(1).decode("utf-8", "replace")
  if name.upper() == "LOCAL":
    return
  if name.upper() == "LIST" or "%" in name or not name:
    raise InputError(path, f"ElementDataFile {name!r}: only one data file beside the "
                     "header is accepted")
  folder = os.path.realpath(path.parent)
  data = os.path.realpath(os.path.join(folder, name))
  if os.path.commonpath([folder, data]) != folder:
    raise InputError(path, f"ElementDataFile {name!r} lies outside the header's folder; "
                     "refused")
  try:
    mode = os.stat(data).st_mode
  except OSError:
    raise InputError(data, f"missing: the data file of {path.name}") from None
  if not stat.S_ISREG(mode):
    raise InputError(data, f"the data file of {path.name} is not a regular file")


def check_finite(image: np.ndarray, path: str | os.PathLike) -> np.ndarray:
  """InputError if a float image holds NaN or infinity (min-max scaling would make the
  whole frame 0: one NaN pixel silently blanked a frame)."""
  if np.issubdtype(image.dtype, np.inexact) and not np.all(np.isfinite(image)):
    bad = int(np.count_nonzero(~np.isfinite(image)))
    raise InputError(path, f"image has {bad} NaN or infinite pixel{'s' if bad > 1 else ''}")
  return image


def check_spacing(spacing: tuple[float, float] | None, path: str | os.PathLike
                  ) -> tuple[float, float] | None:
  """None, or a (row, col) spacing of finite positive millimetres; InputError otherwise."""
  if spacing is None:
    return None
  if not all(math.isfinite(v) and v > 0 for v in spacing):
    raise InputError(path, f"pixel spacing {tuple(spacing)} mm must be finite and positive")
  return spacing


def check_name(path: str | os.PathLike) -> None:
  """InputError for a file name that is not valid UTF-8 (it would fail later, when a CSV
  naming it is written, after all the work)."""
  path = os.fsdecode(os.fspath(path))
  try:
    path.encode("utf-8")
  except UnicodeEncodeError:  # Named with the bad bytes escaped, so the line can be printed.
    raise InputError(ascii(path)[1:-1], "file name is not valid UTF-8; rename it") from None
