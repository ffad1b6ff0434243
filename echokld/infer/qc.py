"""Quality control of predicted masks: how much the members disagree, per frame and pixel.

Members are the runs of an ensemble times each run's test-time views (config.augment.tta
or predict --tta: "flip" gives 2 views, "affine" 5): a single run with TTA is an ensemble
of its views. Where the members disagree, the mask is likely wrong. Two per-frame scores:

- mask_disagreement (default): 1 - the mean Dice over all pairs of members' masks
  (p > 0.5); two empty masks agree (Dice 1), an empty and a non-empty one have Dice 0.
  In Dice units: 0 when all members draw one mask, 1/3 for two members whose masks are
  4 and 2 pixels with the 2 inside the 4.
- disagreement: the mean, over the pixels any member calls LV, of the members' standard
  deviation of the probability (runs.member_disagreement; 0 to 0.5).

The per-pixel map is the members' standard deviation, written as <stem>_uncertainty.png
(uint8, round(510 * std), so 0 = all agree and 255 = std 0.5: half the members say 1, half
0). A frame is flagged (qc_flag = 1, likely poor) when its score is above a threshold,
given or read from the calibration JSON of experiments/qc_flag.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from echokld.cli import one_line
from echokld.data import augment
from echokld.errors import InputError
from echokld.infer.runs import THRESHOLD, member_disagreement

SCORES = ("mask_disagreement", "disagreement")
DEFAULT_SCORE = "mask_disagreement"
SCORE_COLUMNS = ("mask_disagreement",)  # Added to areas.csv (disagreement is there already).
FLAG_COLUMN = "qc_flag"
MAP_SUFFIX = "_uncertainty.png"
MAP_SCALE = 510.0  # std 0.5 (the largest of values in [0, 1]) -> 255.
CALIBRATION_KEYS = ("score", "threshold")


@dataclasses.dataclass
class Settings:
  """What predict adds: the score the flag uses, and its threshold (None: no flag)."""

  score: str = DEFAULT_SCORE
  threshold: float | None = None
  members: int | None = None  # Members the threshold was calibrated with, when known.


def member_views(runs: Sequence[Any], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """((N, M, H, W) each run's probabilities, (N, K, H, W) every member's).

  A run's probabilities are the average of its test-time views (exactly predict_probs);
  the K members are all views of all runs. A run without views (a stand-in with only
  predict_probs) is one member.
  """
  means, members = [], []
  for run in runs:
    if hasattr(run, "predict_views"):
      mean, views = run.predict_views(images)
    else:
      mean = run.predict_probs(images)
      views = mean[:, None]
    means.append(mean)
    members.append(views)
  return np.stack(means, axis=1), np.concatenate(members, axis=1)


def count_members(runs: Sequence[Any]) -> int:
  """Members of an ensemble: each run counts its test-time views."""
  views = {"none": 1, "flip": 2, "affine": 1 + len(augment.TTA_AFFINE_VIEWS)}
  return sum(views.get(getattr(run, "tta", "none"), 1) for run in runs)


def mask_disagreement(members: np.ndarray) -> np.ndarray:
  """Per frame, 1 - the mean pairwise Dice of the members' masks (NaN with one member).

  Args:
    members: (N, K, H, W) probabilities of K members.
  """
  n, k = members.shape[:2]
  if k < 2:
    return np.full(n, np.nan)
  masks = (members > THRESHOLD).reshape(n, k, -1).astype(np.float64)
  inter = np.einsum("nip,njp->nij", masks, masks)
  sizes = np.diagonal(inter, axis1=1, axis2=2)
  total = sizes[:, :, None] + sizes[:, None, :]
  dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
  pairs = np.triu_indices(k, 1)
  return 1.0 - dice[:, pairs[0], pairs[1]].mean(axis=1)


def frame_scores(members: np.ndarray) -> dict[str, np.ndarray]:
  """{score name: (N,) values} of every score in SCORES."""
  return {"mask_disagreement": mask_disagreement(members),
          "disagreement": member_disagreement(members)}


def uncertainty_map(members: np.ndarray) -> np.ndarray:
  """(N, H, W) uint8: round(MAP_SCALE * the members' per-pixel std), at most 255."""
  spread = members.astype(np.float64).std(axis=1)
  return np.clip(np.rint(MAP_SCALE * spread), 0, 255).astype(np.uint8)


def map_name(frame: Any) -> str:
  return f"{frame.out_stem or frame.stem}{MAP_SUFFIX}"


def write_map(image: np.ndarray, path: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8), mode="L").save(path)


def flag(scores: np.ndarray, threshold: float) -> np.ndarray:
  """True where a frame's score is above `threshold`: a likely poor mask."""
  return np.asarray(scores, np.float64) > threshold


def columns(settings: Settings | None) -> tuple[str, ...]:
  """The columns quality control adds to areas.csv."""
  if settings is None:
    return SCORE_COLUMNS
  return SCORE_COLUMNS + (FLAG_COLUMN,)


def row_values(scores: dict[str, float], settings: Settings | None) -> dict[str, str]:
  """One frame's quality-control cells of areas.csv (empty where not defined)."""
  text = lambda v: "" if not np.isfinite(v) else f"{v:.4f}"
  row = {name: text(scores[name]) for name in SCORE_COLUMNS}
  if settings is not None and settings.threshold is not None:
    value = scores[settings.score]
    row[FLAG_COLUMN] = "" if not np.isfinite(value) else str(int(flag(value,
                                                                         settings.threshold)))
  return row


def write_calibration(path: str, score: str, threshold: float, **details: Any) -> None:
  """The JSON predict --qc_calibration reads: the score, its threshold and how it was made."""
  if score not in SCORES:
    raise ValueError(f"unknown score {score!r} ({', '.join(SCORES)})")
  with open(path, "w") as f:
    json.dump({"score": score, "threshold": float(threshold), **details}, f, indent=2)
    f.write("\n")


def read_calibration(path: str) -> Settings:
  """Settings from a calibration JSON (write_calibration); InputError naming the file."""
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise InputError(path, "calibration file does not exist") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
    raise InputError(path, f"unreadable calibration JSON ({one_line(exc)})") from None
  if not isinstance(data, dict) or any(k not in data for k in CALIBRATION_KEYS):
    raise InputError(path, "needs a JSON object with 'score' and 'threshold'")
  if data["score"] not in SCORES:
    raise InputError(path, f"unknown score {data['score']!r} ({', '.join(SCORES)})")
  threshold = data["threshold"]
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or \
      not math.isfinite(threshold):
    raise InputError(path, f"threshold {threshold!r} is not a finite number")
  members = data.get("members")
  return Settings(data["score"], float(threshold),
                  members if isinstance(members, int) and members > 0 else None)
