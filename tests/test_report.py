"""python -m echokld.report on a fake sweep written in the formats train.py writes."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from PIL import Image

from conftest import ROOT
from echokld.evaluation import test_set as evaluate
from echokld.study import panels
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


# Quality-group runs (<model>_<group>_seed<N>/) with test predictions, beside `all` runs.
GROUP_CASES = {"Poor": 6, "Good": 10}


def group_rows(model, seed, group):
  """A group's test frames (p00.. or g00..), shifted by one frame per seed."""
  rng = np.random.default_rng([seed, list(MODELS).index(model), len(group)])
  rows = []
  for i in range(seed, seed + GROUP_CASES[group]):
    dice = float(np.clip(BASE[group] + MODELS[model] + rng.normal(0, 0.03), 0, 1))
    mhd = 20 * (1 - dice)
    rows.append(dict(case=f"{group[0].lower()}{i:02d}", quality=group, dice=dice,
                     recall=dice, precision=dice, mhd_px=mhd, mhd_mm=mhd, hd95_px=mhd))
  return rows


def write_predictions(workdir, rows, shift):
  rr, cc = np.mgrid[:32, :32]
  disc = lambda dr: (((rr - 16 - dr) ** 2 + (cc - 16) ** 2) < 64).astype(np.uint8)
  n = len(rows)
  np.savez_compressed(os.path.join(workdir, "test_predictions.npz"),
                      cases=np.array([r["case"] for r in rows]),
                      images=np.full((n, 32, 32), 90, np.uint8),
                      masks=np.stack([disc(0)] * n), pred=np.stack([disc(shift)] * n))


@pytest.fixture(scope="module")
def group_sweep(tmp_path_factory):
  sweep = tmp_path_factory.mktemp("group_sweep")
  for seed in SEEDS:
    for k, model in enumerate(MODELS):
      write_run(str(sweep / f"{model}_seed{seed}"), model, seed)
      write_predictions(str(sweep / f"{model}_seed{seed}"), fake_rows(model, seed), shift=k)
      for group in GROUP_CASES:
        workdir = str(sweep / f"{model}_{group}_seed{seed}")
        rows = group_rows(model, seed, group)
        write_run(workdir, model, seed, rows=rows)
        write_predictions(workdir, rows, shift=k)
  return sweep


@pytest.fixture(scope="module")
def group_report(group_sweep, tmp_path_factory):
  out = tmp_path_factory.mktemp("group_report")
  result = run_report(f"--sweep_dir={group_sweep}", f"--out={out}")
  assert result.returncode == 0, result.stderr
  return out


def test_group_sweep_gets_one_report_per_training_group(group_report):
  overview = (group_report / "report.md").read_text()
  for link in ("poor/report.md", "good/report.md", "all/report.md", "Table 7 analogue",
               "poor/fig_panel_poor.png", "good/fig_panel_good.png"):
    assert link in overview, link
  poor = (group_report / "poor" / "report.md").read_text()
  good = (group_report / "good" / "report.md").read_text()
  for text, own, other in ((poor, (1, 4), (3, 6)), (good, (3, 6), (1, 4))):
    assert all(f"Table {n} analogue" in text for n in (*own, 7, 8))
    assert not any(f"Table {n} analogue" in text for n in other)
    assert "quality frames only" in text
  assert not (group_report / "poor" / "metrics_all.csv").exists()  # "all" = Poor here.
  header, rows = read_csv(group_report / "poor" / "metrics_poor.csv")
  row = next(r for r in rows if r[0] == "kld_alpha")
  pooled = group_rows("kld_alpha", 0, "Poor") + group_rows("kld_alpha", 1, "Poor")
  assert row[1] == "12" and float(row[3]) == pytest.approx(np.mean([r["dice"] for r in pooled]))
  # The all-frames runs keep their per-quality tables, and get a panel per test quality:
  # 6 frames of each quality over both seeds (c00-c17) -> median and 3 worst.
  assert (group_report / "all" / "metrics_all.csv").exists()
  for quality in ("poor", "medium", "good"):
    with Image.open(group_report / "all" / f"fig_panel_{quality}.png") as image:
      assert image.size == panels.figure_pixels(4, 3), quality
    assert f"all/fig_panel_{quality}.png" in overview


def test_study_csvs_hold_the_groups_numbers(group_report):
  _, rows = read_csv(group_report / "study_summary.csv")
  assert {r[0] for r in rows} == {"Poor", "Good", "all"}
  row = next(r for r in rows if r[:2] == ["Good", "vae"])
  per_run = [evaluate.summarize(group_rows("vae", s, "Good"))["dice"] for s in SEEDS]
  assert row[2] == "2" and row[3] == "10"
  assert float(row[4]) == pytest.approx(np.mean(per_run), abs=1e-6)
  assert float(row[5]) == pytest.approx(np.std(per_run, ddof=1), abs=1e-6)
  _, rows = read_csv(group_report / "study_ranks.csv")
  poor = [r for r in rows if r[0] == "Poor"]
  assert len(poor) == 3 and all(r[2] == "7" for r in poor)  # p00-p06 over both seeds.
  assert sum(int(r[3]) for r in poor) >= 7
  # KLD-alpha vs Dice on Poor: the Wilcoxon p of the seed-averaged per-image Dice.
  poor_rows = lambda model, seed: group_rows(model, seed, "Poor")
  a, b = (seed_averaged(poor_rows, m, "dice") for m in ("kld_alpha", "dice"))
  _, rows = read_csv(group_report / "study_kld_alpha.csv")
  row = next(r for r in rows if r[:2] == ["Poor", "dice"])
  assert row[2] == "7"
  assert float(row[3]) == pytest.approx(np.median(a) - np.median(b), abs=1e-6)
  assert float(row[4]) == pytest.approx(sps.wilcoxon(a, b).pvalue, rel=1e-4)


def test_panel_png_has_a_row_per_chosen_frame_and_red_contours(group_report):
  for group in ("poor", "good"):
    path = group_report / group / f"fig_panel_{group}.png"
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # Rows: the median frame and the 3 worst; columns: input, ground truth, 3 models.
    assert image.shape[:2][::-1] == panels.figure_pixels(4, 3) == (800, 660)
    red = (image[..., 0] > 200) & (image[..., 1] < 100) & (image[..., 2] < 100)
    green = (image[..., 1] > 200) & (image[..., 0] < 150)
    assert red.sum() > 100 and green.sum() > 100
    text = (group_report / group / "report.md").read_text()
    assert all(text.count(f"worst {k} `") == 1 for k in (1, 2, 3)) and "median `" in text


def test_choose_cases_median_then_worst():
  cases = ["a", "b", "c", "d", "e", "f"]
  dice = np.array([0.9, 0.5, np.nan, 0.7, 0.8, 0.6])
  rows = panels.choose_cases(cases, dice, worst=3)
  # Sorted: c (NaN, lowest), b 0.5, f 0.6, d 0.7, e 0.8, a 0.9; median = 3rd of 6 = f.
  assert [c for _, c in rows] == ["f", "c", "b", "d"]
  assert rows[0][0] == "median (0.600)" and rows[2][0] == "worst 2 (0.500)"
  assert panels.choose_cases(["x"], np.array([0.4])) == [("median (0.400)", "x")]


def test_a_broken_predictions_file_is_one_line_and_exit_2(group_sweep, tmp_path):
  import shutil
  sweep = tmp_path / "sweep"
  shutil.copytree(group_sweep, sweep)
  (sweep / "vae_Good_seed1" / "test_predictions.npz").write_bytes(b"not a zip")
  result = run_report(f"--sweep_dir={sweep}", f"--out={tmp_path / 'out'}")
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "vae_Good_seed1/test_predictions.npz" in lines[0], lines


def test_paper_protocol_sweep_with_the_papers_model_sets_per_group(tmp_path):
  """--protocol=paper --paper_models as the report sees it: sweep.json, :paper configs, and
  no VAE on Poor frames (the paper skipped Models 3 and 7 there)."""
  from echokld import registry
  sweep = tmp_path / "sweep"
  sweep.mkdir()
  (sweep / "sweep.json").write_text(json.dumps({"protocol": "paper"}))
  for seed in SEEDS:
    for group, models in (("Poor", ("dice", "kld_alpha")), ("Good", tuple(MODELS))):
      for model in models:
        config = json.loads(registry.load_config(f"{model}:paper").to_json())
        config["seed"] = seed
        config["data"].update(qualities=[group], keep_unknown_quality=False)  # As --groups.
        if group == "Good":
          config["train"]["max_epochs"] = 5  # As a shortened paper run would.
        workdir = str(sweep / f"{model}_{group}_seed{seed}")
        write_run(workdir, model, seed, rows=group_rows(model, seed, group), config=config)
  out = tmp_path / "out"
  result = run_report(f"--sweep_dir={sweep}", f"--out={out}")
  assert result.returncode == 0, result.stderr
  overview = (out / "report.md").read_text()
  assert "Protocol requested: `--protocol=paper` (sweep.json)." in overview
  assert ("Protocol of 4 runs (config.json): paper (data.image_size = native, "
          "train.batch_size = 2, train.eval_batch_size = 4, train.learning_rate = 1e-05, "
          "train.max_epochs = 1000).") in overview
  assert "Protocol of 6 runs (config.json): paper (" in overview
  assert "except train.max_epochs = 5." in overview
  poor = (out / "poor" / "report.md").read_text()
  assert "Protocol of 4 runs (config.json): paper" in poor and "except" not in poor
  # Ranks: VAE has no Poor runs ("x", as in the paper's Table 7).
  _, rows = read_csv(out / "study_ranks.csv")
  assert {r[1] for r in rows if r[0] == "Poor"} == {"dice", "kld_alpha"}
  assert "| VAE | x | x | x |" in overview
  _, rows = read_csv(out / "study_kld_alpha.csv")
  assert sorted((r[0], r[1]) for r in rows) == [("Good", "dice"), ("Good", "vae"),
                                               ("Poor", "dice")]
  _, rows = read_csv(out / "study_summary.csv")
  assert sorted((r[0], r[1]) for r in rows) == sorted(
      [("Poor", "dice"), ("Poor", "kld_alpha"), ("Good", "dice"), ("Good", "kld_alpha"),
       ("Good", "vae")])
