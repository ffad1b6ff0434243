"""Writes small CAMUS trees in the exact layouts of both releases, from synthetic frames.

Frames are drawn in the reader's convention (rows = depth, apex at the top) with a bright blob
at the top-left, then stored the way each release stores them, so a test that finds the blob
at the top-left again proves the orientation handling.
"""

from __future__ import annotations

import pathlib

import nibabel as nib
import numpy as np
import SimpleITK as sitk

SHAPE = (48, 40)  # (depth rows, width cols)
ROW_MM = 0.31  # along depth
COL_MM = 0.154  # across the sector; not isotropic on purpose
BLOB = (slice(2, 8), slice(2, 8))  # top-left, near the apex rows

NIFTI_PATIENTS = ("patient0001", "patient0002", "patient0003", "patient0004", "patient0005")
NIFTI_SPLIT = {"patient0001": "train", "patient0002": "train", "patient0003": "val",
               "patient0004": "test"}  # patient0005 is in no subgroup.
QUALITY = {"patient0001": "Good", "patient0002": "Medium", "patient0003": "Poor",
           "patient0004": "Good", "patient0005": "Medium"}
TRAIN_2019 = ("patient0001", "patient0002", "patient0003")
TEST_2019 = ("patient0001", "patient0002")  # the 2019 release numbers testing/ from 1 again.
REVERSED = "patient0002"  # its half sequence runs from ES to ED.


def frame(patient: str, view: str, phase: str, testing: bool = False
          ) -> tuple[np.ndarray, np.ndarray]:
  """Returns (image uint8, label uint8) in (depth, width), unique per frame."""
  seed = int(patient[-4:]) * 10 + (view == "4CH") * 4 + (phase == "ES") * 2 + testing
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[:SHAPE[0], :SHAPE[1]]
  image = rng.integers(20, 120, SHAPE, dtype=np.uint8)
  image[np.abs(cols - SHAPE[1] / 2) > rows * 0.45 + 1] = 0  # sector, apex at row 0
  image[BLOB] = 255
  label = np.zeros(SHAPE, np.uint8)
  inside = ((rows - 20) / 10.0) ** 2 + ((cols - 17) / 6.0) ** 2
  label[inside < 1.6] = 2
  label[inside < 1.0] = 1
  label[36:44, 12 + seed % 5:24] = 3
  return image, label


def cfg_text(patient: str, view: str, release: str, testing: bool = False) -> str:
  """The Info_<view>.cfg of a patient, with the trailing spaces the real files have."""
  ed, es, nb = (5, 1, 5) if patient == REVERSED else (1, 4, 4)
  lines = [f"ED: {ed}", f"ES: {es}", f"NbFrame: {nb}", "Sex: F ", f"Age: {40 + int(patient[-2:])}",
           f"ImageQuality: {QUALITY.get(patient, 'Good')}"]
  if release == "nifti":
    lines += [f"EF: {50 + int(patient[-1:])}.5", "FrameRate: 50 "]
  elif not testing:
    lines += ["LVedv: 120.25", "LVesv: 60", "LVef: 50.1"]
  return "\n".join(lines) + "\n"


def _sequence(patient: str, view: str, testing: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(frames, depth, width) image and label sequences; first and last are the key frames."""
  ed, ed_label = frame(patient, view, "ED", testing)
  es, es_label = frame(patient, view, "ES", testing)
  first, last = ((es, es_label), (ed, ed_label)) if patient == REVERSED else (
      (ed, ed_label), (es, es_label))
  middle = ((first[0].astype(np.uint16) + last[0]) // 2).astype(np.uint8)
  return (np.stack([first[0], middle, last[0]]),
          np.stack([first[1], np.maximum(first[1], last[1]), last[1]]))


def save_nifti(path: pathlib.Path, array: np.ndarray) -> None:
  """Saves (depth, width[, frames]) as the NIfTI release does: (width, depth[, frames])."""
  data = np.ascontiguousarray(np.swapaxes(array, 0, 1))
  image = nib.Nifti1Image(data, np.diag([COL_MM, ROW_MM, 1.0, 1.0]))
  image.header.set_xyzt_units("mm", "sec")
  image.header.set_zooms((COL_MM, ROW_MM) + (1.0,) * (data.ndim - 2))
  nib.save(image, str(path))


def save_mhd(path: pathlib.Path, array: np.ndarray) -> None:
  """Saves (depth, width) or (frames, depth, width) as a 3-D .mhd/.raw pair like 2019."""
  volume = array[None] if array.ndim == 2 else array
  image = sitk.GetImageFromArray(volume)  # array (z, y, x) -> image size (x, y, z)
  image.SetSpacing((COL_MM, ROW_MM, 1.0))
  sitk.WriteImage(image, str(path), useCompression=False)


def write_nifti_release(root: str | pathlib.Path, patients=NIFTI_PATIENTS,
                        split: bool = True) -> pathlib.Path:
  """Writes <root>/database_nifti (+ database_split) like the CAMUS NIfTI release."""
  root = pathlib.Path(root)
  for patient in patients:
    folder = root / "database_nifti" / patient
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MANDATORY_CITATION.md").write_text("Cite Leclerc et al., IEEE TMI 2019.\n")
    for view in ("2CH", "4CH"):
      (folder / f"Info_{view}.cfg").write_text(cfg_text(patient, view, "nifti"))
      for phase in ("ED", "ES"):
        image, label = frame(patient, view, phase)
        save_nifti(folder / f"{patient}_{view}_{phase}.nii.gz", image)
        save_nifti(folder / f"{patient}_{view}_{phase}_gt.nii.gz", label)
      images, labels = _sequence(patient, view)
      save_nifti(folder / f"{patient}_{view}_half_sequence.nii.gz", np.moveaxis(images, 0, -1))
      save_nifti(folder / f"{patient}_{view}_half_sequence_gt.nii.gz",
                 np.moveaxis(labels, 0, -1))
  if split:
    split_dir = root / "database_split"
    split_dir.mkdir(exist_ok=True)
    for subgroup, name in (("training", "train"), ("validation", "val"), ("testing", "test")):
      listed = [p for p, s in NIFTI_SPLIT.items() if s == name and p in patients]
      (split_dir / f"subgroup_{subgroup}.txt").write_text("".join(f"{p}\n" for p in listed))
  return root


def write_2019_release(root: str | pathlib.Path, train=TRAIN_2019,
                       test=TEST_2019) -> pathlib.Path:
  """Writes <root>/training and <root>/testing (.mhd/.raw, testing without _gt) like 2019."""
  root = pathlib.Path(root)
  for group, patients in (("training", train), ("testing", test)):
    testing = group == "testing"
    for patient in patients:
      folder = root / group / patient
      folder.mkdir(parents=True, exist_ok=True)
      for view in ("2CH", "4CH"):
        (folder / f"Info_{view}.cfg").write_text(cfg_text(patient, view, "2019", testing))
        for phase in ("ED", "ES"):
          image, label = frame(patient, view, phase, testing)
          save_mhd(folder / f"{patient}_{view}_{phase}.mhd", image)
          if not testing:
            save_mhd(folder / f"{patient}_{view}_{phase}_gt.mhd", label)
        save_mhd(folder / f"{patient}_{view}_sequence.mhd", _sequence(patient, view, testing)[0])
  return root
