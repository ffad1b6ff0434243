"""Inference speed: echokld's jitted prediction against MONAI SegResNet's eval forward.

  python experiments/bench_infer.py --sizes=224x224,704x1136 --batches=1,8 --steps=10

Ours is the function `echokld.predict` runs (train.step.make_predict: uint8 frames in,
probabilities out, lax.map over batches); MONAI's is the same network layout in eval mode
under torch.no_grad (pip install -e .[bench]). Each row: median of --steps calls after two
warm-ups. All our rows are timed before any MONAI row, since torch's OpenMP threads keep
spinning after each call and slow whatever runs next (BENCHMARKS.md). Printed: median
seconds per call, images/s, and MONAI's time over ours (> 1: ours faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import jax
import numpy as np

import benchmark  # Beside this script.
from echokld import hostcpu, registry
from echokld.train import build, mesh, step as step_lib


def ours(model_name: str, shape: tuple[int, int], batch: int) -> Callable[[], float]:
  config = registry.load_config_module(model_name).get_config()
  setup = build.build(config, shape)
  placement = mesh.for_inference(batch)  # As echokld.predict places it.
  predict = step_lib.make_predict(setup.model, config, batch, placement.batch_sharding)
  frames = benchmark.synthetic_batch(shape, batch).images[:batch]
  params, reference = placement.put(setup.state.params), placement.put(setup.reference)

  def call() -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(predict(params, frames, reference))
    return time.perf_counter() - t0

  return call


def monai(shape: tuple[int, int], batch: int) -> Callable[[], float] | str:
  try:
    import torch
    from monai.networks.nets import SegResNet
  except ImportError as exc:
    return f"MONAI rows skipped: {exc.name} is not installed (pip install -e .[bench])"
  torch.manual_seed(0)
  net = SegResNet(spatial_dims=2, init_filters=16, in_channels=1, out_channels=1,
                  blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1),
                  upsample_mode="nontrainable").eval()
  x = torch.from_numpy(benchmark.synthetic_batch(shape, batch).images[:batch, None]
                       .astype(np.float32) / 255.0)

  def call() -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
      torch.sigmoid(net(x))
    return time.perf_counter() - t0

  return call


def median_of(call: Callable[[], float], steps: int) -> float:
  for _ in range(2):
    call()
  return statistics.median(call() for _ in range(steps))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="224x224,704x1136")
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--model", default="dice")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--cpu_devices", type=int, default=None,
                      help="CPU devices (echokld.hostcpu; default one per core, as predict)")
  args = parser.parse_args()
  hostcpu.use_host_devices(args.cpu_devices)  # Before JAX starts its backend.
  print(f"# {jax.device_count()} {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, load "
        f"{os.getloadavg()[0]:.2f}\n")
  print("| size | batch | ours s | ours images/s | MONAI s | MONAI images/s | MONAI / ours |")
  print("|---|---|---|---|---|---|---|")
  cases = [(size, benchmark.parse_size(size), int(b)) for size in args.sizes.split(",")
           for b in args.batches.split(",")]
  mine = {(size, b): median_of(ours(args.model, shape, b), args.steps)
          for size, shape, b in cases}
  note = ""
  for size, shape, batch in cases:
    peer = monai(shape, batch)
    if isinstance(peer, str):
      note = peer
      theirs = None
    else:
      theirs = median_of(peer, args.steps)
    t = mine[(size, batch)]
    print(f"| {size} | {batch} | {t:.4f} | {batch / t:.1f} | " + (
        f"{theirs:.4f} | {batch / theirs:.1f} | {theirs / t:.2f} |" if theirs else "| | |"))
  if note:
    print(f"\n{note}")

if __name__ == "__main__":
  main()
