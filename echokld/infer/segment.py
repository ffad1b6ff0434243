"""Segments files into an output folder: read, preprocess, predict, write masks and areas.

Masks are written in each input's format and geometry (infer.io); bad files are reported
one line each and skipped, so one bad file stops nothing.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np
import tqdm

from echokld.cli import one_line
from echokld.data import pipeline
from echokld.errors import InputError
from echokld.infer import io
from echokld.infer.runs import (DEFAULT_BATCH_SIZE, THRESHOLD, Run, check_compatible,
                                ensemble_probs, member_weights, prepare,
                                size_warning)


def _report(exc: Exception, path: str) -> None:
  """One stderr line naming the file (and the file at fault, when another, e.g. a cfg)."""
  where = getattr(exc, "where", None)
  if where is None:
    text = f"{path}: {type(exc).__name__}: {exc}"
  else:
    text = str(exc) if where == path else f"{path}: {exc}"
  tqdm.tqdm.write(f"error: {one_line(text)}", file=sys.stderr)


def segment_files(runs: Sequence[Run], inputs: Sequence[tuple[str, str]], out_dir: str,
                  gating: str = "mean", batch_size: int = DEFAULT_BATCH_SIZE
                  ) -> tuple[list[dict[str, Any]], int]:
  """Segments (path, sub-folder) inputs into out_dir; returns (areas rows, failures)."""
  shape, resize = check_compatible(runs)
  metadata = io.Metadata(quality=gating == "quality")
  rows, failures = [], 0
  bar = tqdm.tqdm(total=len(inputs), unit="frame", disable=None, dynamic_ncols=True)
  for start in range(0, len(inputs), batch_size):
    ready = []
    for path, rel_dir in inputs[start:start + batch_size]:
      try:
        frame = io.read_frame(path, rel_dir, metadata)
        ready.append((frame, *prepare(frame.image, shape, resize, frame.spacing_mm, path)))
        warning = size_warning(frame.image.shape, runs)
        if warning:
          tqdm.tqdm.write(f"warning: {one_line(f'{path}: {warning}')}", file=sys.stderr)
      except Exception as exc:  # pylint: disable=broad-except  # One bad file stops nothing.
        failures += 1
        _report(exc, path)
    if ready:
      weights = member_weights(runs, [frame.quality for frame, _, _ in ready], gating)
      probs = ensemble_probs(runs, np.stack([canvas for _, canvas, _ in ready]), weights)
      for (frame, _, geometry), prob in zip(ready, probs):
        mask = pipeline.undo_geometry(prob > THRESHOLD, geometry)
        mask_path, overlay_path = io.output_paths(frame, out_dir)
        try:
          io.write_mask(frame, mask, mask_path)
          io.write_overlay(frame, mask, overlay_path)
        except Exception as exc:  # pylint: disable=broad-except
          failures += 1
          _report(InputError(mask_path, f"cannot write ({one_line(exc)})"), frame.path)
          continue
        rows.append(io.area_row(frame, mask))
    bar.update(len(inputs[start:start + batch_size]))
  bar.close()
  io.write_areas(rows, os.path.join(out_dir, "areas.csv"))
  return rows, failures
