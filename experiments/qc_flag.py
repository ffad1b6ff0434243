"""Does the members' disagreement flag poor masks? Threshold on validation, measured on test.

  python experiments/qc_flag.py --workdir=RUN [--workdir=RUN2 ...] --data_root=DIR \
      --out=OUT [--tta=flip] [--dice_cut=0.85] [--score=mask_disagreement] \
      [--val_cases=FILE --test_cases=FILE] [--csv_dir=WORK]

DIR is a `folder` source (images/<case>.png, labels/<case>.png, metadata.csv; camus224).
The validation and test frames come from --val_cases/--test_cases (one case per line),
else from the runs' split.json (all members must record the same one), else from the
`split` column of DIR/metadata.csv; a val or test frame that a member trained on is refused.

Each frame is segmented as echokld.predict does (members = runs x test-time views, mean
of the runs), its Dice against the LV label taken at the frame's own size, and its scores
computed (echokld.infer.qc). A frame is poor when Dice < --dice_cut. For every score the
threshold maximising Youden's J on validation frames is measured on test frames:
sensitivity, specificity (counts, Wilson 95% CIs) and AUC (echokld.evaluation.qc_stats).

Writes OUT/qc_flag.md, OUT/figures/qc_score_vs_dice.png and OUT/qc_threshold.json (the
--score's threshold, for predict --qc_calibration). Per-frame tables go only to --csv_dir
(CAMUS-derived data: not for committing).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from echokld import cli  # noqa: E402
from echokld.data import folder, pipeline  # noqa: E402
from echokld.errors import InputError  # noqa: E402
from echokld.evaluation import metrics, qc_stats  # noqa: E402
from echokld.infer import qc  # noqa: E402
from echokld.infer import runs as runs_lib  # noqa: E402

SPLITS = ("val", "test")


def read_case_list(path: str) -> list[str]:
  try:
    with open(path) as f:
      cases = [line.strip() for line in f if line.strip() and not line.startswith("#")]
  except (OSError, UnicodeDecodeError) as exc:
    raise InputError(path, f"unreadable case list ({exc})") from None
  if not cases:
    raise InputError(path, "no case listed")
  return cases


def run_split(workdir: str) -> dict | None:
  path = os.path.join(workdir, "split.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      split = json.load(f)
    assert isinstance(split, dict) and all(isinstance(split.get(s), list) for s in SPLITS)
  except (OSError, ValueError, AssertionError):
    raise InputError(path, "unreadable split (needs lists 'val' and 'test')") from None
  return split


def choose_split(workdirs: list[str], data_root: str, val_cases: str | None,
                 test_cases: str | None) -> tuple[dict[str, list[str]], str]:
  """({"val": cases, "test": cases}, where they came from); see the module docstring."""
  images = os.path.join(data_root, "images")
  present = {os.path.splitext(n)[0] for n in os.listdir(images)} if os.path.isdir(images) \
      else set()
  if not present:
    raise InputError(images, "no images: --data_root must be a folder source")
  recorded = [run_split(w) for w in workdirs]
  if (val_cases is None) != (test_cases is None):
    raise InputError("--val_cases", "give --val_cases and --test_cases together")
  if val_cases is not None:
    split, where = {"val": read_case_list(val_cases), "test": read_case_list(test_cases)}, \
        val_cases
    source = f"case lists {val_cases}, {test_cases}"
  elif recorded[0] is not None and all(r is not None and all(
      set(r[s]) <= present for s in SPLITS) for r in recorded):
    if any(r[s] != recorded[0][s] for r in recorded for s in SPLITS):
      raise InputError(workdirs[0], "the members' split.json differ; give --val_cases and "
                       "--test_cases")
    where = os.path.join(workdirs[0], "split.json")
    split, source = {s: recorded[0][s] for s in SPLITS}, f"{where}"
  else:
    table = folder.read_metadata(os.path.join(data_root, "metadata.csv"))
    split = {s: sorted(c for c, row in table.items() if row["split"] == s and c in present)
             for s in SPLITS}
    where = os.path.join(data_root, "metadata.csv")
    source = f"the split column of {where}"
  for name in SPLITS:
    if not split[name]:
      raise InputError(where, f"no {name} frame")
    missing = [c for c in split[name] if c not in present]
    if missing:
      raise InputError(os.path.join(images, missing[0] + ".png"), f"{name} case not found")
  if set(split["val"]) & set(split["test"]):
    raise InputError(where, "val and test frames overlap (an official "
                     "split without test frames?); give --val_cases and --test_cases")
  for workdir, r in zip(workdirs, recorded):
    seen = set((r or {}).get("train") or [])
    leaked = sorted(seen & (set(split["val"]) | set(split["test"])))
    if leaked:
      raise InputError(workdir, f"trained on {leaked[0]}, a val/test frame of {source}")
  return split, source


def frame_table(runs: list, data_root: str, cases: list[str], batch_size: int = 8
                ) -> list[dict]:
  """Per frame: case, dice (at the frame's size) and every score of qc.SCORES."""
  shape, resize = runs_lib.check_compatible(runs)
  rows = []
  for start in range(0, len(cases), batch_size):
    batch = cases[start:start + batch_size]
    images = [folder.read_image(os.path.join(data_root, "images", f"{c}.png")) for c in batch]
    truths = [folder.read_image(os.path.join(data_root, "labels", f"{c}.png")) ==
              pipeline.LV_LABEL for c in batch]
    prepared = [runs_lib.prepare(im, shape, resize, where=c) for im, c in zip(images, batch)]
    means, members = qc.member_views(runs, np.stack([canvas for canvas, _ in prepared]))
    probs, scores = runs_lib.combine(means), qc.frame_scores(members)
    for i, (case, (_, geometry), truth) in enumerate(zip(batch, prepared, truths)):
      mask = pipeline.undo_geometry(probs[i] > runs_lib.THRESHOLD, geometry)
      rows.append({"case": case, "dice": metrics.overlap_metrics(mask, truth)["dice"],
                   **{name: float(values[i]) for name, values in scores.items()}})
  return rows


def analyse(val: list[dict], test: list[dict], dice_cut: float) -> dict[str, dict]:
  """{score: {threshold, j, val: detection, test: detection}} for every score."""
  out = {}
  for name in qc.SCORES:
    column = lambda rows, key: np.array([r[key] for r in rows], np.float64)
    threshold, j = qc_stats.youden_threshold(column(val, name), column(val, "dice"), dice_cut)
    out[name] = {"threshold": threshold, "j": j,
                 **{split: qc_stats.detection(column(rows, name), column(rows, "dice"),
                                              threshold, dice_cut)
                    for split, rows in (("val", val), ("test", test))}}
  return out


def scatter(path: pathlib.Path, test: list[dict], results: dict, dice_cut: float) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(1, len(qc.SCORES), figsize=(5 * len(qc.SCORES), 4), squeeze=False)
  dice = np.array([r["dice"] for r in test])
  for ax, name in zip(axes[0], qc.SCORES):
    score = np.array([r[name] for r in test])
    ax.scatter(score, dice, s=12, alpha=0.7, c=np.where(score > results[name]["threshold"],
                                                        "tab:red", "tab:blue"))
    ax.axhline(dice_cut, color="grey", ls="--", lw=1, label=f"Dice {dice_cut:g}")
    ax.axvline(results[name]["threshold"], color="tab:red", ls=":", lw=1,
               label=f"threshold {results[name]['threshold']:.4f} (val)")
    ax.set_xlabel(name)
    ax.set_ylabel("Dice (test frames)")
    ax.legend(fontsize=8, loc="lower left")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def ci(pair: tuple[float, float]) -> str:
  return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def render(results: dict, args: argparse.Namespace, source: str, members: int,
           counts: dict[str, int]) -> str:
  views = args.tta or "the runs' own"
  lines = ["# Quality control flag: does member disagreement find poor masks?", "",
           f"Runs: {', '.join(args.workdir)}; test-time views: {views}; "
           f"{members} members. Frames: {counts['val']} validation, {counts['test']} test "
           f"({source}). Poor = Dice < {args.dice_cut:g} (frame's own size). Threshold: "
           "Youden's J on validation; flag = score above it.", "",
           "| score | threshold (val) | J (val) | test poor / frames | sensitivity [95% CI] | "
           "specificity [95% CI] | AUC (test) |", "|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    t = r["test"]
    lines.append(f"| {name} | {r['threshold']:.4f} | {r['j']:.3f} | {t['poor']} / "
                 f"{t['frames']} | {t['sensitivity']:.2f} ({t['tp']}/{t['tp'] + t['fn']}) "
                 f"{ci(t['sensitivity_ci'])} | {t['specificity']:.2f} ({t['tn']}/"
                 f"{t['tn'] + t['fp']}) {ci(t['specificity_ci'])} | {t['auc']:.3f} |")
  lines += ["", f"qc_threshold.json holds the {args.score} threshold "
            "(`python -m echokld.predict ... --qc_calibration=qc_threshold.json`).",
            "Figure: figures/qc_score_vs_dice.png (test frames; red = flagged).", ""]
  return "\n".join(lines)


def write_table(path: pathlib.Path, rows: list[dict]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["case", "dice", *qc.SCORES])
    writer.writeheader()
    writer.writerows(rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", action="append", required=True)
  parser.add_argument("--data_root", required=True)
  parser.add_argument("--out", required=True, type=pathlib.Path)
  parser.add_argument("--tta", choices=("none", "flip", "affine"), default=None)
  parser.add_argument("--dice_cut", type=float, default=qc_stats.DICE_CUT)
  parser.add_argument("--score", choices=qc.SCORES, default=qc.DEFAULT_SCORE)
  parser.add_argument("--val_cases", default=None)
  parser.add_argument("--test_cases", default=None)
  parser.add_argument("--csv_dir", type=pathlib.Path, default=None)
  parser.add_argument("--batch_size", type=int, default=8)
  args = parser.parse_args(argv)
  if args.batch_size < 1 or not 0 < args.dice_cut <= 1:
    parser.error("--batch_size must be >= 1 and --dice_cut in (0, 1]")

  runs = [runs_lib.load_run(w, args.batch_size, args.tta) for w in args.workdir]
  members = qc.count_members(runs)
  if members < 2:
    raise InputError("--workdir", "needs 2+ members: several --workdir runs or --tta")
  split, source = choose_split(args.workdir, args.data_root, args.val_cases, args.test_cases)
  tables = {s: frame_table(runs, args.data_root, split[s], args.batch_size) for s in SPLITS}
  try:
    results = analyse(tables["val"], tables["test"], args.dice_cut)
  except ValueError as exc:
    raise InputError("validation frames", str(exc)) from None
  args.out.mkdir(parents=True, exist_ok=True)
  scatter(args.out / "figures" / "qc_score_vs_dice.png", tables["test"], results,
          args.dice_cut)
  (args.out / "qc_flag.md").write_text(render(results, args, source, members,
                                              {s: len(tables[s]) for s in SPLITS}))
  best = results[args.score]
  qc.write_calibration(str(args.out / "qc_threshold.json"), args.score, best["threshold"],
                       dice_cut=args.dice_cut, youden_j=best["j"], members=members,
                       tta=args.tta, runs=list(args.workdir), val_frames=len(tables["val"]),
                       split=source)
  if args.csv_dir is not None:
    for s in SPLITS:
      write_table(args.csv_dir / f"qc_frames_{s}.csv", tables[s])
  for name, r in results.items():
    t = r["test"]
    print(f"{name}: threshold {r['threshold']:.4f} (val J {r['j']:.3f}); test sensitivity "
          f"{t['sensitivity']:.2f} {ci(t['sensitivity_ci'])}, specificity "
          f"{t['specificity']:.2f} {ci(t['specificity_ci'])}, AUC {t['auc']:.3f}")
  print(f"wrote {args.out / 'qc_flag.md'}")


if __name__ == "__main__":
  cli.run_script(main)
