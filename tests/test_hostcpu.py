"""The CPU host split into JAX devices (echokld.hostcpu): counts, switches, same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, tiny_config
from echokld import hostcpu
from echokld.infer import runs as runs_lib
from echokld.train import loop

CORES = len(os.sched_getaffinity(0))


@pytest.mark.parametrize("cores, batch, expected", [
    (2, 8, 2), (16, 8, 8), (16, 6, 6), (4, 6, 3), (3, 4, 2), (1, 8, 1), (2, None, 2),
    (2, 1, 1), (8, 12, 6), (5, 7, 1)])
def test_auto_count_is_one_per_core_dividing_the_batch(cores, batch, expected):
  assert hostcpu.auto_count(cores, batch) == expected


def test_the_flag_wins_over_the_environment(monkeypatch):
  monkeypatch.setenv(hostcpu.ENV, "3")
  assert hostcpu.requested_count(None) == 3
  assert hostcpu.requested_count(1) == 1
  monkeypatch.delenv(hostcpu.ENV)
  assert hostcpu.requested_count(None) is None
  for bad in ("0", "two", "-1"):
    monkeypatch.setenv(hostcpu.ENV, bad)
    with pytest.raises(ValueError):
      hostcpu.requested_count(None)


def test_xla_flags_given_by_the_user_are_left_alone(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false "
                     "--xla_force_host_platform_device_count=5")
  monkeypatch.setenv(hostcpu.ENV, "2")
  assert hostcpu.use_host_devices(None, 8) == 5  # Returns before touching JAX's config.


def _train_cli(tmp_path, *extra, env_count=None):
  env = {k: v for k, v in os.environ.items() if k != hostcpu.ENV}
  if env_count is not None:
    env[hostcpu.ENV] = env_count
  cmd = [sys.executable, "-m", "echokld.main", "--config=dice", f"--workdir={tmp_path}/run",
         "--config.train.max_epochs=1", "--config.data.synthetic_patients=24",
         "--config.data.synthetic_shape=(48, 48)", "--config.data.image_size=32",
         "--config.model.init_features=8", "--config.model.blocks_down=(1, 1, 1, 1)",
         "--config.data.test_frames.Good=4", "--config.data.test_frames.Medium=4",
         "--config.data.test_frames.Poor=2", "--config.train.batch_size=4",
         "--config.log.progress=False", "--config.log.tensorboard=False", *extra]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_main_splits_the_cpu_by_default_and_one_turns_it_off(tmp_path):
  expected = 2 if CORES >= 2 else 1  # Batch 4: one device per core, dividing 4.
  default = _train_cli(tmp_path / "a")
  assert default.returncode == 0, default.stderr
  assert f"on {expected} of {expected} cpu device(s)" in default.stdout
  off = _train_cli(tmp_path / "b", "--cpu_devices=1", env_count="2")
  assert off.returncode == 0, off.stderr
  assert "on 1 of 1 cpu device(s)" in off.stdout
  bad = _train_cli(tmp_path / "c", "--cpu_devices=0")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "error: --cpu_devices: CPU device count must be at least 1, got 0"]
  assert not (tmp_path / "c").exists()


_PREDICT_ON_TWO = """
import sys
import jax
import numpy as np
jax.config.update("jax_num_cpu_devices", 2)
from echokld.infer import runs
from echokld.train import mesh
assert mesh.for_inference(4).num_devices == 2
run = runs.load_run(sys.argv[1], batch_size=4)
np.save(sys.argv[3], run.predict_probs(np.load(sys.argv[2])))
"""


def test_prediction_split_over_two_devices_gives_the_one_device_probabilities(tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config("dice", **{"train.max_epochs": 1}), workdir)
  images = np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  one = runs_lib.load_run(workdir, batch_size=4).predict_probs(images)  # This process: 1.
  done = subprocess.run([sys.executable, "-c", _PREDICT_ON_TWO, workdir,
                         str(tmp_path / "images.npy"), str(tmp_path / "two.npy")],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  two = np.load(tmp_path / "two.npy")
  assert two.shape == one.shape == (6, 32, 32)
  np.testing.assert_allclose(two, one, atol=1e-5)
  assert 0.01 < one.std()  # Not a constant map, so the comparison means something.


_GROUP_ON_TWO = """
import sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
from conftest import tiny_config
from echokld.train import loop
config = tiny_config("dice", **{"train.max_epochs": 2})
loop.train(config, [sys.argv[1] + "/seed0", sys.argv[1] + "/seed1"], (0, 1), "devices")
"""


def _metric_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [(r["epoch"], r["val_dice"], r["train_total"]) for r in rows]


def test_seeds_spread_over_devices_train_as_their_single_runs(tmp_path):
  done = subprocess.run([sys.executable, "-c", _GROUP_ON_TWO, str(tmp_path / "group")],
                        cwd=os.path.join(ROOT, "tests"), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  for seed in (0, 1):
    single = str(tmp_path / f"single{seed}")
    loop.train_and_evaluate(tiny_config("dice", seed=seed, **{"train.max_epochs": 2}), single)
    group_rows = _metric_rows(str(tmp_path / "group" / f"seed{seed}"))
    single_rows = _metric_rows(single)
    assert [r[0] for r in group_rows] == [r[0] for r in single_rows] == [1, 2]
    np.testing.assert_allclose([r[1:] for r in group_rows], [r[1:] for r in single_rows],
                               rtol=1e-5)
