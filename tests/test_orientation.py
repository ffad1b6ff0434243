"""NIfTI orientation read from the affine (infer.orient): CAMUS files untouched, other
layouts brought to the CAMUS layout and their masks put back on the same voxels."""

import nibabel as nib
import numpy as np
import pytest

import camus_fixtures
from echokld.data import camus, synthetic
from echokld.infer import io, orient


def rotation(z_deg, x_deg):
  """A 4x4 rotation about z then x (an oblique plane, no axis-aligned column)."""
  cz, sz = np.cos(np.radians(z_deg)), np.sin(np.radians(z_deg))
  cx, sx = np.cos(np.radians(x_deg)), np.sin(np.radians(x_deg))
  rz = np.array([[cz, -sz, 0, 0], [sz, cz, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
  rx = np.array([[1, 0, 0, 0], [0, cx, -sx, 0], [0, sx, cx, 0], [0, 0, 0, 1]])
  return rx @ rz


CAMUS_AFFINE = np.diag([camus_fixtures.COL_MM, camus_fixtures.ROW_MM, 1.0, 1.0])


def oblique_frame():
  """(frame record, CAMUS stored array, data array, affine of the data array).

  The data array is the CAMUS stored (width, depth) frame transposed to (depth, width) with
  the depth reversed: data[i, j] = stored[j, D - 1 - i]. Its affine is the CAMUS one
  composed with that index map, then rotated 25 degrees in plane and tilted 10 degrees.
  """
  record = synthetic.make_synthetic(1, seed=5, image_shape=(48, 40))[0]
  stored = np.ascontiguousarray(record["image"].T)  # (width 40, depth 48), as CAMUS stores.
  depth = stored.shape[1]
  data = np.ascontiguousarray(stored.T[::-1, :])
  index_map = np.array([[0, 1, 0, 0], [-1, 0, 0, depth - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
  affine = rotation(25, 10) @ CAMUS_AFFINE @ index_map
  return record, stored, data, affine


@pytest.mark.parametrize("affine", [CAMUS_AFFINE, np.diag([-0.154, -0.308, 1.0, 1.0]),
                                    rotation(30, 0) @ CAMUS_AFFINE,
                                    rotation(0, 40) @ CAMUS_AFFINE])
def test_camus_layouts_are_untouched(affine):
  # Positive diagonal (nibabel), negative x and y (ITK's identity direction), and rotations
  # under 45 degrees of either: the identity transform, for a frame and for a loop.
  for ndim in (2, 3):
    np.testing.assert_array_equal(orient.to_camus(affine, ndim),
                                  [(k, 1.0) for k in range(ndim)])


def test_a_camus_file_reads_exactly_as_the_camus_reader(tmp_path):
  frame = np.random.default_rng(0).integers(0, 255, (50, 36), dtype=np.uint8)
  path = tmp_path / "patient0001_2CH_ED.nii.gz"
  camus_fixtures.save_nifti(path, frame)
  want, want_spacing = camus.read_nifti(path)
  got = io.read_frame(str(path), "")
  np.testing.assert_array_equal(got.image, want)
  np.testing.assert_array_equal(got.image, frame)
  assert got.spacing_mm == want_spacing == (camus_fixtures.ROW_MM, camus_fixtures.COL_MM)


def test_oblique_transposed_flipped_frame_round_trip_is_exact(tmp_path):
  record, stored, data, affine = oblique_frame()
  transform = orient.to_camus(affine, 2)
  # By hand: data axis 0 runs along -y (reversed depth) -> CAMUS axis 1, flipped; data
  # axis 1 runs along +x -> CAMUS axis 0.
  np.testing.assert_array_equal(transform, [(1, -1), (0, 1)])
  np.testing.assert_array_equal(orient.apply(data, transform), stored)
  # The reoriented array keeps every voxel's world position: its affine is the CAMUS
  # affine, rotated like the input's.
  np.testing.assert_allclose(orient.camus_affine(affine, transform, data.shape),
                             rotation(25, 10) @ CAMUS_AFFINE, atol=1e-12)
  path = tmp_path / "oblique.nii.gz"
  nib.save(nib.Nifti1Image(data, affine), path)
  frame = io.read_frame(str(path), "")
  np.testing.assert_array_equal(frame.image, record["image"])  # What the model trains on.
  assert frame.spacing_mm == pytest.approx((camus_fixtures.ROW_MM, camus_fixtures.COL_MM))
  # The ground-truth LV mask in the CAMUS layout, written back: on the input's voxels.
  lv = (record["label"] == 1).astype(np.uint8)
  io.write_mask(frame, lv, str(tmp_path / "oblique_mask.nii.gz"))
  back = nib.load(tmp_path / "oblique_mask.nii.gz")
  np.testing.assert_allclose(back.affine, affine, atol=1e-6)
  lv_in_data_layout = lv[::-1, :]  # The same index map as the image: depth reversed.
  np.testing.assert_array_equal(np.asanyarray(back.dataobj), lv_in_data_layout)
  assert lv.sum() > 100


def test_a_reoriented_loop_round_trip_is_exact():
  rng = np.random.default_rng(1)
  stored = rng.integers(0, 255, (20, 30, 4), dtype=np.uint8)  # (width, depth, frames).
  data = np.ascontiguousarray(np.transpose(stored, (1, 0, 2))[:, ::-1])  # (depth, width-rev).
  index_map = np.array([[0, -1, 0, 19], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
  affine = rotation(-20, 5) @ np.diag([0.3, 0.2, 1.0, 1.0]) @ index_map
  transform = orient.to_camus(affine, 3)
  np.testing.assert_array_equal(orient.apply(data, transform), stored)
  ref = nib.Nifti1Image(data, affine)
  np.testing.assert_array_equal(orient.put_back(stored, ref), data)
  assert orient.zooms_to_camus(ref.header.get_zooms(), transform)[:2] == pytest.approx(
      [0.3, 0.2])
