"""Report of a sweep with quality-group runs: one full report per training group, one overview.

`python -m echokld.report` calls write_study when the sweep holds `<model>_<group>_seed<N>/`
runs (experiments/sweep.py --groups). Each training group (Poor, Medium, Good as in the
paper, and `all` if present) gets OUT/<group>/report.md from its own runs only: the
analogues of Tables 1-3 (metrics), 4-6 (pairwise Wilcoxon), 7 (ranks), 8 (cost) and
Figures 5-14. OUT/report.md puts the groups side by side: test Dice per model and group,
convergence, the paper's Table 7 layout, KLD-alpha against every other model with Holm's
correction, the paper's claims with verdicts, power, stopping and cost (claims.py),
and the qualitative panels.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

import numpy as np

from echokld.errors import InputError
from echokld.evaluation.test_set import is_empty
from echokld.study import claims, protocol, stats
from echokld.study.markdown import (ORDINALS, fmt, md_table, model_order, name, nanmean,
                                    ordered, write_markdown)
from echokld.study.report import Report

ORDER = (*stats.QUALITY_GROUPS, stats.ALL)
FOCUS = "kld_alpha"  # The paper's best model, compared with every other one.


def _label(group: str) -> str:
  return "all frames" if group == stats.ALL else f"{group}-quality"


def _p(p: float) -> str:
  return "n/a" if not np.isfinite(p) else "<0.0001" if p < 1e-4 else f"{p:.4f}"


class Study:
  """Writes every training group's report, then the overview report.md."""

  def __init__(self, sweep_dir: str, out: str, by_group: dict | None = None):
    self.sweep_dir, self.out = sweep_dir, out
    by_group = stats.load_sweep_groups(sweep_dir) if by_group is None else by_group
    try:
      os.makedirs(out, exist_ok=True)
    except OSError as exc:
      raise InputError(out, f"cannot create the output folder ({exc.strerror})") from None
    self.reports: dict[str, Report] = {}
    self.skipped: dict[str, str] = {}
    for group in ordered(list(by_group), ORDER):
      try:
        self.reports[group] = Report(sweep_dir, os.path.join(out, group.lower()),
                                     runs=by_group[group], train_group=group)
      except InputError as exc:
        self.skipped[group] = exc.what
    if not self.reports:
      raise InputError(sweep_dir, "no training group has a seed finished by every model")
    self.models = ordered({m for r in self.reports.values() for m in r.models},
                          model_order())
    self.md: list[str] = []

  def write_csv(self, filename: str, header: Sequence[str], rows: list[list[Any]]) -> str:
    with open(os.path.join(self.out, filename), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows([[fmt(v, 6) for v in row] for row in rows])
    return filename

  def header(self) -> None:
    lines = [f"# Study report: {os.path.abspath(self.sweep_dir)}", "",
             "Each model was trained, validated and tested on one training group at a time "
             "(the paper's protocol for its quality groups). Full report per group, from "
             "that group's runs only:"]
    for group, rep in self.reports.items():
      lines.append(f"- [{_label(group)}]({group.lower()}/report.md): "
                   f"{len(rep.models)} models, seeds {', '.join(map(str, rep.seeds))}.")
    lines += [f"- {_label(g)}: skipped ({why})." for g, why in self.skipped.items()]
    lines += [""] + protocol.describe(self.sweep_dir, [
        (m, rep.runs[(m, s)].get("config", {})) for rep in self.reports.values()
        for m, s in rep.used])
    self.md += lines + [""]

  def summary(self) -> None:
    rows = []
    for group, rep in self.reports.items():
      for m in rep.models:
        runs = [rep.runs[(m, s)] for s in rep.seeds]
        dice_mean, dice_std = stats.seed_summary([r["summary"]["test"]["dice"] for r in runs])
        mhd = stats.seed_summary([r["summary"]["test"].get("mhd_px") or np.nan
                                  for r in runs])[0]
        curve = [np.mean([h["val_dice"] for h in r["history"]]) if r["history"] else np.nan
                 for r in runs]
        pooled = [row for r in runs for row in r["rows"]]
        rows.append([group, m, len(runs), int(np.mean([len(r["rows"]) for r in runs])),
                     dice_mean, dice_std, mhd,
                     stats.seed_summary([r["summary"]["val"]["best_dice"] for r in runs])[0],
                     float(np.mean([r["summary"]["val"].get("best_epoch", np.nan)
                                    for r in runs])),
                     float(np.mean([r["summary"]["epochs"] for r in runs])),
                     float(np.nanmean(curve)), sum(is_empty(r) for r in pooled),
                     *(nanmean([r[k] for r in pooled]) for k in
                       ("components", "holes", "contour_ratio", "truth_contour_ratio"))])
    f = self.write_csv("study_summary.csv", [
        "group", "model", "runs", "test_frames", "test_dice_mean", "test_dice_std",
        "test_mhd_px_mean", "val_best_dice_mean", "best_epoch_mean", "epochs_mean",
        "val_dice_mean_over_epochs", "test_empty_predictions", "test_components_mean",
        "test_holes_mean", "test_contour_ratio_mean", "test_truth_contour_ratio_mean"], rows)
    by = {(r[0], r[1]): r for r in rows}
    groups = list(self.reports)
    best = {g: max((by[(g, m)][4] for m in self.models if (g, m) in by), default=np.nan)
            for g in groups}

    def cell(g: str, m: str, build) -> str:
      return build(by[(g, m)]) if (g, m) in by else "–"

    table = [["Model"] + [f"{_label(g)} ({by[(g, self.reports[g].models[0])][3]} frames)"
                          for g in groups]]
    for m in self.models:
      table.append([name(m)] + [cell(g, m, lambda r, g=g: (
          "**" if r[4] == best[g] else "") + f"{fmt(r[4])} ± {fmt(r[5]) or '–'}" + (
          "**" if r[4] == best[g] else "")) for g in groups])
    conv = [["Model"] + [f"{_label(g)} {x}" for g in groups for x in
                         ("best epoch", "mean val Dice")]]
    for m in self.models:
      conv.append([name(m)] + [v for g in groups for v in (
          cell(g, m, lambda r: f"{fmt(r[8], 1)} / {fmt(r[9], 0)}"),
          cell(g, m, lambda r: fmt(r[10])))])
    shape = [["Model"] + [f"{_label(g)} {x}" for g in groups for x in
                          ("empty", "components / holes", "contour ratio")]]
    for m in self.models:
      shape.append([name(m)] + [v for g in groups for v in (
          cell(g, m, lambda r: str(r[11])),
          cell(g, m, lambda r: f"{fmt(r[12], 2)} / {fmt(r[13], 2)}"),
          cell(g, m, lambda r: f"{fmt(r[14], 3)} (GT {fmt(r[15], 3)})"))])
    self.md += ["## Test Dice per training group (mean ± std over seeds)", "",
                "Per run: mean Dice over its test frames; bold: the best mean of the group.",
                "", md_table(table), "",
                "## Convergence", "",
                "Best epoch: the epoch of the best validation Dice / epochs run (mean over "
                "seeds). Mean val Dice: validation Dice averaged over all epochs of a run, "
                "then over seeds (higher = reached good Dice sooner). Descriptive only.", "",
                md_table(conv), "",
                "## Shape of the predictions per training group", "",
                "Empty predictions (over all runs; they count in the Dice and MHD means as "
                "Dice 0 and the image diagonal), mean components and holes of the predicted "
                "LV (1 / 0 is one solid region), and the mean contour ratio (1 for a convex "
                "outline; lower is smoother) beside the ground truth's. The group reports "
                "test the contour ratio pairwise.", "",
                md_table(shape), "", f"CSV: `{f}`", ""]

  def ranks(self) -> None:
    groups, rows, counts, totals = list(self.reports), [], {}, {}
    for g, rep in self.reports.items():
      cases, dice = rep.scores("dice", g)
      counts[g], totals[g] = stats.rank_distribution(dice), len(cases)
      rows += [[g, m, len(cases), *counts[g][m]] for m in rep.models]
    k = len(self.models)
    f = self.write_csv("study_ranks.csv", ["group", "model", "images",
                                           *(f"rank_{r}" for r in range(1, k + 1))],
                       [r + [""] * (3 + k - len(r)) for r in rows])
    table = [["Model"] + [f"{_label(g)} {ORDINALS[r]}" for g in groups for r in range(3)]]
    for m in self.models:
      table.append([name(m)] + [str(counts[g][m][r]) if m in counts[g] and
                                r < len(counts[g][m]) else "x"
                                for g in groups for r in range(3)])
    table.append(["Images"] + [str(totals[g]) if r == 0 else "" for g in groups
                               for r in range(3)])
    self.md += ["## Table 7 analogue: ranking distribution, each group's own runs", "",
                "Per test image, models ranked by seed-averaged Dice (ties share the better "
                "rank).", "", md_table(table), "", f"CSV: `{f}`", ""]

  def focus(self) -> None:
    if not any(FOCUS in r.models and len(r.models) > 1 for r in self.reports.values()):
      return
    rows, table_rows, pairs = [], {}, set()
    for g, rep in self.reports.items():
      if FOCUS not in rep.models or len(rep.models) < 2:
        continue
      _, dice = rep.scores("dice", g)
      pairs.add(len(rep.models) * (len(rep.models) - 1) // 2)
      for r in stats.pairwise_table(dice, "dice").long_rows():
        if FOCUS not in (r["model_a"], r["model_b"]):
          continue
        sign = 1 if r["model_a"] == FOCUS else -1
        other = r["model_b"] if sign == 1 else r["model_a"]
        diff = sign * r["median_a_minus_median_b"]
        rows.append([g, other, r["n"], diff, r["p_value"], r["p_holm"]])
        table_rows.setdefault(other, {})[g] = (
            f"{diff:+.4f} (p {_p(r['p_value'])}, Holm {_p(r['p_holm'])})" +
            (" *" if r["p_holm"] < 0.05 else ""))
    f = self.write_csv("study_kld_alpha.csv", ["group", "other_model", "images",
                                               "median_kld_alpha_minus_other", "p_value",
                                               "p_holm"], rows)
    groups = [g for g in self.reports if FOCUS in self.reports[g].models]
    table = [["KLD-alpha vs"] + [_label(g) for g in groups]]
    table += [[name(m)] + [cells.get(g, "–") for g in groups]
              for m, cells in sorted(table_rows.items(), key=lambda x:
                                     self.models.index(x[0]))]
    self.md += ["## KLD-alpha against every other model (Tables 4–6 analogue, extract)", "",
                "median(KLD-alpha Dice) − median(other), two-sided Wilcoxon signed-rank p "
                "over the group's test images (seed-averaged), and Holm's adjustment over "
                f"the group's {' or '.join(map(str, sorted(pairs)))} pairs (all pairs: the "
                "group reports). *: p_Holm < 0.05.", "",
                md_table(table), "", f"CSV: `{f}`", ""]

  def panels(self) -> None:
    self.md += ["## Figures 5–7 and 14 analogue: median and worst test frames", ""]
    for g, rep in self.reports.items():
      groups = rep.groups if g == stats.ALL else [g]
      for q in groups:
        path = f"{g.lower()}/fig_panel_{q.lower()}.png"
        if os.path.isfile(os.path.join(self.out, path)):
          self.md += [f"![{_label(g)} runs, {q} test frames]({path})", ""]
        else:
          self.md += [f"{_label(g)} runs, {q} frames: no panel (see "
                      f"[its report]({g.lower()}/report.md)).", ""]

  def write(self) -> str:
    for rep in self.reports.values():
      rep.write()
    self.header()
    self.summary()
    self.ranks()
    self.focus()
    self.md += claims.section({g: r.runs for g, r in self.reports.items()}, self.write_csv)
    self.panels()
    return write_markdown(self.out, self.md)


def write_study(sweep_dir: str, out: str) -> str:
  """Writes the per-group reports and the overview; returns the overview's path."""
  return Study(sweep_dir, out).write()
