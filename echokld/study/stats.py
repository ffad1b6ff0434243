"""Statistics for comparing trained models: paired tests, ranks, seed spread, sweep loading.

Paired tests follow the paper's Tables 4-6: per-image scores of two models on the same test
frames, Wilcoxon signed-rank (two-sided, scipy defaults: pairs with a zero difference are
dropped; exact null distribution for small samples without ties, normal approximation
otherwise). With 7 models one table holds 21 tests, so Holm-adjusted p-values are reported
beside the raw ones the paper shows. Only numpy and scipy are used.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

from echokld.errors import InputError

ALL = "all"  # Training group of runs trained on every frame (`<model>_seed<N>/`).
QUALITY_GROUPS = ("Poor", "Medium", "Good")
RUN_DIR = re.compile(r"^(?P<model>.+?)(?:_(?P<group>Poor|Medium|Good))?_seed(?P<seed>\d+)$")
REQUIRED_COLUMNS = ("dice", "recall", "precision", "mhd_px", "mhd_mm", "hd95_px")
# Written by newer runs (evaluation.metrics); NaN when an older run's CSV lacks them.
OPTIONAL_COLUMNS = ("empty", "components", "holes", "contour_ratio", "truth_contour_ratio")
NUMERIC_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
SUMMARY_KEYS = ("num_params", "epochs", "train_images_per_second", "val.best_dice",
                "test.dice")
HISTORY_KEYS = ("epoch", "val_dice", "epoch_seconds")


def holm(pvalues: Sequence[float]) -> np.ndarray:
  """Holm step-down adjustment (controls the family-wise error); NaNs stay NaN, not counted.

  Sorted ascending, the i-th smallest (0-based rank r) is multiplied by (m - r); a running
  maximum keeps the adjusted values monotone, and they are clipped to 1.
  """
  p = np.asarray(pvalues, dtype=float)
  out = np.full(p.shape, np.nan)
  valid = np.flatnonzero(np.isfinite(p))
  m = valid.size
  if m == 0:
    return out
  order = valid[np.argsort(p[valid], kind="stable")]
  scaled = p[order] * (m - np.arange(m))
  out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
  return out


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
  """Two-sided Wilcoxon signed-rank p-value of paired samples; 1.0 when all differences are 0.

  Pairs where either value is not finite must be removed by the caller. NaN for no pairs.
  """
  d = np.asarray(a, float) - np.asarray(b, float)
  if d.size == 0:
    return float("nan")
  if not np.any(d != 0):
    return 1.0  # No evidence of a difference; scipy would warn or fail here.
  return float(sps.wilcoxon(a, b, alternative="two-sided").pvalue)


@dataclasses.dataclass
class PairwiseTable:
  """All-pairs comparison of models on one metric; matrices are indexed [row, column].

  p and p_holm are symmetric; median_diff[i, j] = median(model i) - median(model j) (the
  paper's lower triangle); median_of_diffs[i, j] = median(model i - model j) per image, the
  location shift the signed-rank test is about. n[i, j] counts the pairs used.
  """

  models: list[str]
  metric_name: str
  n: np.ndarray
  p: np.ndarray
  p_holm: np.ndarray
  median_diff: np.ndarray
  median_of_diffs: np.ndarray

  def cells(self, names: Sequence[str] | None = None, holm_adjusted: bool = False,
            alpha: float = 0.05, bold: bool = True) -> list[list[str]]:
    """The paper's layout: header row, then p-values above and median differences below."""
    names = list(names or self.models)
    p = self.p_holm if holm_adjusted else self.p
    rows = [[""] + names]
    for i, name in enumerate(names):
      row = [name]
      for j in range(len(names)):
        if i == j:
          row.append("–")
        elif i < j:
          row.append(format_p(p[i, j], alpha if bold else None))
        else:
          value = self.median_diff[i, j]
          row.append("" if math.isnan(value) else f"{value:+.4f}")
      rows.append(row)
    return rows

  def long_rows(self) -> list[dict[str, Any]]:
    """One record per unordered pair (a listed before b), for CSV output."""
    out = []
    for i, a in enumerate(self.models):
      for j in range(i + 1, len(self.models)):
        out.append({"model_a": a, "model_b": self.models[j], "n": int(self.n[i, j]),
                    "p_value": self.p[i, j], "p_holm": self.p_holm[i, j],
                    "median_a_minus_median_b": self.median_diff[i, j],
                    "median_of_a_minus_b": self.median_of_diffs[i, j]})
    return out


def format_p(p: float, alpha: float | None = 0.05) -> str:
  if math.isnan(p):
    return "n/a"
  text = "<0.0001" if p < 1e-4 else f"{p:.4f}"
  return f"**{text}**" if alpha is not None and p < alpha else text


def pairwise_table(scores: dict[str, np.ndarray], metric_name: str = "dice") -> PairwiseTable:
  """Wilcoxon p-values and median differences for every pair of models (paired by position).

  Each pair uses the images where both scores are finite (e.g. MHD is NaN for an empty
  prediction). Holm's adjustment runs over the k(k-1)/2 tests of this one table.
  """
  models = list(scores)
  arrays = [np.asarray(scores[m], dtype=float) for m in models]
  if len({a.shape for a in arrays}) > 1:
    raise ValueError(f"scores must be paired (same length), got shapes "
                     f"{[a.shape for a in arrays]}")
  k = len(models)
  n = np.zeros((k, k), dtype=int)
  p, md, mod = (np.full((k, k), np.nan) for _ in range(3))
  for i in range(k):
    for j in range(k):
      ok = np.isfinite(arrays[i]) & np.isfinite(arrays[j])
      a, b = arrays[i][ok], arrays[j][ok]
      n[i, j] = ok.sum()
      if i == j or not ok.any():
        continue
      md[i, j] = np.median(a) - np.median(b)
      mod[i, j] = np.median(a - b)
      if i < j:
        p[i, j] = p[j, i] = wilcoxon_p(a, b)
  upper = np.triu_indices(k, 1)
  p_holm = np.full((k, k), np.nan)
  p_holm[upper] = holm(p[upper])
  p_holm.T[upper] = p_holm[upper]
  return PairwiseTable(models, metric_name, n, p, p_holm, md, mod)


def rank_distribution(scores: dict[str, np.ndarray],
                      higher_is_better: bool = True) -> dict[str, np.ndarray]:
  """How often each model ranks 1st, 2nd, ... over the images (the paper's Table 7).

  Per image the models are ranked with scipy.stats.rankdata(method='min'): tied models share
  the best of their ranks (two firsts, then a third), so a rank column may not sum to the
  number of images. A non-finite score (e.g. MHD of an empty prediction) ranks last.
  Returns model -> counts, where counts[r - 1] is the number of images ranked r.
  """
  models = list(scores)
  if not models:
    return {}
  values = np.stack([np.asarray(scores[m], dtype=float) for m in models], axis=1)
  cost = -values if higher_is_better else values.copy()
  cost[~np.isfinite(values)] = np.inf
  ranks = sps.rankdata(cost, axis=1, method="min").astype(int)
  return {m: np.array([(ranks[:, j] == r).sum() for r in range(1, len(models) + 1)])
          for j, m in enumerate(models)}


def seed_summary(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1) over seeds; std is NaN for a single seed."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
  if v.size == 0:
    return float("nan"), float("nan")
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def bootstrap_ci(values: Sequence[float], n: int = 10000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap CI of the mean (n resamples, seeded, one vectorized draw).

  With few values (e.g. 3 seeds) the percentile interval is too narrow; read it as a
  description of the seeds, not a guarantee of coverage.
  """
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
  if v.size == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = v[rng.integers(0, v.size, size=(n, v.size))].mean(axis=1)
  lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  return float(lo), float(hi)


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as exc:
    raise InputError(path, f"unreadable JSON ({exc.__class__.__name__})") from None


def _read_summary(path: str) -> dict[str, Any]:
  summary = _read_json(path)
  for key in SUMMARY_KEYS:
    node = summary
    for part in key.split("."):
      if not isinstance(node, dict) or part not in node:
        raise InputError(path, f"missing key {key!r}")
      node = node[part]
  return summary


def _read_rows(path: str) -> list[dict[str, Any]]:
  if not os.path.isfile(path):
    raise InputError(path, "missing (the run has summary.json but no per-frame metrics)")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = {"case", "quality", *REQUIRED_COLUMNS} - set(reader.fieldnames or ())
    if missing:
      raise InputError(path, f"missing columns {sorted(missing)}")
    rows = []
    for line, row in enumerate(reader, start=2):
      try:
        rows.append({"case": row["case"], "quality": row["quality"],
                     **{k: float(row[k]) if row.get(k) not in ("", None) else float("nan")
                        for k in NUMERIC_COLUMNS}})
      except ValueError:
        raise InputError(path, f"line {line}: a metric is not a number") from None
  return rows


def _read_history(path: str) -> list[dict[str, Any]]:
  if not os.path.isfile(path):
    return []
  out = []
  with open(path) as f:
    for line, text in enumerate(f, start=1):
      if text.strip():
        try:
          row = json.loads(text)
        except ValueError:
          raise InputError(path, f"line {line}: not JSON") from None
        missing = [k for k in HISTORY_KEYS if k not in row]
        if missing:
          raise InputError(path, f"line {line}: missing key {missing[0]!r}")
        out.append(row)
  return out


def _read_config(path: str) -> dict[str, Any]:
  """The run's config.json ({} when absent: older runs and hand-made sweeps)."""
  return _read_json(path) if os.path.isfile(path) else {}


def run_identity(name: str, config: dict[str, Any]) -> tuple[str, str, int] | None:
  """(model, group, seed) of a run folder: from its config.json, else from its name.

  A run's config says what it is, whatever its folder is called (`runs/kld_alpha` counts):
  the model is `model.name`, the seed `seed`, and a run restricted to one quality group
  without unknown-quality frames (what `echokld-sweep --groups` trains) is that group's.
  Folders without config.json (older or hand-made sweeps) are read by their name,
  `<model>[_<group>]_seed<N>`.
  """
  try:
    model, seed = config["model"]["name"], int(config["seed"])
    qualities = list(config["data"]["qualities"])
    keeps_unknown = bool(config["data"]["keep_unknown_quality"])
  except (KeyError, TypeError, ValueError):
    match = RUN_DIR.match(name)
    return (match["model"], match["group"] or ALL, int(match["seed"])) if match else None
  group = qualities[0] if len(qualities) == 1 and not keeps_unknown else ALL
  return str(model), group, seed


def load_sweep_groups(sweep_dir: str) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
  """Finished runs by training group -> {(model, seed): {summary, rows, history, config,
  path}}.

  Every subfolder holding summary.json is a finished run; run_identity says which.
  Two folders claiming the same (model, group, seed) are refused: one would hide the other.
  """
  if not os.path.isdir(sweep_dir):
    raise InputError(sweep_dir, "sweep directory does not exist")
  groups: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
  for name in sorted(os.listdir(sweep_dir)):
    path = os.path.join(sweep_dir, name)
    if not os.path.isfile(os.path.join(path, "summary.json")):
      continue
    config = _read_config(os.path.join(path, "config.json"))
    identity = run_identity(name, config)
    if identity is None:
      continue
    model, group, seed = identity
    runs = groups.setdefault(group, {})
    if (model, seed) in runs:
      raise InputError(path, f"same model {model!r}, group {group!r} and seed {seed} as "
                       f"{runs[(model, seed)]['path']}")
    runs[(model, seed)] = {
        "summary": _read_summary(os.path.join(path, "summary.json")),
        "rows": _read_rows(os.path.join(path, "test_metrics.csv")),
        "history": _read_history(os.path.join(path, "metrics.jsonl")),
        "config": config, "path": path}
  if not groups:
    raise InputError(sweep_dir, "no finished runs (a subfolder with summary.json)")
  return groups


def load_sweep(sweep_dir: str, group: str = ALL) -> dict[tuple[str, int], dict[str, Any]]:
  """Finished runs of one training group (default: `all`, <model>_seed<seed>/)."""
  groups = load_sweep_groups(sweep_dir)
  if group not in groups:
    raise InputError(sweep_dir, f"no finished runs of training group {group!r} (found "
                     f"{', '.join(sorted(groups))})")
  return groups[group]


def common_seeds(runs: dict[tuple[str, int], Any]) -> tuple[list[int], list[tuple[str, int]]]:
  """Seeds every model finished, and the runs left out because their seed is incomplete.

  Comparing a model averaged over seeds {0, 1} with one run on seed 0 would mix seed effects
  (under the paper split the test frames themselves depend on the seed) into the comparison.
  """
  by_model: dict[str, set[int]] = {}
  for model, seed in runs:
    by_model.setdefault(model, set()).add(seed)
  seeds = sorted(set.intersection(*by_model.values())) if by_model else []
  dropped = sorted(key for key in runs if key[1] not in seeds)
  return seeds, dropped


def per_image_scores(runs: dict[tuple[str, int], dict[str, Any]], models: Sequence[str],
                     seeds: Sequence[int], metric: str, quality: str | None = None
                     ) -> tuple[list[str], dict[str, np.ndarray]]:
  """Per-case metric averaged over the seeds (NaNs skipped), on cases every model has.

  Returns the sorted cases and model -> scores in that order; `quality` keeps one group.
  """
  sums: dict[str, dict[str, list[float]]] = {m: {} for m in models}
  for model in models:
    for seed in seeds:
      for row in runs[(model, seed)]["rows"]:
        if quality is None or row["quality"] == quality:
          sums[model].setdefault(row["case"], []).append(row[metric])
  shared = set.intersection(*(set(s) for s in sums.values())) if models else set()
  cases = sorted(shared)

  def mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")

  return cases, {m: np.array([mean(sums[m][c]) for c in cases]) for m in models}


def case_qualities(runs: dict[tuple[str, int], dict[str, Any]]) -> dict[str, str]:
  return {row["case"]: row["quality"] for run in runs.values() for row in run["rows"]}
