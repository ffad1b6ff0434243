"""The report of one training group's runs: the paper's Tables 1-8 and Figures 5-14.

Reads every finished run of a sweep (study.sweep) and writes report.md, one CSV per table
and PNG figures (panels: study.panels). Several seeds: only seeds every model finished are
used, per-image scores are averaged over them for the paired tests and ranks, and the
per-run test Dice is summarized as mean ± std with a bootstrap CI.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Sequence

import numpy as np

from echokld.errors import InputError
from echokld.evaluation.test_set import is_empty
from echokld.study import panels, protocol, shape, stats
from echokld.study.markdown import (ORDINALS, fmt, md_table, model_order, name, nanmean,
                                    ordered, p_relation, write_markdown)

QUALITY_ORDER = ("Poor", "Medium", "Good")
PAPER_TABLE = {"Poor": (1, 4), "Medium": (2, 5), "Good": (3, 6)}  # Metrics, pairwise.
ALL = "all"
PANEL_SIZE = 5


def _peak_gb(values: Sequence[int | None]) -> float:
  """Largest recorded value in GB; NaN when no run recorded one."""
  known = [v for v in values if v is not None]
  return max(known) / 1e9 if known else math.nan


class Report:
  """Collects report.md sections while writing CSVs and PNGs into the output folder."""

  def __init__(self, sweep_dir: str, out: str, runs: dict | None = None,
               train_group: str = ALL):
    self.runs = stats.load_sweep(sweep_dir) if runs is None else runs
    self.sweep_dir, self.out, self.train_group = sweep_dir, out, train_group
    try:
      os.makedirs(out, exist_ok=True)
    except OSError as exc:
      raise InputError(out, f"cannot create the output folder ({exc.strerror})") from None
    self.seeds, self.dropped = stats.common_seeds(self.runs)
    if not self.seeds:
      raise InputError(sweep_dir, "no seed has a finished run for every model")
    self.models = ordered({m for m, _ in self.runs}, model_order())
    self.groups = ordered({r["quality"] for k in self.used for r in self.runs[k]["rows"]},
                          QUALITY_ORDER)
    # Group runs test on their own group only, where an "all" table would repeat it.
    self.table_groups = self.groups + [ALL] if train_group == ALL else self.groups
    self.md: list[str] = []

  @property
  def used(self) -> list[tuple[str, int]]:
    return [(m, s) for m in self.models for s in self.seeds]

  def write_csv(self, filename: str, header: Sequence[str], rows: list[Sequence[Any]]) -> str:
    with open(os.path.join(self.out, filename), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows([[fmt(v, 6) for v in row] for row in rows])
    return filename

  def scores(self, metric: str, group: str) -> tuple[list[str], dict[str, np.ndarray]]:
    return stats.per_image_scores(self.runs, self.models, self.seeds, metric,
                                  None if group == ALL else group)

  def pooled(self, model: str, group: str) -> list[dict[str, Any]]:
    return [r for s in self.seeds for r in self.runs[(model, s)]["rows"]
            if group == ALL or r["quality"] == group]

  # Sections, in the order they appear in report.md.

  def header(self) -> None:
    lines = [f"# Sweep report: {os.path.abspath(self.sweep_dir)}", "",
             f"Models: {', '.join(f'{name(m)} (`{m}`)' for m in self.models)}. "
             f"Seeds used: {', '.join(map(str, self.seeds))}. Test quality groups: "
             f"{', '.join(self.groups)}."]
    if self.train_group != ALL:
      lines.append(f"Every run here was trained, validated and tested on "
                   f"{self.train_group}-quality frames only, as in the paper.")
    if self.dropped:
      lines.append("Left out (their seed is not finished for every model): " + ", ".join(
          f"`{os.path.basename(self.runs[k]['path'])}`" for k in self.dropped) + ".")
    lines += protocol.describe(self.sweep_dir, [(m, self.runs[(m, s)].get("config", {}))
                                                for m, s in self.used])
    lines += ["", "Method notes: paired tests are two-sided Wilcoxon signed-rank tests "
              "(scipy defaults: zero differences dropped, exact p for small samples without "
              "ties, normal approximation otherwise; all differences zero gives p = 1). "
              "Holm's adjustment runs over the pairs of one table. Ranks use "
              "`scipy.stats.rankdata(method='min')`: tied models share the better rank. "
              "An empty prediction counts in every mean with Dice 0 and MHD = the image "
              "diagonal (the largest distance possible; echokld/evaluation/metrics.py), and "
              "the Empty columns count them (runs written before this rule left its "
              "distances NaN, which the means skip)."]
    if len(self.seeds) > 1:
      lines.append(f"With {len(self.seeds)} seeds, per-image scores are averaged over the "
                   "seeds before the paired tests, ranks and panels; Tables 1–3 pool every "
                   "(seed, frame) evaluation. Under the paper split the test frames depend "
                   "on the seed, so a case is averaged over the seeds that tested it.")
    self.md += lines + [""]

  def seed_summary(self) -> None:
    rows = []
    for m in self.models:
      runs = [self.runs[(m, s)]["summary"] for s in self.seeds]
      dice = [r["test"]["dice"] for r in runs]
      mean, std = stats.seed_summary(dice)
      lo, hi = stats.bootstrap_ci(dice)
      val_mean, val_std = stats.seed_summary([r["val"]["best_dice"] for r in runs])
      rows.append([m, len(runs), mean, std, lo, hi, val_mean, val_std,
                   float(np.mean([r["epochs"] for r in runs]))])
    f = self.write_csv("summary.csv", ["model", "runs", "test_dice_mean", "test_dice_std",
                                       "test_dice_ci_low", "test_dice_ci_high",
                                       "val_best_dice_mean", "val_best_dice_std",
                                       "epochs_mean"], rows)
    table = [["Model", "Runs", "Test Dice mean ± std", "95% bootstrap CI",
              "Best val Dice mean ± std", "Epochs"]]
    for r in rows:
      table.append([name(r[0]), str(r[1]), f"{fmt(r[2])} ± {fmt(r[3]) or '–'}",
                    f"[{fmt(r[4])}, {fmt(r[5])}]" if r[1] > 1 else "–",
                    f"{fmt(r[6])} ± {fmt(r[7]) or '–'}", fmt(r[8], 1)])
    self.md += ["## Summary over seeds (per-run mean test Dice)", "",
                "Std uses ddof = 1; the CI is a percentile bootstrap (10 000 resamples) of "
                "the mean of the per-run test Dice, which undercovers with few seeds.", "",
                md_table(table), "", f"CSV: `{f}`", ""]

  def metrics_tables(self) -> None:
    self.md += ["## Tables 1–3 analogue: recall, Dice and MHD per quality group", "",
                "Means over all test frames of the group (pooled over seeds); the paper's "
                "Tables 1–3 show five example images, given here as a five-image panel: "
                "the frames whose seed-averaged Dice differs most across models.", ""]
    for group in self.table_groups:
      number = PAPER_TABLE.get(group, (None,))[0]
      title = f"Table {number} analogue: " if number else ""
      rows = []
      for m in self.models:
        pooled = self.pooled(m, group)
        rows.append([m, len(pooled), *(nanmean([r[k] for r in pooled]) for k in
                                       ("recall", "dice", "mhd_px", "mhd_mm")),
                     sum(1 for r in pooled if is_empty(r))])
      f = self.write_csv(f"metrics_{group.lower()}.csv", ["model", "frames", "recall",
                                                          "dice", "mhd_px", "mhd_mm",
                                                          "empty_predictions"], rows)
      frames = "Frames" if len(self.seeds) == 1 else "Frames × seeds"
      table = [["Model", frames, "Rec", "Dice", "MHD px ↓", "MHD mm ↓", "Empty"]]
      table += [[name(r[0]), str(r[1]), *(fmt(v) for v in r[2:6]), str(r[6])] for r in rows]
      self.md += [f"### {title}{group} quality" if group != ALL else "### All test frames",
                  "", md_table(table), "", f"CSV: `{f}`", ""]
      if group != ALL:
        self.panel(group)

  def panel(self, group: str) -> None:
    cases, dice = self.scores("dice", group)
    if not cases:
      return
    per = {k: self.scores(k, group)[1] for k in ("recall", "mhd_px")}
    matrix = np.stack([dice[m] for m in self.models])
    spread = np.nanmax(matrix, axis=0) - np.nanmin(matrix, axis=0)
    top = np.argsort(-spread, kind="stable")[:PANEL_SIZE]
    rows = [[rank + 1, cases[i], m, per["recall"][m][i], dice[m][i], per["mhd_px"][m][i],
             spread[i]] for rank, i in enumerate(top) for m in self.models]
    f = self.write_csv(f"panel_{group.lower()}.csv", ["image", "case", "model", "recall",
                                                      "dice", "mhd_px", "dice_spread"], rows)
    table = [["Model"] + [f"Img {k + 1} {x}" for k in range(len(top))
                          for x in ("Rec", "Dice", "MHD")]]
    for m in self.models:
      table.append([name(m)] + [fmt(v, 3) for i in top for v in
                                (per["recall"][m][i], dice[m][i], per["mhd_px"][m][i])])
    self.md += [f"Five-image panel ({group}): " + ", ".join(
        f"Img {k + 1} = `{cases[i]}`" for k, i in enumerate(top)) + ".", "",
                md_table(table), "", f"CSV: `{f}`", ""]

  def pairwise_tables(self) -> None:
    self.md += ["## Tables 4–6 analogue: pairwise Wilcoxon tests on Dice", "",
                "Upper triangle: raw p-values (bold: p < 0.05), as in the paper; lower "
                "triangle: median(row) − median(column) of the per-image Dice. The CSV adds "
                "Holm-adjusted p-values, pair counts and the median of paired differences.",
                ""]
    if len(self.models) < 2:
      self.md += ["Skipped: the paired tests need at least two models.", ""]
      return
    for group in self.table_groups:
      cases, dice = self.scores("dice", group)
      number = PAPER_TABLE.get(group, (None, None))[1]
      heading = (f"### Table {number} analogue: {group} quality" if number else
                 "### All test frames" if group == ALL else f"### {group} quality")
      if not cases:
        self.md += [heading, "", "No shared test frames.", ""]
        continue
      table = stats.pairwise_table(dice, "dice")
      f = self.write_csv(f"pairwise_{group.lower()}.csv",
                         list(table.long_rows()[0]), [list(r.values())
                                                      for r in table.long_rows()])
      significant = [f"{name(r['model_a'])} vs {name(r['model_b'])} "
                     f"(p_Holm {p_relation(r['p_holm'])})"
                     for r in table.long_rows() if r["p_holm"] < 0.05]
      self.md += [heading, "", f"{len(cases)} images.", "",
                  md_table(table.cells([name(m) for m in self.models])), "",
                  "Significant after Holm: " + ("; ".join(significant) or "none") + ".",
                  "", f"CSV: `{f}`", ""]

  def rank_table(self) -> None:
    k = len(self.models)
    shown = min(k, len(ORDINALS))
    csv_rows, counts, totals = [], {}, {}
    for group in self.table_groups:
      cases, dice = self.scores("dice", group)
      counts[group], totals[group] = stats.rank_distribution(dice), len(cases)
      csv_rows += [[group, m, len(cases), *counts[group][m]] for m in self.models]
    f = self.write_csv("ranks.csv", ["quality", "model", "images",
                                     *(f"rank_{r}" for r in range(1, k + 1))], csv_rows)
    table = [["Model"] + [f"{g.capitalize()} {ORDINALS[r]}" for g in self.table_groups
                          for r in range(shown)]]
    for m in self.models:
      table.append([name(m)] + [str(counts[g][m][r]) for g in self.table_groups
                                for r in range(shown)])
    table.append(["Images"] + [str(totals[g]) if r == 0 else "" for g in
                               self.table_groups for r in range(shown)])
    self.md += ["## Table 7 analogue: ranking distribution (Dice, per image)", "",
                "How often each model ranks 1st, 2nd, 3rd by seed-averaged Dice (ties share "
                "the better rank). The CSV has every rank.", "", md_table(table), "",
                f"CSV: `{f}`", ""]

  def timing_table(self) -> None:
    rows = []
    for m in self.models:
      per_run, params, speed, epochs, host, device = [], [], [], [], [], []
      for s in self.seeds:
        run = self.runs[(m, s)]
        timed = run["history"][1:] or run["history"]  # Epoch 1 includes compilation.
        if timed:
          per_run.append(float(np.mean([h["epoch_seconds"] for h in timed])))
        params.append(run["summary"]["num_params"])
        speed.append(run["summary"]["train_images_per_second"])
        epochs.append(run["summary"]["epochs"])
        memory = run["summary"].get("memory") or {}  # Absent in older runs.
        host.append(memory.get("host_peak_bytes"))
        device.append(memory.get("device_peak_bytes"))
      rows.append([m, len(params), nanmean(per_run), min(per_run, default=math.nan),
                   max(per_run, default=math.nan), int(max(params)), nanmean(speed),
                   float(np.mean(epochs)), _peak_gb(host), _peak_gb(device)])
    f = self.write_csv("timing.csv", ["model", "runs", "seconds_per_epoch",
                                      "seconds_per_epoch_min", "seconds_per_epoch_max",
                                      "num_params", "train_images_per_second",
                                      "epochs_mean", "host_peak_gb", "device_peak_gb"], rows)
    table = [["Model", "Time (s/epoch) mean", "range over runs", "Params", "Images/s",
              "Epochs", "RAM peak (GB)", "Device memory peak (GB)"]]
    table += [[name(r[0]), fmt(r[2], 2), f"{fmt(r[3], 2)}–{fmt(r[4], 2)}", f"{r[5]:,}",
               fmt(r[6], 1), fmt(r[7], 1), fmt(r[8], 2) or "–", fmt(r[9], 2) or "–"]
              for r in rows]
    self.md += ["## Table 8 analogue: cost per model", "",
                "Seconds per epoch: mean `epoch_seconds` of metrics.jsonl without epoch 1 "
                "(it includes compilation). Memory: the largest peak over the runs, in GB "
                "(10^9 bytes), of the training process (summary.json `memory`): host RAM "
                "is the peak resident set size (getrusage), device memory JAX's "
                "`peak_bytes_in_use` (– where the backend reports none, as on CPU, or the "
                "run predates it). Seeds trained as one program share one process and so "
                "one peak.", "",
                md_table(table), "", f"CSV: `{f}`", ""]

  def figures(self) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(self.models)}
    self.md += ["## Figures 8–10 analogue: validation Dice per epoch", "",
                "Thin lines: single seeds; thick: mean over seeds at each epoch. " + (
                    "The runs validate on all their quality groups at once, so there is "
                    "one figure, not one per group." if self.train_group == ALL else
                    f"The runs validate on {self.train_group}-quality frames only."), ""]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in self.models:
      curves: dict[int, list[float]] = {}
      for s in self.seeds:
        hist = self.runs[(m, s)]["history"]
        if len(self.seeds) > 1:
          ax.plot([h["epoch"] for h in hist], [h["val_dice"] for h in hist], lw=0.6,
                  alpha=0.4, color=colors[m])
        for h in hist:
          curves.setdefault(int(h["epoch"]), []).append(float(h["val_dice"]))
      epochs = sorted(curves)
      ax.plot(epochs, [np.mean(curves[e]) for e in epochs], lw=2, color=colors[m],
              label=name(m))
    ax.set(xlabel="epoch", ylabel="validation Dice", title="Validation Dice" + (
        "" if self.train_group == ALL else f" ({self.train_group}-quality runs)"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    self._save(fig, "fig_val_dice.png")
    self.md += ["![validation Dice](fig_val_dice.png)", "",
                "## Figures 11–13 analogue: test Dice per image", "",
                "Box plots of the seed-averaged per-image test Dice, points jittered.", ""]
    rng = np.random.default_rng(0)
    for group in self.table_groups:
      cases, dice = self.scores("dice", group)
      if not cases:
        continue
      fig, ax = plt.subplots(figsize=(1.1 * len(self.models) + 2, 4.5))
      data = [dice[m][np.isfinite(dice[m])] for m in self.models]
      ax.boxplot(data, showfliers=False)
      for i, (m, values) in enumerate(zip(self.models, data)):
        ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(values)), values, s=8,
                   color=colors[m], alpha=0.7)
      ax.set_xticks(range(1, len(self.models) + 1), [name(m) for m in self.models],
                    rotation=30, ha="right")
      label = "all test frames" if group == ALL else f"{group}-quality test frames"
      ax.set(ylabel="test Dice", title=f"Dice on {label} ({len(cases)} images)")
      filename = f"fig_test_dice_{group.lower()}.png"
      self._save(fig, filename)
      self.md += [f"![test Dice, {label}]({filename})", ""]
    self.md += ["## Figures 5–7 and 14 analogue: segmentations of median and worst frames",
                ""]
    for group in self.groups:
      cases, dice = self.scores("dice", group)
      self.md += panels.panel_section(self.runs, self.models, self.seeds, group, cases,
                                      dice, self.out, name)

  def _save(self, fig: Any, filename: str) -> None:
    from matplotlib import pyplot as plt
    fig.tight_layout()
    fig.savefig(os.path.join(self.out, filename), dpi=110)
    plt.close(fig)

  def write(self) -> str:
    self.header()
    self.seed_summary()
    self.metrics_tables()
    self.pairwise_tables()
    self.rank_table()
    self.md += shape.section(self)
    self.timing_table()
    self.figures()
    return write_markdown(self.out, self.md)
