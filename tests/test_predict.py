"""echokld.predict: formats in and out, geometry kept, ensembles, gating, bad input."""

import csv
import json
import math
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

import camus_fixtures
from conftest import error_lines, run_predict
from echokld.clinical import volumes
from echokld.infer import io as predict_io
from echokld.infer import segment
from echokld.infer import runs as predict
from echokld.data import camus
from echokld.errors import InputError

AFFINE = np.array([[0.0, -0.3, 0.0, 5.0], [0.2, 0.0, 0.0, -3.0], [0.0, 0.0, 1.5, 7.0],
                   [0.0, 0.0, 0.0, 1.0]])
MHD_SPACING, MHD_ORIGIN = (0.154, 0.31, 1.0), (1.0, -2.0, 3.0)
GOOD = ("a.png", "b.jpg", "c.nii.gz", "d.mhd", "big.png", "tiny.png")
BAD = ("bad.png", "volume.nii.gz")
# Training frames are 48x48: big (200x40) and tiny (6x6) are over 4x off: segmented, one warning.
WARNED = ("big.png", "tiny.png")


def warning_lines(result):
  return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def read_areas(out_dir):
  with open(os.path.join(out_dir, "areas.csv"), newline="") as f:
    return {row["file"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def workdirs(predict_workdirs):
  """Two tiny one-epoch runs (seeds 0 and 1) sharing one preprocessing (conftest)."""
  return predict_workdirs


@pytest.fixture(scope="module")
def runs(workdirs):
  return [predict.load_run(w, batch_size=4) for w in workdirs]


@pytest.fixture(scope="module")
def mixed(workdirs, tmp_path_factory):
  """One CLI call on a folder of good and bad frames of every supported kind."""
  root = tmp_path_factory.mktemp("mixed")
  src, out = root / "in", root / "out"
  (src / "sub").mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(src / "a.png")
  Image.fromarray(rng.integers(0, 255, (30, 36), dtype=np.uint8)).save(src / "sub" / "b.jpg")
  (src / "sub" / "metadata.csv").write_text("case,image_quality,spacing_row_mm,spacing_col_mm\n"
                                            "b,Poor,0.5,0.25\n")
  nib.save(nib.Nifti1Image(rng.random((48, 40)).astype(np.float32), AFFINE), src / "c.nii.gz")
  image = sitk.GetImageFromArray(rng.integers(0, 255, (1, 44, 36), dtype=np.uint8))
  image.SetSpacing(MHD_SPACING)
  image.SetOrigin(MHD_ORIGIN)
  image.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
  sitk.WriteImage(image, str(src / "d.mhd"))
  (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
  Image.fromarray(np.zeros((200, 40), np.uint8)).save(src / "big.png")
  Image.fromarray(np.zeros((6, 6), np.uint8)).save(src / "tiny.png")
  nib.save(nib.Nifti1Image(np.zeros((48, 40, 3), np.float32), AFFINE), src / "volume.nii.gz")
  (src / "notes.txt").write_text("ignored")
  result = run_predict(f"--workdir={workdirs[0]}", f"--input={src}", f"--output={out}")
  return src, out, result


def test_bad_files_reported_others_written(mixed, workdirs):
  src, out, result = mixed
  assert result.returncode == 2, result.stderr
  lines = error_lines(result)
  assert len(lines) == len(BAD), result.stderr
  for name, fragment in zip(sorted(BAD), ("unreadable", "2-D frame")):
    line = next(l for l in lines if f"{os.sep}{name}:" in l)
    assert line.startswith("error: ") and fragment in line, line
  warnings = warning_lines(result)  # One line for the command, naming the first.
  assert len(warnings) == 1 and warnings[0].startswith(
      f"warning: {len(WARNED)} of 8 frames are over 4x larger or smaller than the training "
      f"frames of {workdirs[0]} (48x48), e.g. {src / 'big.png'} (200x40)"), result.stderr
  assert "segmented 6 of 8 frames" in result.stdout
  assert not any(n.startswith(("bad_", "volume_")) for n in os.listdir(out))
  for name, shape in (("big", (200, 40)), ("tiny", (6, 6))):
    assert np.asarray(Image.open(out / f"{name}_mask.png")).shape == shape


def test_png_folder_masks_overlays_and_areas(mixed):
  src, out, _ = mixed
  areas = read_areas(out)
  assert sorted(areas) == sorted(["a.png", os.path.join("sub", "b.jpg"), "c.nii.gz", "d.mhd",
                                  "big.png", "tiny.png"])
  for rel, mask_name in (("a.png", "a_mask.png"), (os.path.join("sub", "b.jpg"),
                                                   os.path.join("sub", "b_mask.png"))):
    mask = np.asarray(Image.open(out / mask_name))
    assert mask.shape == np.asarray(Image.open(src / rel)).shape
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert int(areas[rel]["lv_area_px"]) == int(mask.sum())
    if rel == "a.png":
      assert areas[rel]["lv_area_mm2"] == ""  # Spacing unknown.
    else:  # Spacing from sub/metadata.csv.
      assert float(areas[rel]["lv_area_mm2"]) == pytest.approx(mask.sum() * 0.125)
    overlay = Image.open(out / mask_name.replace("_mask.png", "_overlay.png"))
    assert overlay.mode == "RGB" and overlay.size == Image.open(src / rel).size


def test_nifti_round_trip(mixed, runs):
  src, out, _ = mixed
  back, given = nib.load(out / "c_mask.nii.gz"), nib.load(src / "c.nii.gz")
  assert back.shape == given.shape and np.allclose(back.affine, AFFINE)
  assert back.get_data_dtype() == np.uint8
  mask = np.asanyarray(back.dataobj)
  # AFFINE runs array axis 0 along +y (depth: rows of the CAMUS layout) and axis 1 along -x
  # (width, reversed): the frame the model sees is the array with its columns reversed, by
  # hand, and the mask is stored with them reversed back (infer.orient).
  image = np.asanyarray(given.dataobj)[:, ::-1]
  expected = predict.predict_masks(runs[:1], [image])[0]
  np.testing.assert_array_equal(mask, expected[:, ::-1])
  row = read_areas(out)["c.nii.gz"]
  assert int(row["lv_area_px"]) == int(mask.sum())
  assert float(row["lv_area_mm2"]) == pytest.approx(mask.sum() * 0.2 * 0.3, rel=1e-4)


def test_mhd_round_trip(mixed):
  src, out, _ = mixed
  given, back = sitk.ReadImage(str(src / "d.mhd")), sitk.ReadImage(str(out / "d_mask.mhd"))
  assert back.GetSize() == given.GetSize()
  assert back.GetSpacing() == pytest.approx(MHD_SPACING)
  assert back.GetOrigin() == pytest.approx(MHD_ORIGIN)
  assert back.GetDirection() == pytest.approx(given.GetDirection())
  mask = sitk.GetArrayFromImage(back)
  assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
  row = read_areas(out)["d.mhd"]
  assert float(row["lv_area_mm2"]) == pytest.approx(mask.sum() * 0.154 * 0.31, rel=1e-4)


def test_camus_patient_folder_with_quality_gating(workdirs, runs, tmp_path):
  root = camus_fixtures.write_nifti_release(tmp_path / "camus", patients=("patient0001",))
  patient = root / "database_nifti" / "patient0001"
  out = tmp_path / "out"
  result = run_predict(f"--workdir={workdirs[0]}", f"--workdir={workdirs[1]}", f"--input={patient}",
                   f"--output={out}", "--gating=quality")
  assert result.returncode == 0, result.stderr
  frames = [f"patient0001_{v}_{p}" for v in ("2CH", "4CH") for p in ("ED", "ES")]
  areas = read_areas(out)
  assert sorted(areas) == sorted(f + ".nii.gz" for f in frames)  # No _gt, no sequences.
  for name in frames:
    back = nib.load(out / f"{name}_mask.nii.gz")
    assert back.shape == nib.load(patient / f"{name}.nii.gz").shape  # (width, depth).
    mm2 = np.asanyarray(back.dataobj).sum() * camus_fixtures.ROW_MM * camus_fixtures.COL_MM
    assert float(areas[name + ".nii.gz"]["lv_area_mm2"]) == pytest.approx(mm2, rel=1e-4)
  # The written mask is the quality-gated ensemble of the API (patient0001 is Good).
  metadata = predict_io.Metadata()
  assert metadata.camus_quality(str(patient / f"{frames[0]}.nii.gz")) == "Good"
  image, _ = camus.read_nifti(patient / f"{frames[0]}.nii.gz")
  expected = predict.predict_masks(runs, [image], ["Good"], gating="quality")[0]
  written = np.asanyarray(nib.load(out / f"{frames[0]}_mask.nii.gz").dataobj)
  np.testing.assert_array_equal(written, expected.T)
  # The disagreement column, by hand: mean std of the two runs over their LV union.
  canvas, _ = predict.prepare(image, *predict.check_compatible(runs), None)
  members = np.stack([run.predict_probs(canvas[None])[0] for run in runs])
  union = (members > 0.5).any(axis=0)
  want = members.std(axis=0)[union].mean() if union.any() else 0.0
  assert float(areas[frames[0] + ".nii.gz"]["disagreement"]) == pytest.approx(want, abs=1e-4)
  # volumes.csv: per view, EDV, ESV and EF of the written ED and ES masks (clinical.volumes).
  with open(out / "volumes.csv") as f:
    table = {(r["patient"], r["method"]): r for r in csv.DictReader(f)}
  assert sorted(table) == [(f"patient0001_{v}", m) for v in ("2CH", "4CH")
                           for m in ("area_length", "disks")]
  masks = [volumes.FrameMask("patient0001_2CH", p, f"{p}.nii.gz",
                             np.asanyarray(nib.load(out / f"patient0001_2CH_{p}_mask.nii.gz")
                                           .dataobj).T > 0,
                             (camus_fixtures.ROW_MM, camus_fixtures.COL_MM)) for p in ("ED", "ES")]
  assert masks[0].mask.any() and masks[1].mask.any()  # The tiny model found an LV in both.
  for want in volumes.patient_volumes(masks):
    got = table[("patient0001_2CH", want["method"])]
    assert got["ed_frame"] == "patient0001_2CH_ED.nii.gz"
    for key in ("edv_ml", "esv_ml", "ef_percent"):
      if math.isnan(want[key]):
        assert got[key] == "", key
      else:
        assert float(got[key]) == pytest.approx(want[key], rel=1e-5), key


def test_ensemble_is_mean_and_gating_weights(runs):
  images = np.random.default_rng(1).integers(0, 255, (5, 32, 32), dtype=np.uint8)
  members = [run.predict_probs(images) for run in runs]
  assert members[0].shape == (5, 32, 32) and not np.allclose(members[0], members[1])
  np.testing.assert_allclose(predict.ensemble_probs(runs, images),
                             (members[0] + members[1]) / 2, atol=1e-6)
  weights = predict.quality_weights(runs, ["Good", None, "Nonexistent", "Poor", "Medium"])
  dice = [run.summary["test"]["by_quality"]["Good"]["dice"] for run in runs]
  np.testing.assert_allclose(weights[0], np.array(dice) / sum(dice))
  np.testing.assert_allclose(weights[1:3], 0.5)  # Unknown quality: equal weights.
  gated = predict.ensemble_probs(runs, images, weights)
  np.testing.assert_allclose(gated, weights[:, 0, None, None] * members[0] +
                             weights[:, 1, None, None] * members[1], atol=1e-6)


def test_ensemble_needs_one_preprocessing(workdirs, runs, tmp_path):
  other = tmp_path / "other"
  shutil.copytree(workdirs[1], other)
  prep = json.loads((other / "preprocessing.json").read_text())
  prep["image_shape"] = [48, 48]
  (other / "preprocessing.json").write_text(json.dumps(prep))
  with pytest.raises(InputError, match="differs from"):
    predict.check_compatible([runs[0], predict.load_run(other)])


def test_bad_run_directories(workdirs, tmp_path):
  no_ckpt = tmp_path / "no_ckpt"
  no_ckpt.mkdir()
  for name in ("config.json", "preprocessing.json"):
    shutil.copy(os.path.join(workdirs[0], name), no_ckpt / name)
  frame = tmp_path / "f.png"
  Image.fromarray(np.zeros((32, 32), np.uint8)).save(frame)
  result = run_predict(f"--workdir={no_ckpt}", f"--input={frame}", f"--output={tmp_path / 'o'}")
  assert result.returncode == 2
  lines = error_lines(result)
  assert len(lines) == 1 and str(no_ckpt) in lines[0] and "checkpoint" in lines[0], lines
  assert not (no_ckpt / "checkpoints").exists() and not (tmp_path / "o").exists()
  (no_ckpt / "config.json").unlink()
  with pytest.raises(InputError, match="config.json is missing"):
    predict.load_run(no_ckpt)


class ThresholdRun:
  """A stand-in member on a native-shape (pad/crop) run: probability = pixel > 100."""

  workdir, image_shape, resize = "threshold", (32, 32), False

  def predict_probs(self, images):
    return (images > 100).astype(np.float32)


def test_pad_crop_geometry_is_undone():
  rng = np.random.default_rng(2)
  large, small = (rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((40, 48), (20, 24)))
  mask_large, mask_small = predict.predict_masks([ThresholdRun()], [large, small])
  expected = np.zeros_like(large)
  expected[:32, 8:40] = large[:32, 8:40] > 100  # Cropped: top-aligned rows, centred columns.
  np.testing.assert_array_equal(mask_large, expected)
  np.testing.assert_array_equal(mask_small, small > 100)  # Padded: all of it kept.
  wide = rng.integers(0, 255, (32, 129), dtype=np.uint8)  # Over 4x the canvas: still taken.
  expected = np.zeros_like(wide)
  expected[:, 49:81] = wide[:, 49:81] > 100  # Centred crop: offset (32 - 129) // 2 = -49.
  np.testing.assert_array_equal(predict.predict_masks([ThresholdRun()], [wide])[0], expected)
  with pytest.raises(InputError, match="empty frame"):
    predict.predict_masks([ThresholdRun()], [np.zeros((0, 32), np.uint8)])


def test_native_camus_size_frame_is_segmented(workdirs, runs, tmp_path):
  """Issue 18.1: a run trained on 48x48 frames (canvas 32x32) segments a 778x594 CAMUS frame."""
  prep = json.loads(open(os.path.join(workdirs[0], "preprocessing.json")).read())
  assert prep["train_frames"]["min_shape"] == prep["train_frames"]["max_shape"] == [48, 48]
  src = tmp_path / "in"
  src.mkdir()
  rng = np.random.default_rng(3)
  native = rng.integers(0, 255, (778, 594), dtype=np.uint8)  # (depth rows, width cols).
  camus_fixtures.save_nifti(src / "patient0001_2CH_ED.nii.gz", native)
  camus_fixtures.save_mhd(src / "patient0001_4CH_ED.mhd", native)
  out = tmp_path / "out"
  result = run_predict(f"--workdir={workdirs[0]}", f"--input={src}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  assert "segmented 2 of 2 frames" in result.stdout
  assert warning_lines(result) == [
      f"warning: 2 of 2 frames are over 4x larger or smaller than the training frames of "
      f"{workdirs[0]} (48x48), e.g. {src / 'patient0001_2CH_ED.nii.gz'} (778x594); segmented "
      "anyway, check their masks"]
  given = nib.load(src / "patient0001_2CH_ED.nii.gz")
  back = nib.load(out / "patient0001_2CH_ED_mask.nii.gz")
  assert back.shape == given.shape == (594, 778)
  np.testing.assert_allclose(back.affine, given.affine)
  expected = predict.predict_masks(runs[:1], [native])[0]
  assert expected.shape == (778, 594)
  np.testing.assert_array_equal(np.asanyarray(back.dataobj), expected.T)
  mhd = sitk.ReadImage(str(out / "patient0001_4CH_ED_mask.mhd"))
  assert mhd.GetSize() == (594, 778, 1)
  assert mhd.GetSpacing() == pytest.approx((camus_fixtures.COL_MM, camus_fixtures.ROW_MM, 1.0))
  np.testing.assert_array_equal(sitk.GetArrayFromImage(mhd)[0], expected)
  row = read_areas(out)["patient0001_2CH_ED.nii.gz"]
  assert float(row["lv_area_mm2"]) == pytest.approx(
      expected.sum() * camus_fixtures.ROW_MM * camus_fixtures.COL_MM, rel=1e-4)


def test_never_writes_outside_output_nor_overwrites(workdirs, runs, tmp_path, capsys):
  """Issue 18.2: planted symlinks, --output equal to --input, colliding stems."""
  rng = np.random.default_rng(4)
  src = tmp_path / "in"
  (src / "sub").mkdir(parents=True)
  for name in ("a.png", "a.jpg", "c.png", os.path.join("sub", "d.png")):
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(src / name)
  outside = tmp_path / "outside"
  outside.mkdir()
  secret = outside / "bashrc"
  secret.write_text("keep me\n")
  out = tmp_path / "out"
  out.mkdir()
  (out / "c_overlay.png").symlink_to(secret)  # Planted: must not be written through.
  (out / "sub").symlink_to(outside, target_is_directory=True)  # Leads outside --output.

  def segment_in_process(out_dir, overwrite):
    inputs = predict_io.find_inputs(str(src), exclude=str(out_dir))
    rows, failures = segment.segment_files(runs[:1], inputs, str(out_dir), batch_size=4,
                                           overwrite=overwrite)
    return len(rows), failures, capsys.readouterr().err.splitlines()

  for overwrite in (False, True):
    done, failures, lines = segment_in_process(out, overwrite)
    assert (done, failures, len(lines)) == (2, 2, 2), lines
    assert any("c_overlay.png: exists as a symlink; not replaced" in l for l in lines), lines
    assert any("resolves outside the output folder" in l for l in lines), lines
    assert secret.read_text() == "keep me\n" and sorted(os.listdir(outside)) == ["bashrc"]
    # a.png and a.jpg both kept, under distinct names.
    assert sorted(read_areas(out)) == ["a.jpg", "a.png"]
    assert {"a_png_mask.png", "a_jpg_mask.png", "a_png_overlay.png"} <= set(os.listdir(out))
    assert not (out / "c_mask.png").exists()  # A frame's files land all or none.
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # No staging left.
    (out / "areas.csv").unlink()

  # --output equal to --input: existing masks and areas.csv are kept unless --overwrite.
  (src / "c_mask.png").write_bytes(b"earlier mask")
  (src / "areas.csv").write_text("earlier\n")
  result = run_predict(f"--workdir={workdirs[0]}", f"--input={src}", f"--output={src}")
  assert result.returncode == 2 and error_lines(result) == [
      f"error: {src / 'areas.csv'}: exists; not overwritten (use --overwrite or another "
      "--output)"], result.stderr
  assert (src / "areas.csv").read_text() == "earlier\n"
  (src / "areas.csv").unlink()
  done, failures, lines = segment_in_process(src, False)
  assert (done, failures) == (3, 1) and (src / "c_mask.png").read_bytes() == b"earlier mask"
  assert len(lines) == 1 and "c_mask.png: exists; not overwritten" in lines[0], lines
  (src / "areas.csv").unlink()
  assert segment_in_process(src, True)[:2] == (4, 0)
  assert np.asarray(Image.open(src / "c_mask.png")).shape == (40, 40)


def test_a_cine_loop_gives_masks_area_curve_and_volumes(workdirs, runs, tmp_path):
  """A CAMUS-style half-sequence NIfTI (width, depth, frames) of the synthetic beating LV."""
  from echokld.clinical import cine
  from echokld.data import synthetic
  from echokld.infer import loops
  beat = synthetic.make_beating_sequence(num_frames=12, seed=1, image_shape=(48, 40))
  data = np.transpose(beat["images"], (2, 1, 0))  # (width, depth, frames), as CAMUS stores.
  affine = np.diag([beat["spacing_mm"][1], beat["spacing_mm"][0], 1.0, 1.0])
  path = tmp_path / "patient0001_2CH_half_sequence.nii.gz"
  nib.save(nib.Nifti1Image(data, affine), path)
  assert loops.is_loop(str(path)) and not loops.is_loop(str(tmp_path / "none.nii.gz"))
  out = tmp_path / "out"
  result = run_predict(f"--workdir={workdirs[0]}", f"--input={path}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  stem = "patient0001_2CH_half_sequence"
  back = nib.load(out / f"{stem}_mask.nii.gz")
  assert back.shape == data.shape and np.allclose(back.affine, affine)
  masks = np.transpose(np.asanyarray(back.dataobj), (2, 1, 0)) > 0
  # The written masks are the API's, frame by frame.
  expected = predict.predict_masks(runs[:1], list(beat["images"]))
  np.testing.assert_array_equal(masks, np.stack(expected))
  with open(out / f"{stem}_area_curve.csv") as f:
    curve = list(csv.DictReader(f))
  assert [int(r["area_px"]) for r in curve] == masks.reshape(12, -1).sum(1).tolist()
  ed, es, _ = cine.find_ed_es(masks.reshape(12, -1).sum(1))
  assert [r["phase"] for r in curve if r["phase"]] == (["ED", "ES"] if ed < es else ["ES", "ED"])
  with open(out / "volumes.csv") as f:
    rows = list(csv.DictReader(f))
  assert rows[0]["ed_frame"] == f"{stem}[{ed}]" and rows[0]["es_frame"] == f"{stem}[{es}]"
  assert f"ED frame {ed}, ES frame {es}" in result.stdout
  assert (out / f"{stem}_area_curve.png").read_bytes()[:4] == b"\x89PNG"
  # Again without --overwrite: refused, nothing replaced.
  again = run_predict(f"--workdir={workdirs[0]}", f"--input={path}", f"--output={out}")
  assert again.returncode == 2 and len(error_lines(again)) == 1
