"""Throughput of S replicas in one program (echokld.replicas) against S sequential single runs.

  python experiments/bench_replicas.py --size=96,96 --batch=8 --replicas=1,2,4,8 --steps=10

For each S: S single-run train states stepped one after another (each step synchronised, as a
sequential sweep runs them), and one stacked state stepped by each --modes program. Rounds are
interleaved (baseline, then each mode) so that load on a shared machine hits all alike;
reported: median seconds per round after two warm-up calls, images/s, and the median of the
per-round ratios baseline / mode (> 1: the group is faster), and the same for the CPU seconds
the process used (all threads): on a shared machine wall time depends on the other load,
while CPU seconds per round show how much work each program needs. Load average is printed.
--profile: after timing, one jax.profiler trace per program at each S, summarised as the busy
time of XLA's worker threads per op kind (what the CPU spends a round on).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import platform
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import benchmark  # Beside this script.
from echokld import hostcpu, registry
from echokld.train import build, loop, mesh, replicate, step as step_lib


def timed(fn: Callable[[], None]) -> tuple[float, float]:
  """(wall seconds, CPU seconds of this process) of one call."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def setup(model_name: str, shape: tuple[int, int], batch: int, size: int,
          modes: list[str]) -> dict[str, Callable[[], tuple[float, float]]]:
  """Timers ((wall, CPU) seconds per call) for the sequential baseline and each mode."""
  config = registry.load_config_module(model_name).get_config()
  config.train.batch_size = batch
  split = benchmark.synthetic_batch(shape, max(batch, 4))
  setups = [build.build(config, shape, seed=k) for k in range(size)]
  placement = mesh.setup(config.train)  # As a run places it: each batch over the devices.
  fresh = [placement.put(s.state) for s in setups]
  images, masks = placement.put(split.images), placement.put(split.masks)
  perm = placement.put(np.arange(len(split), dtype=np.int32))
  aux = ((perm, jnp.int32(1), placement.put(np.zeros(3, np.float32))),) * size
  single = step_lib.make_train_chunk(setups[0].model, setups[0].tx, config,
                                     placement.batch_sharding)
  singles = list(fresh)

  def sequential() -> None:
    for k in range(size):
      singles[k], terms = single(singles[k], images, masks, aux[k], jnp.int32(0), num_steps=1)
      jax.block_until_ready(terms)

  timers = {"sequential": lambda: timed(sequential)}
  for mode in modes:
    chunk = loop.make_group_chunk(setups[0], config, size, placement.batch_sharding, mode)
    box = [tuple(jax.tree_util.tree_map(jnp.copy, state) for state in fresh)]

    def grouped(chunk=chunk, box=box) -> None:
      box[0], terms = chunk(box[0], images, masks, aux, jnp.int32(0), num_steps=1)
      jax.block_until_ready(terms)
      assert all(np.isfinite(np.asarray(t["total"])).all() for t in terms)

    timers[mode] = lambda grouped=grouped: timed(grouped)
  return timers


def profile(name: str, timer: Callable, logdir: str) -> str:
  """Busy ms of XLA:CPU worker threads in one traced call, top op kinds (private jaxlib API)."""
  from jax._src.lib import _profile_data
  path = os.path.join(logdir, name)
  jax.profiler.start_trace(path)
  wall = timer()[0]
  jax.profiler.stop_trace()
  data = _profile_data.ProfileData.from_file(
      sorted(glob.glob(f"{path}/**/*.xplane.pb", recursive=True))[-1])
  busy: collections.Counter = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if "Eigen" in line.name:  # XLA:CPU's intra-op worker threads.
        for event in line.events:
          if not event.name.startswith("ThunkExecutor"):
            busy[event.name.split(".")[0]] += event.duration_ns / 1e6
  top = ", ".join(f"{k} {v:.0f}" for k, v in busy.most_common(4))
  return (f"{name}: wall {wall * 1e3:.0f} ms, worker busy {sum(busy.values()):.0f} ms "
          f"({top})")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", default="96,96")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--model", default="dice")
  parser.add_argument("--replicas", default="1,2,4,8")
  parser.add_argument("--modes", default=",".join(replicate.MODES))
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--profile", default="", help="trace directory: also profile each program")
  parser.add_argument("--cpu_devices", type=int, default=None,
                      help="CPU devices (echokld.hostcpu; default one per core dividing "
                           "--batch, as a run does)")
  args = parser.parse_args()
  hostcpu.use_host_devices(args.cpu_devices, args.batch)  # Before JAX starts its backend.
  shape = tuple(int(v) for v in args.size.split(","))
  modes = args.modes.split(",")
  print(f"# {args.model}, batch {args.batch}, {shape[0]}x{shape[1]}, "
        f"{jax.device_count()} x {jax.devices()[0]}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
  print("| S | program | median s per S steps | images/s | ratio to sequential "
        "(median of rounds) | CPU s per S steps | CPU ratio | compile+first s | load avg |")
  print("|---|---|---|---|---|---|---|---|---|", flush=True)
  for size in (int(s) for s in args.replicas.split(",")):
    timers = setup(args.model, shape, args.batch, size, modes)
    first = {name: timer()[0] for name, timer in timers.items()}  # Compile, first call.
    for timer in timers.values():
      timer()
    load = os.getloadavg()[0]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in timers}
    for _ in range(args.steps):  # Interleaved rounds.
      for name, timer in timers.items():
        times[name].append(timer())
    load = f"{load:.1f}-{os.getloadavg()[0]:.1f}"
    base = times["sequential"]
    for name in timers:
      wall = statistics.median(w for w, _ in times[name])
      cpu = statistics.median(c for _, c in times[name])
      ratio = statistics.median(b[0] / t[0] for b, t in zip(base, times[name]))
      cpu_ratio = statistics.median(b[1] / t[1] for b, t in zip(base, times[name]))
      print(f"| {size} | {name} | {wall:.3f} | {size * args.batch / wall:.2f} | "
            f"{ratio:.2f} | {cpu:.3f} | {cpu_ratio:.2f} | {first[name]:.1f} | {load} |",
            flush=True)
    if args.profile:
      for name, timer in timers.items():
        print("#", profile(f"S{size}_{name}", timer, args.profile), flush=True)


if __name__ == "__main__":
  main()
