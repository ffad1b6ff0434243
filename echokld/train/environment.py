"""What a run ran on: package versions, devices, XLA flags and the code version.

A seed sweep is only reproducible if its runs can be told apart by more than their config:
the same config gives other numbers under another jaxlib or on another device. Each start
or resume of a run appends one entry to its `environment.json`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import jax

import echokld

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy",
            "scipy")


def package_versions() -> dict[str, str | None]:
  """Installed version of each package that shapes the numbers (None: not installed)."""
  out: dict[str, str | None] = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def git_commit(folder: str | None = None) -> dict[str, Any] | None:
  """{commit, dirty} of the checkout holding echokld, or None (installed from a wheel, no git)."""
  folder = folder or os.path.dirname(os.path.abspath(echokld.__file__))

  def git(*args: str) -> str:
    return subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()

  try:
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return None
  return {"commit": commit, "dirty": dirty}


def describe(start_epoch: int = 0) -> dict[str, Any]:
  """One environment entry: when, from which epoch, and on what."""
  devices = jax.devices()
  return {
      "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "start_epoch": int(start_epoch),
      "echokld": echokld.__version__,
      "git": git_commit(),
      "python": sys.version.split()[0],
      "platform": platform.platform(),
      "packages": package_versions(),
      "backend": jax.default_backend(),
      "devices": [{"kind": d.device_kind, "platform": d.platform, "id": d.id}
                  for d in devices],
      "process_count": jax.process_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "jax_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("JAX_")},
  }


def history(path: str) -> list[dict[str, Any]]:
  """The entries already in `path` ([] when absent or unreadable: it only informs)."""
  try:
    with open(path) as f:
      entries = json.load(f)
  except (OSError, ValueError):
    return []
  return entries if isinstance(entries, list) else []
