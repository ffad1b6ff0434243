"""Bad input through the CLI: one line on stderr naming the culprit, exit code 2."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from test_pipeline import broken_folder


def run_cli(*args):
  cmd = [sys.executable, "-m", "echokld.main", *args]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def test_unknown_config_key(tmp_path):
  r = run_cli("--config=configs/dice.py", "--config.train.no_such_key=1",
              f"--workdir={tmp_path}")
  assert_one_line_error(r, "unknown config key", "train.no_such_key")
  assert not os.listdir(tmp_path)


def test_missing_config_file(tmp_path):
  assert_one_line_error(run_cli("--config=configs/missing.py", f"--workdir={tmp_path}"),
                        "configs/missing.py", "no such config file")


def folder_args(root, workdir):
  return ("--config=configs/dice.py", "--config.data.source=folder",
          f"--config.data.root={root}", f"--workdir={workdir}")


@pytest.mark.parametrize("breakage, fragments", [
    ("no_root", ("missing", "does not exist")),
    ("empty", ("images", "no images")),
    ("shape", ("patient0001_2CH_ED.png", "differs from image shape")),
    ("values", ("patient0001_2CH_ED.png", "outside {0, 1, 2, 3}")),
    ("corrupt", ("patient0001_2CH_ES.png", "unreadable image")),
    ("no_label", ("patient0001_2CH_ES.png", "missing label")),
])
def test_bad_data_folder(tmp_path, breakage, fragments):
  root = broken_folder(tmp_path, breakage)
  workdir = tmp_path / "run"
  assert_one_line_error(run_cli(*folder_args(root, workdir)), *fragments)
  # Nothing half-written that a corrected rerun would trip over.
  assert not (workdir / "checkpoints").exists() or not os.listdir(workdir / "checkpoints")


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("a file where the workdir should go")
  r = run_cli("--config=configs/dice.py", f"--workdir={blocker}/run")
  assert_one_line_error(r, str(blocker), "not writable")
  assert blocker.read_text() == "a file where the workdir should go"
