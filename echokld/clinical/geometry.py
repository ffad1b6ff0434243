"""Landmarks of the left ventricle on an apical-view mask: apex, mitral annulus, long axis.

A volume formula needs the long axis, from the apex to the midpoint of the mitral annulus.
Model masks come without contours or atrium labels, so both are found from the LV mask
alone, in the training convention (rows = depth, the apex of the sector at the top, so the
LV's base lies towards larger rows).

Geometry is done in the units of `spacing` ((row, col) mm per pixel; (1, 1) gives pixels),
so anisotropic pixels keep their true angles; points are returned in pixel coordinates
(row, col), pixel centres at integers. The mask's boundary, where sub-pixel positions are
needed, is the 0.5 level of the bilinear interpolant of the 0/1 mask: on a straight edge
that is the pixel edge, the same boundary the pixel-count area uses.

How the landmarks are found (`find_landmarks`):
1. The mask is cleaned: its largest 4-connected component, holes filled.
2. A first long-axis direction: the major principal axis of the pixels, pointing to larger
   rows (towards the base).
3. The base. The boundary is replaced by the convex hull of the boundary pixels' corners,
   which bridges a notch in the valve plane. A flat run is a chain of hull vertices that
   all lie within `flat_tolerance` pixels of the chord joining its two ends. The base is
   the longest flat run that faces the base (outward normal within `max_base_angle_deg` of
   the axis), spans at least `min_base_fraction` of the LV's width across the axis, and
   ends in corners: beyond each end the hull turns by at least `min_corner_deg` within
   `corner_scale` times that width. Its two ends are the annulus points (the LV's basal
   corners, where the walls meet the valve plane) and the base midpoint is their midpoint.
   If no run qualifies, the base is rounded (an ellipse, or a smooth predicted mask): the
   base midpoint is where the long axis leaves the mask at the basal end, and both annulus
   points are that point (`flat_base` is False).
4. The apex is the boundary point farthest from the base midpoint, searched on the sub-pixel
   boundary along rays from the base midpoint aimed within 10 degrees of the farthest hull
   vertex; of the rays reaching within half a pixel of the farthest, the middle one.
5. The axis becomes apex -> base midpoint and steps 3-4 repeat until the landmarks move by
   less than 0.01 pixel (at most `max_iterations` times).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from echokld.errors import InputError
from echokld.evaluation import metrics

CORNER_OFFSETS = np.array([(-0.5, -0.5), (-0.5, 0.5), (0.5, -0.5), (0.5, 0.5)])
SAMPLE_STEP_PX = 0.05  # Ray sampling step, in pixels of the finer axis.
# The apex is searched along rays within APEX_FAN_DEG of the farthest hull vertex (a pixel
# corner); on a blunt apex the rays that reach within APEX_SLACK_PX of the farthest all
# qualify, and the middle one is taken, so the apex does not slide to one end of a flat top.
APEX_FAN_DEG = 10.0
APEX_RAYS = 81
APEX_SLACK_PX = 0.5


@dataclasses.dataclass(frozen=True)
class BaseRule:
  """Thresholds of step 3 (see the module docstring); the defaults are documented there."""

  flat_tolerance: float = 1.0  # Pixels: a digital straight line's hull stays within 1 px.
  max_base_angle_deg: float = 45.0
  min_base_fraction: float = 0.4
  min_corner_deg: float = 30.0
  corner_scale: float = 0.3
  max_iterations: int = 5


@dataclasses.dataclass(frozen=True)
class Landmarks:
  """An LV mask (cleaned) with its landmarks; points are (row, col) in pixels."""

  mask: np.ndarray  # bool, the cleaned mask the landmarks were found on.
  spacing: tuple[float, float]  # (row, col) units per pixel; lengths below are in these units.
  apex: np.ndarray
  annulus: np.ndarray  # (2, 2): the two basal corners; both equal base_mid if not flat_base.
  base_mid: np.ndarray
  flat_base: bool
  length: float  # |apex - base_mid| in spacing units: the long axis L.
  area: float  # Pixel count times the pixel area.

  def to_units(self, points: np.ndarray) -> np.ndarray:
    """Pixel (row, col) coordinates -> spacing units."""
    return np.asarray(points, float) * np.asarray(self.spacing)

  @property
  def axis(self) -> np.ndarray:
    """Unit vector (spacing units) from the base midpoint to the apex."""
    vector = self.to_units(self.apex) - self.to_units(self.base_mid)
    return vector / max(np.linalg.norm(vector), 1e-12)


def clean_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
  """The largest 4-connected component of `mask != 0`, holes filled (InputError if empty)."""
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise InputError(name, f"mask must be 2-D, got shape {mask.shape}")
  if not (np.issubdtype(mask.dtype, np.number) or mask.dtype == bool) or np.iscomplexobj(mask):
    raise InputError(name, f"mask dtype {mask.dtype} is not a real number type")
  if not np.all(np.isfinite(mask)):
    raise InputError(name, "mask has NaN or infinite values")
  if not np.any(mask != 0):
    raise InputError(name, "empty mask: no LV pixels")
  return metrics.lv_region(mask)


def check_spacing(spacing: Sequence[float] | None, name: str = "mask") -> tuple[float, float]:
  """(row, col) spacing as floats; None means (1, 1), i.e. pixel units."""
  if spacing is None:
    return (1.0, 1.0)
  values = tuple(float(s) for s in spacing)
  if len(values) != 2 or not all(math.isfinite(s) and s > 0 for s in values):
    raise InputError(name, f"spacing must be two positive numbers (row, col), got {spacing}")
  return values


def hull_of(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
  """Convex hull vertices (spacing units, in cyclic order) of the boundary pixels' corners."""
  boundary = mask & ~ndimage.binary_erosion(mask)
  corners = (np.argwhere(boundary)[:, None, :] + CORNER_OFFSETS[None]).reshape(-1, 2)
  points = np.unique(corners, axis=0) * np.asarray(spacing)
  return points[ConvexHull(points).vertices]


def last_inside(field: np.ndarray, spacing: tuple[float, float], origin: np.ndarray,
                direction: np.ndarray, t_max: float) -> float:
  """Largest t in [0, t_max] with origin + t * direction inside the mask (sub-pixel).

  `field` is the mask as floats; inside means its bilinear interpolant >= 0.5. Returns 0
  when no sample is inside.
  """
  step = SAMPLE_STEP_PX * min(spacing)
  t = np.arange(0.0, t_max + step, step)
  values = sample(field, spacing, origin[None] + t[:, None] * direction[None])
  inside = np.flatnonzero(values >= 0.5)
  if inside.size == 0:
    return 0.0
  k = inside[-1]
  if k + 1 == t.size:
    return float(t[k])
  return float(t[k] + step * (values[k] - 0.5) / (values[k] - values[k + 1]))


def chord_length(field: np.ndarray, spacing: tuple[float, float], center: np.ndarray,
                 direction: np.ndarray) -> float:
  """Length inside the mask of the whole line through `center` along unit `direction`."""
  reach = math.hypot(field.shape[0] * spacing[0], field.shape[1] * spacing[1])
  step = SAMPLE_STEP_PX * min(spacing)
  t = np.arange(-reach, reach + step, step)
  values = sample(field, spacing, center[None] + t[:, None] * direction[None])
  return float(np.count_nonzero(values >= 0.5) * step)


def sample(field: np.ndarray, spacing: tuple[float, float], points: np.ndarray) -> np.ndarray:
  """Bilinear interpolant of `field` at `points` (spacing units); 0 outside the image."""
  pixels = (points / np.asarray(spacing)).T
  return ndimage.map_coordinates(field, pixels, order=1, mode="constant", cval=0.0,
                                 prefilter=False)


def principal_axis(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
  """Unit major axis of the pixel centres (spacing units), pointing to larger rows."""
  points = np.argwhere(mask) * np.asarray(spacing)
  if len(points) < 2:
    return np.array([1.0, 0.0])
  eigenvalues, eigenvectors = np.linalg.eigh(np.cov(points.T))
  axis = eigenvectors[:, np.argmax(eigenvalues)]
  if eigenvalues.min() > 0.95 * eigenvalues.max():  # Round: no preferred axis, use depth.
    axis = np.array([1.0, 0.0])
  return axis if axis[0] >= 0 else -axis


def flat_runs(hull: np.ndarray, tolerance: float) -> list[tuple[int, int]]:
  """(i, j) for each hull vertex i: the longest run i..j (j may exceed n, cyclic) that is flat."""
  n = len(hull)
  runs = []
  for i in range(n):
    j = i + 1
    while j + 1 <= i + n - 1:
      a, b = hull[i], hull[(j + 1) % n]
      chord = b - a
      middle = hull[np.arange(i + 1, j + 1) % n] - a
      distance = np.abs(chord[0] * middle[:, 1] - chord[1] * middle[:, 0])
      if distance.max() > tolerance * max(np.linalg.norm(chord), 1e-12):
        break
      j += 1
    runs.append((i, j))
  return runs


def turn_beyond(hull: np.ndarray, end: int, step: int, chord: np.ndarray, reach: float) -> float:
  """Degrees the hull turns after vertex `end` (walking by `step`), within `reach` of it."""
  n = len(hull)
  k, walked = end, 0.0
  while walked < reach and (k - end) * step < n - 1:
    walked += np.linalg.norm(hull[(k + step) % n] - hull[k % n])
    k += step
  beyond = hull[k % n] - hull[end % n]
  cosine = np.dot(chord, beyond) / max(np.linalg.norm(chord) * np.linalg.norm(beyond), 1e-12)
  return math.degrees(math.acos(np.clip(cosine, -1.0, 1.0)))


def find_base(hull: np.ndarray, axis: np.ndarray, centroid: np.ndarray, rule: BaseRule,
              tolerance: float) -> tuple[np.ndarray, np.ndarray] | None:
  """The two annulus points (spacing units) of the flat base, or None if the base is rounded."""
  across = np.array([-axis[1], axis[0]])
  width = np.ptp(hull @ across)
  n = len(hull)
  best, best_length = None, 0.0
  for i, j in flat_runs(hull, tolerance):
    a, b = hull[i], hull[j % n]
    chord = b - a
    length = float(np.linalg.norm(chord))
    if length < rule.min_base_fraction * width or length <= best_length:
      continue
    normal = np.array([-chord[1], chord[0]]) / length
    if np.dot(normal, (a + b) / 2 - centroid) < 0:
      normal = -normal
    if np.dot(normal, axis) < math.cos(math.radians(rule.max_base_angle_deg)):
      continue
    reach = rule.corner_scale * width
    if min(turn_beyond(hull, j, 1, chord, reach),
           turn_beyond(hull, i, -1, -chord, reach)) < rule.min_corner_deg:
      continue
    best, best_length = (a, b), length
  return best


def find_landmarks(mask: np.ndarray, spacing: Sequence[float] | None = None,
                   annulus: np.ndarray | None = None, rule: BaseRule = BaseRule(),
                   name: str = "mask") -> Landmarks:
  """Apex, annulus and long axis of an LV mask (module docstring: how).

  Args:
    mask: 2-D, nonzero = LV cavity (for a CAMUS label map pass `labels == 1`), rows = depth.
    spacing: (row, col) size of a pixel, e.g. in mm; None for pixel units.
    annulus: optional (2, 2) annulus points (row, col) in pixels, e.g. from an atrium label;
      then only the apex is searched.
    rule: thresholds of the base search.
    name: names the mask in errors (InputError for an empty mask or one too small to
      have a long axis).
  """
  spacing = check_spacing(spacing, name)
  mask = clean_mask(mask, name)
  field = mask.astype(np.float64)
  units = np.asarray(spacing)
  hull = hull_of(mask, spacing)
  centroid = np.argwhere(mask).mean(axis=0) * units
  tolerance = rule.flat_tolerance * max(spacing)

  def apex_from(base_mid):
    offsets = np.linalg.norm(hull - base_mid, axis=1)
    far = hull[int(np.argmax(offsets))] - base_mid
    angles = math.atan2(far[1], far[0]) + np.radians(np.linspace(-APEX_FAN_DEG, APEX_FAN_DEG,
                                                                 APEX_RAYS))
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    reach = np.array([last_inside(field, spacing, base_mid, d, offsets.max() + max(spacing))
                      for d in directions])
    near = np.flatnonzero(reach >= reach.max() - APEX_SLACK_PX * min(spacing))
    middle = near[len(near) // 2]
    return base_mid + reach[middle] * directions[middle]

  if annulus is not None:
    corners = np.asarray(annulus, float).reshape(2, 2) * units
    base_mid = corners.mean(axis=0)
    return _landmarks(mask, spacing, apex_from(base_mid), corners, base_mid, True, name)

  axis = principal_axis(mask, spacing)
  previous = None
  for _ in range(max(1, rule.max_iterations)):
    corners = find_base(hull, axis, centroid, rule, tolerance)
    if corners is not None:
      corners = np.stack(corners)
      base_mid = corners.mean(axis=0)
    else:
      reach = math.hypot(mask.shape[0] * spacing[0], mask.shape[1] * spacing[1])
      base_mid = centroid + axis * last_inside(field, spacing, centroid, axis, reach)
      corners = np.stack([base_mid, base_mid])
    apex = apex_from(base_mid)
    current = np.concatenate([apex, base_mid])
    if previous is not None and np.abs(current - previous).max() < 0.01 * min(spacing):
      break
    previous = current
    if np.linalg.norm(base_mid - apex) > 0:
      axis = (base_mid - apex) / np.linalg.norm(base_mid - apex)
  return _landmarks(mask, spacing, apex, corners, base_mid, not np.allclose(*corners), name)


def _landmarks(mask, spacing, apex, corners, base_mid, flat, name) -> Landmarks:
  units = np.asarray(spacing)
  if np.linalg.norm(apex - base_mid) <= 0:
    raise InputError(name, f"LV mask of {int(mask.sum())} pixel(s) is too small to measure")
  return Landmarks(mask=mask, spacing=spacing, apex=apex / units, annulus=corners / units,
                   base_mid=base_mid / units, flat_base=bool(flat),
                   length=float(np.linalg.norm(apex - base_mid)),
                   area=float(mask.sum() * spacing[0] * spacing[1]))
