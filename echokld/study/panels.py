"""Qualitative panels (the paper's Figures 5-7 and 14): test frames with each model's contour.

One PNG per quality group: a row per chosen test frame (the frame with the median Dice, then
the worst frames, by Dice averaged over models and seeds), and columns input, ground truth,
then each model's predicted LV contour (red) over the input with the ground truth (green,
dashed). Images and masks come from each run's `test_predictions.npz` (written by
echokld.train at the model's input geometry); runs without it make the section say so.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from echokld.errors import InputError

PREDICTIONS = "test_predictions.npz"
ARRAYS = ("cases", "images", "masks", "pred")
WORST = 3  # Rows after the median frame.
CELL_INCHES = 1.5  # Width and height of one image cell.
LEFT_INCHES, TOP_INCHES = 0.5, 0.6  # Room for the row labels; for the title and headers.
DPI = 100
GT_COLOR, PRED_COLOR = "#33ff66", "#ff3333"


def load_predictions(run_dir: str) -> dict[str, np.ndarray] | None:
  """The run's test predictions {cases, images, masks, pred}; None when the file is absent."""
  path = os.path.join(run_dir, PREDICTIONS)
  if not os.path.isfile(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in ARRAYS}
  except (OSError, ValueError, KeyError) as exc:
    raise InputError(path, f"unreadable predictions ({type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:120]})") from None
  n = len(arrays["cases"])
  shapes = {k: arrays[k].shape for k in ARRAYS[1:]}
  if arrays["cases"].dtype.kind != "U" or len(set(shapes.values())) != 1 or \
      len(shapes["images"]) != 3 or shapes["images"][0] != n:
    raise InputError(path, f"expected unicode cases (N,) and images, masks, pred (N, H, W); "
                     f"got {arrays['cases'].dtype} {arrays['cases'].shape}, {shapes}")
  return arrays


def choose_cases(cases: Sequence[str], mean_dice: np.ndarray,
                 worst: int = WORST) -> list[tuple[str, str]]:
  """(label, case) rows: the median frame by mean Dice, then the `worst` lowest, no repeats.

  Ties are broken by case name (a stable sort of the sorted cases), so the choice is fixed.
  """
  values = np.where(np.isfinite(mean_dice), mean_dice, -np.inf)
  order = np.argsort(values, kind="stable")
  if not len(order):
    return []
  median = int(order[(len(order) - 1) // 2])
  rows = [(f"median ({values[median]:.3f})", cases[median])]
  for rank, i in enumerate(i for i in order if i != median):
    if rank == worst:
      break
    rows.append((f"worst {rank + 1} ({values[i]:.3f})", cases[i]))
  return rows


def figure_pixels(rows: int, models: int) -> tuple[int, int]:
  """(width, height) of a panel PNG with `rows` frames and `models` model columns."""
  return (round((LEFT_INCHES + CELL_INCHES * (models + 2)) * DPI),
          round((TOP_INCHES + CELL_INCHES * rows) * DPI))


def _contour(ax: Any, mask: np.ndarray, color: str, style: str, width: float) -> None:
  if mask.any() and not mask.all():
    ax.contour(mask.astype(float), levels=[0.5], colors=[color], linestyles=style,
               linewidths=width)


def draw(path: str, title: str, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
  """Writes the grid: rows of {label, image, mask, preds: [mask], dice: [float]}."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  width, height = figure_pixels(len(rows), len(columns))
  fig, axes = plt.subplots(len(rows), len(columns) + 2, squeeze=False,
                           figsize=(width / DPI, height / DPI), dpi=DPI)
  for r, row in enumerate(rows):
    cells = [("input", None, None), ("ground truth", row["mask"], None)] + [
        (name, pred, dice) for name, pred, dice in zip(columns, row["preds"], row["dice"])]
    for c, (name, pred, dice) in enumerate(cells):
      ax = axes[r, c]
      ax.imshow(row["image"], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 1:
        _contour(ax, row["mask"], GT_COLOR, "solid", 1.2)
      elif c > 1:
        _contour(ax, row["mask"], GT_COLOR, "dashed", 0.7)
        _contour(ax, pred, PRED_COLOR, "solid", 1.0)
      if r == 0:
        ax.set_title(name, fontsize=8)
      if dice is not None and np.isfinite(dice):
        ax.text(0.03, 0.04, f"Dice {dice:.3f}", transform=ax.transAxes, fontsize=7,
                color="white", bbox=dict(facecolor="black", alpha=0.6, pad=1.5, lw=0))
    axes[r, 0].set_ylabel(row["label"], fontsize=6)
  fig.suptitle(title, fontsize=9, y=1 - 0.08 / (height / DPI), va="top")
  fig.subplots_adjust(left=LEFT_INCHES * DPI / width, right=1 - 0.05 * DPI / width,
                      bottom=0.05 * DPI / height, top=1 - TOP_INCHES * DPI / height,
                      wspace=0.04, hspace=0.04)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def panel_section(runs: dict[tuple[str, int], dict[str, Any]], models: Sequence[str],
                  seeds: Sequence[int], group: str, cases: Sequence[str],
                  dice: dict[str, np.ndarray], out: str, name: Callable[[str], str]
                  ) -> list[str]:
  """Draws `fig_panel_<group>.png` into `out`; returns the report.md lines about it.

  `cases`/`dice` are the group's seed-averaged per-image Dice (stats.per_image_scores). A
  row shows the lowest seed whose runs of every model tested that frame.
  """
  missing = [os.path.basename(runs[(m, s)]["path"]) for s in seeds for m in models
             if not os.path.isfile(os.path.join(runs[(m, s)]["path"], PREDICTIONS))]
  if missing:
    return [f"Panel ({group}) skipped: {len(missing)} run(s) have no {PREDICTIONS} (runs "
            f"trained before it was written), e.g. `{missing[0]}`.", ""]
  if not cases:
    return [f"Panel ({group}) skipped: no test frame shared by every model.", ""]
  preds = {(m, s): load_predictions(runs[(m, s)]["path"]) for s in seeds for m in models}
  index = {key: {c: i for i, c in enumerate(p["cases"])} for key, p in preds.items()}
  per_run_dice = {key: {r["case"]: r["dice"] for r in runs[key]["rows"]} for key in preds}
  chosen = choose_cases(list(cases), np.nanmean(np.stack([dice[m] for m in models]), axis=0)
                        if models else np.array([]))
  rows, listed = [], []
  for label, case in chosen:
    seed = next((s for s in seeds if all(case in index[(m, s)] for m in models)), None)
    if seed is None:
      continue
    first = preds[(models[0], seed)]
    i = index[(models[0], seed)][case]
    rows.append({"label": f"{label}\n{case}\nseed {seed}", "image": first["images"][i],
                 "mask": first["masks"][i],
                 "preds": [preds[(m, seed)]["pred"][index[(m, seed)][case]] for m in models],
                 "dice": [per_run_dice[(m, seed)].get(case, float("nan")) for m in models]})
    listed.append(f"{label.split(' (')[0]} `{case}` (seed {seed})")
  if not rows:
    return [f"Panel ({group}) skipped: the chosen frames are in no run's predictions.", ""]
  filename = f"fig_panel_{group.lower()}.png"
  draw(os.path.join(out, filename), f"{group} test frames: median and worst by mean Dice",
       rows, [name(m) for m in models])
  return [f"![{group} panel]({filename})", "",
          f"Rows ({group}): " + "; ".join(listed) + ". Red: prediction (probability > 0.5); "
          "green: ground truth; the Dice above each cell is that run's on that frame.", ""]
