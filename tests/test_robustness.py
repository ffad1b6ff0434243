"""Issue 18: hostile or damaged inputs and run folders get one line, nothing else harmed.

Each test reproduces one case of the issue (it fails on the code before the fix).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

import camus_fixtures
from echokld.data import camus
from echokld.errors import InputError
from echokld.infer import io as predict_io


# ---- 3. A .mhd header names its data file: only one beside the header is read -------------

def _point_header(mhd: pathlib.Path, name: str) -> None:
  text = mhd.read_text()
  start = text.index("ElementDataFile")
  mhd.write_text(text[:start] + f"ElementDataFile = {name}\n")


@pytest.fixture
def camus_2019(tmp_path):
  root = camus_fixtures.write_2019_release(tmp_path / "camus", train=("patient0001",
                                                                      "patient0002"), test=())
  secret = tmp_path / "secret.raw"  # Outside the release: must never be read as an image.
  secret.write_bytes(bytes(range(256)) * 8)
  return root, secret


def test_mhd_data_file_outside_header_folder_is_refused(camus_2019, tmp_path):
  root, secret = camus_2019
  folder = root / "training" / "patient0001"
  mhd = folder / "patient0001_2CH_ED.mhd"
  image, _ = camus.read_mhd(mhd)  # As written: the .raw beside it.
  assert image.shape == camus_fixtures.SHAPE
  (folder / "link.raw").symlink_to(secret)
  for name in (str(secret), "../../../secret.raw", "link.raw"):
    _point_header(mhd, name)
    with pytest.raises(InputError, match="outside the header's folder") as info:
      camus.read_mhd(mhd)
    assert info.value.where == str(mhd)
    with pytest.raises(InputError, match="outside the header's folder"):  # Prediction.
      predict_io.read_frame(str(mhd), "")
    with pytest.raises(InputError, match="outside the header's folder"):  # Training.
      camus.read_camus(root, view="2CH")
  for name in ("LIST", "frame_%03d.raw 1 3 1"):
    _point_header(mhd, name)
    with pytest.raises(InputError, match="only one data file"):
      camus.read_mhd(mhd)


def test_mhd_fifo_data_file_is_refused_not_read(camus_2019):
  root, _ = camus_2019
  folder = root / "training" / "patient0001"
  raw = folder / "patient0001_2CH_ED.raw"
  raw.unlink()
  os.mkfifo(raw)  # Reading it would block forever.
  with pytest.raises(InputError, match="not a regular file"):
    camus.read_mhd(folder / "patient0001_2CH_ED.mhd")
