"""The whole study pipeline, end to end on tiny synthetic data (--smoke)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from echokld.evaluation import metrics, test_set
from echokld.study import panels, sweep
from echokld.data import synthetic

MODELS = ("dice", "wdecay", "vae", "kld_alpha", "kld_kde", "rd_vae", "bd_vae")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def read_csv_rows(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def test_study_trains_seeds_as_replica_groups(tmp_path):
  command = [sys.executable, "experiments/reproduce_paper.py", "--smoke", f"--out={tmp_path}",
             "--groups=Good", "--models=dice", "--seeds=3,4", "--replicas=2"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  # One group program trained both seeds, each into its own ordinary workdir.
  assert "[run] dice_Good_seed3, dice_Good_seed4" in result.stdout
  for seed in (3, 4):
    workdir = tmp_path / "runs" / f"dice_Good_seed{seed}"
    assert json.load(open(workdir / "config.json"))["seed"] == seed
    # --smoke holds out 4 Good test frames.
    assert json.load(open(workdir / "summary.json"))["test"]["frames"] == 4
  assert json.load(open(tmp_path / "runs" / "sweep.json")) == {"protocol": "quick"}
  text = (tmp_path / "report" / "good" / "report.md").read_text()
  assert "Protocol of 2 runs (config.json): quick (" in text


def test_study_rejects_bad_seeds_and_replicas_in_one_line(tmp_path):
  for flag in ("--seeds=0,x", "--seeds=1,1", "--replicas=0"):
    result = subprocess.run([sys.executable, "experiments/reproduce_paper.py", "--smoke",
                             f"--out={tmp_path}", flag], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, flag
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not os.listdir(tmp_path), flag


def test_paper_protocol_smoke_study_end_to_end(tmp_path):
  """--protocol=paper --smoke --paper_models: every run loads <config>:paper (native 32x32
  frames, batch 2, Adam 1e-5; the smoke overrides shrink only the network, the data and the
  epochs), Poor runs leave out Models 3 and 7, every table and figure is written, and the
  report says which protocol ran. One quality group keeps the test short: the other groups
  run the same code (reports of several groups: test_study_report.py; of `all` runs:
  test_report.py; the quick protocol: the replica-group study below)."""
  command = [sys.executable, "experiments/reproduce_paper.py", "--protocol=paper", "--smoke",
             "--paper_models", f"--out={tmp_path}", "--groups=Poor"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-2000:]
  runs = tmp_path / "runs"
  models = sweep.paper_models("Poor")
  assert len(models) == len(MODELS) - 2 and "vae" not in models and "bd_vae" not in models
  assert sorted(os.listdir(runs)) == sorted([f"{m}_Poor_seed0" for m in models] +
                                            ["sweep.json"])
  assert json.load(open(runs / "sweep.json")) == {"protocol": "paper"}
  for model in models:
    workdir = runs / f"{model}_Poor_seed0"
    config = json.load(open(workdir / "config.json"))
    assert config["data"]["image_size"] == 0 and config["train"]["batch_size"] == 2
    assert config["train"]["learning_rate"] == 1e-5 and config["train"]["max_epochs"] == 2
    summary = json.load(open(workdir / "summary.json"))
    assert summary["image_shape"] == [32, 32] and summary["epochs"] == 2
    assert summary["memory"]["host_peak_bytes"] > 1e8  # A JAX process holds > 100 MB.
    # The CSV's metrics are those of the saved predictions, recomputed here.
    pred = panels.load_predictions(str(workdir))
    rows = read_rows(workdir / "test_metrics.csv")
    assert list(rows[0]) == list(test_set.CSV_COLUMNS)
    for i, row in enumerate(rows):
      m = metrics.frame_metrics(pred["pred"][i] > 0, pred["masks"][i] > 0, None)
      for key in ("dice", "mhd_px", "components", "holes", "contour_ratio", "empty"):
        assert float(row[key]) == pytest.approx(m[key], abs=1e-5, nan_ok=True), (model, key)
    assert summary["test"]["empty_predictions"] == sum(float(r["empty"]) for r in rows)

  report = tmp_path / "report"
  overview = (report / "report.md").read_text()
  assert "Protocol requested: `--protocol=paper` (sweep.json)." in overview
  assert (f"Protocol of {len(models)} runs (config.json): paper (augment.brightness = "
          "0.05, augment.contrast = 0.2, augment.enabled = false, augment.gamma = 0.3, "
          "data.image_size = native, train.batch_size = 2, ") in overview
  assert "except train.max_epochs = 2." in overview
  assert "## Shape of the predictions per training group" in overview
  text = (report / "poor" / "report.md").read_text()
  assert "## Shape: fragments, holes and contour smoothness" in text
  _, shape_rows = read_csv_rows(report / "poor" / "shape_poor.csv")
  assert [r[0] for r in shape_rows] == models and all(r[1] == "2" for r in shape_rows)
  header, timing = read_csv_rows(report / "poor" / "timing.csv")
  assert all(float(r[header.index("host_peak_gb")]) > 0.1 for r in timing)

  # A group run sees only frames of its group, in every split.
  quality = {r["case"]: r["quality"] for r in synthetic.make_synthetic(24, 0, (32, 32))}
  assert sum(q == "Poor" for q in quality.values()) == 8  # 4 patients: test 1, val 1, train 2.
  for model in ("dice", "kld_alpha"):
    split = json.load(open(runs / f"{model}_Poor_seed0" / "split.json"))
    assert {quality[c] for cases in split.values() for c in cases} == {"Poor"}
    assert [len(split[k]) for k in ("train", "val", "test")] == [4, 2, 2]
    assert [r["quality"] for r in read_rows(runs / f"{model}_Poor_seed0" /
                                            "test_metrics.csv")] == ["Poor", "Poor"]
  assert pred["images"].shape == pred["pred"].shape == (2, 32, 32)
  assert pred["pred"].dtype == np.uint8 and set(np.unique(pred["pred"])) <= {0, 1}

  # Every table and figure of the overview and of the group's report.
  assert "poor/report.md" in overview and "poor/fig_panel_poor.png" in overview
  _, ranks = read_csv_rows(report / "study_ranks.csv")
  assert len(ranks) == len(models) and all(r[:3] == ["Poor", m, "2"] for r, m in
                                           zip(ranks, models))
  assert sum(int(r[3]) for r in ranks) >= 2  # Every image has a first (ties share it).
  _, pairs = read_csv_rows(report / "study_kld_alpha.csv")
  assert len(pairs) == len(models) - 1 and all(r[2] == "2" for r in pairs)
  for table in ("Table 1", "Table 4", "Table 7", "Table 8"):
    assert table in text, table
  for csv_name in ("summary.csv", "ranks.csv", "timing.csv", "pairwise_poor.csv",
                   "metrics_poor.csv"):
    lines = (report / "poor" / csv_name).read_text().strip().splitlines()
    assert len(lines) >= 1 + len(models), csv_name
  for png in ("fig_val_dice.png", "fig_test_dice_poor.png"):
    assert (report / "poor" / png).read_bytes()[:8] == PNG_MAGIC, png
  # Panel: 2 Poor test frames -> 2 rows (median, worst 1); input, GT and 5 model columns.
  with Image.open(report / "poor" / "fig_panel_poor.png") as image:
    assert image.size == panels.figure_pixels(2, len(models))
  assert "median `" in text and "worst 1 `" in text and "worst 2" not in text

  # Rerunning finds every run finished and only rewrites the report.
  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and again.stdout.count("[skip]") == len(models)
