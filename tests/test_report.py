"""python -m echokld.report on a fake sweep written in the formats train.py writes."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from conftest import ROOT
from echokld.evaluation import test_set as evaluate
from echokld.train import writers

MODELS = {"dice": 0.0, "kld_alpha": 0.02, "vae": -0.1}
SEEDS = (0, 1)
QUALITIES = ("Good", "Medium", "Poor")
BASE = {"Good": 0.9, "Medium": 0.85, "Poor": 0.75}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIAGONAL = float(np.hypot(31, 31))  # Of a 32x32 frame.
HOST_PEAK = {"dice": 1.5e9, "kld_alpha": 2.5e9, "vae": 3.0e9}  # Per model, seed 0; +1e8 seed 1.


def fake_cases(seed):
  """Seed-dependent test sets (as under the paper split): c00-c14, then c03-c17."""
  return [f"c{i:02d}" for i in range(3 * seed, 3 * seed + 15)]


def fake_rows(model, seed):
  rng = np.random.default_rng([seed, list(MODELS).index(model)])
  rows = []
  for case in fake_cases(seed):
    quality = QUALITIES[int(case[1:]) % 3]
    dice = float(np.clip(BASE[quality] + MODELS[model] + rng.normal(0, 0.03), 0, 1))
    if model == "vae" and seed == 0 and case == "c05":  # An empty prediction (metrics.py).
      rows.append(dict(case=case, quality=quality, dice=0.0, recall=0.0, precision=0.0,
                       mhd_px=DIAGONAL, mhd_mm=0.3 * DIAGONAL, hd95_px=DIAGONAL, empty=1.0,
                       components=0.0, holes=0.0, contour_ratio=float("nan"),
                       truth_contour_ratio=1.04))
      continue
    mhd = 20 * (1 - dice) + rng.uniform(0, 1)
    rows.append(dict(case=case, quality=quality, dice=dice, recall=min(1.0, dice + 0.02),
                     precision=dice - 0.01, mhd_px=mhd, mhd_mm=0.3 * mhd, hd95_px=2 * mhd,
                     empty=0.0, components=float(1 + (rng.uniform() < 0.3)),
                     holes=float(rng.uniform() < 0.2 + 0.2 * (model == "vae")),
                     contour_ratio=1.05 + 0.1 * rng.uniform() + 0.05 * (model == "vae"),
                     truth_contour_ratio=1.04))
  return rows


def write_run(workdir, model, seed, epochs=4, finished=True, rows=None, config=None,
              memory=True):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config or {"seed": seed, "model": {"name": model}}, f)
  writer = writers.MetricWriter(workdir, tensorboard=False)
  for epoch in range(1, epochs + 1):
    seconds = 30.0 + epoch + (5 if model == "vae" else 0)
    writer.write({"epoch": epoch, "step": 10 * epoch, "val_dice": 0.5 + 0.1 * epoch + MODELS[model],
                  "learning_rate": 1e-3, "epoch_seconds": seconds,
                  "images_per_second": 40 / seconds, "train_total": 1.0 / epoch,
                  "train_dice": 1.0 / epoch})
  if not finished:
    return
  rows = fake_rows(model, seed) if rows is None else rows
  evaluate.write_csv(rows, os.path.join(workdir, "test_metrics.csv"))
  summary = {"model": model, "num_params": 1506689 + (32 if model != "dice" else 0),
             "epochs": epochs, "stopped_early": False, "image_shape": [32, 32],
             "frames": {"train": 40, "val": 10, "test": len(rows)}, "test_is_val": False,
             "train_seconds": 130.0, "train_images_per_second": 1.25,
             "val": {"best_dice": 0.5 + 0.1 * epochs, "best_epoch": epochs},
             "test": evaluate.summarize(rows)}
  if memory:
    summary["memory"] = {"host_peak_bytes": HOST_PEAK[model] + 1e8 * seed,
                         "device_peak_bytes": None if model == "dice" else 4e8 + seed,
                         "device_platform": "gpu"}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)


def seed_averaged(rows_of, model, metric):
  """Per-case `metric` of `model` averaged over SEEDS (NaN skipped), cases sorted."""
  per_case = {}
  for seed in SEEDS:
    for row in rows_of(model, seed):
      per_case.setdefault(row["case"], []).append(row[metric])
  return np.array([np.nanmean(per_case[c]) for c in sorted(per_case)])


def run_report(*args):
  return subprocess.run([sys.executable, "-m", "echokld.report", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  sweep = tmp_path_factory.mktemp("sweep")
  for seed in SEEDS:
    for model in MODELS:
      write_run(str(sweep / f"{model}_seed{seed}"), model, seed)
  write_run(str(sweep / "dice_seed2"), "dice", 2)  # Seed 2 is not finished by every model.
  write_run(str(sweep / "kld_alpha_seed2"), "kld_alpha", 2, finished=False)
  out = tmp_path_factory.mktemp("report")
  result = run_report(f"--sweep_dir={sweep}", f"--out={out}")
  assert result.returncode == 0, result.stderr
  return out


def read_csv(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def test_report_md_names_every_table_and_file(report):
  text = (report / "report.md").read_text()
  for number in range(1, 9):
    assert f"Table {number} analogue" in text, number
  for heading in ("Summary over seeds", "Figures 8–10", "Figures 11–13", "Figures 5–7"):
    assert heading in text
  assert "`dice_seed2`" in text  # Named as left out.
  assert text.count("have no test_predictions.npz") == 3  # Older runs: panels skipped.
  assert "kld_alpha_seed2" not in text  # Unfinished runs are not runs.
  for filename in os.listdir(report):
    if filename != "report.md":
      assert filename in text, filename


def test_csv_headers_and_rows(report):
  header, rows = read_csv(report / "summary.csv")
  assert header[:4] == ["model", "runs", "test_dice_mean", "test_dice_std"]
  assert [r[0] for r in rows] == ["dice", "vae", "kld_alpha"]  # The paper's model order.
  assert all(r[1] == "2" for r in rows)
  dice_runs = [evaluate.summarize(fake_rows("dice", s))["dice"] for s in SEEDS]
  assert float(rows[0][2]) == pytest.approx(np.mean(dice_runs), abs=1e-6)
  assert float(rows[0][3]) == pytest.approx(np.std(dice_runs, ddof=1), abs=1e-6)
  assert float(rows[0][4]) <= float(rows[0][2]) <= float(rows[0][5])

  for group in ("poor", "medium", "good", "all"):
    header, rows = read_csv(report / f"metrics_{group}.csv")
    assert header == ["model", "frames", "recall", "dice", "mhd_px", "mhd_mm",
                      "empty_predictions"]
    assert len(rows) == 3
    header, rows = read_csv(report / f"pairwise_{group}.csv")
    assert header == ["model_a", "model_b", "n", "p_value", "p_holm",
                      "median_a_minus_median_b", "median_of_a_minus_b"]
    assert [(r[0], r[1]) for r in rows] == [("dice", "vae"), ("dice", "kld_alpha"),
                                            ("vae", "kld_alpha")]
  _, rows = read_csv(report / "metrics_all.csv")
  assert rows[1][0] == "vae" and rows[1][1] == "30" and rows[1][6] == "1"
  for group in ("poor", "medium", "good"):
    header, rows = read_csv(report / f"panel_{group}.csv")
    assert header == ["image", "case", "model", "recall", "dice", "mhd_px", "dice_spread"]
    assert len(rows) == 5 * 3
    spreads = [float(r[6]) for r in rows[::3]]
    assert spreads == sorted(spreads, reverse=True)
  assert not (report / "panel_all.csv").exists()

  header, rows = read_csv(report / "ranks.csv")
  assert header == ["quality", "model", "images", "rank_1", "rank_2", "rank_3"]
  assert len(rows) == 4 * 3
  all_rows = [r for r in rows if r[0] == "all"]
  assert all(r[2] == "18" for r in all_rows)  # c00-c17: the union of both seeds' test sets.
  assert sum(int(r[3]) for r in all_rows) >= 18

  header, rows = read_csv(report / "timing.csv")
  assert header[:3] == ["model", "runs", "seconds_per_epoch"]
  assert float(rows[0][2]) == pytest.approx(np.mean([32, 33, 34]))  # Epoch 1 left out.
  assert rows[0][5] == "1506689"


def test_shape_tables_count_and_average_the_pooled_rows(report):
  header, rows = read_csv(report / "shape_all.csv")
  assert header == ["model", "frames", "empty_predictions", "fragmented_predictions",
                    "predictions_with_holes", "components_mean", "holes_mean",
                    "contour_ratio_mean", "truth_contour_ratio_mean"]
  for row in rows:
    pooled = fake_rows(row[0], 0) + fake_rows(row[0], 1)
    assert row[1:5] == [str(len(pooled)), str(int(sum(r["empty"] for r in pooled))),
                        str(sum(r["components"] > 1 for r in pooled)),
                        str(sum(r["holes"] > 0 for r in pooled))], row
    ratios = [r["contour_ratio"] for r in pooled if not r["empty"]]  # NaN when empty.
    assert float(row[7]) == pytest.approx(np.mean(ratios), abs=1e-6)
    assert float(row[5]) == pytest.approx(np.mean([r["components"] for r in pooled]), abs=1e-6)
  assert [r[2] for r in rows] == ["0", "1", "0"]  # dice, vae, kld_alpha: vae's empty frame.
  # The contour ratio's paired test, on seed-averaged per-image values (NaN skipped).
  a, b = (seed_averaged(fake_rows, m, "contour_ratio") for m in ("dice", "vae"))
  _, rows = read_csv(report / "pairwise_contour_ratio_all.csv")
  row = next(r for r in rows if r[:2] == ["dice", "vae"])
  assert int(row[2]) == 18
  assert float(row[3]) == pytest.approx(sps.wilcoxon(a, b).pvalue, rel=1e-4, abs=1e-6)
  text = (report / "report.md").read_text()
  assert "## Shape: fragments, holes and contour smoothness" in text
  assert "Contour ratio ↓" in text and "RAM peak (GB)" in text


def test_cost_table_shows_the_peak_memory_of_the_runs(report):
  header, rows = read_csv(report / "timing.csv")
  assert header[-2:] == ["host_peak_gb", "device_peak_gb"]
  by_model = {r[0]: r for r in rows}
  assert float(by_model["dice"][-2]) == pytest.approx(1.6)  # The larger of both seeds.
  assert by_model["dice"][-1] == ""  # No device peak recorded (a CPU run).
  assert float(by_model["vae"][-1]) == pytest.approx(0.400000001)
  text = (report / "report.md").read_text()
  assert "| 4.0 | 1.60 | – |" in text and "| 4.0 | 3.10 | 0.40 |" in text


def test_sweep_of_older_runs_reads_with_blank_new_columns(tmp_path):
  """Runs written before the shape columns, memory and protocol records still report."""
  sweep = tmp_path / "sweep"
  old_columns = ["case", "quality", "dice", "recall", "precision", "mhd_px", "mhd_mm",
                 "hd95_px"]
  for model in ("dice", "vae"):
    workdir = sweep / f"{model}_seed0"
    rows = fake_rows(model, 0)
    write_run(str(workdir), model, 0, rows=rows, memory=False)
    with open(workdir / "test_metrics.csv", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(old_columns)
      for r in rows:  # Old rule: an empty prediction had NaN distances.
        empty = r["empty"] == 1.0
        writer.writerow([r["case"], r["quality"]] + [
            "" if empty and k in ("mhd_px", "mhd_mm", "hd95_px", "precision") else r[k]
            for k in old_columns[2:]])
  out = tmp_path / "out"
  result = run_report(f"--sweep_dir={sweep}", f"--out={out}")
  assert result.returncode == 0, result.stderr
  _, rows = read_csv(out / "metrics_all.csv")
  assert [r[6] for r in rows] == ["0", "1"]  # vae's empty frame, found by its NaN MHD.
  _, rows = read_csv(out / "shape_all.csv")
  assert rows[1][:5] == ["vae", "15", "1", "", ""] and rows[1][7] == ""
  _, rows = read_csv(out / "timing.csv")
  assert rows[0][-2:] == ["", ""]
  text = (out / "report.md").read_text()
  assert "No per-image contour ratios to compare" in text
  assert "Protocol of 2 runs: not recorded in config.json." in text


def test_pairwise_p_value_matches_scipy_on_seed_averaged_scores(report):
  a, b = (seed_averaged(fake_rows, m, "dice") for m in ("dice", "kld_alpha"))
  _, rows = read_csv(report / "pairwise_all.csv")
  row = next(r for r in rows if r[:2] == ["dice", "kld_alpha"])
  assert int(row[2]) == 18
  assert float(row[3]) == pytest.approx(sps.wilcoxon(a, b).pvalue, rel=1e-4, abs=1e-6)
  assert float(row[5]) == pytest.approx(np.median(a) - np.median(b), abs=1e-6)


def test_figures_are_png(report):
  names = ["fig_val_dice.png"] + [f"fig_test_dice_{g}.png" for g in
                                  ("poor", "medium", "good", "all")]
  for filename in names:
    with open(report / filename, "rb") as f:
      assert f.read(8) == PNG_MAGIC, filename


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_bad_sweep_dir_is_one_line_and_exit_2(tmp_path, make):
  sweep = tmp_path / "sweep"
  if make == "empty":
    (sweep / "dice_seed0").mkdir(parents=True)
  result = run_report(f"--sweep_dir={sweep}", f"--out={tmp_path / 'out'}")
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and str(sweep) in lines[0], result.stderr
  assert ("does not exist" if make == "missing" else "no finished runs") in lines[0]
  assert not (tmp_path / "out").exists()
