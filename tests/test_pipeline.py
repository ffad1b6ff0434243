"""Synthetic data, the folder source, splits and geometry."""

import os

import numpy as np
import pytest
from PIL import Image

from echokld.data import folder, pipeline, synthetic
from echokld.errors import InputError


def test_synthetic_is_deterministic_and_prefix_stable():
  a = synthetic.make_synthetic(6, seed=3, image_shape=(64, 64))
  b = synthetic.make_synthetic(8, seed=3, image_shape=(64, 64))
  for ra, rb in zip(a, b):
    assert ra["case"] == rb["case"]
    np.testing.assert_array_equal(ra["image"], rb["image"])
    np.testing.assert_array_equal(ra["label"], rb["label"])
  c = synthetic.make_synthetic(6, seed=4, image_shape=(64, 64))
  assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_synthetic_anatomy_and_shared_blood_distribution():
  records = synthetic.make_synthetic(30, seed=0, image_shape=(128, 128))
  assert {r["quality"] for r in records} == {"Good", "Medium", "Poor"}
  for r in records:
    assert set(np.unique(r["label"])) <= {0, 1, 2, 3} and (r["label"] == 1).any()
    assert (r["label"] == 3).any() and (r["label"] == 2).any()
  good = [r for r in records if r["quality"] == "Good"]
  lv = np.concatenate([r["image"][r["label"] == 1] for r in good]).astype(float)
  la = np.concatenate([r["image"][r["label"] == 3] for r in good]).astype(float)
  myo = np.concatenate([r["image"][r["label"] == 2] for r in good]).astype(float)
  # Cavity and atrium look alike (same blood model); the myocardium is far brighter.
  assert abs(np.median(lv) - np.median(la)) < 0.3 * np.median(lv) + 3
  assert np.median(myo) > 3 * np.median(lv)
  # ES cavities are smaller than ED ones for every patient.
  for ed, es in zip(records[::2], records[1::2]):
    assert (es["label"] == 1).sum() < (ed["label"] == 1).sum()


def _frames(num_patients, quality_cycle=("Good", "Medium", "Poor")):
  out = []
  for p in range(num_patients):
    for phase in ("ED", "ES"):
      out.append(dict(case=f"p{p}_{phase}", patient=f"p{p}", view="2CH", phase=phase,
                      quality=quality_cycle[p % len(quality_cycle)],
                      image=np.zeros((8, 8), np.uint8), label=np.ones((8, 8), np.uint8),
                      spacing_mm=None, split=None))
  return out


def test_paper_split_reserves_test_frames_by_patient_and_is_disjoint():
  frames = _frames(60)
  splits = pipeline.split_frames(frames, "paper", {"Good": 6, "Medium": 4, "Poor": 2},
                                 0.2, seed=1)
  patients = {k: {r["patient"] for r in v} for k, v in splits.items()}
  assert not patients["train"] & patients["val"]
  assert not patients["train"] & patients["test"] and not patients["val"] & patients["test"]
  test_counts = {q: sum(r["quality"] == q for r in splits["test"]) for q in
                 ("Good", "Medium", "Poor")}
  assert test_counts == {"Good": 6, "Medium": 4, "Poor": 2}
  assert sum(len(v) for v in splits.values()) == len(frames)
  # 20% of the remaining patients of each group go to validation: 20 patients per group,
  # minus the test patients (3, 2, 1), times 0.2 rounded.
  assert len(patients["val"]) == round(0.2 * 17) + round(0.2 * 18) + round(0.2 * 19)
  again = pipeline.split_frames(frames, "paper", {"Good": 6, "Medium": 4, "Poor": 2}, 0.2, 1)
  assert [r["case"] for r in again["val"]] == [r["case"] for r in splits["val"]]


def test_group_selection_can_exclude_unknown_quality_and_paper_split_fits_a_small_group():
  # Like camus224's Poor group: 16 patients (32 frames) of known quality among unknown ones.
  frames = _frames(64, quality_cycle=("Poor", None, None, None))
  with_unknown = pipeline.select_frames(frames, "2CH", ("Poor",))
  assert len(with_unknown) == 128  # Unknown quality is kept by default.
  poor = pipeline.select_frames(frames, "2CH", ("Poor",), keep_unknown=False)
  assert len(poor) == 32 and {r["quality"] for r in poor} == {"Poor"}
  splits = pipeline.split_frames(poor, "paper", {"Good": 36, "Medium": 30, "Poor": 10},
                                 0.2, seed=0)
  # 5 test patients (10 frames); of the other 11, round(2.2) = 2 validate and 9 train.
  assert [len(splits[k]) for k in ("train", "val", "test")] == [18, 4, 10]
  assert all(r["quality"] == "Poor" for v in splits.values() for r in v)


def test_build_splits_of_a_group_run_hold_only_that_group(tiny):
  config = tiny(**{"data.qualities": ("Medium",), "data.keep_unknown_quality": False,
                   "data.synthetic_patients": 40})
  arrays, cases = pipeline.build_splits(config)
  assert {q for a in arrays.values() for q in a.qualities} == {"Medium"}
  assert len(arrays["test"]) == 4 and len(arrays["train"]) > 0 and len(arrays["val"]) > 0


def test_official_split_uses_record_fields_and_falls_back_to_val_for_test():
  frames = _frames(10)
  for r in frames:
    r["split"] = "train" if int(r["patient"][1:]) < 7 else "val"
  s = pipeline.split_frames(frames, "official", {}, 0.2, 0)
  assert len(s["train"]) == 14 and len(s["val"]) == 6 and s["test"] == s["val"]


def test_pad_keeps_lv_and_undo_restores_the_frame():
  label = np.zeros((50, 37), np.uint8); label[30:45, 5:20] = 1; label[2:4, 30:35] = 3
  image = np.arange(50 * 37, dtype=np.uint16).reshape(50, 37)
  shape = pipeline.model_shape([dict(image=image)], 0, ())
  assert shape == (64, 48)
  img, mask, geom = pipeline.preprocess_frame(image, label, shape, False, (0.3, 0.2))
  assert img.shape == shape and img.dtype == np.uint8 and mask.sum() == (label == 1).sum()
  assert geom.offset == (0, 5) and geom.spacing_mm == (0.3, 0.2)
  np.testing.assert_array_equal(pipeline.undo_geometry(mask, geom), label == 1)


def test_crop_shifts_to_keep_the_lv_inside():
  label = np.zeros((80, 60), np.uint8); label[60:75, 2:12] = 1
  image = np.full((80, 60), 7, np.uint8)
  img, mask, geom = pipeline.preprocess_frame(image, label, (48, 32), False, None)
  assert mask.sum() == (label == 1).sum()  # whole LV kept although it is far from centre
  np.testing.assert_array_equal(pipeline.undo_geometry(mask, geom), label == 1)
  with pytest.raises(InputError, match="does not fit"):
    pipeline.preprocess_frame(image, label, (8, 8), False, None, where="f.png")


def test_resize_scales_spacing_and_keeps_labels_nearest():
  label = np.zeros((40, 60), np.uint8); label[10:30, 20:40] = 1; label[:5] = 2
  img, mask, geom = pipeline.preprocess_frame(np.zeros((40, 60), np.uint8), label, (20, 30),
                                              True, (0.5, 0.4))
  assert set(np.unique(mask)) == {0, 1} and mask.sum() == 100
  assert geom.spacing_mm == pytest.approx((1.0, 0.8))


def test_to_uint8_min_max_scales_non_8bit_images():
  out = pipeline.to_uint8(np.array([[10.0, 20.0], [30.0, 50.0]]))
  np.testing.assert_array_equal(out, [[0, 64], [128, 255]])


# ---- folder source -------------------------------------------------------------------


def write_folder(root, cases=("patient0001_2CH_ED", "patient0001_2CH_ES"), size=(24, 20)):
  os.makedirs(root / "images", exist_ok=True)
  os.makedirs(root / "labels", exist_ok=True)
  for i, case in enumerate(cases):
    image = np.full(size, 40 + i, np.uint8)
    label = np.zeros(size, np.uint8); label[5:15, 5:12] = 1
    Image.fromarray(image).save(root / "images" / f"{case}.png")
    Image.fromarray(label).save(root / "labels" / f"{case}.png")


def test_folder_source_reads_images_labels_and_metadata(tmp_path):
  write_folder(tmp_path, cases=("patient0001_2CH_ED", "patient0002_2CH_ES"))
  (tmp_path / "metadata.csv").write_text(  # One patient per split (issue 18.7).
      "case,patient,view,phase,split,image_quality\n"
      "patient0001_2CH_ED,patient0001,2CH,ED,train,Good\n"
      "patient0002_2CH_ES,patient0002,2CH,ES,val,\n")
  records = folder.read_folder(str(tmp_path))
  assert [r["case"] for r in records] == ["patient0001_2CH_ED", "patient0002_2CH_ES"]
  assert records[0]["quality"] == "Good" and records[1]["quality"] is None
  assert records[0]["split"] == "train" and records[1]["split"] == "val"
  assert records[0]["image"][0, 0] == 40 and (records[0]["label"] == 1).sum() == 70


def broken_folder(tmp_path, breakage):
  """A folder source broken in one way (shared with the CLI tests); returns its root."""
  root = tmp_path / ("missing" if breakage == "no_root" else "data")
  if breakage == "empty":
    os.makedirs(root / "images")
  elif breakage != "no_root":
    write_folder(root)
  labels, images = root / "labels", root / "images"
  if breakage == "shape":
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(labels / "patient0001_2CH_ED.png")
  elif breakage == "values":
    Image.fromarray(np.full((24, 20), 7, np.uint8)).save(labels / "patient0001_2CH_ED.png")
  elif breakage == "corrupt":
    data = (images / "patient0001_2CH_ES.png").read_bytes()
    (images / "patient0001_2CH_ES.png").write_bytes(data[:40])
  elif breakage == "no_label":
    os.remove(labels / "patient0001_2CH_ES.png")
  return root


@pytest.mark.parametrize("breakage, culprit, message", [
    ("no_root", "missing", "does not exist"),
    ("empty", "images", "no images"),
    ("shape", "patient0001_2CH_ED.png", "differs from image shape"),
    ("values", "patient0001_2CH_ED.png", "outside {0, 1, 2, 3}"),
    ("corrupt", "patient0001_2CH_ES.png", "unreadable image"),
    ("no_label", "patient0001_2CH_ES.png", "missing label"),
])
def test_folder_source_errors_name_the_file(tmp_path, breakage, culprit, message):
  root = broken_folder(tmp_path, breakage)
  with pytest.raises(InputError) as info:
    folder.read_folder(str(root))
  assert culprit in info.value.where and message in str(info.value)
  assert "\n" not in str(info.value)
