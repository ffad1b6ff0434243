"""Markdown and number formatting shared by the sweep report and the study overview."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from echokld import registry

ORDINALS = ("1st", "2nd", "3rd")


def model_order() -> tuple[str, ...]:
  """Registered models in the paper's order; report rows follow it."""
  return tuple(registry.names())


def ordered(items: Sequence[str], order: Sequence[str]) -> list[str]:
  """Known names in the paper's order, then the others alphabetically."""
  known = [x for x in order if x in items]
  return known + sorted(x for x in set(items) if x not in order)


def name(model: str) -> str:
  """The model's display name (the paper's), or its name when it is not registered."""
  return registry.display_name(model)


def fmt(value: Any, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ""
  return f"{value:.{digits}f}" if isinstance(value, (float, np.floating)) else str(value)


def md_table(rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def p_relation(p: float) -> str:
  return "< 0.0001" if p < 1e-4 else f"= {p:.4f}"


def nanmean(values: Sequence[float]) -> float:
  finite = [v for v in values if math.isfinite(v)]
  return sum(finite) / len(finite) if finite else float("nan")


def write_markdown(out: str, lines: Sequence[str]) -> str:
  """Writes the collected sections as OUT/report.md; returns its path."""
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path
