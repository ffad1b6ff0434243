"""DICOM input to echokld.predict (infer.dicom): pixels, spacing, colour, loops, bad files."""

import csv
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image, ImageSequence

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid  # noqa: E402

import camus_fixtures  # noqa: E402
from echokld.clinical import cine  # noqa: E402
from echokld.data import synthetic  # noqa: E402
from echokld.errors import InputError  # noqa: E402
from echokld.infer import dicom, io, loops  # noqa: E402
from echokld.infer import runs as predict  # noqa: E402
from test_orientation import oblique_frame  # noqa: E402
from conftest import error_lines, run_predict  # noqa: E402
from test_predict import read_areas, warning_lines  # noqa: E402

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage.


def region(delta_x_cm, delta_y_cm, spatial=1, units=(3, 3)):
  item = Dataset()
  item.RegionSpatialFormat = spatial
  item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = units
  item.PhysicalDeltaX, item.PhysicalDeltaY = delta_x_cm, delta_y_cm
  return item


def write_dicom(path, pixels, regions=(), pixel_spacing=None, photometric="MONOCHROME2",
                syntax=ExplicitVRLittleEndian):
  """An uncompressed DICOM of (rows, cols), (frames, rows, cols) or (rows, cols, 3) pixels."""
  pixels = np.asarray(pixels)
  colour = photometric in ("RGB", "YBR_FULL")
  ds = Dataset()
  ds.file_meta = FileMetaDataset()
  ds.file_meta.TransferSyntaxUID = syntax
  ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
  ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
  ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME, ds.file_meta.MediaStorageSOPInstanceUID
  ds.Modality = "US"
  shape = pixels.shape[:-1] if colour else pixels.shape
  if len(shape) == 3:
    ds.NumberOfFrames = shape[0]
  ds.Rows, ds.Columns = shape[-2:]
  ds.SamplesPerPixel = 3 if colour else 1
  if colour:
    ds.PlanarConfiguration = 0
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
  ds.HighBit = ds.BitsStored - 1
  ds.PixelRepresentation = 0
  if regions:
    ds.SequenceOfUltrasoundRegions = list(regions)
  if pixel_spacing is not None:
    ds.PixelSpacing = list(pixel_spacing)
  ds.PixelData = pixels.tobytes()
  if syntax != ExplicitVRLittleEndian:  # Encapsulated: junk fragments of a compressed frame.
    from pydicom.encaps import encapsulate
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
  try:
    ds.save_as(path, enforce_file_format=True)
  except TypeError:  # pydicom 2.x
    ds.save_as(path, write_like_original=False)
  return path


def test_single_and_multi_frame_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 255, (20, 24), dtype=np.uint8)
  # A Doppler strip (spectral, seconds x cm/s) first, then the B-mode sector: region 1.
  doppler = region(0.01, 0.5, spatial=3, units=(4, 7))
  single = write_dicom(tmp_path / "one.dcm", frame, [doppler, region(0.0154, 0.0308)],
                       pixel_spacing=(9.0, 9.0))
  read = dicom.read_dicom(str(single))
  np.testing.assert_array_equal(read.frames, frame[None])
  assert read.spacing_mm == pytest.approx((0.308, 0.154))  # 0.0308 cm rows, 0.0154 cm cols.
  assert read.spacing_source == "ultrasound region 1" and not read.colour
  assert not loops.is_loop(str(single))
  loop = rng.integers(0, 4000, (5, 16, 20), dtype=np.uint16)
  multi = write_dicom(tmp_path / "loop.dcm", loop, pixel_spacing=(0.5, 0.25))
  read = dicom.read_dicom(str(multi))
  np.testing.assert_array_equal(read.frames, loop)
  assert read.spacing_mm == (0.5, 0.25) and read.spacing_source == "PixelSpacing"
  assert loops.is_loop(str(multi))
  frames, spacing = loops.read_loop(str(multi))
  np.testing.assert_array_equal(frames, loop)


def test_monochrome1_is_inverted_and_colour_becomes_luminance(tmp_path):
  rng = np.random.default_rng(1)
  frame = rng.integers(0, 255, (12, 10), dtype=np.uint8)
  read = dicom.read_dicom(str(write_dicom(tmp_path / "m1.dcm", frame,
                                          photometric="MONOCHROME1")))
  np.testing.assert_array_equal(read.frames[0], 255 - frame)
  rgb = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
  read = dicom.read_dicom(str(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")))
  want = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"), np.int64)
  assert read.colour and dicom.COLOUR in read.notes
  assert np.abs(read.frames[0].astype(np.int64) - want).max() <= 1  # PIL's "L", to rounding.
  assert read.spacing_mm is None and dicom.NO_SPACING in read.notes
  # YBR_FULL with neutral chroma (Cb = Cr = 128) is grey: its luminance is Y itself.
  ybr = np.stack([frame, np.full_like(frame, 128), np.full_like(frame, 128)], axis=-1)
  read = dicom.read_dicom(str(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL")))
  assert np.abs(read.frames[0].astype(np.int64) - frame).max() <= 1


def test_a_metadata_csv_gives_the_spacing_a_dicom_lacks(tmp_path):
  frame = np.zeros((10, 12), np.uint8)
  write_dicom(tmp_path / "a.dcm", frame)
  write_dicom(tmp_path / "b.dcm", frame, pixel_spacing=(0.4, 0.2))
  (tmp_path / "metadata.csv").write_text("case,image_quality,spacing_row_mm,spacing_col_mm\n"
                                         "a,Poor,0.5,0.25\nb,Good,0.7,0.7\n")
  got = io.read_frame(str(tmp_path / "a.dcm"), "", io.Metadata())
  assert got.spacing_mm == (0.5, 0.25) and got.quality == "Poor" and got.notes == ()
  got = io.read_frame(str(tmp_path / "b.dcm"), "", io.Metadata())  # The file's own first.
  assert got.spacing_mm == (0.4, 0.2)
  assert io.read_frame(str(tmp_path / "a.dcm"), "").notes == (dicom.NO_SPACING,)


def test_bad_files_are_one_line_input_errors(tmp_path):
  good = write_dicom(tmp_path / "good.dcm", np.zeros((8, 8), np.uint8))
  (tmp_path / "text.dcm").write_text("not a dicom\n")
  (tmp_path / "cut.dcm").write_bytes(good.read_bytes()[:-40])
  write_dicom(tmp_path / "j2k.dcm", np.zeros((8, 8), np.uint8), syntax=JPEG2000Lossless)
  for name, fragment in (("text.dcm", "not a DICOM"), ("cut.dcm", "cannot"),
                         ("j2k.dcm", "JPEG 2000")):
    with pytest.raises(InputError, match=fragment) as info:
      dicom.read_dicom(str(tmp_path / name))
    assert info.value.where == str(tmp_path / name) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def folder_run(predict_workdirs, tmp_path_factory):
  """One CLI call on a folder: a DICOM without spacing, three bad .dcm files, and the
  oblique NIfTI of test_orientation."""
  root = tmp_path_factory.mktemp("dicom")
  src, out = root / "in", root / "out"
  src.mkdir()
  frame = np.random.default_rng(2).integers(0, 255, (40, 36), dtype=np.uint8)
  good = write_dicom(src / "nospacing.dcm", frame)
  (src / "text.dcm").write_text("not a dicom\n")
  (src / "cut.dcm").write_bytes(good.read_bytes()[:-40])
  write_dicom(src / "j2k.dcm", np.zeros((8, 8), np.uint8), syntax=JPEG2000Lossless)
  _, _, data, affine = oblique_frame()
  nib.save(nib.Nifti1Image(data, affine), src / "oblique.nii.gz")
  result = run_predict(f"--workdir={predict_workdirs[0]}", f"--input={src}", f"--output={out}")
  return src, out, frame, result


def test_bad_dicoms_are_one_line_each_through_the_cli(folder_run):
  src, out, _, result = folder_run
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  lines = error_lines(result)
  assert len(lines) == 3, result.stderr
  for name in ("text.dcm", "cut.dcm", "j2k.dcm"):
    assert sum(f"{src / name}:" in line for line in lines) == 1, (name, lines)
  assert "segmented 2 of 5 frames" in result.stdout
  assert not any(n.startswith(("text", "cut", "j2k")) for n in os.listdir(out))


def test_a_dicom_without_spacing_warns_once_and_gives_pixels_only(folder_run, predict_workdirs):
  src, out, frame, result = folder_run
  warned = [l for l in warning_lines(result) if "no pixel spacing" in l]
  assert warned == [f"warning: 1 of 5 frames: {dicom.NO_SPACING}, e.g. {src / 'nospacing.dcm'}"]
  mask = np.asarray(Image.open(out / "nospacing_mask.png"))
  run = predict.load_run(predict_workdirs[0], batch_size=4)
  np.testing.assert_array_equal(mask, predict.predict_masks([run], [frame])[0])
  row = read_areas(out)["nospacing.dcm"]
  assert int(row["lv_area_px"]) == int(mask.sum()) and row["lv_area_mm2"] == ""


def test_oblique_nifti_mask_lands_on_the_input_voxels_through_the_cli(folder_run,
                                                                     predict_workdirs):
  src, out, _, _ = folder_run
  record, _, data, affine = oblique_frame()
  back = nib.load(out / "oblique_mask.nii.gz")
  np.testing.assert_allclose(back.affine, affine, atol=1e-6)
  run = predict.load_run(predict_workdirs[0], batch_size=4)
  expected = predict.predict_masks([run], [record["image"]])[0]  # The CAMUS-layout frame.
  np.testing.assert_array_equal(np.asanyarray(back.dataobj), expected[::-1, :])
  assert float(read_areas(out)["oblique.nii.gz"]["lv_area_mm2"]) == pytest.approx(
      expected.sum() * camus_fixtures.ROW_MM * camus_fixtures.COL_MM, rel=1e-4)


def test_a_multiframe_dicom_goes_down_the_cine_path(predict_workdirs, tmp_path):
  beat = synthetic.make_beating_sequence(num_frames=12, seed=1, image_shape=(48, 40))
  row_mm, col_mm = beat["spacing_mm"]
  path = write_dicom(tmp_path / "loop.dcm", beat["images"],
                     [region(col_mm / 10, row_mm / 10)])
  out = tmp_path / "out"
  result = run_predict(f"--workdir={predict_workdirs[0]}", f"--input={path}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  with Image.open(out / "loop_mask.tif") as tif:
    masks = np.stack([np.asarray(page) for page in ImageSequence.Iterator(tif)]) > 0
  run = predict.load_run(predict_workdirs[0], batch_size=4)
  np.testing.assert_array_equal(masks, np.stack(predict.predict_masks([run],
                                                                      list(beat["images"]))))
  areas = masks.reshape(12, -1).sum(1)
  ed, es, _ = cine.find_ed_es(areas)
  assert f"ED frame {ed}, ES frame {es}" in result.stdout
  with open(out / "loop_area_curve.csv") as f:
    curve = list(csv.DictReader(f))
  assert [int(r["area_px"]) for r in curve] == areas.tolist()
  assert float(curve[0]["area_mm2"]) == pytest.approx(areas[0] * row_mm * col_mm, rel=1e-6)
  with open(out / "volumes.csv") as f:
    rows = list(csv.DictReader(f))
  assert rows[0]["ed_frame"] == f"loop[{ed}]" and rows[0]["edv_ml"] != ""
  # The ground truth of the same loop, through the reader: ED and ES within one frame.
  truth = write_dicom(tmp_path / "truth.dcm", (beat["labels"] == 1).astype(np.uint8))
  t_ed, t_es, _ = cine.find_ed_es(cine.area_curve(dicom.read_dicom(str(truth)).frames))
  cyclic = lambda a, b: min(abs(a - b), 12 - abs(a - b))
  assert cyclic(t_ed, beat["ed_frame"]) <= 1 and cyclic(t_es, beat["es_frame"]) <= 1
