"""Train-step benchmark of the seven models, and of the same backbone in MONAI/PyTorch.

  python experiments/benchmark.py                        # 224x224 and 704x1136, batch 2
  python experiments/benchmark.py --sizes=224x224 --models=dice --steps=30
  python experiments/benchmark.py --sizes=96x96 --batch=8 --steps_per_call=1,4

Each row is the median of --steps synchronised steps (`block_until_ready`) after two
warm-up steps. The JAX rows are timed in turn, step by step, so drift of a shared machine
hits all alike, then the MONAI rows the same way (torch's spinning threads would slow the
JAX steps between them); ratios are to the first row. Also printed: compile time (first
call), the compiled program's memory (XLA's memory analysis: arguments + temporaries), the
device's peak memory where the backend reports it, an epoch of --epoch_images images
estimated from the median, the process's peak host memory, and a roofline: XLA's FLOPs and
bytes per step against the device's peaks (experiments/roofline.py; `--peaks`). The MONAI
row (`pip install -e .[bench]`) is MONAI's SegResNet with the same blocks (1, 2, 2, 4), 16
filters, bilinear upsampling, Dice loss and Adam; it is skipped with a note when torch or
monai is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import roofline  # Beside this script.
from echokld import hostcpu, registry
from echokld.data import pipeline, synthetic
from echokld.objectives import conditioning
from echokld.train import build, mesh, step as step_lib


@dataclasses.dataclass
class Runner:
  """One benchmark row: `step()` runs one synchronised train step and returns seconds."""

  name: str
  step: Callable[[], float]
  compile_s: float
  program_bytes: int | None = None
  hlo_text: str = ""
  flops: float | None = None  # Per step, from XLA's cost analysis (jax rows only).
  bytes_accessed: float | None = None


def synthetic_batch(shape: tuple[int, int], frames: int) -> pipeline.ArraySplit:
  records = synthetic.make_synthetic(frames // 2 + 1, 0, shape)
  return pipeline.to_arrays(records, shape, resize=False)


def jax_runner(model_name: str, shape: tuple[int, int], batch: int, per_call: int = 1,
               dtype: str = "float32", augment: bool = False, devices: int = 1) -> Runner:
  """A model's jitted train step (the trainer's own) on synthetic echo; `augment` turns on
  every on-device augmentation (speckle and blur included); `devices` > 1 splits each batch
  over that many devices (echokld.train.mesh, as a run does)."""
  config = registry.load_config_module(model_name).get_config()
  config.train.batch_size, config.train.compute_dtype = batch, dtype
  if augment:
    config.augment.update(enabled=True, speckle=8.0, blur=0.5)
  split = synthetic_batch(shape, max(batch * per_call, 4))
  reference = (conditioning.reference_params(split.images, split.masks,
                                             family=config.loss.family)
               if conditioning.needs_reference(config) else None)
  setup = build.build(config, shape, reference)
  placement = mesh.first_devices(devices)
  box = [placement.put(setup.state)]
  chunk = step_lib.make_train_chunk(setup.model, setup.tx, config, placement.batch_sharding)
  images, masks = placement.put(split.images), placement.put(split.masks)
  perm = placement.put(np.arange(len(split), dtype=np.int32))
  args = (images, masks, (perm, jnp.int32(per_call), placement.put(setup.reference)),
          jnp.int32(0))
  compiled = chunk.lower(box[0], *args, num_steps=per_call).compile()
  analysis = compiled.memory_analysis()
  program_bytes = None if analysis is None else int(
      analysis.argument_size_in_bytes + analysis.temp_size_in_bytes +
      analysis.output_size_in_bytes - analysis.alias_size_in_bytes)
  # A scanned chunk's cost analysis counts its loop body once, so only single steps get one.
  flops, bytes_accessed = roofline.cost_of(compiled) if per_call == 1 else (None, None)

  def step() -> float:
    t0 = time.perf_counter()
    box[0], terms = chunk(box[0], *args, num_steps=per_call)
    jax.block_until_ready(terms)
    assert np.isfinite(np.asarray(terms["total"])).all(), model_name
    return (time.perf_counter() - t0) / per_call

  t0 = time.perf_counter()
  step()
  name = model_name + (f"@{per_call}" if per_call > 1 else "") + \
      ("/bf16" if dtype == "bfloat16" else "") + ("+augment" if augment else "") + \
      (f" ({devices} CPU devices)" if devices > 1 else "")
  return Runner(name, step, time.perf_counter() - t0, program_bytes, compiled.as_text(),
                flops, bytes_accessed)


def monai_runner(shape: tuple[int, int], batch: int, threads: int = 0) -> Runner | str:
  """MONAI SegResNet, Dice loss, Adam: the PyTorch peer; a note string if unavailable.

  `threads` > 0 sets torch's intra-op threads (0: one per core, torch's default). On a
  loaded machine torch's default threads wait on each other and run several times slower
  than one thread does, so both are worth a row.
  """
  try:
    import torch
    from monai.losses import DiceLoss
    from monai.networks.nets import SegResNet
  except ImportError as exc:
    return f"MONAI row skipped: {exc.name} is not installed (pip install -e .[bench])"
  wanted = threads or os.cpu_count() or 1
  torch.set_num_threads(wanted)
  torch.manual_seed(0)
  net = SegResNet(spatial_dims=2, init_filters=16, in_channels=1, out_channels=1,
                  blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1),
                  upsample_mode="nontrainable")
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  loss_fn = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
  split = synthetic_batch(shape, batch)
  x = torch.from_numpy(split.images[:batch, None].astype(np.float32) / 255.0)
  y = torch.from_numpy(split.masks[:batch, None].astype(np.float32))

  def step() -> float:
    torch.set_num_threads(wanted)  # Process-wide: other MONAI rows may have changed it.
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    assert np.isfinite(loss.item())
    return time.perf_counter() - t0

  t0 = time.perf_counter()
  step()
  label = f"{wanted} thread{'s' * (wanted > 1)}"
  return Runner(f"MONAI SegResNet (torch {torch.__version__}, {label})", step,
                time.perf_counter() - t0)


def parse_size(text: str) -> tuple[int, int]:
  rows, cols = text.lower().split("x")
  return int(rows), int(cols)


def device_peak_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get("peak_bytes_in_use")


def time_rows(runners: list[Runner], steps: int) -> dict[str, list[float]]:
  """Seconds per step of each row, the rows timed in turn step by step after 2 warm-ups."""
  for _ in range(2):
    for runner in runners:
      runner.step()
  times: dict[str, list[float]] = {r.name: [] for r in runners}
  for _ in range(steps):
    for runner in runners:
      times[runner.name].append(runner.step())
  return times


def bench_size(shape: tuple[int, int], args: argparse.Namespace) -> list[dict]:
  runners: list[Runner] = []
  for dtype in args.dtypes.split(","):
    for per_call in (int(k) for k in args.steps_per_call.split(",")):
      for model_name in args.models.split(","):
        if dtype != "float32" and model_name != args.models.split(",")[0]:
          continue  # Mixed precision is timed on the first model only.
        for devices in args.device_counts:
          runners.append(jax_runner(model_name, shape, args.batch, per_call, dtype,
                                    devices=devices))
  notes: list[str] = []
  times = time_rows(runners, args.steps)
  # The MONAI rows start only after the JAX rows are timed: torch's OpenMP threads keep
  # spinning after each of its steps, which made the JAX steps timed in turn with them 17%
  # (224x224) to 37% (704x1136) slower (BENCHMARKS.md).
  peers: list[Runner] = []
  for threads in (int(t) for t in args.monai_threads.split(",") if args.monai):
    peer = monai_runner(shape, args.batch, threads)
    if isinstance(peer, str):
      notes.append(peer)
      break
    peers.append(peer)
  times.update(time_rows(peers, args.steps))
  runners += peers
  base = statistics.median(times[runners[0].name])
  rows = []
  for runner in runners:
    median = statistics.median(times[runner.name])
    rows.append({"size": f"{shape[0]}x{shape[1]}", "row": runner.name, "step_s": median,
                 "images_per_s": args.batch / median, "ratio_to_first": median / base,
                 "speed_vs_row": base / median, "compile_s": runner.compile_s,
                 "epoch_s": median * args.epoch_images / args.batch,
                 "program_mib": None if runner.program_bytes is None else
                                runner.program_bytes / 2**20})
  print(f"\n## {shape[0]}x{shape[1]}, batch {args.batch}, {args.steps} steps\n")
  print(f"| row | median step s | images/s | time ratio to {runners[0].name} | "
        f"compile s | program MiB | epoch of {args.epoch_images} s |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    mib = "" if r["program_mib"] is None else f"{r['program_mib']:.0f}"
    print(f"| {r['row']} | {r['step_s']:.3f} | {r['images_per_s']:.2f} | "
          f"{r['ratio_to_first']:.2f} | {r['compile_s']:.1f} | {mib} | {r['epoch_s']:.1f} |")
  for note in notes:
    print(f"\n{note}")
  print_roofline(runners, rows, args.peaks)
  return rows


def print_roofline(runners: list[Runner], rows: list[dict], peaks: roofline.Peaks) -> None:
  """Each jax row's FLOPs and bytes per step against the device's peaks (roofline.py)."""
  print(f"\nRoofline ({peaks.source}: {peaks.flops_per_s / 1e12:.3g} TFLOP/s, "
        f"{peaks.bytes_per_s / 1e9:.3g} GB/s)\n")
  print("| row | GFLOP/step | GB/step (XLA) | FLOP/byte | compute bound s | bandwidth bound s "
        "| measured / roofline |")
  print("|---|---|---|---|---|---|---|")
  for runner, row in zip(runners, rows):
    if runner.flops is None:
      continue
    bound = roofline.roofline_seconds(runner.flops, runner.bytes_accessed, peaks)
    row.update(gflop=runner.flops / 1e9, gbytes=runner.bytes_accessed / 1e9, **bound,
               measured_over_roofline=row["step_s"] / bound["roofline_s"])
    print(f"| {row['row']} | {row['gflop']:.1f} | {row['gbytes']:.2f} | "
          f"{runner.flops / runner.bytes_accessed:.1f} | {bound['compute_s']:.4f} | "
          f"{bound['bandwidth_s']:.4f} | {row['measured_over_roofline']:.1f} |")


def device_peaks(spec: str) -> roofline.Peaks:
  """--peaks: auto (datasheet, else measured), measured, or TFLOPS,GBPS; bad: exit 2."""
  if spec not in ("auto", "measured"):
    try:
      tflops, gbps = (float(v) for v in spec.split(","))
      if not (tflops > 0 and gbps > 0):
        raise ValueError
    except ValueError:
      print(f"error: --peaks: expected auto, measured or two positive numbers TFLOPS,GBPS, "
            f"got {spec!r}", file=sys.stderr)
      sys.exit(2)
    return roofline.Peaks(tflops * 1e12, gbps * 1e9, "given with --peaks")
  sheet = roofline.datasheet_peaks(jax.devices()[0].device_kind)
  return sheet if sheet is not None and spec == "auto" else roofline.measured_peaks()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="224x224,704x1136")
  parser.add_argument("--models", default="dice,wdecay,vae,kld_alpha,kld_kde,rd_vae,bd_vae")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--steps_per_call", default="1",
                      help="comma list: also time k steps fused by lax.scan per call")
  parser.add_argument("--dtypes", default="float32",
                      help="comma list; bfloat16 adds a mixed-precision row of the first model")
  parser.add_argument("--monai", type=int, default=1, help="1: add the MONAI/PyTorch rows")
  parser.add_argument("--monai_threads", default="0,1",
                      help="torch threads of each MONAI row (0: torch's default)")
  parser.add_argument("--epoch_images", type=int, default=288)
  parser.add_argument("--json", default="", help="also write the rows to this file")
  parser.add_argument("--peaks", default="auto",
                      help="roofline peaks: auto (datasheet for known GPUs, else measured), "
                           "measured, or TFLOPS,GBPS (e.g. 67,3350)")
  parser.add_argument("--cpu_devices", type=int, default=None,
                      help="CPU devices to split the host into (echokld.hostcpu; default one "
                           "per core dividing --batch, as a run does)")
  parser.add_argument("--device_counts", default="",
                      help="comma list: time each JAX row on these device counts (default: "
                           "all devices, the run's default); e.g. 1,2 adds the unsplit row")
  args = parser.parse_args()
  hostcpu.use_host_devices(args.cpu_devices, args.batch)  # Before JAX starts its backend.
  args.device_counts = ([int(n) for n in args.device_counts.split(",")] if args.device_counts
                        else [jax.device_count()])
  if max(args.device_counts) > jax.device_count() or min(args.device_counts) < 1:
    sys.exit(f"error: --device_counts: between 1 and the {jax.device_count()} devices")
  args.peaks = device_peaks(args.peaks)
  print(f"# {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, load "
        f"{os.getloadavg()[0]:.2f}")
  rows = [r for size in args.sizes.split(",") for r in bench_size(parse_size(size), args)]
  peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
  peak_device = device_peak_bytes()
  print(f"\npeak host memory of the process: {peak_host:.0f} MiB; peak device memory: "
        f"{'not reported by this backend' if peak_device is None else f'{peak_device / 2**20:.0f} MiB'}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": jax.devices()[0].device_kind, "rows": rows,
                 "peak_host_mib": peak_host, "peaks": dataclasses.asdict(args.peaks)},
                f, indent=2)


if __name__ == "__main__":
  main()
