"""Issue 18: hostile inputs get one line and nothing else harmed: .mhd data files outside
their header's folder, NaN pixels, bad metadata, decompression bombs, FIFOs, undecodable
names, bad sweep shards (run folders: tests/test_robustness.py).

Each test reproduces one case of the issue (it fails on the code before the fix).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import camus_fixtures
from conftest import ROOT
from test_pipeline import write_folder
from echokld.data import camus, folder, pipeline
from echokld.errors import InputError
from echokld.infer import io as predict_io
from echokld.study import sweep as study_sweep

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


# ---- 7. Input checks that used to pass silently -------------------------------------------

def crafted_png_header(width: int, height: int) -> bytes:
  """A PNG whose header claims width x height (8-bit grey) and holds no pixels: PIL's
  decompression-bomb check reads only the header."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_nan_pixel_in_float_image_is_refused(tmp_path):
  write_folder(tmp_path)
  image = np.full((24, 20), 50.0, np.float32)
  image[3, 4] = np.nan
  (tmp_path / "images" / "patient0001_2CH_ED.png").unlink()
  Image.fromarray(image, mode="F").save(tmp_path / "images" / "patient0001_2CH_ED.tiff")
  with pytest.raises(InputError, match="patient0001_2CH_ED.tiff: image has 1 NaN or "
                     "infinite pixel$"):
    folder.read_folder(str(tmp_path))
  nifti = tmp_path / "patient0001_2CH_ED.nii.gz"
  camus_fixtures.save_nifti(nifti, image)
  with pytest.raises(InputError, match="1 NaN or infinite pixel"):
    camus.read_nifti(nifti)
  # Before: min-max scaling of a frame with a NaN gave an all-zero frame.
  assert not pipeline.to_uint8(image).any()


@pytest.mark.parametrize("table, fragment", [
    ("case,split\npatient0001_2CH_ED,train\npatient0001_2CH_ES,train\n"
     "patient0001_2CH_ED,val\n", "line 4: case 'patient0001_2CH_ED' is already on line 2"),
    ("case,split\npatient0001_2CH_ED,train\npatient0001_2CH_ES,val\n",
     "patient 'patient0001' is in two splits: patient0001_2CH_ED in train, "
     "patient0001_2CH_ES in val"),
    ("case,spacing_row_mm,spacing_col_mm\npatient0001_2CH_ED,-0.3,0.15\n",
     "line 2: pixel spacing (-0.3, 0.15) mm must be finite and positive"),
    ("case,spacing_row_mm,spacing_col_mm\npatient0001_2CH_ED,0.3,0\n", "(0.3, 0.0) mm"),
    ("case,spacing_row_mm,spacing_col_mm\npatient0001_2CH_ED,nan,0.15\n", "(nan, 0.15) mm"),
])
def test_bad_metadata_is_refused(tmp_path, table, fragment):
  write_folder(tmp_path)
  (tmp_path / "metadata.csv").write_text(table)
  with pytest.raises(InputError) as info:
    folder.read_folder(str(tmp_path))
  assert fragment in str(info.value) and "metadata.csv" in str(info.value)


def test_metadata_with_utf8_bom_and_frames_without_split(tmp_path, capsys):
  write_folder(tmp_path, cases=("p1_2CH_ED", "p2_2CH_ED", "p3_2CH_ED"))
  (tmp_path / "metadata.csv").write_bytes("case,split,image_quality\np1_2CH_ED,train,Good\n"
                                          "p2_2CH_ED,val,Poor\np3_2CH_ED,,\n"
                                          .encode("utf-8-sig"))
  records = folder.read_folder(str(tmp_path))
  assert [(r["split"], r["quality"]) for r in records] == [("train", "Good"), ("val", "Poor"),
                                                            (None, None)]
  splits = pipeline.split_frames(records, "official", {}, 0.2, 0)
  assert [len(splits[k]) for k in ("train", "val", "test")] == [1, 1, 1]
  assert capsys.readouterr().err == ("note: data.split=official: 1 frame(s) of 1 patient(s) "
                                     "have no split and are not used (e.g. p3_2CH_ED)\n")


def test_decompression_bomb_fifo_and_undecodable_name(tmp_path):
  write_folder(tmp_path)
  big = tmp_path / "images" / "patient0001_2CH_ED.png"
  big.write_bytes(crafted_png_header(20000, 20000))
  with pytest.raises(InputError, match=r"patient0001_2CH_ED.png: image refused as too large "
                     r"\(Image size \(400000000 pixels\) exceeds limit"):
    folder.read_folder(str(tmp_path))
  with pytest.raises(InputError, match="too large"):
    predict_io.read_frame(str(big), "")
  big.unlink()
  os.mkfifo(big)  # Reading it would block forever.
  with pytest.raises(InputError, match="not a regular file"):
    folder.read_folder(str(tmp_path))
  with pytest.raises(InputError, match="not a regular file"):
    predict_io.read_frame(str(big), "")
  big.unlink()
  write_folder(tmp_path)
  name = os.fsdecode(b"patient0002_2CH_\xff.png")  # Not UTF-8: test_metrics.csv would fail.
  shutil.copy(big, tmp_path / "images" / name)
  shutil.copy(tmp_path / "labels" / "patient0001_2CH_ED.png", tmp_path / "labels" / name)
  with pytest.raises(InputError, match=r"images/patient0002_2CH_\\udcff.png: file name is "
                     "not valid UTF-8; rename it"):
    folder.read_folder(str(tmp_path))
  with pytest.raises(InputError, match="not valid UTF-8"):
    predict_io.read_frame(str(tmp_path / "images" / name), "")


# ---- 8. --shard: every malformed value is one line, exit 2; an empty shard is said -------

@pytest.mark.parametrize("spec, fragment", [
    ("0/0", "expected 0 <= i < n"), ("5/2", "expected 0 <= i < n"), ("-1/2", "expected 0 <= i < n"),
    ("abc", "expected i/n"), ("1/2/3", "expected i/n"), ("1/", "expected i/n"),
    ("0/2.5", "expected i/n"), ("", "expected i/n"),
])
def test_bad_shard_specs(spec, fragment):
  with pytest.raises(InputError, match=f"--shard: {fragment}"):
    study_sweep.parse_shard(spec)


def test_sweep_cli_shards(tmp_path):
  def sweep(*flags):
    return subprocess.run([sys.executable, "-m", "echokld.sweep", f"--out={tmp_path / 's'}",
                           "--models=dice", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  done = sweep("--shard=0/0")
  assert done.returncode == 2 and done.stderr == (
      "error: --shard: expected 0 <= i < n, got '0/0'\n"), done.stderr
  assert not (tmp_path / "s").exists()
  done = sweep("--shard=1/2")  # One run in the grid: shard 1 of 2 is empty, and says so.
  assert done.returncode == 0, done.stderr
  assert "note: --shard=1/2 holds none of the 1 runs of this grid" in done.stderr
  assert study_sweep.shard(list(range(5)), "1/2") == [1, 3]
