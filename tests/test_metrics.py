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
  # Frames of two sizes: the mean of per-frame Dice (4/7 and 1 for an exact 2x2 match).
  square = np.ones((2, 2), bool)
  assert metrics.mean_dice([pred, square], [truth, square]) == pytest.approx((4 / 7 + 1) / 2)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.3, 0.154)])
def test_mhd_and_hd95_match_brute_force(spacing):
  pred = disk((60, 50), (30, 22), 12) | disk((60, 50), (10, 40), 3)
  truth = disk((60, 50), (28, 25), 14)
  ours = metrics.contour_distances(pred, truth, spacing)
  mhd, hd95 = brute_force(pred, truth, spacing)
  assert ours["mhd"] == pytest.approx(mhd, rel=1e-9)
  assert ours["hd95"] == pytest.approx(hd95, rel=1e-9)


def test_lv_region_keeps_the_largest_4_connected_region_and_fills_its_holes():
  mask = np.array([[1, 1, 1, 1, 0, 0, 0],
                   [1, 0, 0, 1, 0, 1, 1],
                   [1, 0, 0, 1, 0, 1, 1],
                   [1, 1, 1, 1, 0, 0, 0],
                   [0, 0, 0, 0, 1, 0, 0]], np.uint8)  # (4, 4) touches the ring at a corner.
  expected = np.zeros(mask.shape, bool)
  expected[:4, :4] = True  # The 12-pixel ring with its 4-pixel hole filled.
  np.testing.assert_array_equal(metrics.lv_region(mask), expected)
  np.testing.assert_array_equal(metrics.lv_region(np.zeros((3, 3))), np.zeros((3, 3), bool))


def test_mhd_of_shifted_square_is_the_shift():
  a = np.zeros((20, 20), bool); a[5:10, 5:10] = True
  b = np.roll(a, 2, axis=1)
  # Each contour point of a lies 2 px from b's contour or less; hand count: the left and
  # right edges are 2 px away, the top and bottom rows overlap partially.
  mhd, _ = brute_force(a, b, (1, 1))
  assert metrics.contour_distances(a, b)["mhd"] == pytest.approx(mhd)
  assert metrics.contour_distances(a, a)["mhd"] == 0.0


def test_empty_prediction_scores_the_worst_distance_and_zero_dice():
  truth = disk((20, 30), (10, 10), 4)
  m = metrics.frame_metrics(np.zeros_like(truth), truth, (0.5, 0.2))
  assert m["dice"] == 0.0 and m["recall"] == 0.0 and m["precision"] == 0.0
  assert m["empty"] == 1.0 and m["components"] == 0.0 and m["holes"] == 0.0
  assert np.isnan(m["contour_ratio"])
  diagonal = np.hypot(19, 29)  # Corner pixel centres (0, 0) and (19, 29).
  assert m["mhd_px"] == m["hd95_px"] == pytest.approx(diagonal)
  assert m["mhd_mm"] == pytest.approx(np.hypot(19 * 0.5, 29 * 0.2))
  # No prediction can score a larger distance: the diagonal bounds every pixel pair.
  far = np.zeros_like(truth); far[19, 29] = True
  assert metrics.frame_metrics(far, truth, None)["mhd_px"] < diagonal
  # A prediction on an empty truth is scored alike; two empty masks agree perfectly.
  m = metrics.frame_metrics(truth, np.zeros_like(truth), None)
  assert m["dice"] == 0.0 and m["empty"] == 0.0 and m["mhd_px"] == pytest.approx(diagonal)
  m = metrics.frame_metrics(np.zeros_like(truth), np.zeros_like(truth), None)
  assert m["dice"] == 1.0 and m["mhd_px"] == 0.0 and m["hd95_px"] == 0.0


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


def test_bce_term_hand_computed_and_weighted_into_the_total():
  from echokld.configs import base
  from echokld.objectives import terms
  logits = np.array([[2.0, -1.0], [0.0, 3.0]], np.float32)[None, ..., None]
  masks = np.array([[1, 0], [1, 0]], np.float32)[None, ..., None]
  # -log sigmoid(x) for the LV pixels, -log(1 - sigmoid(x)) = log(1 + e^x) for the others.
  per_pixel = [np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), np.log(2.0), np.log1p(np.exp(3.0))]
  cfg = base.get_config().loss
  cfg.bce_weight = 0.5
  total, parts = terms.total_loss({"logits": logits}, {"masks": masks}, cfg, ("dice", "bce"))
  assert float(parts["bce"]) == pytest.approx(np.mean(per_pixel), rel=1e-6)
  probs = 1 / (1 + np.exp(-logits))
  dice = 1 - (2 * np.sum(probs * masks) + 1e-5) / (np.sum(probs) + np.sum(masks) + 1e-5)
  assert float(parts["dice"]) == pytest.approx(dice, rel=1e-5)
  assert float(total) == pytest.approx(dice + 0.5 * np.mean(per_pixel), rel=1e-5)


def test_summary_counts_empty_fragmented_and_holed_predictions_in_every_mean():
  from echokld.evaluation import test_set
  truth = disk((20, 20), (10, 10), 5)
  ring = disk((20, 20), (10, 10), 6) & ~disk((20, 20), (10, 10), 2)
  two = disk((20, 20), (10, 10), 5) | disk((20, 20), (1, 18), 1)
  preds = {"a": truth, "b": np.zeros_like(truth), "c": ring, "d": two}
  rows = [dict(case=k, quality="Good" if k in "ab" else "Poor",
               **metrics.frame_metrics(p, truth, None)) for k, p in preds.items()]
  s = test_set.summarize(rows)
  assert s["frames"] == 4 and s["empty_predictions"] == 1
  assert s["fragmented_predictions"] == 1 and s["predictions_with_holes"] == 1
  # The empty frame counts in the means: Dice 0 and the diagonal for the distances.
  assert s["dice"] == pytest.approx(np.mean([r["dice"] for r in rows]))
  assert s["mhd_px"] == pytest.approx(np.mean([r["mhd_px"] for r in rows]))
  assert rows[1]["mhd_px"] == pytest.approx(np.hypot(19, 19))
  # The contour ratio has no value for an empty mask: its mean is over the other three.
  assert s["contour_ratio"] == pytest.approx(np.mean([rows[i]["contour_ratio"]
                                                      for i in (0, 2, 3)]))
  assert s["components"] == pytest.approx(1.0)  # (1 + 0 + 1 + 2) / 4
  assert s["by_quality"]["Good"]["empty_predictions"] == 1
  assert s["by_quality"]["Poor"]["frames"] == 2
  assert s["by_quality"]["Poor"]["holes"] == pytest.approx(0.5)
  # Rows of runs written before `empty` existed: an empty prediction had NaN distances.
  old = {"mhd_px": float("nan")}
  assert test_set.is_empty(old) and not test_set.is_empty({"mhd_px": 3.0})
