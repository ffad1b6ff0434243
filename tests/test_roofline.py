"""Roofline inputs: XLA's FLOP and byte counts against hand counts; peaks; the benchmark's rows."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import roofline  # experiments/ is on sys.path (conftest.py).
from conftest import ROOT

NHWC = ("NHWC", "HWIO", "NHWC")


def compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile()


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_conv_cost_is_the_hand_count(padding):
  n, h, w, cin, cout = 2, 20, 12, 3, 5
  x, k = jnp.ones((n, h, w, cin)), jnp.ones((3, 3, cin, cout))
  conv = compiled(lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding,
                                                        dimension_numbers=NHWC), x, k)
  flops, bytes_accessed = roofline.cost_of(conv)
  if padding == "VALID":  # Every output pixel sees all 9 taps.
    out_h, out_w, taps = h - 2, w - 2, 9 * (h - 2) * (w - 2)
  else:  # Border pixels see fewer taps: 3 per axis inside, 2 at each edge.
    out_h, out_w, taps = h, w, (3 * h - 2) * (3 * w - 2)
  assert flops == 2 * n * cin * cout * taps
  assert bytes_accessed == 4 * (x.size + k.size + n * out_h * out_w * cout)


def test_matmul_cost_is_the_hand_count():
  a, b = jnp.ones((64, 32)), jnp.ones((32, 48))
  flops, bytes_accessed = roofline.cost_of(compiled(jnp.matmul, a, b))
  assert flops == 2 * 64 * 32 * 48
  assert bytes_accessed == 4 * (64 * 32 + 32 * 48 + 64 * 48)


def test_roofline_is_the_slower_of_compute_and_bandwidth():
  peaks = roofline.Peaks(flops_per_s=1e12, bytes_per_s=1e11, source="test")
  # 2e9 FLOPs take 2 ms, 1e9 bytes take 10 ms: bandwidth bound.
  assert roofline.roofline_seconds(2e9, 1e9, peaks) == pytest.approx(
      {"compute_s": 2e-3, "bandwidth_s": 1e-2, "roofline_s": 1e-2})
  # 5e10 FLOPs take 50 ms: compute bound.
  assert roofline.roofline_seconds(5e10, 1e9, peaks)["roofline_s"] == pytest.approx(5e-2)


def test_datasheet_lookup_uses_the_device_kind():
  # device_kind strings as jax reports them on these GPUs.
  assert roofline.datasheet_peaks("NVIDIA H100 80GB HBM3").bytes_per_s == 3.35e12
  assert roofline.datasheet_peaks("NVIDIA H100 PCIe").bytes_per_s == 2.0e12
  assert roofline.datasheet_peaks("NVIDIA H200").bytes_per_s == 4.8e12
  assert roofline.datasheet_peaks("NVIDIA L4").flops_per_s == 30.3e12
  assert roofline.datasheet_peaks("cpu") is None


def test_benchmark_rows_carry_the_step_cost(tmp_path):
  out = tmp_path / "rows.json"
  command = [sys.executable, "experiments/benchmark.py", "--sizes=32x32", "--models=dice",
             "--steps=2", "--monai=0", "--peaks=1,10", f"--json={out}"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  (row,) = json.loads(out.read_text())["rows"]
  # Peaks of 1 TFLOP/s and 10 GB/s: the bounds are the cost divided by them.
  assert row["compute_s"] == pytest.approx(row["gflop"] / 1e3)
  assert row["bandwidth_s"] == pytest.approx(row["gbytes"] / 10)
  assert row["measured_over_roofline"] == pytest.approx(
      row["step_s"] / max(row["compute_s"], row["bandwidth_s"]))
  # Hand count: each of the ~24 3x3 convolutions costs 2 * 9 * C^2 * H * W FLOPs, the same
  # at every level (channels double as the sides halve): 2 * 9 * 16^2 * 32^2 = 4.7 MFLOP,
  # plus 3 strided ones at half that: ~0.12 GFLOP per 32x32 image forward. A train step is
  # about 3 forward passes (forward, input and weight gradients) for 2 images: ~0.72 GFLOP.
  assert 0.55 < row["gflop"] < 0.9


@pytest.mark.parametrize("peaks", ["0,1", "fast", "1,2,3"])
def test_bad_peaks_are_a_one_line_error(peaks):
  result = subprocess.run([sys.executable, "experiments/benchmark.py", f"--peaks={peaks}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: --peaks: expected auto, measured or two positive numbers TFLOPS,GBPS, "
      f"got {peaks!r}"]
