"""How well a per-frame score detects poor masks: threshold choice, rates with CIs, AUC.

A frame is poor (a positive) when its Dice against the label is below `dice_cut` (strictly;
0.85 by default), and flagged when its score is above the threshold. The threshold is
chosen on validation frames to maximise Youden's J = sensitivity + specificity - 1 and then
measured on other (test) frames. Plain numpy and scipy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

DICE_CUT = 0.85
Z95 = 1.959963984540054  # The standard normal's 97.5th percentile.


def _checked(scores: Any, dice: Any) -> tuple[np.ndarray, np.ndarray]:
  scores, dice = np.asarray(scores, np.float64), np.asarray(dice, np.float64)
  if scores.shape != dice.shape or scores.ndim != 1:
    raise ValueError(f"scores {scores.shape} and dice {dice.shape} must be equal 1-D shapes")
  if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(dice))):
    raise ValueError("scores and dice must be finite (a score needs 2+ members)")
  return scores, dice


def youden_threshold(scores: Any, dice: Any, dice_cut: float = DICE_CUT
                     ) -> tuple[float, float]:
  """(threshold, J): the threshold of `score > threshold` that best detects Dice < cut.

  Candidates are the midpoints between consecutive distinct scores, so the threshold
  separates two observed values; of equal J the higher threshold (fewer flags) is kept.
  ValueError when the frames hold no positive, no negative or one distinct score.
  """
  scores, dice = _checked(scores, dice)
  poor = dice < dice_cut
  if poor.all() or not poor.any():
    raise ValueError(f"need frames on both sides of Dice {dice_cut:g}: {int(poor.sum())} of "
                     f"{len(poor)} are below it")
  values = np.unique(scores)
  if len(values) < 2:
    raise ValueError("all frames have one score: no threshold separates them")
  candidates = (values[:-1] + values[1:]) / 2
  flagged = scores[None, :] > candidates[:, None]
  sensitivity = (flagged & poor).sum(1) / poor.sum()
  specificity = (~flagged & ~poor).sum(1) / (~poor).sum()
  j = sensitivity + specificity - 1
  best = np.flatnonzero(j == j.max())[-1]
  return float(candidates[best]), float(j[best])


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
  """Wilson score interval of a proportion (NaNs for total 0)."""
  if total <= 0:
    return float("nan"), float("nan")
  p = successes / total
  denom = 1 + z * z / total
  centre = (p + z * z / (2 * total)) / denom
  half = z / denom * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
  return max(0.0, centre - half), min(1.0, centre + half)


def auc(scores: Any, dice: Any, dice_cut: float = DICE_CUT) -> float:
  """P(score of a poor frame > score of a good one), ties half: Mann-Whitney U / (n1 n0).

  NaN without positives or negatives.
  """
  scores, dice = _checked(scores, dice)
  poor = dice < dice_cut
  if poor.all() or not poor.any():
    return float("nan")
  u = stats.mannwhitneyu(scores[poor], scores[~poor], alternative="two-sided").statistic
  return float(u) / (poor.sum() * (~poor).sum())


def detection(scores: Any, dice: Any, threshold: float, dice_cut: float = DICE_CUT
              ) -> dict[str, Any]:
  """Counts, sensitivity and specificity (with Wilson 95% CIs) and AUC of the flag."""
  scores, dice = _checked(scores, dice)
  poor, flagged = dice < dice_cut, scores > threshold
  tp, fn = int((flagged & poor).sum()), int((~flagged & poor).sum())
  tn, fp = int((~flagged & ~poor).sum()), int((flagged & ~poor).sum())
  rate = lambda k, n: k / n if n else float("nan")
  return {"frames": len(scores), "poor": tp + fn, "flagged": tp + fp,
          "tp": tp, "fn": fn, "tn": tn, "fp": fp,
          "sensitivity": rate(tp, tp + fn), "sensitivity_ci": wilson_interval(tp, tp + fn),
          "specificity": rate(tn, tn + fp), "specificity_ci": wilson_interval(tn, tn + fp),
          "auc": auc(scores, dice, dice_cut)}
