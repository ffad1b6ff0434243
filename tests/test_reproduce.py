"""The whole study pipeline, end to end on tiny synthetic data (--smoke)."""

import os
import subprocess
import sys

from conftest import ROOT

MODELS = ("dice", "wdecay", "vae", "kld_alpha", "kld_kde", "rd_vae", "bd_vae")


def test_smoke_study_writes_every_table_and_figure(tmp_path):
  result = subprocess.run([sys.executable, "experiments/reproduce_paper.py", "--smoke",
                           f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  for model in MODELS:
    assert os.path.exists(tmp_path / "runs" / f"{model}_seed0" / "summary.json"), model
  report = tmp_path / "report"
  text = (report / "report.md").read_text()
  for table in ("Table 1", "Table 4", "Table 7", "Table 8"):
    assert table in text, table
  for csv_name in ("summary.csv", "ranks.csv", "timing.csv", "pairwise_all.csv"):
    lines = (report / csv_name).read_text().strip().splitlines()
    assert len(lines) >= 2, csv_name
  for png in ("fig_val_dice.png", "fig_test_dice_all.png"):
    assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
  # Rerunning finds every run finished and only rewrites the report.
  again = subprocess.run([sys.executable, "experiments/reproduce_paper.py", "--smoke",
                          f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0 and again.stdout.count("[skip]") == len(MODELS)
