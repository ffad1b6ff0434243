"""Segments new echocardiograms with trained runs: one run, an ensemble, or quality gating.

CLI:  python -m echokld.predict --workdir=RUN [--workdir=RUN2 ...] --input=PATH --output=DIR
API:  run = load_run(workdir); run.predict_probs(images); ensemble_probs(runs, images);
      predict_masks(runs, frames) for frames of any size.

Frames go through the run's own preprocessing (pipeline.preprocess_frame with the recorded
image_shape and resize flag), the members' probabilities are averaged (or weighted per image
by the member's Dice on the image's quality group: the paper's mixture of experts, §5), the
0.5-thresholded mask is mapped back onto the frame (pipeline.undo_geometry) and written in
the input's format (echokld/predict_io.py). Bad files are reported one line each and skipped;
the exit code is 2 if any failed. Details: docs/PREDICT.md.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import app, flags, logging

from echokld import checkpointing, models, predict_io, steps, variants
from echokld.data import pipeline
from echokld.errors import InputError

FLAGS = flags.FLAGS
THRESHOLD = 0.5
MAX_SCALE = 4.0  # Frames more than this many times larger or smaller than the model's are refused.
GATINGS = ("mean", "quality")
DEFAULT_BATCH_SIZE = 8


def _one_line(text: Any) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= 300 else text[:297] + "..."


def _read_json(path: str, required: bool = True) -> Any:
  """A JSON file, None if it is optional and absent; InputError naming it otherwise."""
  if not os.path.isfile(path):
    if not required:
      return None
    raise InputError(os.path.dirname(path), f"not a run directory: "
                     f"{os.path.basename(path)} is missing")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
    raise InputError(path, f"unreadable JSON ({_one_line(exc)})") from None


class Run:
  """A trained run restored for inference: its model, best parameters and preprocessing."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               preprocessing: dict, summary: dict | None, step: int, params: Any,
               predict_fn: Any, batch_size: int):
    self.workdir, self.config, self.preprocessing = workdir, config, preprocessing
    self.summary, self.step, self.params = summary, step, params
    self.batch_size = batch_size
    self._predict = predict_fn
    self.image_shape = tuple(int(v) for v in preprocessing["image_shape"])
    self.resize = bool(preprocessing["resize"])

  def __repr__(self) -> str:
    return (f"Run({self.workdir!r}, model={self.config.model.name!r}, "
            f"image_shape={self.image_shape}, resize={self.resize}, step={self.step})")

  def predict_probs(self, images: np.ndarray) -> np.ndarray:
    """LV probabilities (N, H, W) float32 of preprocessed uint8 frames (N, H, W).

    Frames go to the device in chunks of exactly `batch_size` (the last one zero-padded),
    so every call reuses one compiled program.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != self.image_shape or images.dtype != np.uint8:
      raise ValueError(f"expected uint8 frames of shape (N, {self.image_shape[0]}, "
                       f"{self.image_shape[1]}), got {images.dtype} {images.shape}")
    out = np.empty(images.shape, np.float32)
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      padded = np.zeros((self.batch_size,) + self.image_shape, np.uint8)
      padded[:len(chunk)] = chunk
      out[start:start + len(chunk)] = np.asarray(self._predict(self.params, padded))[:len(chunk)]
    return out

  def quality_dice(self, quality: str | None) -> float | None:
    """The run's Dice on `quality` frames (summary val, else test, by_quality), if recorded."""
    if quality is None or not isinstance(self.summary, dict):
      return None
    for split in ("val", "test"):
      groups = (self.summary.get(split) or {}).get("by_quality") or {}
      dice = (groups.get(quality) or {}).get("dice")
      if isinstance(dice, (int, float)) and np.isfinite(dice):
        return float(dice)
    return None


def load_run(workdir: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> Run:
  """Restores a run directory's best checkpoint (JSON and orbax only; nothing unpickled)."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise InputError(workdir, "run directory does not exist")
  config_dict = _read_json(os.path.join(workdir, "config.json"))
  prep_path = os.path.join(workdir, "preprocessing.json")
  preprocessing = _read_json(prep_path)
  if not isinstance(config_dict, dict) or not isinstance(preprocessing, dict):
    raise InputError(workdir, "config.json and preprocessing.json must hold JSON objects")
  config = ml_collections.ConfigDict(config_dict)
  summary = _read_json(os.path.join(workdir, "summary.json"), required=False)
  try:
    image_shape = tuple(int(v) for v in preprocessing["image_shape"])
    bool(preprocessing["resize"])
    assert len(image_shape) == 2 and min(image_shape) > 0
  except (KeyError, TypeError, ValueError, AssertionError):
    raise InputError(prep_path, "needs image_shape [rows, cols] and resize") from None
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise InputError(workdir, "no checkpoint: the checkpoints/ folder is missing")
  manager = checkpointing.make_manager(ckpt_dir)
  try:
    step = manager.best_step()
    step = manager.latest_step() if step is None else step
    if step is None:
      raise InputError(ckpt_dir, "no checkpoint in this folder")
    try:
      dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
      model = models.model_from_config(config.model, dtype)
      tx, plateau = steps.make_optimizer(config.train), steps.make_plateau(config.train)
      abstract = jax.eval_shape(lambda: steps.create_train_state(model, tx, plateau,
                                                                 config.seed, image_shape))
      needs_reference = variants.needs_reference(config)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
      raise InputError(os.path.join(workdir, "config.json"),
                       f"unusable config ({type(exc).__name__}: {_one_line(exc)})") from None
    try:
      params = checkpointing.restore(manager, step, abstract).params
    except Exception as exc:  # orbax raises many types for a damaged or foreign checkpoint.
      raise InputError(os.path.join(ckpt_dir, str(step)), f"cannot restore checkpoint "
                       f"({type(exc).__name__}: {_one_line(exc)})") from None
  finally:
    manager.close()
  reference = preprocessing.get("dist_reference")
  if needs_reference and reference is None:
    raise InputError(prep_path, f"model {config.model.name} needs dist_reference")
  _, inject_fn = variants.make_extras(config, reference)
  predict_fn = steps.make_predict(model, batch_size, inject_fn)
  return Run(workdir, config, preprocessing, summary, step, params, predict_fn, batch_size)


def check_compatible(runs: Sequence[Run]) -> tuple[tuple[int, int], bool]:
  """The (image_shape, resize) all members share; an ensemble needs one preprocessing."""
  if not runs:
    raise ValueError("no runs")
  first = runs[0]
  for run in runs[1:]:
    if (run.image_shape, run.resize) != (first.image_shape, first.resize):
      raise InputError(run.workdir, f"preprocessing (image_shape {list(run.image_shape)}, "
                       f"resize {run.resize}) differs from {first.workdir} (image_shape "
                       f"{list(first.image_shape)}, resize {first.resize}); an ensemble "
                       "needs one")
  return first.image_shape, first.resize


def quality_weights(runs: Sequence[Run], qualities: Sequence[str | None]) -> np.ndarray:
  """(N, M) member weights per image: Dice on the image's quality group, normalised.

  An image of unknown quality, or a group some member has no Dice for, gets equal weights.
  """
  weights = np.ones((len(qualities), len(runs)), np.float64)
  for i, quality in enumerate(qualities):
    dice = [run.quality_dice(quality) for run in runs]
    if all(d is not None and d >= 0 for d in dice) and sum(dice) > 0:
      weights[i] = dice
  return weights / weights.sum(axis=1, keepdims=True)


def ensemble_probs(runs: Sequence[Run], images: np.ndarray,
                   weights: np.ndarray | None = None) -> np.ndarray:
  """Mean of the members' probabilities (N, H, W), or their per-image weighted mean."""
  probs = np.stack([run.predict_probs(images) for run in runs], axis=1)  # (N, M, H, W)
  if weights is None:
    return probs.mean(axis=1)
  weights = np.asarray(weights, np.float64)
  if weights.shape != probs.shape[:2]:
    raise ValueError(f"weights of shape {weights.shape}, expected {probs.shape[:2]}")
  weights = weights / weights.sum(axis=1, keepdims=True)
  return np.einsum("nm,nmhw->nhw", weights, probs).astype(np.float32)


def prepare(image: np.ndarray, image_shape: tuple[int, int], resize: bool,
            spacing_mm: tuple[float, float] | None = None, where: str = "frame"
            ) -> tuple[np.ndarray, pipeline.Geometry]:
  """The frame as training saw it (uint8, model shape) and the geometry to undo it."""
  image = np.asarray(image)
  if image.ndim != 2:
    raise InputError(where, f"expected a 2-D frame, got array shape {image.shape}")
  (h, w), (rows, cols) = image.shape, image_shape
  if (h > MAX_SCALE * rows or w > MAX_SCALE * cols or h * MAX_SCALE < rows or
      w * MAX_SCALE < cols):
    raise InputError(where, f"frame size {h}x{w} is far outside the model's {rows}x{cols} "
                     f"(over {MAX_SCALE:g}x larger or smaller)")
  canvas, _, geometry = pipeline.preprocess_frame(image, None, image_shape, resize,
                                                  spacing_mm, where)
  return canvas, geometry


def _weights(runs: Sequence[Run], qualities: Sequence[str | None] | None,
             gating: str) -> np.ndarray | None:
  if gating not in GATINGS:
    raise ValueError(f"unknown gating {gating!r} ({', '.join(GATINGS)})")
  if gating == "quality" and qualities is not None:
    return quality_weights(runs, qualities)
  return None


def predict_masks(runs: Sequence[Run], images: Sequence[np.ndarray],
                  qualities: Sequence[str | None] | None = None,
                  gating: str = "mean") -> list[np.ndarray]:
  """0/1 uint8 LV masks of frames of any size (rows = depth), in each frame's geometry."""
  shape, resize = check_compatible(runs)
  prepared = [prepare(image, shape, resize, where=f"image {i}")
              for i, image in enumerate(images)]
  if not prepared:
    return []
  probs = ensemble_probs(runs, np.stack([c for c, _ in prepared]),
                         _weights(runs, qualities, gating))
  return [pipeline.undo_geometry(p > THRESHOLD, g) for p, (_, g) in zip(probs, prepared)]


def _report(exc: Exception, path: str) -> None:
  """One stderr line naming the file (and the file at fault, when another, e.g. a cfg)."""
  where = getattr(exc, "where", None)
  if where is None:
    text = f"{path}: {type(exc).__name__}: {exc}"
  else:
    text = str(exc) if where == path else f"{path}: {exc}"
  tqdm.tqdm.write(f"error: {_one_line(text)}", file=sys.stderr)


def segment_files(runs: Sequence[Run], inputs: Sequence[tuple[str, str]], out_dir: str,
                  gating: str = "mean", batch_size: int = DEFAULT_BATCH_SIZE
                  ) -> tuple[list[dict[str, Any]], int]:
  """Segments (path, sub-folder) inputs into out_dir; returns (areas rows, failures)."""
  shape, resize = check_compatible(runs)
  metadata = predict_io.Metadata(quality=gating == "quality")
  rows, failures = [], 0
  bar = tqdm.tqdm(total=len(inputs), unit="frame", disable=None, dynamic_ncols=True)
  for start in range(0, len(inputs), batch_size):
    ready = []
    for path, rel_dir in inputs[start:start + batch_size]:
      try:
        frame = predict_io.read_frame(path, rel_dir, metadata)
        ready.append((frame, *prepare(frame.image, shape, resize, frame.spacing_mm, path)))
      except Exception as exc:  # pylint: disable=broad-except  # One bad file stops nothing.
        failures += 1
        _report(exc, path)
    if ready:
      weights = _weights(runs, [frame.quality for frame, _, _ in ready], gating)
      probs = ensemble_probs(runs, np.stack([canvas for _, canvas, _ in ready]), weights)
      for (frame, _, geometry), prob in zip(ready, probs):
        mask = pipeline.undo_geometry(prob > THRESHOLD, geometry)
        mask_path, overlay_path = predict_io.output_paths(frame, out_dir)
        try:
          predict_io.write_mask(frame, mask, mask_path)
          predict_io.write_overlay(frame, mask, overlay_path)
        except Exception as exc:  # pylint: disable=broad-except
          failures += 1
          _report(InputError(mask_path, f"cannot write ({_one_line(exc)})"), frame.path)
          continue
        rows.append(predict_io.area_row(frame, mask))
    bar.update(len(inputs[start:start + batch_size]))
  bar.close()
  predict_io.write_areas(rows, os.path.join(out_dir, "areas.csv"))
  return rows, failures


def fail(message: Any, code: int = 2) -> None:
  print(f"error: {_one_line(message)}", file=sys.stderr)
  sys.exit(code)


def define_flags() -> None:
  """CLI flags, defined only when run as a program (importing the API defines none)."""
  flags.DEFINE_multi_string("workdir", None, "Run directory; repeat for an ensemble.")
  flags.DEFINE_string("input", None, "A frame (.nii.gz, .nii, .mhd, .png, .jpg, ...), a "
                      "CAMUS patient folder or a folder of frames (walked recursively).")
  flags.DEFINE_string("output", None, "Folder for masks, overlays and areas.csv.")
  flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Frames per device call.",
                       lower_bound=1)
  flags.DEFINE_enum("gating", "mean", GATINGS, "How ensemble members are combined: mean, "
                    "or weighted per image by each member's Dice on the image's quality.")
  flags.mark_flags_as_required(["workdir", "input", "output"])


def parse_flags(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as exc:
    fail(str(exc).splitlines()[0] if str(exc) else repr(exc))
  return []


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  try:
    inputs = predict_io.find_inputs(FLAGS.input, exclude=FLAGS.output)
    runs = [load_run(workdir, FLAGS.batch_size) for workdir in FLAGS.workdir]
    check_compatible(runs)
    try:
      os.makedirs(FLAGS.output, exist_ok=True)
    except OSError as exc:
      raise InputError(FLAGS.output, f"cannot create output folder ({exc.strerror})") from None
  except InputError as exc:
    fail(exc)
  rows, failures = segment_files(runs, inputs, FLAGS.output, FLAGS.gating, FLAGS.batch_size)
  print(f"segmented {len(rows)} of {len(inputs)} frames into {FLAGS.output} "
        f"({failures} failed)", flush=True)
  if failures:
    sys.exit(2)


def run() -> None:
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
