"""Per-model inputs beyond the image: the distribution parameters of Models 6 and 7.

`make_extras` returns (extras_fn, inject_fn): extras_fn(images, masks) gives the train
step's `dist_inject` (bottleneck input) and `dist_target` (alignment target); inject_fn(images)
gives the evaluation-time injection, where no ground truth exists.
"""

from __future__ import annotations

from typing import Any, Callable

from echokld.data.pipeline import ArraySplit


def make_extras(config: Any, train: ArraySplit) -> tuple[Callable | None, Callable | None]:
  if not (config.model.inject_dist or config.model.dist_head):
    return None, None
  raise NotImplementedError("distribution injection arrives with Models 6 and 7")
