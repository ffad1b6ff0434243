"""experiments/study_outputs.py: a run's small outputs out, and the report's sweep back in.

The exported folder must hold no image or label; the restored run must give the report the
same images and masks the run was tested on (its config's split, re-read from the data).
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from echokld import registry
from echokld.data import pipeline

import study_outputs  # experiments/ is on sys.path (conftest.py).


@pytest.fixture
def data_root(tmp_path):
  """A `folder` source: 12 patients x ED/ES of Good quality, random images, a disc label."""
  root = tmp_path / "data"
  (root / "images").mkdir(parents=True)
  (root / "labels").mkdir()
  rng = np.random.default_rng(0)
  rows = []
  for p in range(12):
    for phase in ("ED", "ES"):
      case = f"patient{p:04d}_2CH_{phase}"
      yy, xx = np.mgrid[:40, :40]
      label = ((yy - 20) ** 2 + (xx - 20) ** 2 < (8 + p % 4) ** 2).astype(np.uint8)
      Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(
          root / "images" / f"{case}.png")
      Image.fromarray(label).save(root / "labels" / f"{case}.png")
      rows.append({"case": case, "patient": f"patient{p:04d}", "view": "2CH", "phase": phase,
                   "split": "train", "image_quality": "Good", "ef": ""})
  with open(root / "metadata.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return root


def fake_finished_run(run_dir, data_root):
  """A finished run's files as echokld.train writes them, predictions = the truth shifted."""
  config = registry.load_config("dice:cpu_study")
  config.data.source, config.data.root = "folder", str(data_root)
  config.data.image_size = 32
  config.data.qualities, config.data.keep_unknown_quality = ("Good",), False
  config.data.test_frames.Good = 6
  config.seed = 3
  test = pipeline.build_splits(config)[0]["test"]
  run_dir.mkdir(parents=True)
  (run_dir / "config.json").write_text(config.to_json())
  (run_dir / "summary.json").write_text(json.dumps({"epochs": 9, "stopped_early": True}))
  (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
  (run_dir / "checkpoints").mkdir()
  pred = np.roll(test.masks, 1, axis=2)
  np.savez_compressed(run_dir / "test_predictions.npz", cases=np.asarray(test.cases),
                      images=test.images, masks=test.masks, pred=pred)
  return test, pred


def test_export_keeps_no_data_and_restore_gives_the_report_its_arrays(data_root, tmp_path):
  test, pred = fake_finished_run(tmp_path / "sweep" / "dice_Good_seed3", data_root)
  exported = tmp_path / "docs"
  assert study_outputs.export_run(str(tmp_path / "sweep" / "dice_Good_seed3"),
                                  str(exported / "dice_Good_seed3"))
  files = sorted(p.name for p in (exported / "dice_Good_seed3").iterdir())
  assert files == ["config.json", "metrics.jsonl", "summary.json", "test_pred.npz"]
  with np.load(exported / "dice_Good_seed3" / "test_pred.npz") as saved:
    assert sorted(saved.files) == ["cases", "pred"]  # No image, no label.
    np.testing.assert_array_equal(saved["pred"], pred)
  # A second export of the same run changes nothing.
  assert not study_outputs.export_run(str(tmp_path / "sweep" / "dice_Good_seed3"),
                                      str(exported / "dice_Good_seed3"))
  study_outputs.restore_run(str(exported / "dice_Good_seed3"), str(data_root),
                            str(tmp_path / "restored" / "dice_Good_seed3"))
  with np.load(tmp_path / "restored" / "dice_Good_seed3" / "test_predictions.npz") as back:
    np.testing.assert_array_equal(back["images"], test.images)
    np.testing.assert_array_equal(back["masks"], test.masks)
    np.testing.assert_array_equal(back["pred"], pred)
    assert list(back["cases"]) == list(test.cases)


def test_restore_from_other_data_is_one_line_exit_2(data_root, tmp_path):
  test, _ = fake_finished_run(tmp_path / "sweep" / "dice_Good_seed3", data_root)
  script = [sys.executable, os.path.join(ROOT, "experiments", "study_outputs.py")]
  done = subprocess.run(script + ["export", f"--sweep_dir={tmp_path / 'sweep'}",
                                  f"--out={tmp_path / 'docs'}"], capture_output=True,
                        text=True, cwd=ROOT)
  assert done.returncode == 0 and "exported 1 new of 1" in done.stdout, done.stderr
  gone = test.cases[0]  # A test frame missing from the data now.
  (data_root / "images" / f"{gone}.png").unlink()
  (data_root / "labels" / f"{gone}.png").unlink()
  lines = [r for r in (data_root / "metadata.csv").read_text().splitlines()
           if not r.startswith(gone)]
  (data_root / "metadata.csv").write_text("\n".join(lines) + "\n")
  failed = subprocess.run(script + ["restore", f"--runs={tmp_path / 'docs'}",
                                    f"--data_root={data_root}", f"--out={tmp_path / 'r'}"],
                          capture_output=True, text=True, cwd=ROOT)
  assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
  assert "differ from the exported ones" in failed.stderr
