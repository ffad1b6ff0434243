"""Shared test helpers: tiny configs that train in seconds on a 2-core CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

# Tests train many tiny models whose programs repeat across tests and subprocesses: JAX's
# persistent compilation cache turns the repeats into cache hits. Set before JAX is imported.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "echokld-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# CLI runs in subprocesses split the CPU into one JAX device per core by default
# (echokld.hostcpu); the suite pins one device so that its recorded numbers do not depend on
# the machine's core count. tests/test_hostcpu.py checks the default split itself.
os.environ.setdefault("ECHOKLD_CPU_DEVICES", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The benchmarks' helpers (experiments/roofline.py) are tested too; experiments/ is scripts,
# not a package, so it goes on the path here (and only here).
if os.path.join(ROOT, "experiments") not in sys.path:
  sys.path.insert(0, os.path.join(ROOT, "experiments"))


def run_predict(*args) -> subprocess.CompletedProcess:
  """`python -m echokld.predict ARGS` from the repository root, output captured."""
  cmd = [sys.executable, "-m", "echokld.predict", *map(str, args)]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
  """The non-blank lines of a run's stderr that are not warnings."""
  return [line for line in result.stderr.splitlines() if line.strip() and
          not line.startswith("warning: ")]


def tiny_config(model: str = "dice", **overrides):
  """A model's config shrunk to 32x32 frames and a small network, for fast tests."""
  import importlib
  return shrink(importlib.import_module(f"echokld.configs.{model}").get_config(), **overrides)


def shrink(config, **overrides):
  """`config` shrunk as tiny_config does; `overrides` map dotted keys to values."""
  config.model.init_features = 8
  config.model.blocks_down = (1, 1, 1, 1)
  config.model.vae_latent = 16
  config.data.synthetic_patients = 24
  config.data.synthetic_shape = (48, 48)
  config.data.image_size = 32
  config.data.test_frames = {"Good": 4, "Medium": 4, "Poor": 2, "Unknown": 0}
  config.train.batch_size = 4
  config.train.max_epochs = 3
  config.train.eval_batch_size = 8
  config.log.progress = False
  config.log.tensorboard = False
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config


@pytest.fixture
def tiny():
  return tiny_config


@pytest.fixture(scope="session")
def predict_workdirs(tmp_path_factory):
  """Two tiny one-epoch runs (seeds 0 and 1) sharing one preprocessing, trained once per
  session for every prediction test (test_predict, test_dicom)."""
  from echokld.train import loop
  dirs = []
  for seed in (0, 1):
    workdir = str(tmp_path_factory.mktemp(f"run{seed}"))
    loop.train_and_evaluate(tiny_config("dice", seed=seed, **{"train.max_epochs": 1}),
                            workdir)
    dirs.append(workdir)
  return dirs
