"""The report's shape section: the paper's "smoother, anatomically plausible" claim as numbers.

Per model and test group: empty, fragmented (more than one 8-connected component) and holed
predictions, the mean components and holes, and the contour ratio (contour length over its
convex hull's perimeter, 1 for a convex outline; evaluation.metrics) beside the ground
truth's own; then the paired Wilcoxon tests of the per-image contour ratio, as Tables 4-6
test Dice. Runs written before these columns existed have them NaN: blank cells.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from echokld.evaluation.test_set import is_empty
from echokld.study import stats
from echokld.study.markdown import fmt, md_table, name, nanmean, p_relation

HEADER = ["model", "frames", "empty_predictions", "fragmented_predictions",
          "predictions_with_holes", "components_mean", "holes_mean", "contour_ratio_mean",
          "truth_contour_ratio_mean"]


def shape_row(model: str, rows: Sequence[dict[str, Any]]) -> list[Any]:
  """One CSV row of HEADER from a model's pooled per-frame rows."""
  def count(test) -> int | str:
    values = [r.get(k, math.nan) for r in rows for k in ("components", "holes")]
    return "" if all(math.isnan(v) for v in values) else sum(1 for r in rows if test(r))
  return [model, len(rows), sum(is_empty(r) for r in rows),
          count(lambda r: r["components"] > 1), count(lambda r: r["holes"] > 0),
          *(nanmean([r.get(k, math.nan) for r in rows])
            for k in ("components", "holes", "contour_ratio", "truth_contour_ratio"))]


def section(report: Any) -> list[str]:
  """report.md lines (and CSVs) of the shape section for a study.report.Report."""
  md = ["## Shape: fragments, holes and contour smoothness", "",
        "The paper's claim that the KL constraints give \"smoother and more anatomically "
        "plausible segmentations\" (§5), in numbers. Fragmented: more than one 8-connected "
        "component; holes: enclosed 4-connected background regions. Contour ratio: length "
        "of the largest component's outline (holes filled) over its convex hull's "
        "perimeter; 1 for a convex outline, about 1.05 for a digitised disk, higher for "
        "jagged or indented outlines; the mean is over non-empty predictions; compare it "
        "with the ground truth's (GT ratio). Counts and means pool seeds.", ""]
  for group in report.table_groups:
    rows = [shape_row(m, report.pooled(m, group)) for m in report.models]
    f = report.write_csv(f"shape_{group.lower()}.csv", HEADER, rows)
    frames = "Frames" if len(report.seeds) == 1 else "Frames × seeds"
    table = [["Model", frames, "Empty", "Fragmented", "With holes", "Components",
              "Holes", "Contour ratio ↓", "GT ratio"]]
    table += [[name(r[0]), *(str(v) for v in r[1:5]), *(fmt(v, 3) for v in r[5:])]
              for r in rows]
    md += [f"### {group} quality" if group != stats.ALL else "### All test frames", "",
           md_table(table), "", f"CSV: `{f}`", ""]
    md += _pairwise(report, group)
  return md


def _pairwise(report: Any, group: str) -> list[str]:
  """Wilcoxon tests of the seed-averaged per-image contour ratio between models."""
  if len(report.models) < 2:
    return []
  cases, ratio = report.scores("contour_ratio", group)
  if not cases or not any(math.isfinite(v) for values in ratio.values() for v in values):
    return ["No per-image contour ratios to compare (runs written before they were "
            "recorded).", ""]
  table = stats.pairwise_table(ratio, "contour_ratio")
  f = report.write_csv(f"pairwise_contour_ratio_{group.lower()}.csv",
                       list(table.long_rows()[0]),
                       [list(r.values()) for r in table.long_rows()])
  significant = [f"{name(r['model_a'])} vs {name(r['model_b'])} "
                 f"(p_Holm {p_relation(r['p_holm'])})"
                 for r in table.long_rows() if r["p_holm"] < 0.05]
  return [f"Contour ratio, pairwise Wilcoxon over {len(cases)} images (upper: p; lower: "
          "median(row) − median(column), negative = row smoother; images where a model "
          "predicted nothing are left out of its pairs):", "",
          md_table(table.cells([name(m) for m in report.models])), "",
          "Significant after Holm: " + ("; ".join(significant) or "none") + ".", "",
          f"CSV: `{f}`", ""]
