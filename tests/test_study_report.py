"""The study report of a sweep with quality-group runs (`<model>_<group>_seed<N>/`): one
report per training group, the study CSVs, panels, and the paper protocol's model sets.
Sweeps of every-frame runs: tests/test_report.py, whose fake runs these tests reuse."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import stats as sps

from test_report import (BASE, MODELS, SEEDS, fake_rows, read_csv, run_report,
                         seed_averaged, write_run)
from echokld.evaluation import test_set as evaluate
from echokld.study import panels


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
  assert ("Protocol of 4 runs (config.json): paper (augment.brightness = "
          "0.05, augment.contrast = 0.2, augment.enabled = false, augment.gamma = 0.3, "
          "data.image_size = native, train.batch_size = 2, train.early_stop_patience = 30, "
          "train.eval_batch_size = 4, train.learning_rate = 1e-05, train.max_epochs = 1000, "
          "train.plateau_patience = 10).") in overview
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
