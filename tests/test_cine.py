"""Cine loops: ED and ES found from the LV area curve, and the EF they give."""

import math

import numpy as np
import pytest
from PIL import Image

from echokld.clinical import cine
from echokld.data import synthetic
from echokld.errors import InputError
from test_clinical_volumes import ellipse, spheroid


def test_synthetic_beating_loop_gives_ed_and_es_within_one_frame_of_the_truth():
  loop = synthetic.make_beating_sequence(num_frames=20, seed=3, image_shape=(96, 96))
  masks = loop["labels"] == 1
  ed, es, _ = cine.find_ed_es(cine.area_curve(masks))
  cyclic = lambda a, b: min(abs(a - b), 20 - abs(a - b))
  assert cyclic(ed, loop["ed_frame"]) <= 1 and cyclic(es, loop["es_frame"]) <= 1, (ed, es)
  # The loop's ED and ES frames are make_synthetic's anatomy: same patient, same LV top.
  assert loop["images"].shape == (20, 96, 96) and loop["images"].dtype == np.uint8
  frames = synthetic.make_synthetic(1, seed=3, image_shape=(96, 96))
  np.testing.assert_array_equal(frames[0]["label"] == 1, masks[0])  # ED: no squeeze.


def test_a_loop_of_spheroids_gives_their_ejection_fraction(tmp_path):
  # Semi-axes a (long) and b follow one beat; volumes are prolate spheroids 4/3 pi a b^2.
  t = np.arange(16)
  s = 0.5 - 0.5 * np.cos(2 * np.pi * t / 16)  # 0 at frame 0 (ED), 1 at frame 8 (ES).
  a, b = 70 - 8 * s, 30 - 6 * s
  masks = np.stack([ellipse((200, 200), (100.3, 100.1), ai, bi, 12) for ai, bi in zip(a, b)])
  curve, rows = cine.measure_loop(masks, spacing_mm=(0.3, 0.3), name="loop")
  assert [r["phase"] for r in curve if r["phase"]] == ["ED", "ES"]
  assert [r["frame"] for r in curve if r["phase"]] == [0, 8]
  assert curve[3]["area_mm2"] == pytest.approx(masks[3].sum() * 0.09)
  want_ef = 100 * (1 - spheroid(a[8], b[8]) / spheroid(a[0], b[0]))
  for row in rows:  # Both methods; volumes within 2% give EF within ~1.5 points.
    assert row["ed_frame"] == "loop[0]" and row["es_frame"] == "loop[8]"
    assert row["edv_ml"] == pytest.approx(spheroid(a[0], b[0]) * 0.027 / 1000, rel=0.02)
    assert row["ef_percent"] == pytest.approx(want_ef, abs=1.5), row["method"]
  cine.write_curve_csv(tmp_path / "curve.csv", curve)
  assert (tmp_path / "curve.csv").read_text().splitlines()[1].startswith("0,")
  cine.plot_curve(tmp_path / "curve.png", curve, "loop")
  with Image.open(tmp_path / "curve.png") as image:
    assert image.size == (600, 300)


def test_one_bad_frame_does_not_pick_the_phase():
  areas = [100, 98, 95, 90, 86, 84, 86, 90, 95, 99]
  spiky = list(areas)
  spiky[2] = 60  # A single-frame segmentation failure.
  ed, es, _ = cine.find_ed_es(spiky)
  assert es in (4, 5, 6) and ed in (0, 9)


@pytest.mark.parametrize("areas, message", [([5], ">= 2 frames"), ([0, 0, 0], "no frame"),
                                            ([4, 4, 4], "does not change"),
                                            ([1, math.nan], "finite")])
def test_bad_loops_are_one_line_errors(areas, message):
  with pytest.raises(InputError, match=message):
    cine.find_ed_es(areas)


def test_a_multipage_tiff_is_a_loop(tmp_path):
  from echokld.infer import loops
  pages = [Image.fromarray(np.full((20, 24), 10 * k, np.uint8)) for k in range(5)]
  pages[0].save(tmp_path / "loop.tif", save_all=True, append_images=pages[1:])
  assert loops.is_loop(str(tmp_path / "loop.tif"))
  frames, spacing = loops.read_loop(str(tmp_path / "loop.tif"))
  assert frames.shape == (5, 20, 24) and frames[3, 0, 0] == 30 and spacing is None


def test_a_camus_mhd_half_sequence_is_a_loop_with_its_spacing(tmp_path):
  """A 2019-release `_sequence.mhd`: one slice per frame; spacing (x, y) = (cols, rows)."""
  import SimpleITK as sitk
  from echokld.infer import loops
  loop = synthetic.make_beating_sequence(num_frames=8, image_shape=(40, 36))
  image = sitk.GetImageFromArray(loop["images"])  # (T, rows, cols) -> x = cols, z = frames.
  image.SetSpacing((0.31, 0.154, 1.0))
  sitk.WriteImage(image, str(tmp_path / "patient0001_2CH_sequence.mhd"))
  single = sitk.GetImageFromArray(loop["images"][:1])
  sitk.WriteImage(single, str(tmp_path / "patient0001_2CH_ED.mhd"))
  path = str(tmp_path / "patient0001_2CH_sequence.mhd")
  assert loops.is_loop(path)
  assert not loops.is_loop(str(tmp_path / "patient0001_2CH_ED.mhd"))
  frames, spacing = loops.read_loop(path)
  np.testing.assert_array_equal(frames, loop["images"])
  assert spacing == pytest.approx((0.154, 0.31))
  areas = (loop["labels"] == 1).sum(axis=(1, 2)).astype(float)
  ed, es, _ = cine.find_ed_es(areas)
  assert abs(ed - loop["ed_frame"]) <= 1 and abs(es - loop["es_frame"]) <= 1
