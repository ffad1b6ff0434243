"""Issue 18: hostile or damaged inputs and run folders get one line, nothing else harmed.

Each test reproduces one case of the issue (it fails on the code before the fix).
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from conftest import ROOT, tiny_config
from echokld.errors import InputError, TrainingDiverged
from echokld.infer import runs as predict_runs
from echokld.train import build as build_lib
from echokld.train import checkpoints, loop, rundir, writers


# ---- A tiny trained run, copied by each test that damages or reuses a run folder ---------

EPOCHS = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 3-epoch tiny run (its latest checkpoint is also its best: epoch 3)."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  loop.train_and_evaluate(tiny_config("dice", **{"train.max_epochs": EPOCHS}), str(workdir))
  return workdir


def copy_run(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns(rundir.LOCK_FILE))
  return dst


def add_worse_latest(workdir: pathlib.Path) -> None:
  """Saves epoch 3's state again as checkpoint 4 with val Dice -1: best 3, latest 4."""
  config = tiny_config("dice", **{"train.max_epochs": EPOCHS})
  shape = tuple(json.loads((workdir / "preprocessing.json").read_text())["image_shape"])
  target = build_lib.build(config, shape, None).state
  manager = checkpoints.make_manager(str(workdir / "checkpoints"))
  checkpoints.save(manager, 4, checkpoints.restore(manager, 3, target), -1.0)
  assert (manager.best_step(), manager.latest_step()) == (3, 4)
  manager.close()


def damage(step_dir: pathlib.Path) -> None:
  """Empties the checkpoint's OCDBT manifest: the damage that made orbax print ~40
  'Event loop is closed' tracebacks after its error."""
  (step_dir / "default" / "manifest.ocdbt").write_bytes(b"")


def rows(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


# ---- 6. A damaged run folder: fall back, drop a torn line, one line for the rest -----------

def test_damaged_latest_checkpoint_falls_back_to_best(trained, tmp_path, capfd):
  reference = copy_run(trained, tmp_path / "reference")
  with (reference / "metrics.jsonl").open("a") as f:
    f.write('{"epoch": 4, "step": 2')  # Torn by a kill mid-write: dropped, epoch 4 redone.
  damaged = copy_run(trained, tmp_path / "damaged")
  add_worse_latest(damaged)
  damage(damaged / "checkpoints" / "4")
  capfd.readouterr()
  config = tiny_config("dice", **{"train.max_epochs": EPOCHS + 1})
  loop.train_and_evaluate(config, str(damaged))
  out, err = capfd.readouterr()
  assert "checkpoint of epoch 4 is damaged" in out and "resuming from epoch 3" in out, out
  assert "Traceback" not in err and "Event loop is closed" not in err, err[-2000:]
  assert os.listdir(damaged / "damaged_checkpoints") == ["4"]
  loop.train_and_evaluate(config, str(reference))
  # The fallback resumed exactly: its epoch 4 is the plain resume's epoch 4.
  assert [r["epoch"] for r in rows(damaged)] == [1, 2, 3, 4]
  for key in ("val_dice", "train_total", "step"):
    assert rows(damaged)[3][key] == rows(reference)[3][key], key
  summary = json.loads((damaged / "summary.json").read_text())
  assert summary["test"] == json.loads((reference / "summary.json").read_text())["test"]


def test_no_restorable_checkpoint_is_one_line(trained, tmp_path, capfd):
  workdir = copy_run(trained, tmp_path / "run")
  damage(workdir / "checkpoints" / "3")
  capfd.readouterr()
  with pytest.raises(InputError, match="no checkpoint can be restored"):
    loop.train_and_evaluate(tiny_config("dice", **{"train.max_epochs": 4}), str(workdir))
  result = run_predict(f"--workdir={workdir}", f"--input={workdir / 'frame.png'}",
                       f"--output={tmp_path / 'out'}", frame=workdir / "frame.png")
  assert result.returncode == 2
  assert result.stderr.count("\n") == 1 and "cannot restore checkpoint" in result.stderr, \
      result.stderr[-3000:]
  assert "Event loop is closed" not in capfd.readouterr().err


def test_predict_falls_back_when_best_is_damaged(trained, tmp_path):
  workdir = copy_run(trained, tmp_path / "run")
  add_worse_latest(workdir)
  damage(workdir / "checkpoints" / "3")
  run = predict_runs.load_run(workdir)
  assert run.step == 4  # Epoch 3's state, saved again as 4.
  best = predict_runs.load_run(trained)
  assert best.step == 3
  for a, b in zip(jax.tree_util.tree_leaves(run.params), jax.tree_util.tree_leaves(best.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_truncated_config_and_torn_metrics(trained, tmp_path):
  workdir = copy_run(trained, tmp_path / "run")
  text = (workdir / "config.json").read_text()
  (workdir / "config.json").write_text(text[:len(text) // 2])
  config = tiny_config("dice", **{"train.max_epochs": EPOCHS})
  with pytest.raises(InputError, match="config.json: damaged"):
    loop.train_and_evaluate(config, str(workdir))
  (workdir / "config.json").write_text(text)
  metrics = (workdir / "metrics.jsonl").read_text().splitlines()
  (workdir / "metrics.jsonl").write_text("\n".join(metrics[:1] + ["{torn"] + metrics[1:]))
  with pytest.raises(InputError, match="line 2 is not an epoch row"):  # Not the last line.
    writers.read_metrics(str(workdir))
  (workdir / "metrics.jsonl").write_text("\n".join(metrics) + '\n{"epoch": 4, "st')
  assert [r["epoch"] for r in writers.read_metrics(str(workdir))] == [1, 2, 3]
  loop.train_and_evaluate(config, str(workdir))  # Finished: only tested again.
  assert [r["epoch"] for r in rows(workdir)] == [1, 2, 3]


class FullDisk:
  directory = "/runs/x/checkpoints"

  def save(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_during_save_is_one_line(tmp_path, monkeypatch):
  with pytest.raises(InputError, match=r"checkpoints/5: cannot save checkpoint \(OSError: "
                     r"\[Errno 28\] No space left on device\)"):
    checkpoints.save(FullDisk(), 5, {"w": np.zeros(2)}, 0.5)
  # In training: one InputError (exit 2 from the CLI), and the workdir is unlocked after.
  monkeypatch.setattr(ocp.CheckpointManager, "save", FullDisk.save)
  workdir = tmp_path / "run"
  with pytest.raises(InputError, match="checkpoints/1: cannot save checkpoint"):
    loop.train_and_evaluate(tiny_config("dice", **{"train.max_epochs": 1}), str(workdir))
  os.close(rundir.lock_workdir(str(workdir)))


def run_predict(*args, frame=None):
  if frame is not None:
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(frame)
  return subprocess.run([sys.executable, "-m", "echokld.predict", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=180)


# ---- 5. One run per workdir: a second one is refused in one line --------------------------

def test_second_run_in_a_locked_workdir_is_refused(trained, tmp_path):
  workdir = copy_run(trained, tmp_path / "run")
  before = (workdir / "metrics.jsonl").read_bytes()
  held = rundir.lock_workdir(str(workdir))  # As a running training holds it.
  try:
    other = tiny_config("dice", **{"train.max_epochs": EPOCHS + 1, "train.learning_rate": 0.1})
    with pytest.raises(InputError, match="another run is using this workdir"):
      loop.train_and_evaluate(other, str(workdir))
    result = subprocess.run(
        [sys.executable, "-m", "echokld.main", "--config=dice", f"--workdir={workdir}",
         "--config.train.max_epochs=4"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: {workdir}: another run is using this workdir (process "
                             f"{os.getpid()} holds .lock); wait for it to end or use a new "
                             "--workdir\n")
    assert (workdir / "metrics.jsonl").read_bytes() == before
  finally:
    os.close(held)
  # Released (as when the holder ends, kill -9 included): the run continues.
  loop.train_and_evaluate(tiny_config("dice", **{"train.max_epochs": EPOCHS + 1}),
                          str(workdir))
  assert [r["epoch"] for r in rows(workdir)] == [1, 2, 3, 4]
  held = rundir.lock_workdir(str(workdir))  # The finished run let it go.
  os.close(held)


def test_lock_file_symlink_is_not_followed(tmp_path):
  target = tmp_path / "elsewhere"
  target.write_text("untouched")
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / rundir.LOCK_FILE).symlink_to(target)
  with pytest.raises(InputError, match="cannot open the workdir lock"):
    rundir.lock_workdir(str(tmp_path / "run"))
  assert target.read_text() == "untouched"


# ---- 4. Divergence at the end of an epoch; NaN config values on a rerun --------------------

def test_nan_parameters_at_epoch_end_are_never_saved(tmp_path, monkeypatch):
  """The last step of epoch 2 leaves NaN parameters while its loss is finite: validation
  Dice is then 0, not NaN, so only a check of the parameters catches it."""
  make_chunk = loop.make_group_chunk

  def poisoning(*args, **kwargs):
    chunk = make_chunk(*args, **kwargs)

    def run(group, images, masks, auxes, start, num_steps):
      group, terms = chunk(group, images, masks, auxes, start, num_steps=num_steps)
      last = int(start) + num_steps >= int(auxes[0][1])  # auxes: (perm, steps, reference).
      if int(group[0].epoch) == 1 and last:  # The last chunk of epoch 2.
        group = tuple(s.replace(params=jax.tree_util.tree_map(lambda p: p * jnp.nan,
                                                              s.params)) for s in group)
      return group, terms
    return run

  monkeypatch.setattr(loop, "make_group_chunk", poisoning)
  workdir = tmp_path / "run"
  config = tiny_config("dice", **{"train.max_epochs": 3})
  with pytest.raises(TrainingDiverged) as info:
    loop.train_and_evaluate(config, str(workdir))
  assert str(info.value) == (f"parameters became non-finite in epoch 2; the last good "
                             f"checkpoint is kept in {workdir / 'checkpoints'}")
  assert [r["epoch"] for r in rows(workdir)] == [1]  # No row for the diverged epoch.
  manager = checkpoints.make_manager(str(workdir / "checkpoints"))
  assert list(manager.all_steps()) == [1]
  target = build_lib.build(config, (32, 32), None).state
  saved = checkpoints.restore(manager, 1, target)
  manager.close()
  assert all(np.all(np.isfinite(np.asarray(leaf)))
             for leaf in jax.tree_util.tree_leaves(saved.params))
  monkeypatch.undo()  # The message is true: the same command resumes from epoch 1.
  summary = loop.train_and_evaluate(config, str(workdir))
  assert summary["epochs"] == 3 and [r["epoch"] for r in rows(workdir)] == [1, 2, 3]


def test_nan_config_value_equals_itself_on_rerun(trained, tmp_path):
  workdir = copy_run(trained, tmp_path / "run")
  config = tiny_config("dice", **{"train.max_epochs": EPOCHS, "train.weight_decay":
                                  float("nan")})
  (workdir / "config.json").write_text(config.to_json())  # As the first run wrote it.
  assert "NaN" in (workdir / "config.json").read_text()
  run = rundir.RunDir(str(workdir))
  try:
    run.check_or_write_config(config)  # The same command again: accepted.
    other = tiny_config("dice", **{"train.max_epochs": EPOCHS, "train.weight_decay": 0.5})
    with pytest.raises(InputError, match=r"train.weight_decay differs"):
      run.check_or_write_config(other)
  finally:
    run.close()
  assert rundir.same_value([1.0, float("nan")], (1.0, float("nan")))
  assert not rundir.same_value(float("nan"), 0.0) and not rundir.same_value([1], [1, 2])
