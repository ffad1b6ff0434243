"""Shape metrics of a predicted mask (components, holes, contour ratio) against hand-made
shapes and independent references: Gray's bit-quad Euler number, scipy's hole filling and
contourpy's marching squares (matplotlib's contour engine)."""

import math

import contourpy
import numpy as np
import pytest
from scipy import ndimage

from echokld.evaluation import metrics


def polar(shape, center):
  rows, cols = np.mgrid[:shape[0], :shape[1]]
  return np.hypot(rows - center[0], cols - center[1]), np.arctan2(rows - center[0],
                                                                  cols - center[1])


def disk(radius, size=100):
  r, _ = polar((size, size), (size / 2, size / 2))
  return r <= radius


def star(radius, lobes, amplitude, size=100):
  r, theta = polar((size, size), (size / 2, size / 2))
  return r <= radius * (1 + amplitude * np.cos(lobes * theta))


def blobs(seed, shape=(40, 50)):
  rng = np.random.default_rng(seed)
  return ndimage.gaussian_filter(rng.random(shape), 2) > 0.5


def euler_bit_quads(mask):
  """Gray (1971): E8 = (n(Q1) - n(Q3) - 2 n(QD)) / 4 over the 2x2 quads of the padded mask."""
  m = np.pad(mask.astype(int), 1)
  a, b, c, d = m[:-1, :-1], m[:-1, 1:], m[1:, :-1], m[1:, 1:]
  k = a + b + c + d
  diagonal = (k == 2) & (a == d)
  return ((k == 1).sum() - (k == 3).sum() - 2 * diagonal.sum()) / 4


def test_components_and_holes_hand_made():
  m = np.zeros((9, 9), bool)
  m[1:3, 1:3] = True
  m[5:8, 5:8] = True
  assert (metrics.components(m), metrics.holes(m)) == (2, 0)
  m[3, 3] = True  # Touches the first square at a corner: 8-connected, still two regions.
  m[4, 4] = True  # ... and now bridges both squares: one region.
  assert metrics.components(m) == 1
  ring = np.zeros((9, 9), bool)
  ring[2:7, 2:7] = True
  ring[3:6, 3:6] = False
  assert (metrics.components(ring), metrics.holes(ring)) == (1, 1)
  ring[4, 4] = True  # An island in the hole: two regions, the hole is now a ring.
  assert (metrics.components(ring), metrics.holes(ring)) == (2, 1)
  ring[4, 6] = False  # A gap in the wall: the inside reaches the outside.
  assert metrics.holes(ring) == 0
  diamond = np.zeros((7, 7), bool)  # Pixels touching at corners enclose one 4-connected hole.
  for r, c in ((1, 3), (2, 2), (3, 1), (4, 2), (5, 3), (4, 4), (3, 5), (2, 4)):
    diamond[r, c] = True
  assert (metrics.components(diamond), metrics.holes(diamond)) == (1, 1)
  full = np.ones((6, 6), bool)
  full[0, 3] = False  # Background on the border is outside, not a hole.
  full[3, 3] = False
  assert metrics.holes(full) == 1
  assert (metrics.components(np.zeros((5, 5), bool)), metrics.holes(np.zeros((5, 5), bool))
          ) == (0, 0)


@pytest.mark.parametrize("seed", range(6))
def test_components_minus_holes_is_the_bit_quad_euler_number(seed):
  mask = blobs(seed)
  assert metrics.components(mask) - metrics.holes(mask) == euler_bit_quads(mask)
  filled = ndimage.binary_fill_holes(mask)  # scipy's route: background not reached from out.
  assert metrics.holes(mask) == ndimage.label(filled & ~mask)[1]
  assert metrics.holes(mask) + metrics.components(mask) > 2  # The blobs are not trivial.


@pytest.mark.parametrize("seed", range(4))
def test_contour_length_equals_contourpy_marching_squares(seed):
  mask = blobs(seed)
  lines = contourpy.contour_generator(z=np.pad(mask, 1).astype(float)).lines(0.5)
  expected = sum(np.linalg.norm(np.diff(line, axis=0), axis=1).sum() for line in lines)
  assert metrics.contour_length(mask) == pytest.approx(expected, rel=1e-12)


def test_contour_of_a_square_hand_computed():
  square = np.zeros((20, 20), bool)
  square[3:13, 4:14] = True  # 10 x 10: four straight sides of 9 and four cut corners.
  assert metrics.contour_length(square) == pytest.approx(4 * 9 + 4 * math.sqrt(2) / 2)
  assert metrics.contour_ratio(square) == pytest.approx(1.0, abs=1e-12)
  one = np.zeros((5, 5), bool)
  one[2, 2] = True  # A diamond through the four edge midpoints: convex.
  assert metrics.contour_length(one) == pytest.approx(2 * math.sqrt(2))
  assert metrics.contour_ratio(one) == pytest.approx(1.0)


def test_contour_ratio_tells_a_disk_from_a_star_at_any_size():
  disks = [metrics.contour_ratio(disk(r)) for r in (5, 10, 20, 40)]
  assert all(1.0 < v < 1.07 for v in disks), disks  # The pixel staircase only.
  assert max(disks) - min(disks) < 0.02  # Scale-free.
  lobed = metrics.contour_ratio(star(30, 5, 0.4))
  bumpy = metrics.contour_ratio(star(30, 16, 0.1))
  assert lobed > 1.3 and bumpy > 1.3, (lobed, bumpy)
  # Jagged edge: every other pixel of a disk's boundary removed.
  jagged = disk(30).copy()
  edge = np.argwhere(metrics.contour(jagged))
  jagged[tuple(edge[::2].T)] = False
  assert metrics.contour_ratio(jagged) > max(disks) + 0.05


def test_contour_ratio_reads_the_largest_region_with_holes_filled():
  base = disk(20)
  ring = base & ~disk(8)
  speck = base.copy()
  speck[2:4, 2:4] = True  # A far, small fragment: counted by components, not here.
  assert metrics.contour_ratio(ring) == pytest.approx(metrics.contour_ratio(base))
  assert metrics.contour_ratio(speck) == pytest.approx(metrics.contour_ratio(base))
  shape = metrics.shape_metrics(speck)
  assert shape["components"] == 2 and shape["holes"] == 0
  # A frame around the image encloses the gap between it and the disk: one hole.
  shape = metrics.shape_metrics(base | ~disk(45))
  assert shape["components"] == 2 and shape["holes"] == 1
  assert metrics.shape_metrics(ring) == {"components": 1.0, "holes": 1.0,
                                         "contour_ratio": metrics.contour_ratio(base)}


def test_frame_metrics_carry_the_shape_of_prediction_and_truth():
  pred, truth = star(30, 5, 0.4), disk(30)
  m = metrics.frame_metrics(pred, truth, None)
  assert m["contour_ratio"] == pytest.approx(metrics.contour_ratio(pred))
  assert m["truth_contour_ratio"] == pytest.approx(metrics.contour_ratio(truth))
  assert m["components"] == 1.0 and m["holes"] == 0.0 and m["empty"] == 0.0
