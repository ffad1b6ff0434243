"""Trained runs restored for inference: one run, an ensemble, or quality gating.

  run = load_run(workdir); run.predict_probs(images); ensemble_probs(runs, images);
  predict_masks(runs, frames) for frames of any size.

Frames go through the run's own preprocessing (pipeline.preprocess_frame with the recorded
image_shape and resize flag), the members' probabilities are averaged (or weighted per image
by the member's Dice on the image's quality group: the paper's mixture of experts, §5), and
the 0.5-thresholded mask is mapped back onto the frame (pipeline.undo_geometry).
Nothing is unpickled: a run is read from its JSON files and orbax checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import ml_collections
import numpy as np

from echokld import registry
from echokld.cli import one_line
from echokld.data import augment, pipeline
from echokld.errors import InputError
from echokld.evaluation import metrics
from echokld.objectives import conditioning
from echokld.train import build as build_lib
from echokld.train import checkpoints, mesh
from echokld.train import state as state_lib
from echokld.train import step as step_lib

THRESHOLD = 0.5
# A frame over this many times larger or smaller than every training frame (recorded in
# preprocessing.json's train_frames) is segmented with a warning: the model never saw its like.
WARN_SCALE = 4.0
GATINGS = ("mean", "quality")
# Mask post-processing: none (the thresholded probabilities as they are), or largest (the
# largest 4-connected region, holes filled: metrics.lv_region, as the clinical
# measurements clean a mask).
POSTPROCESSING = ("none", "largest")
DEFAULT_BATCH_SIZE = 8


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
    raise InputError(path, f"unreadable JSON ({one_line(exc)})") from None


class Run:
  """A trained run restored for inference: its model, best parameters and preprocessing."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               preprocessing: dict, summary: dict | None, step: int, params: Any,
               predict_fn: Any, batch_size: int, views_fn: Any = None):
    self.workdir, self.config, self.preprocessing = workdir, config, preprocessing
    self.summary, self.step, self.params = summary, step, params
    self.batch_size = batch_size
    self._predict, self._views = predict_fn, views_fn
    self.tta = str(config.augment.tta)
    self.image_shape = tuple(int(v) for v in preprocessing["image_shape"])
    self.resize = bool(preprocessing["resize"])
    self.train_frames = train_frame_range(preprocessing)

  def __repr__(self) -> str:
    return (f"Run({self.workdir!r}, model={self.config.model.name!r}, "
            f"image_shape={self.image_shape}, resize={self.resize}, step={self.step})")

  def predict_probs(self, images: np.ndarray) -> np.ndarray:
    """LV probabilities (N, H, W) float32 of preprocessed uint8 frames (N, H, W).

    Frames go to the device in chunks of exactly `batch_size` (the last one zero-padded),
    so every call reuses one compiled program.
    """
    return self._chunked(self._predict, images)

  def predict_views(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predict_probs(images), (N, V, H, W) probabilities of each test-time view).

    The V views of config.augment.tta (1 for "none") are the run's members in quality
    control (echokld.infer.qc); their average is exactly predict_probs.
    """
    if self._views is None:
      probs = self.predict_probs(images)
      return probs, probs[:, None]
    return self._chunked(self._views, images)

  def _chunked(self, fn: Any, images: np.ndarray) -> Any:
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != self.image_shape or images.dtype != np.uint8:
      raise ValueError(f"expected uint8 frames of shape (N, {self.image_shape[0]}, "
                       f"{self.image_shape[1]}), got {images.dtype} {images.shape}")
    parts = []
    for start in range(0, max(len(images), 1), self.batch_size):  # No frame: shapes only.
      chunk = images[start:start + self.batch_size]
      padded = np.zeros((self.batch_size,) + self.image_shape, np.uint8)
      padded[:len(chunk)] = chunk
      out = fn(self.params, padded)
      parts.append([np.asarray(x, np.float32)[:len(chunk)]
                    for x in (out if isinstance(out, tuple) else (out,))])
    out = [np.concatenate(leaves) for leaves in zip(*parts)]
    return out[0] if len(out) == 1 else tuple(out)

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


def load_run(workdir: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE,
             tta: str | None = None) -> Run:
  """Restores a run directory's best checkpoint (JSON and orbax only; nothing unpickled).

  `tta` ("none", "flip", "affine") replaces the run's own config.augment.tta.
  """
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise InputError(workdir, "run directory does not exist")
  config_dict = _read_json(os.path.join(workdir, "config.json"))
  prep_path = os.path.join(workdir, "preprocessing.json")
  preprocessing = _read_json(prep_path)
  if not isinstance(config_dict, dict) or not isinstance(preprocessing, dict):
    raise InputError(workdir, "config.json and preprocessing.json must hold JSON objects")
  config = ml_collections.ConfigDict(registry.upgrade(config_dict))
  if tta is not None:
    if tta not in augment.TTA_MODES:
      raise InputError("--tta", f"unknown test-time augmentation {tta!r} "
                       f"({', '.join(augment.TTA_MODES)})")
    config.augment.tta = tta
  summary = _read_json(os.path.join(workdir, "summary.json"), required=False)
  try:
    image_shape = tuple(int(v) for v in preprocessing["image_shape"])
    bool(preprocessing["resize"])
    assert len(image_shape) == 2 and min(image_shape) > 0
  except (KeyError, TypeError, ValueError, AssertionError):
    raise InputError(prep_path, "needs image_shape [rows, cols] and resize") from None
  reference = preprocessing.get("dist_reference")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise InputError(workdir, "no checkpoint: the checkpoints/ folder is missing")
  try:
    if conditioning.needs_reference(config) and reference is None:
      raise InputError(prep_path, f"model {config.model.name} needs dist_reference")
    setup = build_lib.build(config, image_shape, reference, abstract=True)
  except (AttributeError, KeyError, TypeError, ValueError) as exc:
    raise InputError(os.path.join(workdir, "config.json"),
                     f"unusable config ({type(exc).__name__}: {one_line(exc)})") from None
  manager = checkpoints.make_manager(ckpt_dir)
  try:
    best, latest = manager.best_step(), manager.latest_step()
    if latest is None:
      raise InputError(ckpt_dir, "no checkpoint in this folder")
    # The best epoch; if its checkpoint is damaged, the other one (the latest), said so.
    order = [s for s in (best, latest) if s is not None]
    step, restored, failed = checkpoints.restore_first(manager, list(dict.fromkeys(order)),
                                                       setup.state)
    if step is None:
      raise InputError(os.path.join(ckpt_dir, str(failed[0][0])), "cannot restore "
                       f"checkpoint ({one_line(failed[0][1])})")
    if failed:
      print(f"warning: {os.path.join(ckpt_dir, str(failed[0][0]))}: cannot restore the best "
            f"checkpoint ({one_line(failed[0][1], 120)}); using epoch {step} instead",
            file=sys.stderr, flush=True)
    params = state_lib.eval_params(restored)  # The EMA when the run kept one.
  finally:
    manager.close()
  placement = mesh.for_inference(batch_size)
  predict = step_lib.make_predict(setup.model, config, batch_size, placement.batch_sharding)
  views = (step_lib.make_predict(setup.model, config, batch_size, placement.batch_sharding,
                                 views=True)
           if config.augment.tta != "none" else None)  # jit: compiled only when called.
  params, reference = placement.put(params), placement.put(setup.reference)

  def predict_fn(params, images):
    return predict(params, images, reference)

  def views_fn(params, images):
    return views(params, images, reference)

  return Run(workdir, config, preprocessing, summary, step, params, predict_fn, batch_size,
             views_fn if views is not None else None)


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


def member_disagreement(members: np.ndarray) -> np.ndarray:
  """Per frame, how much an ensemble's members disagree: the mean, over the pixels any
  member calls LV (p > THRESHOLD), of the members' standard deviation (0 to 0.5; 0 where
  no member finds an LV; NaN with one member).

  Args:
    members: (N, M, H, W) probabilities of M members.
  """
  if members.shape[1] < 2:
    return np.full(members.shape[0], np.nan)
  region = (members > THRESHOLD).any(axis=1)
  spread = members.std(axis=1)
  counts = region.reshape(len(region), -1).sum(1)
  sums = (spread * region).reshape(len(region), -1).sum(1)
  return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def ensemble_probs(runs: Sequence[Run], images: np.ndarray,
                   weights: np.ndarray | None = None) -> np.ndarray:
  """Mean of the members' probabilities (N, H, W), or their per-image weighted mean."""
  return combine(member_probs(runs, images), weights)


def member_probs(runs: Sequence[Run], images: np.ndarray) -> np.ndarray:
  """(N, M, H, W): each member's probabilities."""
  return np.stack([run.predict_probs(images) for run in runs], axis=1)


def combine(probs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
  """The members' (N, M, H, W) probabilities averaged, or weighted per image (N, M)."""
  if weights is None:
    return probs.mean(axis=1)
  weights = np.asarray(weights, np.float64)
  if weights.shape != probs.shape[:2]:
    raise ValueError(f"weights of shape {weights.shape}, expected {probs.shape[:2]}")
  weights = weights / weights.sum(axis=1, keepdims=True)
  return np.einsum("nm,nmhw->nhw", weights, probs).astype(np.float32)


def train_frame_range(preprocessing: dict) -> tuple[tuple[int, int], tuple[int, int]] | None:
  """(min, max) (rows, cols) of the training frames, when the run recorded them."""
  frames = preprocessing.get("train_frames")
  try:
    low, high = (tuple(int(v) for v in frames[k]) for k in ("min_shape", "max_shape"))
    assert len(low) == len(high) == 2 and min(low) > 0
  except (KeyError, TypeError, ValueError, AssertionError):
    return None  # A run from before train_frames was recorded: nothing to compare with.
  return low, high


def size_outlier(shape: Sequence[int], runs: Sequence[Run]) -> str | None:
  """Which training frames a frame of `shape` is unlike (over WARN_SCALE off), or None.

  Only for a warning: the pipeline brings any frame to the model's canvas (resized, or
  padded/cropped), so no size is refused, but a model trained on 128x128 frames may
  segment a 2000x2000 frame poorly.
  """
  h, w = (int(v) for v in shape)
  for run in runs:
    if run.train_frames is None:
      continue
    (lo_r, lo_c), (hi_r, hi_c) = run.train_frames
    if h > WARN_SCALE * hi_r or w > WARN_SCALE * hi_c or h * WARN_SCALE < lo_r or \
        w * WARN_SCALE < lo_c:
      seen = f"{lo_r}x{lo_c}" + ("" if (lo_r, lo_c) == (hi_r, hi_c) else f" to {hi_r}x{hi_c}")
      return f"the training frames of {run.workdir} ({seen})"
  return None


def prepare(image: np.ndarray, image_shape: tuple[int, int], resize: bool,
            spacing_mm: tuple[float, float] | None = None, where: str = "frame"
            ) -> tuple[np.ndarray, pipeline.Geometry]:
  """The frame as training saw it (uint8, model shape) and the geometry to undo it.

  Any non-empty 2-D frame is accepted: resized to the canvas, or padded/cropped into it.
  """
  image = np.asarray(image)
  if image.ndim != 2:
    raise InputError(where, f"expected a 2-D frame, got array shape {image.shape}")
  if min(image.shape) < 1:
    raise InputError(where, f"empty frame (size {image.shape[0]}x{image.shape[1]})")
  canvas, _, geometry = pipeline.preprocess_frame(image, None, image_shape, resize,
                                                  spacing_mm, where)
  return canvas, geometry


def member_weights(runs: Sequence[Run], qualities: Sequence[str | None] | None,
             gating: str) -> np.ndarray | None:
  if gating not in GATINGS:
    raise ValueError(f"unknown gating {gating!r} ({', '.join(GATINGS)})")
  if gating == "quality" and qualities is not None:
    return quality_weights(runs, qualities)
  return None


def to_mask(prob: np.ndarray, geometry: pipeline.Geometry, postprocess: str = "none"
            ) -> np.ndarray:
  """The 0/1 uint8 mask of a canvas's probabilities, in the frame's geometry, post-processed
  there (at the frame's own resolution) as POSTPROCESSING says."""
  if postprocess not in POSTPROCESSING:
    raise InputError("--postprocess", f"unknown post-processing {postprocess!r} "
                     f"({', '.join(POSTPROCESSING)})")
  mask = pipeline.undo_geometry(prob > THRESHOLD, geometry)
  return metrics.lv_region(mask).astype(mask.dtype) if postprocess == "largest" else mask


def predict_masks(runs: Sequence[Run], images: Sequence[np.ndarray],
                  qualities: Sequence[str | None] | None = None,
                  gating: str = "mean", spacing_mm: tuple[float, float] | None = None,
                  postprocess: str = "none") -> list[np.ndarray]:
  """0/1 uint8 LV masks of frames of any size (rows = depth), in each frame's geometry;
  `spacing_mm`, when the frames share one, is handed to the preprocessing."""
  shape, resize = check_compatible(runs)
  prepared = [prepare(image, shape, resize, spacing_mm, where=f"image {i}")
              for i, image in enumerate(images)]
  if not prepared:
    return []
  probs = ensemble_probs(runs, np.stack([c for c, _ in prepared]),
                         member_weights(runs, qualities, gating))
  return [to_mask(p, g, postprocess) for p, (_, g) in zip(probs, prepared)]
