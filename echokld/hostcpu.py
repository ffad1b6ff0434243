"""One JAX device per CPU core, so a CPU run keeps every core busy.

XLA:CPU runs one program's ops on a shared thread pool, but its convolutions leave gaps: one
device kept 1.57 of this project's 2 cores busy. Split into one device per core, with each
batch divided over them (echokld.train.mesh), the same step keeps 1.90 cores busy and runs
1.15-1.2x faster (BENCHMARKS.md, "Every core busy"). This must be decided before JAX starts
its CPU backend, so the entry points (main, predict, the benchmarks) call `use_host_devices`
first. It only touches JAX's CPU client: on a GPU or TPU host the accelerators stay the
devices and nothing changes.

How many: `--cpu_devices=N` (or $ECHOKLD_CPU_DEVICES) sets it; 1 turns the split off. By
default, one per usable core, at most the batch size, and a count that divides the batch
(so every device gets whole images). A run's numbers are deterministic for a given device
count; another count changes them by float summation order only, and a run resumes on any.
"""

from __future__ import annotations

import logging
import os
import re

ENV = "ECHOKLD_CPU_DEVICES"
_XLA_COUNT = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def usable_cores() -> int:
  """Cores this process may run on (its CPU affinity, e.g. under `taskset`), else all."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except (AttributeError, OSError):
    return max(1, os.cpu_count() or 1)


def auto_count(cores: int, batch_size: int | None = None) -> int:
  """One device per core, at most `batch_size` and dividing it (None: no batch to divide)."""
  if batch_size is None or batch_size < 1:
    return cores
  return max(d for d in range(1, min(cores, batch_size) + 1) if batch_size % d == 0)


def requested_count(flag_value: int | None) -> int | None:
  """The count asked for by flag, else by $ECHOKLD_CPU_DEVICES; None = choose by default.

  Raises:
    ValueError: a count below 1 or not an integer.
  """
  value = flag_value if flag_value is not None else os.environ.get(ENV) or None
  if value is None:
    return None
  try:
    count = int(value)
  except ValueError:
    raise ValueError(f"{ENV}={value!r} is not an integer") from None
  if count < 1:
    raise ValueError(f"CPU device count must be at least 1, got {count}")
  return count


def use_host_devices(flag_value: int | None = None, batch_size: int | None = None,
                     split: bool = True) -> int:
  """Sets JAX's CPU device count before its backend starts; returns the count set.

  Args:
    flag_value: the --cpu_devices flag (None when not given).
    batch_size: the batch to divide over the devices (None: prediction, any count).
    split: False (e.g. config.train.data_parallel off) keeps one device unless asked.

  Returns:
    The number of CPU devices JAX will make; XLA_FLAGS' own
    --xla_force_host_platform_device_count wins when present (left untouched).
  """
  forced = _XLA_COUNT.search(os.environ.get("XLA_FLAGS", ""))
  if forced:
    return int(forced.group(1))
  count = requested_count(flag_value)
  if count is None:
    count = auto_count(usable_cores(), batch_size) if split else 1
  import jax  # Importing JAX does not start a backend; asking for devices would.
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError as exc:  # The backend already started (e.g. called twice in a process).
    logging.warning("CPU device count left as it is: %s", str(exc).splitlines()[0])
  return count
