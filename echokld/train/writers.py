"""Metric writers: JSON lines always, TensorBoard events when tensorboardX is installed.

clu.metric_writers imports TensorFlow, which this project does not require, so events go
through tensorboardX (optional extra `tensorboard`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
  if message not in _WARNED:
    _WARNED.add(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


class MetricWriter:
  """Appends one JSON object per epoch to metrics.jsonl; mirrors scalars to TensorBoard.

  `enabled=False` (processes other than 0 of a multi-process run) makes every write a no-op.
  """

  def __init__(self, workdir: str, tensorboard: bool = True, enabled: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = enabled
    self._tb = None
    if tensorboard and enabled:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        _warn_once("log.tensorboard is on but tensorboardX is not installed (pip install "
                   "'echokld[tensorboard]', or --config.log.tensorboard=False); metrics go "
                   "to metrics.jsonl only")

  def truncate_after(self, epoch: int) -> None:
    """Drops epochs after `epoch` (they are redone when a run resumes from a checkpoint)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [line for line in f if line.strip() and json.loads(line)["epoch"] <= epoch]
    with open(self.path, "w") as f:
      f.writelines(rows)

  def write(self, row: dict[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for key, value in row.items():
        if isinstance(value, (int, float)) and key != "epoch":
          self._tb.add_scalar(key, value, row["epoch"])
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
