"""Dice of each trained run, their mean ensemble and the quality-gated mixture on a folder split.

  python experiments/ensemble_eval.py --runs=runs/a,runs/b --data_root=DIR [--split=val]

Masks are predicted in each frame's own geometry (echokld.infer) and scored against the
LV label at the frame's native resolution. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os

from echokld.data import folder, pipeline
from echokld.evaluation import metrics
from echokld.infer import runs as predict


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--runs", required=True)
  parser.add_argument("--data_root", required=True)
  parser.add_argument("--split", default="val")
  args = parser.parse_args()
  records = [r for r in folder.read_folder(args.data_root) if r["split"] == args.split]
  images = [r["image"] for r in records]
  truths = [r["label"] == pipeline.LV_LABEL for r in records]
  qualities = [r["quality"] for r in records]
  runs = [predict.load_run(w) for w in args.runs.split(",")]
  print(f"{len(records)} {args.split} frames of {args.data_root}\n")
  print("| predictor | mean Dice |\n|---|---|")
  for run in runs:
    print(f"| {os.path.basename(run.workdir.rstrip('/'))} | "
          f"{metrics.mean_dice(predict.predict_masks([run], images), truths):.4f} |", flush=True)
  print(f"| mean ensemble ({len(runs)}) | "
        f"{metrics.mean_dice(predict.predict_masks(runs, images), truths):.4f} |")
  gated = predict.predict_masks(runs, images, qualities, gating="quality")
  print(f"| quality-gated mixture ({len(runs)}) | {metrics.mean_dice(gated, truths):.4f} |")


if __name__ == "__main__":
  main()
