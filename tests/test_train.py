"""End to end: determinism, resume after a kill, NaN handling, summary contract."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, tiny_config
from echokld.errors import TrainingDiverged
from echokld.objectives import terms as loss_terms
from echokld.train import checkpoints, loop

TINY_FLAGS = ["--config.model.init_features=8", "--config.model.blocks_down=(1,1,1,1)",
              "--config.data.synthetic_patients=24", "--config.data.synthetic_shape=(48,48)",
              "--config.data.image_size=32", "--config.train.batch_size=4",
              "--config.train.eval_batch_size=8", "--config.log.progress=False",
              "--config.log.tensorboard=False"]
TEST_FRAMES = {"Good": 4, "Medium": 4, "Poor": 2, "Unknown": 0}


def cli(*args, workdir, timeout=240, wait=True):
  cmd = [sys.executable, "-m", "echokld.main", "--config=configs/dice.py",
         f"--workdir={workdir}", *TINY_FLAGS,
         "--config.data.test_frames.Good=4", "--config.data.test_frames.Medium=4",
         "--config.data.test_frames.Poor=2", *args]
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ref"))
  summary = loop.train_and_evaluate(tiny_config(), workdir)
  return workdir, summary


def test_summary_and_files_contract(reference_run):
  workdir, summary = reference_run
  for name in ("config.json", "summary.json", "test_metrics.csv", "metrics.jsonl",
               "split.json", "checkpoints"):
    assert os.path.exists(os.path.join(workdir, name)), name
  for key in ("num_params", "epochs", "train_seconds", "train_images_per_second"):
    assert key in summary
  assert summary["epochs"] == 3 and 1 <= summary["val"]["best_epoch"] <= 3
  for key in ("dice", "recall", "mhd_px"):
    assert key in summary["test"]
  header = open(os.path.join(workdir, "test_metrics.csv")).readline().strip().split(",")
  assert header == ["case", "quality", "dice", "recall", "precision", "mhd_px", "mhd_mm",
                    "hd95_px", "empty", "components", "holes", "contour_ratio",
                    "truth_contour_ratio"]
  assert summary["memory"]["host_peak_bytes"] > 0
  split = json.load(open(os.path.join(workdir, "split.json")))
  assert len(split["test"]) == summary["test"]["frames"] == 10
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert summary["val"]["best_dice"] == pytest.approx(max(r["val_dice"] for r in rows))


def test_same_config_and_seed_give_identical_metrics(reference_run, tmp_path):
  workdir, summary = reference_run
  again = loop.train_and_evaluate(tiny_config(), str(tmp_path))
  assert again["val"] == summary["val"]
  assert again["test"] == summary["test"]
  other = loop.train_and_evaluate(tiny_config(seed=1), str(tmp_path / "seed1"))
  assert other["val"]["best_dice"] != summary["val"]["best_dice"]


def test_killed_run_resumes_to_the_same_result(reference_run, tmp_path):
  ref_dir, ref = reference_run
  workdir = tmp_path / "killed"
  proc = cli("--config.train.max_epochs=3", workdir=workdir, wait=False)
  ckpt = workdir / "checkpoints" / "1"
  deadline = time.time() + 200
  while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  assert ckpt.exists() and proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / "summary.json").exists()
  done = cli("--config.train.max_epochs=3", workdir=workdir)
  assert done.returncode == 0, done.stderr
  summary = json.load(open(workdir / "summary.json"))
  assert summary["test"] == ref["test"] and summary["val"] == ref["val"]
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  ref_rows = [json.loads(l) for l in open(os.path.join(ref_dir, "metrics.jsonl"))]
  assert [r["val_dice"] for r in rows] == [r["val_dice"] for r in ref_rows]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  loop.train_and_evaluate(tiny_config(**{"train.max_epochs": 1}), workdir)
  real = loss_terms.total_loss

  def poisoned(*args, **kwargs):
    total, terms = real(*args, **kwargs)
    terms["total"] = total * np.nan
    return total * np.nan, terms

  monkeypatch.setattr(loss_terms, "total_loss", poisoned)
  with pytest.raises(TrainingDiverged) as info:
    loop.train_and_evaluate(tiny_config(**{"train.max_epochs": 2}), workdir)
  steps_per_epoch = json.loads(open(os.path.join(workdir, "metrics.jsonl")).readline())["step"]
  assert f"at step {steps_per_epoch + 1} " in str(info.value)
  manager = checkpoints.make_manager(os.path.join(workdir, "checkpoints"))
  assert manager.latest_step() == 1
  monkeypatch.setattr(loss_terms, "total_loss", real)
  summary = loop.train_and_evaluate(tiny_config(**{"train.max_epochs": 2}), workdir)
  assert summary["epochs"] == 2 and np.isfinite(summary["test"]["dice"])


def test_the_console_says_resumed_and_already_finished(tmp_path):
  workdir = tmp_path / "run"
  first = cli("--config.train.max_epochs=1", "--config.log.progress=True", workdir=workdir)
  assert first.returncode == 0, first.stderr
  # Not a terminal: no bar, no carriage returns, only plain lines (and no absl INFO noise).
  assert "\r" not in first.stdout + first.stderr and "img/s" not in first.stderr
  assert not [l for l in first.stderr.splitlines() if l.startswith("I1")]
  lines = first.stdout.splitlines()
  assert lines[0].startswith("Dice (dice): ") and " parameters, frames 32x32, 1 run on 1 of " \
      in lines[0] and "cpu device(s)" in lines[0], lines[0]
  assert not any("resumed" in l or "already finished" in l for l in lines)
  again = cli("--config.train.max_epochs=2", workdir=workdir)
  assert again.returncode == 0, again.stderr
  assert f"resumed {workdir} from epoch 1 of at most 2" in again.stdout
  assert [l.split()[1] for l in again.stdout.splitlines() if l.startswith("epoch")] == ["2"]
  done = cli("--config.train.max_epochs=2", workdir=workdir)
  assert done.returncode == 0, done.stderr
  assert f"{workdir} is already finished at epoch 2 (max_epochs 2)" in done.stdout
  assert not [l for l in done.stdout.splitlines() if l.startswith("epoch")]
  # environment.json: one entry per start, each saying where it began and on what.
  import importlib.metadata
  entries = json.loads((workdir / "environment.json").read_text())
  assert [e["start_epoch"] for e in entries] == [0, 1, 2]
  assert entries[0]["packages"]["jax"] == importlib.metadata.version("jax")
  assert entries[0]["packages"]["flax"] == importlib.metadata.version("flax")
  assert entries[0]["backend"] == "cpu" and entries[0]["devices"][0]["platform"] == "cpu"
  assert entries[0]["python"] == sys.version.split()[0]


def test_missing_tensorboardx_is_said_once(tmp_path, capsys, monkeypatch):
  from echokld.train import writers
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # Importing it raises ImportError.
  monkeypatch.setattr(writers, "_WARNED", set())
  err = ""
  for tensorboard in (True, True, False):
    writer = writers.MetricWriter(str(tmp_path), tensorboard=tensorboard)
    assert not capsys.readouterr().err  # Said at the first row, not before (a refused run).
    writer.write({"epoch": 1, "val_dice": 0.5})
    writer.write({"epoch": 2, "val_dice": 0.5})
    err += capsys.readouterr().err
  assert err.count("tensorboardX is not installed") == 1, err


def test_tensorboard_gets_the_config_and_validation_overlays(tmp_path, monkeypatch):
  """With tensorboardX present (a recording stand-in here): scalars, the config, overlays."""
  import types
  calls = []

  class SummaryWriter:
    def __init__(self, logdir):
      calls.append(("open", logdir))

    def add_scalar(self, tag, value, step):
      calls.append(("scalar", tag, step))

    def add_text(self, tag, text, step):
      calls.append(("text", tag, text))

    def add_image(self, tag, image, step, dataformats):
      calls.append(("image", tag, image, step, dataformats))

    def flush(self):
      pass

    def close(self):
      pass

  monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(
      SummaryWriter=SummaryWriter))
  loop.train_and_evaluate(tiny_config(**{"train.max_epochs": 2, "log.tensorboard": True}),
                          str(tmp_path))
  assert calls[0] == ("open", str(tmp_path / "tensorboard"))
  texts = [c for c in calls if c[0] == "text"]
  assert len(texts) == 1 and "train.batch_size = 4" in texts[0][2]
  images = [c for c in calls if c[0] == "image"]
  assert sorted((c[1], c[3]) for c in images) == sorted(
      (f"val_overlay/{i}", epoch) for i in range(4) for epoch in (1, 2))
  image = images[0][2]
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and images[0][4] == "HWC"
  green = (image == np.array([40, 220, 40], np.uint8)).all(-1)
  assert green.any()  # The true LV's contour is drawn.
  assert ("scalar", "val_dice", 2) in calls
