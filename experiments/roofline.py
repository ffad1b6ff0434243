"""Roofline of a compiled step: XLA's own FLOP and byte counts against the device's peaks.

A step cannot run faster than max(FLOPs / peak FLOP/s, bytes / peak bandwidth); the ratio
of that bound to the measured time says how much of the device a step uses. FLOPs and bytes
come from XLA's cost analysis of the compiled program (after fusion, so bytes are what the
fused kernels read and write, an estimate that ignores caches). Peaks are either the
vendor's datasheet figures for known accelerators or measured on the device here (a large
matmul and a large elementwise pass), which is the only option on a CPU.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Peaks:
  """Peak compute (FLOP/s) and memory bandwidth (bytes/s) of one device."""

  flops_per_s: float
  bytes_per_s: float
  source: str


# Vendor datasheets, dense (no sparsity), per GPU: float32 on CUDA cores and HBM bandwidth.
# Keys are matched as substrings of jax's device_kind, first match wins.
DATASHEET = {
    "H200": Peaks(67e12, 4.8e12, "NVIDIA H200 datasheet: 67 TFLOP/s FP32, 4.8 TB/s"),
    "H100 PCIe": Peaks(51e12, 2.0e12, "NVIDIA H100 PCIe datasheet: 51 TFLOP/s FP32, 2.0 TB/s"),
    "H100": Peaks(67e12, 3.35e12, "NVIDIA H100 SXM datasheet: 67 TFLOP/s FP32, 3.35 TB/s"),
    "A100": Peaks(19.5e12, 2.0e12, "NVIDIA A100 80GB datasheet: 19.5 TFLOP/s FP32, 2.0 TB/s"),
    "L4": Peaks(30.3e12, 0.3e12, "NVIDIA L4 datasheet: 30.3 TFLOP/s FP32, 300 GB/s"),
}


def datasheet_peaks(device_kind: str) -> Peaks | None:
  """The datasheet entry whose key occurs in `device_kind`, or None (CPUs, unknown GPUs)."""
  for key, peaks in DATASHEET.items():
    if key in device_kind:
      return peaks
  return None


def cost_of(compiled: Any) -> tuple[float, float]:
  """(FLOPs, bytes accessed) of one call of a compiled jax program, from XLA's analysis."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per program.
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0))


def roofline_seconds(flops: float, bytes_accessed: float, peaks: Peaks) -> dict[str, float]:
  """The compute bound, the bandwidth bound and the roofline (their max), in seconds."""
  compute = flops / peaks.flops_per_s
  bandwidth = bytes_accessed / peaks.bytes_per_s
  return {"compute_s": compute, "bandwidth_s": bandwidth, "roofline_s": max(compute, bandwidth)}


def _median_seconds(fn: Any, x: jax.Array, repeats: int) -> float:
  """Median time of x = fn(x); fn donates x, so no call maps fresh memory for its output
  (on XLA:CPU a fresh 256 MiB output costs more in page faults than the pass itself)."""
  x = jax.block_until_ready(fn(x))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    x = jax.block_until_ready(fn(x))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measured_peaks(matmul_size: int = 2048, stream_mib: int = 256, repeats: int = 10) -> Peaks:
  """Attainable peaks on the default device: a float32 matmul and a read+write stream pass.

  Attainable, not theoretical: what this backend's best kernels reach, so a step's ratio to
  it says how far the step is from the device's practical limit.
  """
  n = matmul_size
  # x @ x / n keeps the values bounded (all ones stay ones) over the repeats.
  matmul = jax.jit(lambda x: (x @ x) / n, donate_argnums=0)
  matmul_s = _median_seconds(matmul, jnp.ones((n, n), jnp.float32), repeats)
  stream_bytes = 2 * stream_mib * 2**20  # One read and one write of each element.
  stream = jax.jit(lambda v: v * 0.5 + 0.5, donate_argnums=0)
  stream_s = _median_seconds(stream, jnp.ones((stream_bytes // 8,), jnp.float32), repeats)
  return Peaks(2 * n**3 / matmul_s, stream_bytes / stream_s,
               f"measured here: {n}^3 float32 matmul, {stream_mib} MiB read+write pass")
