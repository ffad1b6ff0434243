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
from echokld.clinical import volumes
from echokld.data import pipeline
from echokld.errors import InputError
from echokld.infer import dicom, io, outputs, qc
from echokld.infer.runs import (DEFAULT_BATCH_SIZE, WARN_SCALE, Run, check_compatible,
                                combine, member_weights, prepare, size_outlier, to_mask)


AREAS = "areas.csv"
VOLUMES = "volumes.csv"


def _report(exc: Exception, path: str) -> None:
  """One stderr line naming the file (and the file at fault, when another, e.g. a cfg)."""
  where = getattr(exc, "where", None)
  if where is None:
    text = f"{path}: {type(exc).__name__}: {exc}"
  else:
    text = str(exc) if where == path else f"{path}: {exc}"
  tqdm.tqdm.write(f"error: {one_line(text)}", file=sys.stderr)


def segment_files(runs: Sequence[Run], inputs: Sequence[tuple[str, str]], out_dir: str,
                  gating: str = "mean", batch_size: int = DEFAULT_BATCH_SIZE,
                  overwrite: bool = False, qc_settings: qc.Settings | None = None,
                  postprocess: str = "none") -> tuple[list[dict[str, Any]], int]:
  """Segments (path, sub-folder) inputs into out_dir; returns (areas rows, failures).

  Nothing is written outside out_dir and nothing there is replaced unless `overwrite`
  (infer.outputs); an existing areas.csv is refused before any work. With several
  members (runs x test-time views) each frame also gets its uncertainty map and scores
  (infer.qc), and a qc_flag when `qc_settings` holds a threshold.
  """
  shape, resize = check_compatible(runs)
  output = outputs.OutputFolder(out_dir, overwrite)
  output.check_free("", [AREAS, VOLUMES])
  stems = io.output_stems(inputs)
  metadata = io.Metadata(quality=gating == "quality")
  rows, failures, outliers = [], 0, []
  noted: dict[str, list[str]] = {}  # Reader note (dicom.NO_SPACING, ...) -> its frames.
  cardiac: list[volumes.FrameMask] = []  # ED/ES masks of known patients, for volumes.csv.
  bar = tqdm.tqdm(total=len(inputs), unit="frame", disable=None, dynamic_ncols=True)
  for start in range(0, len(inputs), batch_size):
    ready = []
    for path, rel_dir in inputs[start:start + batch_size]:
      try:
        frame = io.read_frame(path, rel_dir, metadata)
        frame.out_stem = stems[path]
        ready.append((frame, *prepare(frame.image, shape, resize, frame.spacing_mm, path)))
        for note in frame.notes:
          noted.setdefault(note, []).append(path)
        unlike = size_outlier(frame.image.shape, runs)
        if unlike:
          outliers.append((path, frame.image.shape, unlike))
      except Exception as exc:  # pylint: disable=broad-except  # One bad file stops nothing.
        failures += 1
        _report(exc, path)
    if ready:
      weights = member_weights(runs, [frame.quality for frame, _, _ in ready], gating)
      means, members = qc.member_views(runs, np.stack([canvas for _, canvas, _ in ready]))
      probs, scores = combine(means, weights), qc.frame_scores(members)
      maps = qc.uncertainty_map(members) if members.shape[1] > 1 else [None] * len(ready)
      for i, ((frame, _, geometry), prob, spread) in enumerate(zip(ready, probs, maps)):
        mask = to_mask(prob, geometry, postprocess)
        mask_name, overlay_name = io.output_names(frame)

        def write(staging, frame=frame, mask=mask, mask_name=mask_name,
                  overlay_name=overlay_name, spread=spread, geometry=geometry):
          io.write_mask(frame, mask, os.path.join(staging, mask_name))
          io.write_overlay(frame, mask, os.path.join(staging, overlay_name))
          if spread is not None:
            qc.write_map(pipeline.undo_geometry(spread, geometry),
                         os.path.join(staging, qc.map_name(frame)))

        try:
          output.write(frame.rel_dir, write)
        except InputError as exc:
          failures += 1
          _report(exc, frame.path)
          continue
        except Exception as exc:  # pylint: disable=broad-except
          failures += 1
          _report(InputError(os.path.join(out_dir, frame.rel_dir, mask_name),
                             f"cannot write ({one_line(exc)})"), frame.path)
          continue
        row = io.area_row(frame, mask, scores["disagreement"][i])
        row.update(qc.row_values({k: v[i] for k, v in scores.items()}, qc_settings))
        rows.append(row)
        phase = io.patient_phase(frame, metadata)
        if phase is not None:
          cardiac.append(volumes.FrameMask(phase[0], phase[1], frame.name, mask,
                                           frame.spacing_mm))
    bar.update(len(inputs[start:start + batch_size]))
  bar.close()
  if outliers:  # One line for the command, not one per frame of a large folder.
    path, (h, w), unlike = outliers[0]
    text = (f"{len(outliers)} of {len(inputs)} frames are over {WARN_SCALE:g}x larger or "
            f"smaller than {unlike}, e.g. {path} ({h}x{w}); segmented anyway, check their "
            "masks")
    tqdm.tqdm.write(f"warning: {one_line(text, 600)}", file=sys.stderr)
  for note, paths in noted.items():  # Likewise one line per kind of note.
    kind = "note" if note == dicom.COLOUR else "warning"
    text = f"{len(paths)} of {len(inputs)} frames: {note}, e.g. {paths[0]}"
    tqdm.tqdm.write(f"{kind}: {one_line(text, 600)}", file=sys.stderr)
  columns = io.AREA_COLUMNS + qc.columns(qc_settings)
  output.write("", lambda staging: io.write_areas(rows, os.path.join(staging, AREAS), columns))
  if cardiac:
    write_volumes(output, cardiac)
  return rows, failures


def write_volumes(output: outputs.OutputFolder, frames: Sequence[volumes.FrameMask]) -> None:
  """volumes.csv: EDV, ESV and EF per patient with an ED and an ES frame (clinical.volumes);
  a patient with two frames of one phase is reported and left out, the others are kept."""
  kept, seen = [], set()
  for frame in frames:
    key = (frame.patient, frame.phase)
    if key in seen:
      tqdm.tqdm.write(f"error: {frame.frame}: patient {frame.patient} has two {frame.phase} "
                      "frames; left out of volumes.csv", file=sys.stderr)
      continue
    seen.add(key)
    kept.append(frame)
  rows = volumes.patient_volumes(kept)
  output.write("", lambda staging: volumes.write_volumes_csv(os.path.join(staging, VOLUMES),
                                                             rows))
