"""NIfTI frames in the CAMUS layout, whatever the file's axis order, and masks put back.

The CAMUS NIfTI release stores a frame (width, depth[, frames]) with a diagonal affine:
array axis 0 runs along world x, axis 1 along world y. Its reader (data.camus) transposes
that to (depth, width), the layout every model is trained on (rows = depth, apex at the
top). A file saved in another axis order or direction (transposed, flipped, or resampled by
a tool that reorients) keeps its geometry in the affine, so the affine says how to bring
it to the CAMUS layout:

- nibabel.io_orientation gives, per array axis, the nearest world axis and its direction.
  For an oblique affine (a rotation not aligned with the axes) that is the nearest axis:
  the frame is permuted and flipped, never resampled, so it reaches the model up to the
  leftover rotation (under 45 degrees).
- The in-plane axis nearer world x (else y, then z) becomes the width, the other the depth.
- A diagonal affine is identity in NIfTI's RAS world when positive (nibabel writes those)
  and identity in ITK's LPS world when x and y are negative (SimpleITK writes an identity
  direction that way, e.g. a 2019 .mhd frame converted to NIfTI). Both are the CAMUS
  layout; the CAMUS release is one of them. Each axis is flipped towards whichever of the
  two needs fewer flips (RAS on a tie), so both arrive untouched: a CAMUS file gives the
  same array as before.
- A frame axis (a loop's third axis) is never moved.

The mask is written with the inverse permutation and flips, into the input's own array
layout and affine, so it lands on the voxels it was predicted for.
"""

from __future__ import annotations

import os
import pathlib

import nibabel as nib
import numpy as np
from nibabel import orientations

from echokld.data import camus
from echokld.errors import InputError

# Sign of the identity direction per world axis (x, y, z) in NIfTI's RAS and ITK's LPS.
RAS_SIGNS = (1.0, 1.0, 1.0)
LPS_SIGNS = (-1.0, -1.0, 1.0)


def to_camus(affine: np.ndarray, ndim: int) -> np.ndarray:
  """The nibabel orientation transform ((ndim, 2): [new axis, flip]) that brings an array of
  `ndim` (2 or 3) axes stored under `affine` to the CAMUS stored layout (width, depth[, frames]).

  Axis 2, when present, is the frame axis and stays put.
  """
  ornt = nib.io_orientation(np.asarray(affine, np.float64))
  world, signs = ornt[:2, 0], ornt[:2, 1]
  if np.isnan(world).any():  # A degenerate affine (zero column): nothing to go by.
    world, signs = np.array([0.0, 1.0]), np.array([1.0, 1.0])
  order = np.argsort(world, kind="stable")  # order[k] = input axis that becomes axis k.
  flips = {}
  for target in (RAS_SIGNS, LPS_SIGNS):
    flips[target] = [signs[i] * target[int(world[i])] for i in range(2)]
  ras, lps = flips[RAS_SIGNS], flips[LPS_SIGNS]
  chosen = ras if sum(f < 0 for f in ras) <= sum(f < 0 for f in lps) else lps
  transform = np.zeros((ndim, 2))
  for new, old in enumerate(order):
    transform[old] = (new, chosen[old])
  if ndim > 2:
    transform[2:] = [(k, 1.0) for k in range(2, ndim)]
  return transform


def inverse(transform: np.ndarray) -> np.ndarray:
  """The transform that undoes `transform` (apply_orientation of one after the other is the
  identity)."""
  back = np.zeros_like(transform)
  for old, (new, flip) in enumerate(transform):
    back[int(new)] = (old, flip)
  return back


def apply(data: np.ndarray, transform: np.ndarray) -> np.ndarray:
  """apply_orientation, contiguous (a copy only when axes move)."""
  if np.array_equal(transform, [(k, 1.0) for k in range(len(transform))]):
    return data
  return np.ascontiguousarray(orientations.apply_orientation(data, transform))


def zooms_to_camus(zooms: tuple[float, ...], transform: np.ndarray) -> list[float]:
  """Per-axis voxel sizes reordered with the axes (flips do not change a size)."""
  out = list(zooms)
  for old, (new, _) in enumerate(transform[:len(zooms)]):
    out[int(new)] = zooms[old]
  return out


def camus_affine(affine: np.ndarray, transform: np.ndarray, shape: tuple[int, ...]
                 ) -> np.ndarray:
  """The affine of the reoriented array: the same world position for every voxel."""
  if len(transform) == 2:  # A 2-D frame: its slice axis stays put.
    transform, shape = np.vstack([transform, [(2, 1.0)]]), tuple(shape) + (1,)
  return np.asarray(affine) @ orientations.inv_ornt_aff(transform, shape)


def _squeezed_ndim(shape: tuple[int, ...]) -> int:
  """Axes left once trailing 1s are dropped (as data.camus does), at least 2."""
  shape = list(shape)
  while len(shape) > 2 and shape[-1] == 1:
    shape.pop()
  return len(shape)


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float]]:
  """A NIfTI frame or loop in the CAMUS stored layout (width, depth[, frames]) and its
  (row, col) = (depth, width) spacing in mm; arrays of over 3 axes come back as stored
  (the callers refuse them)."""
  data, (row, col) = camus.read_nifti_stored(pathlib.Path(path))
  if data.ndim > 3:
    return data, (row, col)
  try:
    affine = nib.load(os.fspath(path)).affine  # The header only: the data was read above.
    transform = to_camus(affine, data.ndim)
  except Exception as exc:  # pylint: disable=broad-except  # A NaN affine, a header race.
    raise InputError(path, "cannot read an orientation from the NIfTI affine "
                     f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
  col, row = zooms_to_camus((col, row), transform)[:2]
  return apply(data, transform), (row, col)


def put_back(stored: np.ndarray, ref: nib.Nifti1Image) -> np.ndarray:
  """A (width, depth[, frames]) array in the CAMUS layout, in `ref`'s own array layout and
  shape: the inverse of read_nifti's reorientation."""
  ndim = _squeezed_ndim(ref.shape)
  data = apply(stored, inverse(to_camus(ref.affine, ndim))) if ndim <= 3 else stored
  return np.ascontiguousarray(data).reshape(ref.shape)
