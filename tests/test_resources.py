"""Peak memory of a run (Table 8's RAM column): host from getrusage, device from JAX."""

import sys

import numpy as np

from echokld.evaluation import resources


def test_host_peak_grows_with_an_allocation_and_matches_proc_status():
  before = resources.peak_host_bytes()
  block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched.
  after = resources.peak_host_bytes()
  assert after - before > 200 * 2**20 or before > 1.5 * block.nbytes  # Unless already higher.
  assert after >= block.nbytes
  if sys.platform.startswith("linux"):  # Independent reference: the kernel's VmHWM (kB).
    with open("/proc/self/status") as f:
      hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    assert abs(hwm - resources.peak_host_bytes()) < 8 * 2**20
  del block


class FakeDevice:
  def __init__(self, stats, platform="gpu"):
    self.stats, self.platform = stats, platform

  def memory_stats(self):
    if isinstance(self.stats, Exception):
      raise self.stats
    return self.stats


def test_device_peak_is_the_largest_reported_or_none():
  devices = [FakeDevice({"peak_bytes_in_use": 5, "bytes_in_use": 1}),
             FakeDevice({"peak_bytes_in_use": 9}), FakeDevice(None)]
  assert resources.peak_device_bytes(devices) == 9
  assert resources.peak_device_bytes([FakeDevice(None), FakeDevice({"bytes_in_use": 3})]) is None
  assert resources.peak_device_bytes([FakeDevice(RuntimeError("unsupported"))]) is None
  summary = resources.memory_summary()  # This machine's backend (CPU: no device stats).
  assert summary["host_peak_bytes"] > 0
  if summary["device_platform"] == "cpu":
    assert summary["device_peak_bytes"] is None
