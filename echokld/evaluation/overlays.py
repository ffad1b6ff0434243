"""Contour overlays: a frame in grey with LV outlines drawn in colour (prediction, TensorBoard)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

PREDICTION_RGB = (255, 40, 40)
TRUTH_RGB = (40, 220, 40)


def contour(mask: np.ndarray) -> np.ndarray:
  """The mask's boundary pixels (inside the mask, next to the outside or the image edge)."""
  mask = np.asarray(mask, bool)
  return mask & ~ndimage.binary_erosion(mask, border_value=0)


def overlay(grey: np.ndarray, masks: Sequence[np.ndarray],
            colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
  """(H, W, 3) uint8: the uint8 frame in grey, each mask's contour in its colour (later on top)."""
  rgb = np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=-1)
  for mask, colour in zip(masks, colours):
    rgb[contour(mask)] = colour
  return rgb
