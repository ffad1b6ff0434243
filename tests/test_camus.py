"""CAMUS readers: both releases, orientation, spacing, cfg, splits, errors, and the TFDS path."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from echokld.data import camus
from echokld.errors import InputError

try:
  from tests import camus_fixtures as cf
except ImportError:  # tests/ is not a package: pytest put it on sys.path.
  import camus_fixtures as cf

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nifti_root(tmp_path_factory) -> pathlib.Path:
  return cf.write_nifti_release(tmp_path_factory.mktemp("camus_nifti"))


@pytest.fixture(scope="module")
def mhd_root(tmp_path_factory) -> pathlib.Path:
  return cf.write_2019_release(tmp_path_factory.mktemp("camus_2019"))


def _by_case(records):
  return {r["case"]: r for r in records}


# --- orientation and spacing -------------------------------------------------------------


def test_fixture_stores_nifti_like_the_release(nifti_root):
  path = nifti_root / "database_nifti/patient0001/patient0001_2CH_ED.nii.gz"
  stored = nib.load(path)
  assert stored.shape == (cf.SHAPE[1], cf.SHAPE[0])  # (width, depth)
  assert stored.header.get_zooms() == pytest.approx((cf.COL_MM, cf.ROW_MM))


@pytest.mark.parametrize("release", ["nifti", "mhd"])
def test_orientation_blob_stays_top_left(release, nifti_root, mhd_root):
  records = camus.read_camus(nifti_root if release == "nifti" else mhd_root)
  for record in records:
    image = record["image"]
    assert image.shape == cf.SHAPE and image.dtype == np.uint8
    assert (image[cf.BLOB] == 255).all(), record["case"]
    assert (image[:8, -8:] == 0).all() and (image[-8:, :8] < 255).all()
    testing = record["patient"].startswith(camus.TEST_PREFIX)
    patient = record["patient"].removeprefix(camus.TEST_PREFIX)
    want_image, want_label = cf.frame(patient, "2CH", record["phase"], testing)
    np.testing.assert_array_equal(image, want_image)
    if record["label"] is not None:
      assert record["label"].dtype == np.uint8
      np.testing.assert_array_equal(record["label"], want_label)


def test_nifti_orientation_agrees_with_simpleitk(nifti_root):
  path = nifti_root / "database_nifti/patient0003/patient0003_2CH_ES_gt.nii.gz"
  record = _by_case(camus.read_camus(nifti_root))["patient0003_2CH_ES"]
  np.testing.assert_array_equal(record["label"], sitk.GetArrayFromImage(sitk.ReadImage(path)))


@pytest.mark.parametrize("release", ["nifti", "mhd"])
def test_spacing_is_row_col(release, nifti_root, mhd_root):
  records = camus.read_camus(nifti_root if release == "nifti" else mhd_root, view="4CH")
  assert {r["spacing_mm"] for r in records} == {(cf.ROW_MM, cf.COL_MM)}


# --- cfg, counts, splits -----------------------------------------------------------------


def test_parse_cfg_fields(tmp_path):
  path = tmp_path / "Info_2CH.cfg"
  path.write_text("ED: 18 \r\nES: 1\r\n\r\nNbFrame: 18\nSex: M  \nAge: 71\n"
                  "ImageQuality: Poor \nEF: 42.7\nFrameRate: 33.3\nLVedv: 1e2\nComment: a: b\n")
  assert camus.parse_cfg(path) == {
      "ed_frame": 18, "es_frame": 1, "nb_frame": 18, "sex": "M", "age": 71, "quality": "Poor",
      "ef": 42.7, "frame_rate": 33.3, "lvedv": 100.0, "comment": "a: b"}


def test_nifti_records_counts_fields_and_splits(nifti_root):
  records = camus.read_camus(nifti_root)
  assert [r["case"] for r in records] == [
      f"{p}_2CH_{phase}" for p in cf.NIFTI_PATIENTS for phase in ("ED", "ES")]
  first = records[0]
  assert {k: first[k] for k in ("patient", "view", "phase", "quality", "split")} == {
      "patient": "patient0001", "view": "2CH", "phase": "ED", "quality": "Good",
      "split": "train"}
  assert {k: first[k] for k in ("ed_frame", "es_frame", "nb_frame", "sex", "age", "ef",
                                "frame_rate")} == {
      "ed_frame": 1, "es_frame": 4, "nb_frame": 4, "sex": "F", "age": 41, "ef": 51.5,
      "frame_rate": 50}
  reversed_ = _by_case(records)[f"{cf.REVERSED}_2CH_ED"]
  assert (reversed_["ed_frame"], reversed_["es_frame"]) == (5, 1)
  assert {r["patient"]: r["split"] for r in records} == {**cf.NIFTI_SPLIT, "patient0005": None}
  assert {r["patient"]: r["quality"] for r in records} == cf.QUALITY
  assert all(r["label"] is not None for r in records)
  four = camus.read_camus(nifti_root / "database_nifti", view="4ch")  # root may be the folder
  assert len(four) == 10 and {r["view"] for r in four} == {"4CH"}
  assert [r["split"] for r in four] == [r["split"] for r in records]


def test_nifti_without_split_folder(tmp_path):
  root = cf.write_nifti_release(tmp_path, patients=cf.NIFTI_PATIENTS[:2], split=False)
  assert [r["split"] for r in camus.read_camus(root)] == [None] * 4


def test_2019_records_testing_unlabeled(mhd_root):
  records = camus.read_camus(mhd_root)
  train = [r for r in records if not r["patient"].startswith(camus.TEST_PREFIX)]
  test = [r for r in records if r["patient"].startswith(camus.TEST_PREFIX)]
  assert len(train) == 2 * len(cf.TRAIN_2019) and len(test) == 2 * len(cf.TEST_2019)
  assert len({r["case"] for r in records}) == len(records)  # testing reuses patient0001
  assert all(r["split"] is None and r["label"] is not None for r in train)
  assert all(r["split"] == "test" and r["label"] is None for r in test)
  assert (train[0]["lvedv"], train[0]["lvesv"], train[0]["lvef"]) == (120.25, 60, 50.1)
  assert not {"lvedv", "lvesv", "lvef"} & set(test[0])
  assert test[0]["case"] == "test-patient0001_2CH_ED"


# --- errors ------------------------------------------------------------------------------


def _nifti(patient, name):
  return f"database_nifti/{patient}/{name}"


def _truncate(path: pathlib.Path, keep: int = 100) -> None:
  path.write_bytes(path.read_bytes()[:keep])


def _replace(path: pathlib.Path, old: str, new: str) -> None:
  path.write_text(path.read_text().replace(old, new))


NIFTI_BREAKS = {
    "missing_frame": (_nifti("patient0002", "patient0002_2CH_ES.nii.gz"), lambda p: p.unlink()),
    "missing_gt": (_nifti("patient0003", "patient0003_2CH_ED_gt.nii.gz"), lambda p: p.unlink()),
    "shape_mismatch": (_nifti("patient0001", "patient0001_2CH_ES_gt.nii.gz"),
                       lambda p: cf.save_nifti(p, np.zeros((40, 40), np.uint8))),
    "label_values": (_nifti("patient0004", "patient0004_2CH_ED_gt.nii.gz"),
                     lambda p: cf.save_nifti(p, np.full(cf.SHAPE, 7, np.uint8))),
    "unknown_quality": (_nifti("patient0002", "Info_2CH.cfg"),
                        lambda p: _replace(p, "ImageQuality: Medium", "ImageQuality: Great")),
    "cfg_line": (_nifti("patient0001", "Info_2CH.cfg"),
                 lambda p: p.write_text(p.read_text() + "this line has no colon\n")),
    "cfg_frame": (_nifti("patient0001", "Info_2CH.cfg"),
                  lambda p: _replace(p, "ES: 4", "ES: last")),
    "truncated_nifti": (_nifti("patient0003", "patient0003_2CH_ES.nii.gz"), _truncate),
    "split_twice": ("database_split/subgroup_testing.txt",
                    lambda p: p.write_text(p.read_text() + "patient0001\n")),
}


@pytest.mark.parametrize("kind", sorted(NIFTI_BREAKS))
def test_nifti_errors_name_the_file(kind, nifti_root, tmp_path):
  root = tmp_path / "camus"
  shutil.copytree(nifti_root, root)
  relative, damage = NIFTI_BREAKS[kind]
  damage(root / relative)
  with pytest.raises(InputError) as error:
    camus.read_camus(root)
  assert error.value.where == str(root / relative)
  assert str(error.value).startswith(str(root / relative)) and "\n" not in str(error.value)


MHD_BREAKS = {
    "missing_gt": ("training/patient0002/patient0002_2CH_ES_gt.mhd", lambda p: p.unlink(),
                   "training/patient0002/patient0002_2CH_ES_gt.mhd"),
    "missing_frame": ("testing/patient0001/patient0001_2CH_ED.mhd", lambda p: p.unlink(),
                      "testing/patient0001/patient0001_2CH_ED.mhd"),
    "truncated_raw": ("training/patient0001/patient0001_2CH_ED.raw", _truncate,
                      "training/patient0001/patient0001_2CH_ED.raw"),
    "corrupt_header": ("training/patient0003/patient0003_2CH_ES.mhd",
                       lambda p: p.write_text("garbage\n"),
                       "training/patient0003/patient0003_2CH_ES.mhd"),
}


@pytest.mark.parametrize("kind", sorted(MHD_BREAKS))
def test_2019_errors_name_the_file(kind, mhd_root, tmp_path):
  root = tmp_path / "camus"
  shutil.copytree(mhd_root, root)
  relative, damage, named = MHD_BREAKS[kind]
  damage(root / relative)
  with pytest.raises(InputError) as error:
    camus.read_camus(root)
  assert error.value.where == str(root / named) and "\n" not in str(error.value)


def test_root_errors(tmp_path):
  with pytest.raises(InputError, match="does not exist") as error:
    camus.read_camus(tmp_path / "nowhere")
  assert error.value.where == str(tmp_path / "nowhere")
  (tmp_path / "notes.txt").write_text("not CAMUS")
  with pytest.raises(InputError, match="not a CAMUS folder"):
    camus.read_camus(tmp_path)
  with pytest.raises(InputError, match="not a folder"):
    camus.read_camus(tmp_path / "notes.txt")
  (tmp_path / "database_nifti").mkdir()
  with pytest.raises(InputError, match="no patientXXXX"):
    camus.read_camus(tmp_path)
  with pytest.raises(InputError, match="unknown CAMUS view"):
    camus.read_camus(tmp_path, view="3CH")


# --- TFDS --------------------------------------------------------------------------------


def _assert_same_records(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert g.keys() == w.keys(), w["case"]
    for key, value in w.items():
      if isinstance(value, np.ndarray):
        assert g[key].dtype == value.dtype and g[key].shape == value.shape, (w["case"], key)
        np.testing.assert_array_equal(g[key], value)
      else:
        assert g[key] == value and type(g[key]) is type(value), (w["case"], key)


# Makes `import tensorflow` fail as if it were not installed, even where it is.
_WITHOUT_TF = """
import importlib.machinery, runpy, sys
class NoTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name == "tensorflow" or name.startswith("tensorflow."):
      return None
    return importlib.machinery.PathFinder.find_spec(name, path, target)
  def invalidate_caches(self):
    importlib.machinery.PathFinder.invalidate_caches()
sys.meta_path[:] = [NoTensorFlow() if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
sys.argv = ["prepare"] + sys.argv[1:]
try:
  runpy.run_module("echokld.data.prepare", run_name="__main__")
finally:  # app.run exits through SystemExit
  if "tensorflow" in sys.modules:
    sys.exit("tensorflow was imported")
"""


def _run_prepare(camus_dir, data_dir, *extra):
  """Runs the CLI with TensorFlow unimportable, as on a machine without it."""
  env = {**os.environ,
         "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
  return subprocess.run(
      [sys.executable, "-c", _WITHOUT_TF, f"--camus_dir={camus_dir}", f"--data_dir={data_dir}",
       *extra],
      capture_output=True, text=True, env=env, timeout=120, check=False)


def test_prepare_cli_then_read_records_without_tensorflow(mhd_root, tmp_path):
  from echokld.data import camus_tfds  # pylint: disable=g-import-not-at-top

  done = _run_prepare(mhd_root, tmp_path / "out")
  assert done.returncode == 0, done.stderr
  assert "CAMUS 2CH frames" in done.stderr  # the tqdm bar
  _assert_same_records(camus_tfds.read_records(tmp_path / "out"), camus.read_camus(mhd_root))
  with pytest.raises(InputError, match="--view=4CH"):
    camus_tfds.read_records(tmp_path / "out", view="4CH")


def test_prepare_cli_input_error_exits_2(tmp_path):
  done = _run_prepare(tmp_path / "missing", tmp_path / "out")
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'missing'}: CAMUS folder does not exist")


def test_tfds_nifti_same_arrays(nifti_root, tmp_path):
  from echokld.data import camus_tfds  # pylint: disable=g-import-not-at-top

  camus_tfds.prepare(nifti_root, tmp_path, view="4CH")
  _assert_same_records(camus_tfds.read_records(tmp_path, view="4CH"),
                       camus.read_camus(nifti_root, view="4CH"))


def test_tfds_prepare_stops_on_a_damaged_frame(nifti_root, tmp_path):
  from echokld.data import camus_tfds  # pylint: disable=g-import-not-at-top

  root = tmp_path / "camus"
  shutil.copytree(nifti_root, root)
  damaged = root / _nifti("patient0004", "patient0004_2CH_ED.nii.gz")
  _truncate(damaged)  # found only while writing: the folder check passes.
  with pytest.raises(InputError) as error:
    camus_tfds.prepare(root, tmp_path / "out")
  assert error.value.where == str(damaged)
  with pytest.raises(InputError, match="no prepared camus_lv/2CH"):
    camus_tfds.read_records(tmp_path / "out")
