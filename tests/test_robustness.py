"""Issue 18: hostile or damaged inputs and run folders get one line, nothing else harmed.

Each test reproduces one case of the issue (it fails on the code before the fix).
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

import camus_fixtures
from conftest import ROOT, tiny_config
from test_pipeline import write_folder
from echokld.data import camus, folder, pipeline
from echokld.errors import InputError, TrainingDiverged
from echokld.infer import io as predict_io
from echokld.infer import runs as predict_runs
from echokld.study import sweep as study_sweep
from echokld.train import build as build_lib
from echokld.train import checkpoints, loop, rundir, writers


# ---- 3. A .mhd header names its data file: only one beside the header is read -------------

def _point_header(mhd: pathlib.Path, name: str) -> None:
  text = mhd.read_text()
  start = text.index("ElementDataFile")
  mhd.write_text(text[:start] + f"ElementDataFile = {name}\n")


@pytest.fixture
def camus_2019(tmp_path):
  root = camus_fixtures.write_2019_release(tmp_path / "camus", train=("patient0001",
                                                                      "patient0002"), test=())
  secret = tmp_path / "secret.raw"  # Outside the release: must never be read as an image.
  secret.write_bytes(bytes(range(256)) * 8)
  return root, secret


def test_mhd_data_file_outside_header_folder_is_refused(camus_2019, tmp_path):
  root, secret = camus_2019
  folder = root / "training" / "patient0001"
  mhd = folder / "patient0001_2CH_ED.mhd"
  image, _ = camus.read_mhd(mhd)  # As written: the .raw beside it.
  assert image.shape == camus_fixtures.SHAPE
  (folder / "link.raw").symlink_to(secret)
  for name in (str(secret), "../../../secret.raw", "link.raw"):
    _point_header(mhd, name)
    with pytest.raises(InputError, match="outside the header's folder") as info:
      camus.read_mhd(mhd)
    assert info.value.where == str(mhd)
    with pytest.raises(InputError, match="outside the header's folder"):  # Prediction.
      predict_io.read_frame(str(mhd), "")
    with pytest.raises(InputError, match="outside the header's folder"):  # Training.
      camus.read_camus(root, view="2CH")
  for name in ("LIST", "frame_%03d.raw 1 3 1"):
    _point_header(mhd, name)
    with pytest.raises(InputError, match="only one data file"):
      camus.read_mhd(mhd)


def test_mhd_fifo_data_file_is_refused_not_read(camus_2019):
  root, _ = camus_2019
  folder = root / "training" / "patient0001"
  raw = folder / "patient0001_2CH_ED.raw"
  raw.unlink()
  os.mkfifo(raw)  # Reading it would block forever.
  with pytest.raises(InputError, match="not a regular file"):
    camus.read_mhd(folder / "patient0001_2CH_ED.mhd")


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


# ---- 7. Input checks that used to pass silently -------------------------------------------

def crafted_png_header(width: int, height: int) -> bytes:
  """A PNG whose header claims width x height (8-bit grey) and holds no pixels: PIL's
  decompression-bomb check reads only the header."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_nan_pixel_in_float_image_is_refused(tmp_path):
  write_folder(tmp_path)
  image = np.full((24, 20), 50.0, np.float32)
  image[3, 4] = np.nan
  (tmp_path / "images" / "patient0001_2CH_ED.png").unlink()
  Image.fromarray(image, mode="F").save(tmp_path / "images" / "patient0001_2CH_ED.tiff")
  with pytest.raises(InputError, match="patient0001_2CH_ED.tiff: image has 1 NaN or "
                     "infinite pixel$"):
    folder.read_folder(str(tmp_path))
  nifti = tmp_path / "patient0001_2CH_ED.nii.gz"
  camus_fixtures.save_nifti(nifti, image)
  with pytest.raises(InputError, match="1 NaN or infinite pixel"):
    camus.read_nifti(nifti)
  # Before: min-max scaling of a frame with a NaN gave an all-zero frame.
  assert not pipeline.to_uint8(image).any()


@pytest.mark.parametrize("table, fragment", [
    ("case,split\npatient0001_2CH_ED,train\npatient0001_2CH_ES,train\n"
     "patient0001_2CH_ED,val\n", "line 4: case 'patient0001_2CH_ED' is already on line 2"),
    ("case,split\npatient0001_2CH_ED,train\npatient0001_2CH_ES,val\n",
     "patient 'patient0001' is in two splits: patient0001_2CH_ED in train, "
     "patient0001_2CH_ES in val"),
    ("case,spacing_row_mm,spacing_col_mm\npatient0001_2CH_ED,-0.3,0.15\n",
     "line 2: pixel spacing (-0.3, 0.15) mm must be finite and positive"),
    ("case,spacing_row_mm,spacing_col_mm\npatient0001_2CH_ED,0.3,0\n", "(0.3, 0.0) mm"),
    ("case,spacing_row_mm,spacing_col_mm\npatient0001_2CH_ED,nan,0.15\n", "(nan, 0.15) mm"),
])
def test_bad_metadata_is_refused(tmp_path, table, fragment):
  write_folder(tmp_path)
  (tmp_path / "metadata.csv").write_text(table)
  with pytest.raises(InputError) as info:
    folder.read_folder(str(tmp_path))
  assert fragment in str(info.value) and "metadata.csv" in str(info.value)


def test_metadata_with_utf8_bom_and_frames_without_split(tmp_path, capsys):
  write_folder(tmp_path, cases=("p1_2CH_ED", "p2_2CH_ED", "p3_2CH_ED"))
  (tmp_path / "metadata.csv").write_bytes("case,split,image_quality\np1_2CH_ED,train,Good\n"
                                          "p2_2CH_ED,val,Poor\np3_2CH_ED,,\n"
                                          .encode("utf-8-sig"))
  records = folder.read_folder(str(tmp_path))
  assert [(r["split"], r["quality"]) for r in records] == [("train", "Good"), ("val", "Poor"),
                                                            (None, None)]
  splits = pipeline.split_frames(records, "official", {}, 0.2, 0)
  assert [len(splits[k]) for k in ("train", "val", "test")] == [1, 1, 1]
  assert capsys.readouterr().err == ("note: data.split=official: 1 frame(s) of 1 patient(s) "
                                     "have no split and are not used (e.g. p3_2CH_ED)\n")


def test_decompression_bomb_fifo_and_undecodable_name(tmp_path):
  write_folder(tmp_path)
  big = tmp_path / "images" / "patient0001_2CH_ED.png"
  big.write_bytes(crafted_png_header(20000, 20000))
  with pytest.raises(InputError, match=r"patient0001_2CH_ED.png: image refused as too large "
                     r"\(Image size \(400000000 pixels\) exceeds limit"):
    folder.read_folder(str(tmp_path))
  with pytest.raises(InputError, match="too large"):
    predict_io.read_frame(str(big), "")
  big.unlink()
  os.mkfifo(big)  # Reading it would block forever.
  with pytest.raises(InputError, match="not a regular file"):
    folder.read_folder(str(tmp_path))
  with pytest.raises(InputError, match="not a regular file"):
    predict_io.read_frame(str(big), "")
  big.unlink()
  write_folder(tmp_path)
  name = os.fsdecode(b"patient0002_2CH_\xff.png")  # Not UTF-8: test_metrics.csv would fail.
  shutil.copy(big, tmp_path / "images" / name)
  shutil.copy(tmp_path / "labels" / "patient0001_2CH_ED.png", tmp_path / "labels" / name)
  with pytest.raises(InputError, match=r"images/patient0002_2CH_\\udcff.png: file name is "
                     "not valid UTF-8; rename it"):
    folder.read_folder(str(tmp_path))
  with pytest.raises(InputError, match="not valid UTF-8"):
    predict_io.read_frame(str(tmp_path / "images" / name), "")


# ---- 8. --shard: every malformed value is one line, exit 2; an empty shard is said -------

@pytest.mark.parametrize("spec, fragment", [
    ("0/0", "expected 0 <= i < n"), ("5/2", "expected 0 <= i < n"), ("-1/2", "expected 0 <= i < n"),
    ("abc", "expected i/n"), ("1/2/3", "expected i/n"), ("1/", "expected i/n"),
    ("0/2.5", "expected i/n"), ("", "expected i/n"),
])
def test_bad_shard_specs(spec, fragment):
  with pytest.raises(InputError, match=f"--shard: {fragment}"):
    study_sweep.parse_shard(spec)


def test_sweep_cli_shards(tmp_path):
  def sweep(*flags):
    return subprocess.run([sys.executable, "-m", "echokld.sweep", f"--out={tmp_path / 's'}",
                           "--models=dice", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  done = sweep("--shard=0/0")
  assert done.returncode == 2 and done.stderr == (
      "error: --shard: expected 0 <= i < n, got '0/0'\n"), done.stderr
  assert not (tmp_path / "s").exists()
  done = sweep("--shard=1/2")  # One run in the grid: shard 1 of 2 is empty, and says so.
  assert done.returncode == 0, done.stderr
  assert "note: --shard=1/2 holds none of the 1 runs of this grid" in done.stderr
  assert study_sweep.shard(list(range(5)), "1/2") == [1, 3]


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
