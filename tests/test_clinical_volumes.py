"""LV volumes and EF against shapes of known volume (prolate spheroids, truncated spheroids,
capsules), hand-computed formulas, and the edge cases of the per-patient table."""

import csv
import math

import numpy as np
import pytest

from echokld.clinical import geometry, volumes
from echokld.errors import InputError


def ellipse(shape, center, a, b, tilt_deg=0.0, cut=None, spacing=(1.0, 1.0)):
  """Pixels whose centre lies in the ellipse of semi-axes a (long axis, tilted `tilt_deg`
  from the depth axis towards larger columns) and b, in the units of `spacing`; `cut` keeps
  the part with u <= cut along the long axis (u grows towards larger rows: the base)."""
  rows, cols = np.mgrid[:shape[0], :shape[1]].astype(float)
  y, x = (rows - center[0]) * spacing[0], (cols - center[1]) * spacing[1]
  t = math.radians(tilt_deg)
  u = y * math.cos(t) + x * math.sin(t)
  v = -y * math.sin(t) + x * math.cos(t)
  mask = (u / a) ** 2 + (v / b) ** 2 <= 1
  return mask if cut is None else mask & (u <= cut)


def spheroid(a, b):
  return 4.0 / 3.0 * math.pi * a * b * b


def truncated_spheroid(a, b, cut):
  """Volume of the prolate spheroid (a, b) between u = -a and u = cut: pi b^2 int(1 - u^2/a^2)."""
  return math.pi * b * b * ((cut + a) - (cut ** 3 + a ** 3) / (3 * a * a))


def truncated_ellipse_area(a, b, cut):
  """Area of the ellipse (a, b) with u <= cut: 2b int_{-a}^{cut} sqrt(1 - u^2/a^2) du."""
  s = cut / a
  return a * b * (math.asin(s) + s * math.sqrt(1 - s * s) + math.pi / 2)


@pytest.mark.parametrize("a,b,tilt,offset", [
    (40, 20, 0, (0.0, 0.3)), (55, 25, 12, (0.25, 0.0)), (70, 35, -25, (0.4, 0.1)),
    (60, 24, 35, (0.0, 0.0)), (85, 38, -8, (0.3, 0.6))])
def test_ellipse_gives_the_prolate_spheroid_volume_by_both_methods(a, b, tilt, offset):
  mask = ellipse((224, 224), (112 + offset[0], 112 + offset[1]), a, b, tilt)
  landmarks = geometry.find_landmarks(mask)
  assert not landmarks.flat_base  # An ellipse has no flat base: the annulus is its basal tip.
  assert landmarks.length == pytest.approx(2 * a, rel=0.015)
  got = volumes.volumes_of(landmarks)
  assert got["area_length"] == pytest.approx(spheroid(a, b), rel=0.02)
  assert got["disks"] == pytest.approx(spheroid(a, b), rel=0.02)


def test_ellipse_volume_in_ml_with_anisotropic_pixels():
  spacing = (0.35, 0.6)  # mm per (row, col) pixel: angles are distorted in pixel space.
  a, b = 45.0, 19.0  # mm
  mask = ellipse((300, 200), (150.2, 100.3), a, b, 20, spacing=spacing)
  got = volumes.frame_volumes(mask, spacing)
  for method in volumes.METHODS:
    assert got[method] == pytest.approx(spheroid(a, b) / 1000, rel=0.02), method


@pytest.mark.parametrize("tilt", [0.0, 15.0, -22.0])
def test_truncated_ellipse_landmarks_and_volumes(tilt):
  a, b, cut = 70.0, 32.0, 40.0  # The base plane cuts the long axis 40 px below the centre.
  center = np.array([100.3, 112.2])
  mask = ellipse((224, 224), center, a, b, tilt, cut=cut)
  landmarks = geometry.find_landmarks(mask)
  t = math.radians(tilt)
  along, across = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
  half = b * math.sqrt(1 - (cut / a) ** 2)
  corners = [center + cut * along + s * half * across for s in (-1, 1)]
  found = sorted(landmarks.annulus, key=lambda p: np.dot(p - center, across))
  assert landmarks.flat_base
  for got, want in zip(found, corners):
    # On the base line; along it, a digitized corner is shaved by a pixel or two.
    assert abs(np.dot(got - want, along)) < 1.0
    assert np.linalg.norm(got - want) < 3.5
  assert np.linalg.norm(landmarks.base_mid - center - cut * along) < 2.0
  assert np.linalg.norm(landmarks.apex - (center - a * along)) < 1.0
  assert landmarks.length == pytest.approx(a + cut, abs=1.0)
  want_al = 8 * truncated_ellipse_area(a, b, cut) ** 2 / (3 * math.pi * (a + cut))
  assert volumes.area_length_volume(landmarks) == pytest.approx(want_al, rel=0.02)
  assert volumes.disks_volume(landmarks) == pytest.approx(truncated_spheroid(a, b, cut), rel=0.02)


def test_capsule_with_flat_base_is_a_cylinder_plus_hemisphere():
  radius, height = 22, 60  # A tilted "bullet": hemispherical apex on a cylinder, flat base.
  rows, cols = np.mgrid[:224, :224].astype(float)
  t = math.radians(10)
  u = (rows - 120.3) * math.cos(t) + (cols - 110.2) * math.sin(t)  # 0 at the apex's centre.
  v = -(rows - 120.3) * math.sin(t) + (cols - 110.2) * math.cos(t)
  mask = (np.abs(v) <= radius) & (u >= 0) & (u <= height) | (u < 0) & (u * u + v * v <= radius ** 2)
  landmarks = geometry.find_landmarks(mask)
  assert landmarks.flat_base
  assert landmarks.length == pytest.approx(height + radius, abs=1.0)
  want = math.pi * radius ** 2 * height + 2 / 3 * math.pi * radius ** 3
  assert volumes.disks_volume(landmarks) == pytest.approx(want, rel=0.02)


def test_area_length_and_disks_formulas_by_hand():
  mask = np.zeros((100, 60), bool)
  mask[20:80, 15:45] = True  # 60 rows x 30 columns.
  landmarks = geometry.Landmarks(
      mask=mask, spacing=(1.0, 1.0), apex=np.array([19.5, 29.5]),
      annulus=np.array([[79.5, 14.5], [79.5, 44.5]]), base_mid=np.array([79.5, 29.5]),
      flat_base=True, length=60.0, area=1800.0)
  assert volumes.area_length_volume(landmarks) == pytest.approx(8 * 1800 ** 2 / (3 * math.pi * 60))
  np.testing.assert_allclose(volumes.disk_diameters(landmarks), 30.0, atol=0.06)
  assert volumes.disks_volume(landmarks) == pytest.approx(math.pi / 4 * 30 ** 2 * 60, rel=0.005)


def test_volumes_do_not_depend_on_a_mirror_image_stray_blobs_or_holes():
  mask = ellipse((224, 224), (100.2, 110.4), 60, 26, 14, cut=35)
  clean = volumes.frame_volumes(mask)
  mirrored = volumes.frame_volumes(mask[:, ::-1])
  messy = mask.copy()
  messy[90:94, 105:109] = False  # A hole.
  messy[5:9, 5:9] = True  # A stray blob.
  dirty = volumes.frame_volumes(messy.astype(np.uint8) * 255)
  for method in volumes.METHODS:
    assert mirrored[method] == pytest.approx(clean[method], rel=0.005)
    assert dirty[method] == pytest.approx(clean[method], rel=1e-9)


def test_ejection_fraction_of_two_ellipses_by_hand():
  (a_ed, b_ed), (a_es, b_es) = (62, 28), (52, 21)
  truth = 100 * (1 - spheroid(a_es, b_es) / spheroid(a_ed, b_ed))  # 57.8 %
  frames = [volumes.FrameMask("p1", "ED", "p1_ED", ellipse((224, 224), (110.3, 112), a_ed, b_ed, 9)),
            volumes.FrameMask("p1", "es", "p1_ES", ellipse((224, 224), (108, 113.4), a_es, b_es, 11))]
  rows = volumes.patient_volumes(frames)
  assert [r["method"] for r in rows] == list(volumes.METHODS)
  for row in rows:
    assert row["ef_px_percent"] == pytest.approx(truth, abs=1.0)
    assert math.isnan(row["ef_percent"]) and math.isnan(row["edv_ml"])
    assert (row["ed_frame"], row["es_frame"]) == ("p1_ED", "p1_ES")
    assert "no pixel spacing" in row["note"]


def test_ejection_fraction_in_ml_with_spacing():
  spacing = (0.3, 0.45)
  ed = ellipse((320, 260), (160, 130), 42, 18, 10, spacing=spacing)
  es = ellipse((320, 260), (158, 131), 36, 13.5, 12, spacing=spacing)
  rows = volumes.patient_volumes([volumes.FrameMask("p", "ED", "ed", ed, spacing),
                                  volumes.FrameMask("p", "ES", "es", es, spacing)])
  for row in rows:
    assert row["edv_ml"] == pytest.approx(spheroid(42, 18) / 1000, rel=0.02)
    assert row["esv_ml"] == pytest.approx(spheroid(36, 13.5) / 1000, rel=0.02)
    assert row["ef_percent"] == pytest.approx(100 * (1 - spheroid(36, 13.5) / spheroid(42, 18)),
                                              abs=1.0)
    assert row["note"] == ""


def test_ejection_fraction_formula():
  assert volumes.ejection_fraction(120.0, 48.0) == pytest.approx(60.0)
  assert math.isnan(volumes.ejection_fraction(0.0, 0.0))
  assert math.isnan(volumes.ejection_fraction(float("nan"), 40.0))


def test_empty_mask_is_an_error_for_one_frame_and_a_note_in_the_table():
  with pytest.raises(InputError, match="p2_ES: empty mask"):
    volumes.frame_volumes(np.zeros((50, 50)), name="p2_ES")
  ed = ellipse((224, 224), (110, 112), 60, 26, 5)
  rows = volumes.patient_volumes([volumes.FrameMask("p2", "ED", "p2_ED", ed),
                                  volumes.FrameMask("p2", "ES", "p2_ES", np.zeros((224, 224)))])
  for row in rows:
    assert row["edv_px3"] == pytest.approx(spheroid(60, 26), rel=0.02)
    assert math.isnan(row["esv_px3"]) and math.isnan(row["ef_px_percent"])
    assert "p2_ES: empty mask" in row["note"]


def test_missing_frame_leaves_ef_empty_and_says_so():
  ed = ellipse((224, 224), (110, 112), 60, 26, 5)
  rows = volumes.patient_volumes([volumes.FrameMask("p3", "ED", "p3_ED", ed, (0.3, 0.3))])
  for row in rows:
    assert row["edv_ml"] == pytest.approx(spheroid(60, 26) * 0.027 / 1000, rel=0.02)
    assert math.isnan(row["esv_ml"]) and math.isnan(row["ef_percent"])
    assert row["es_frame"] == "" and row["note"] == "no ES frame"


def test_bad_inputs_name_the_frame():
  mask = ellipse((64, 64), (32, 32), 20, 10)
  with pytest.raises(InputError, match="two ED frames: a and b"):
    volumes.patient_volumes([volumes.FrameMask("p", "ED", "a", mask),
                             volumes.FrameMask("p", "ED", "b", mask)])
  with pytest.raises(InputError, match="c: phase must be ED or ES"):
    volumes.patient_volumes([volumes.FrameMask("p", "mid", "c", mask)])
  with pytest.raises(InputError, match="d: mask must be 2-D"):
    volumes.frame_volumes(np.ones((3, 4, 4)), name="d")
  with pytest.raises(InputError, match="e: mask has NaN"):
    volumes.frame_volumes(np.full((4, 4), np.nan), name="e")
  with pytest.raises(InputError, match="g: LV mask of 2 pixel.s. is too small"):
    volumes.frame_volumes(np.ones((1, 2)), name="g")
  with pytest.raises(InputError, match="f: spacing must be two positive"):
    volumes.frame_volumes(mask, (0.3, -1.0), name="f")


def test_volumes_csv(tmp_path):
  ed = ellipse((224, 224), (110, 112), 60, 26, 5)
  es = ellipse((224, 224), (110, 112), 50, 20, 5)
  rows = volumes.patient_volumes([volumes.FrameMask("p1", "ED", "p1_ED", ed, (0.3, 0.3)),
                                  volumes.FrameMask("p1", "ES", "p1_ES", es, (0.3, 0.3)),
                                  volumes.FrameMask("p0", "ES", "p0_ES", es)])
  path = tmp_path / "volumes.csv"
  volumes.write_volumes_csv(path, rows)
  with open(path, newline="") as f:
    table = list(csv.DictReader(f))
  assert tuple(table[0]) == volumes.COLUMNS
  assert [(r["patient"], r["method"]) for r in table] == [
      ("p0", "area_length"), ("p0", "disks"), ("p1", "area_length"), ("p1", "disks")]
  assert table[0]["edv_ml"] == "" and table[0]["ef_percent"] == "" and table[0]["esv_px3"] != ""
  for row, want in zip(table[2:], rows[2:]):
    assert float(row["ef_percent"]) == pytest.approx(want["ef_percent"], rel=1e-5)
    assert float(row["ef_percent"]) == pytest.approx(float(row["ef_px_percent"]), rel=1e-4)
