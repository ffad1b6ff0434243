"""Frames of several splits stored once, so runs trained together share one device copy."""

from __future__ import annotations

import numpy as np

from echokld.data.pipeline import ArraySplit


class Pool:
  """`add(split)` returns the split's indices into the pool; equal frames are stored once.

  Frames are equal when case, image and mask all match (two seeds' splits of the synthetic
  set share case names but not pixels).
  """

  def __init__(self):
    self.images: list[np.ndarray] = []
    self.masks: list[np.ndarray] = []
    self._where: dict[str, list[int]] = {}

  def add(self, split: ArraySplit) -> np.ndarray:
    index = []
    for case, image, mask in zip(split.cases, split.images, split.masks):
      same = [p for p in self._where.get(case, []) if np.array_equal(self.images[p], image)
              and np.array_equal(self.masks[p], mask)]
      if not same:
        same = [len(self.images)]
        self.images.append(image)
        self.masks.append(mask)
        self._where.setdefault(case, []).append(same[0])
      index.append(same[0])
    return np.asarray(index, np.int32)

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) stacked: (N, H, W) uint8 each."""
    return np.stack(self.images), np.stack(self.masks)
