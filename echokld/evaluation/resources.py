"""What a run cost in memory: the analogue of the RAM column of the paper's Table 8.

Both numbers are peaks of the whole process so far: a replica group (several seeds in one
program) reports the same peaks for each of its runs, and a resumed run only those of the
process that finished it.
"""

from __future__ import annotations

import resource
import sys
from typing import Any


def peak_host_bytes() -> int:
  """Peak resident set size of this process (getrusage ru_maxrss: KiB on Linux, bytes on
  macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def peak_device_bytes(devices: Any = None) -> int | None:
  """Largest `peak_bytes_in_use` over the local devices; None where the backend reports none
  (the CPU backend)."""
  import jax
  peaks = []
  for device in devices if devices is not None else jax.local_devices():
    try:
      stats = device.memory_stats()
    except (RuntimeError, NotImplementedError):  # Some backends raise instead of None.
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def memory_summary() -> dict[str, Any]:
  """{'host_peak_bytes', 'device_peak_bytes' (None when unknown), 'device_platform'}."""
  import jax
  return {"host_peak_bytes": peak_host_bytes(), "device_peak_bytes": peak_device_bytes(),
          "device_platform": jax.local_devices()[0].platform}
