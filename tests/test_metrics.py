"""Evaluation metrics against brute-force references (scipy cdist) and hand-made cases."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from echokld.evaluation import metrics
from echokld.objectives import dice as dice_lib


def disk(shape, center, radius):
  rows, cols = np.mgrid[:shape[0], :shape[1]]
  return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius ** 2


def brute_force(pred, truth, spacing):
  """Contour points by explicit 4-neighbour test, distances by cdist."""
  def points(mask):
    padded = np.pad(mask, 1)
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return np.argwhere(mask & ~inner) * np.asarray(spacing)
  d = cdist(points(pred), points(truth))
  d_pt, d_tp = d.min(1), d.min(0)
  return max(d_pt.mean(), d_tp.mean()), np.percentile(np.concatenate([d_pt, d_tp]), 95)


def test_overlap_hand_computed():
  pred = np.zeros((4, 4), bool); pred[0, :3] = True          # 3 pixels
  truth = np.zeros((4, 4), bool); truth[0, 1:] = True; truth[1, 0] = True  # 4 pixels
  m = metrics.overlap_metrics(pred, truth)                    # 2 shared
  assert m["dice"] == pytest.approx(2 * 2 / 7)
  assert m["recall"] == pytest.approx(2 / 4)
  assert m["precision"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.3, 0.154)])
def test_mhd_and_hd95_match_brute_force(spacing):
  pred = disk((60, 50), (30, 22), 12) | disk((60, 50), (10, 40), 3)
  truth = disk((60, 50), (28, 25), 14)
  ours = metrics.contour_distances(pred, truth, spacing)
  mhd, hd95 = brute_force(pred, truth, spacing)
  assert ours["mhd"] == pytest.approx(mhd, rel=1e-9)
  assert ours["hd95"] == pytest.approx(hd95, rel=1e-9)


def test_mhd_of_shifted_square_is_the_shift():
  a = np.zeros((20, 20), bool); a[5:10, 5:10] = True
  b = np.roll(a, 2, axis=1)
  # Each contour point of a lies 2 px from b's contour or less; hand count: the left and
  # right edges are 2 px away, the top and bottom rows overlap partially.
  mhd, _ = brute_force(a, b, (1, 1))
  assert metrics.contour_distances(a, b)["mhd"] == pytest.approx(mhd)
  assert metrics.contour_distances(a, a)["mhd"] == 0.0


def test_empty_prediction_gives_nan_distances_and_zero_dice():
  truth = disk((20, 20), (10, 10), 4)
  m = metrics.frame_metrics(np.zeros_like(truth), truth, (0.5, 0.5))
  assert m["dice"] == 0.0 and np.isnan(m["mhd_px"]) and np.isnan(m["mhd_mm"])


def test_mm_distances_scale_with_isotropic_spacing():
  pred, truth = disk((40, 40), (20, 20), 8), disk((40, 40), (22, 19), 9)
  m = metrics.frame_metrics(pred, truth, (0.25, 0.25))
  assert m["mhd_mm"] == pytest.approx(0.25 * m["mhd_px"])


def test_soft_dice_loss_eq7_hand_computed():
  probs = np.array([[0.9, 0.2], [0.6, 0.0]], np.float32)[None, ..., None]
  target = np.array([[1, 0], [1, 1]], np.float32)[None, ..., None]
  inter, denom = 0.9 + 0.6, 1.7 + 3.0
  expected = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
  assert float(dice_lib.soft_dice_loss(probs, target)) == pytest.approx(expected, rel=1e-6)
  perfect = float(dice_lib.soft_dice_loss(target, target))
  assert perfect == pytest.approx(0.0, abs=1e-6)
