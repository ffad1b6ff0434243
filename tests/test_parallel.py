"""Data parallel training over 4 fake CPU devices equals the one-device run.

The fake devices must be requested before JAX is imported, hence subprocesses. They share
this machine's cores, so these tests check numbers and shardings, not speed.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from echokld.infer import runs as infer_runs
from echokld.train import loop, mesh
from test_train import TINY_FLAGS

FOUR_DEVICES = "--xla_force_host_platform_device_count=4"

# Trains the tiny config for 2 epochs data parallel over 4 devices, then on one device, then
# two seeds as a replica group data parallel over the 4 devices, recording the sharding of
# the gathered batch (through a conditioning wrapper, which sees the batch inside the step)
# and of the parameters at each epoch's end (through a hook).
SCRIPT = r"""
import json, sys
import jax, numpy as np
from conftest import tiny_config
from echokld.objectives import conditioning
from echokld.train import hooks, loop

seen = {"batch": [], "params": []}
real_conditioning = conditioning.make_conditioning

def make_conditioning(config, reference):  # Sees the gathered batch inside the step.
  real = real_conditioning(config, reference)
  def spy(x, y, first_pass=None):
    jax.debug.inspect_array_sharding(
        x, callback=lambda s: seen["batch"].append(
            [len(s.device_set), list(s.shard_shape(x.shape)), s.is_fully_replicated]))
    return real.train(x, y, first_pass) if real.train is not None else {}
  return conditioning.Conditioning(train=spy, infer=real.infer)

class ParamSharding(hooks.Hook):
  def end_epoch(self, run, state, row):
    leaf = jax.tree_util.tree_leaves(state.params)[0]
    seen["params"].append([len(leaf.sharding.device_set), leaf.sharding.is_fully_replicated])

conditioning.make_conditioning = make_conditioning
out = {"devices": jax.device_count(), "workdir": sys.argv[1]}
for name, parallel, seeds in (("parallel", True, [0]), ("single", False, [0]),
                              ("group", True, [0, 1])):
  seen = {"batch": [], "params": []}
  workdirs = [sys.argv[1] + "/" + name + ("" if len(seeds) == 1 else str(s)) for s in seeds]
  summary = loop.train(tiny_config(**{"train.max_epochs": 2, "train.data_parallel": parallel}),
                       workdirs, seeds, extra_hooks=[ParamSharding()])[0]
  rows = [json.loads(l) for l in open(workdirs[0] + "/metrics.jsonl")]
  out[name] = {"train_total": [r["train_total"] for r in rows],
               "val_dice": [r["val_dice"] for r in rows], "test_dice": summary["test"]["dice"],
               **seen}
print("RESULT " + json.dumps(out))
"""


def run_python(args: list[str], xla_flags: str, timeout: int = 240):
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.path.join(ROOT, "tests"))  # The script imports conftest.
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def cli_args(workdir, *extra: str) -> list[str]:
  return ["-m", "echokld.main", "--config=configs/dice.py", f"--workdir={workdir}",
          *TINY_FLAGS, "--config.data.test_frames.Good=4", "--config.data.test_frames.Medium=4",
          "--config.data.test_frames.Poor=2", "--config.train.max_epochs=2", *extra]


@pytest.fixture(scope="module")
def four_device_runs(tmp_path_factory):
  done = run_python(["-c", SCRIPT, str(tmp_path_factory.mktemp("dp"))], FOUR_DEVICES)
  assert done.returncode == 0, done.stderr[-3000:]
  line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_four_devices_shard_the_batch_and_replicate_the_parameters(four_device_runs):
  runs = four_device_runs
  assert runs["devices"] == 4
  # Batch 4 over 4 devices: one image per device inside the step.
  assert runs["parallel"]["batch"] == [[4, [1, 32, 32, 1], False]]
  assert runs["parallel"]["params"] == [[4, True], [4, True]]  # One save per epoch.
  assert runs["single"]["batch"] == [[1, [4, 32, 32, 1], True]]
  assert runs["single"]["params"] == [[1, True], [1, True]]
  # A replica group composes with data parallelism: each seed's batch is split the same way.
  assert runs["group"]["batch"] == [[4, [1, 32, 32, 1], False]] * 2
  assert runs["group"]["params"] == [[4, True]] * 4  # Two seeds, two epochs.


def test_four_devices_give_the_one_device_numbers(four_device_runs):
  par, one = four_device_runs["parallel"], four_device_runs["single"]
  assert len(par["train_total"]) == len(one["train_total"]) == 2
  assert par["train_total"] == pytest.approx(one["train_total"], rel=1e-5)
  assert par["val_dice"] == pytest.approx(one["val_dice"], rel=1e-5)
  assert par["test_dice"] == pytest.approx(one["test_dice"], rel=1e-5)
  assert 0.0 < one["val_dice"][-1] <= 1.0 and one["train_total"][1] < one["train_total"][0]
  group = four_device_runs["group"]  # Seed 0 of the group is the single run of seed 0.
  assert group["train_total"] == pytest.approx(one["train_total"], rel=1e-5)
  assert group["val_dice"] == pytest.approx(one["val_dice"], rel=1e-5)


def test_a_data_parallel_checkpoint_restores_on_one_device(four_device_runs):
  # The checkpoints hold arrays replicated over 4 devices; this process has one.
  workdir = four_device_runs["workdir"]
  par = infer_runs.load_run(os.path.join(workdir, "parallel"))
  one = infer_runs.load_run(os.path.join(workdir, "single"))
  diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
           zip(jax.tree_util.tree_leaves(par.params), jax.tree_util.tree_leaves(one.params))]
  assert len(diffs) > 10 and max(diffs) < 1e-4  # Two epochs; only summation order differs.


def test_a_data_parallel_run_resumes_on_one_device(four_device_runs, tmp_path, tiny):
  rows = {}
  for name in ("parallel", "single"):  # Both trained 2 epochs in the 4-device process.
    workdir = tmp_path / name
    shutil.copytree(os.path.join(four_device_runs["workdir"], name), workdir)
    summary = loop.train_and_evaluate(tiny(**{"train.max_epochs": 3}), str(workdir))
    assert summary["epochs"] == 3
    rows[name] = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  par, one = rows["parallel"], rows["single"]
  assert [r["epoch"] for r in par] == [1, 2, 3] and par[2]["step"] == 3 * par[0]["step"]
  assert [r["val_dice"] for r in par[:2]] == four_device_runs["parallel"]["val_dice"]
  assert par[2]["train_total"] == pytest.approx(one[2]["train_total"], rel=1e-5)
  assert par[2]["val_dice"] == pytest.approx(one[2]["val_dice"], rel=1e-5)


def test_one_device_places_as_before(tiny):
  placement = mesh.setup(tiny().train)
  assert placement.mesh is None and placement.batch_sharding is None
  assert placement.num_devices == 1


def test_a_batch_that_does_not_divide_over_the_devices_is_one_line_exit_2(tmp_path):
  done = run_python(cli_args(tmp_path / "run", "--config.train.batch_size=6"), FOUR_DEVICES)
  assert done.returncode == 2, done.stderr[-2000:]
  lines = done.stderr.strip().splitlines()
  assert lines[-1] == ("error: config.train.batch_size: batch size 6 does not divide over 4 "
                       "devices (data parallel); use a multiple of 4 or "
                       "--config.train.data_parallel=False")


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def test_two_processes_with_two_devices_each_match_one_device(four_device_runs, tmp_path):
  """A real multi-process run on localhost: jax.distributed over 2 CPU processes (gloo)."""
  workdir, port = tmp_path / "two_processes", free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      [sys.executable, *cli_args(workdir, f"--coordinator_address=localhost:{port}",
                                 "--num_processes=2", f"--process_id={i}")],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=400) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]  # Process 0 wrote once.
  one = four_device_runs["single"]
  assert [r["epoch"] for r in rows] == [1, 2]
  assert [r["train_total"] for r in rows] == pytest.approx(one["train_total"], rel=1e-5)
  assert [r["val_dice"] for r in rows] == pytest.approx(one["val_dice"], rel=1e-5)
  summary = json.load(open(workdir / "summary.json"))
  assert summary["test"]["dice"] == pytest.approx(one["test_dice"], rel=1e-5)
  assert len(open(workdir / "test_metrics.csv").read().splitlines()) == 11  # 10 frames.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]


def test_distributed_without_a_coordinator_is_one_line_exit_2(tmp_path):
  done = run_python(cli_args(tmp_path / "run", "--num_processes=2", "--process_id=0"), "")
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      "error: --distributed: jax.distributed.initialize failed: coordinator_address should "
      "be defined.")
