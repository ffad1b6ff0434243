"""experiments/ef_agreement.py on a synthetic camus224-like folder whose reference EF is the
true EF of its shapes, its statistics against scipy and hand-computed values, its errors."""

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats

from conftest import ROOT
import ef_agreement
from echokld.errors import InputError

# (patient, quality, split, (a, b) at ED, (a, b) at ES); the base plane cuts each ellipse at
# u = 0.5 a below its centre.
PATIENTS = [("patient0001", "Good", "train", (62, 27), (55, 20)),
            ("patient0002", "Good", "train", (66, 30), (62, 26)),
            ("patient0003", "Medium", "train", (58, 26), (50, 17)),
            ("patient0004", "Medium", "val", (70, 31), (63, 25)),
            ("patient0005", "Poor", "train", (60, 28), (57, 24)),
            ("patient0006", "Poor", "val", (64, 29), (52, 18))]
TILT = math.radians(12)


def truncated_volume(a, b):
  cut = 0.5 * a
  return math.pi * b * b * ((cut + a) - (cut ** 3 + a ** 3) / (3 * a * a))


def true_ef(ed, es):
  return 100 * (1 - truncated_volume(*es) / truncated_volume(*ed))


def label_map(a, b):
  """LV (1) as a tilted truncated ellipse, myocardium (2) around it except at the base,
  atrium (3) below the base."""
  rows, cols = np.mgrid[:224, :224].astype(float)
  u = (rows - 100.3) * math.cos(TILT) + (cols - 110.2) * math.sin(TILT)
  v = -(rows - 100.3) * math.sin(TILT) + (cols - 110.2) * math.cos(TILT)
  cut = 0.5 * a
  lv = ((u / a) ** 2 + (v / b) ** 2 <= 1) & (u <= cut)
  labels = np.zeros((224, 224), np.uint8)
  labels[ndimage.binary_dilation(lv, iterations=6) & (u <= cut)] = 2
  labels[(u > cut) & (u < cut + 30) & (np.abs(v) < 0.6 * b)] = 3
  labels[lv] = 1
  return labels


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("camus_like")
  (root / "labels").mkdir()
  rows = []
  for patient, quality, split, ed, es in PATIENTS:
    for phase, axes in (("ED", ed), ("ES", es)):
      case = f"{patient}_2CH_{phase}"
      Image.fromarray(label_map(*axes)).save(root / "labels" / f"{case}.png")
      rows.append({"case": case, "patient": patient, "view": "2CH", "phase": phase,
                   "split": split, "image_quality": quality, "ef": f"{true_ef(ed, es):.4f}"})
  rows.append({"case": "patient0009_2CH_ED", "patient": "patient0009", "view": "2CH",
               "phase": "ED", "split": "train", "image_quality": "", "ef": ""})
  with open(root / "metadata.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return root


def test_ground_truth_ef_matches_the_true_ef_of_the_shapes(data_root, tmp_path):
  out, work = tmp_path / "docs", tmp_path / "work"
  ef_agreement.main(["--data_root", str(data_root), "--out", str(out), "--csv_dir", str(work)])
  text = (out / "CLINICAL.md").read_text()
  assert (out / "figures" / "ef_bland_altman_gt.png").stat().st_size > 10_000
  assert "placeholder: not measured yet" in text
  assert "4 of these 6 patients" in text
  with open(work / "volumes_gt.csv", newline="") as f:
    table = [r for r in csv.DictReader(f) if r["method"] == "disks"]
  assert [r["patient"] for r in table] == [p[0] for p in PATIENTS]
  for row, (_, _, _, ed, es) in zip(table, PATIENTS):
    assert float(row["ef_px_percent"]) == pytest.approx(true_ef(ed, es), abs=1.5)
  # The disks row for all patients: bias within 1.5 EF points, near-perfect correlation.
  line = next(l for l in text.splitlines() if l.startswith("| disks (20) | all |"))
  cells = [c.strip() for c in line.strip("|").split("|")]
  assert int(cells[2]) == 6 and float(cells[3]) > 0.99 and abs(float(cells[4])) < 1.5


def test_model_masks_fill_the_model_section(data_root, tmp_path):
  pred = tmp_path / "pred" / "sub"
  pred.mkdir(parents=True)
  for patient, *_ in PATIENTS[:-1]:  # The last patient has no predictions: left out.
    for phase in ("ED", "ES"):
      labels = np.asarray(Image.open(data_root / "labels" / f"{patient}_2CH_{phase}.png"))
      Image.fromarray((labels == 1).astype(np.uint8)).save(pred / f"{patient}_2CH_{phase}_mask.png")
  out = tmp_path / "docs"
  ef_agreement.main(["--data_root", str(data_root), "--out", str(out), "--pred_dir",
                     str(tmp_path / "pred"), "--landmark_frames", "ef"])
  text = (out / "CLINICAL.md").read_text()
  assert "placeholder" not in text and "## EF from a trained model's masks" in text
  assert "Masks: 10 frames" in text and "mean Dice against the ground truth 1.000" in text
  assert (out / "figures" / "ef_bland_altman_model.png").is_file()
  model_rows = text.split("## EF from a trained model's masks")[1]
  line = next(l for l in model_rows.splitlines() if l.startswith("| disks (20) | all |"))
  assert int(line.strip("|").split("|")[2]) == 5
  assert "disks (20) r = 1.000, bias +0.0, MAE 0.0" in model_rows


def test_agreement_against_scipy_and_by_hand():
  ours = {"a": 50.0, "b": 40.0, "c": 62.0, "d": 35.0, "e": float("nan")}
  ref = {"a": 45.0, "b": 38.0, "c": 55.0, "d": 36.0, "e": 50.0}
  got = ef_agreement.agreement(ours, ref, list(ref))
  x, y = np.array([50, 40, 62, 35.0]), np.array([45, 38, 55, 36.0])
  diff = x - y  # 5, 2, 7, -1
  assert got["n"] == 4
  assert got["r"] == pytest.approx(stats.pearsonr(x, y)[0])
  assert got["bias"] == pytest.approx(3.25)
  assert got["sd"] == pytest.approx(np.std(diff, ddof=1))
  assert got["loa_high"] == pytest.approx(3.25 + 1.96 * np.std(diff, ddof=1))
  assert got["mae"] == pytest.approx(15 / 4)
  loo = [abs(5 - 8 / 3), abs(2 - 11 / 3), abs(7 - 2), abs(-1 - 14 / 3)]
  assert got["mae_loo"] == pytest.approx(np.mean(loo))


def test_label_annulus_is_the_lv_corners_open_to_the_atrium():
  labels = np.zeros((40, 40), np.uint8)
  labels[5:30, 8:32] = 2
  labels[30:36, 12:28] = 3
  labels[8:30, 12:28] = 1  # LV: rows 8-29, columns 12-27; its bottom row touches the atrium.
  np.testing.assert_array_equal(sorted(map(tuple, ef_agreement.label_annulus(labels))),
                                [(29, 12), (29, 27)])
  labels[labels == 3] = 2
  assert ef_agreement.label_annulus(labels) is None


def test_bad_folders_are_one_line_errors(data_root, tmp_path):
  with pytest.raises(InputError, match="metadata.csv: not found"):
    ef_agreement.main(["--data_root", str(tmp_path), "--out", str(tmp_path / "o")])
  with pytest.raises(InputError, match="no <case>_mask.png"):
    ef_agreement.main(["--data_root", str(data_root), "--out", str(tmp_path / "o"),
                       "--pred_dir", str(tmp_path), "--landmark_frames", "ef"])
  env = dict(os.environ, PYTHONPATH=ROOT)
  done = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "ef_agreement.py"),
                         "--data_root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                        capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 2
  assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
