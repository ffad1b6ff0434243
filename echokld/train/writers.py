"""Metric writers: JSON lines always, TensorBoard events when tensorboardX is installed.

clu.metric_writers imports TensorFlow, which this project does not require, so events go
through tensorboardX (optional extra `tensorboard`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from echokld.errors import InputError

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
    # Opened at the first row: a run refused before training (bad data, a held lock)
    # prints its one error line and nothing about TensorBoard.
    self._tb_dir = os.path.join(workdir, "tensorboard") if tensorboard and enabled else None

  def _tensorboard(self) -> Any:
    if self._tb_dir is not None:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(self._tb_dir)
      except ImportError:
        _warn_once("log.tensorboard is on but tensorboardX is not installed (pip install "
                   "'echokld[tensorboard]', or --config.log.tensorboard=False); metrics go "
                   "to metrics.jsonl only")
      self._tb_dir = None
    return self._tb

  def truncate_after(self, epoch: int) -> None:
    """Drops epochs after `epoch` (they are redone when a run resumes from a checkpoint)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    rows = [row for row in _read_rows(self.path) if row["epoch"] <= epoch]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(tmp, self.path)  # A kill here leaves the old file or the new, never half.

  def write(self, row: dict[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tensorboard() is not None:
      for key, value in row.items():
        if isinstance(value, (int, float)) and key != "epoch":
          self._tb.add_scalar(key, value, row["epoch"])
      self._tb.flush()

  def tensorboard_on(self) -> bool:
    """Whether events are written (opens the writer, or warns once that it cannot)."""
    return self.enabled and self._tensorboard() is not None

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    if self.tensorboard_on():
      self._tb.add_text(tag, text, step)

  def write_images(self, images: dict[str, Any], step: int) -> None:
    """{tag: (H, W, 3) uint8} images at `step` (TensorBoard only)."""
    if self.tensorboard_on():
      for tag, image in images.items():
        self._tb.add_image(tag, image, step, dataformats="HWC")
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _read_rows(path: str) -> list[dict[str, Any]]:
  """The rows of metrics.jsonl; a torn last line (a kill or full disk mid-write) is dropped.

  Any other unreadable line is an InputError naming the file and line.
  """
  try:
    with open(path, "rb") as f:
      lines = [line for line in f.read().split(b"\n") if line.strip()]
  except OSError as exc:
    raise InputError(path, f"cannot read ({exc.strerror})") from None
  rows = []
  for n, line in enumerate(lines, start=1):
    try:
      row = json.loads(line)
      if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
        raise ValueError("not an epoch row")
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included.
      if n == len(lines):
        break  # Torn last line: that epoch is trained again.
      raise InputError(path, f"line {n} is not an epoch row ({exc}); "
                       "use a new --workdir") from None
    rows.append(row)
  return rows


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  return _read_rows(path)
