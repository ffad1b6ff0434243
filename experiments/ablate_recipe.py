"""The ablation behind `:best` (docs/RESULTS.md): each piece of the recipe alone, then together.

  python experiments/ablate_recipe.py --data_root=../shared/data/camus224 --out=runs/recipe \
      --rows=none,all --seeds=0 [--export=docs/recipe/runs] [-- --config.KEY=VALUE ...]

Every row trains Model 1 (`--model`) on camus224's official split at 128x128
(`geometry_160` at 160x160; one `echokld.main` process per run, timed whole) and is then
scored on the 100 validation frames at their native 224x224, as `echokld.predict` would
segment them, with no test-time views, flips (2) and small affines (5), each also with the
mask post-processed (`echokld.predict --postprocess=largest`: the largest region, holes
filled). Finished runs are skipped, so a study interrupted between runs resumes with the
same command (`--score_only` rescores what is trained and trains nothing); `--export` copies
each run's small files (JSON, metrics; no image, no label, no checkpoint) for committing.
Prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import study_outputs  # experiments/, beside this script.
from echokld.data import folder, pipeline
from echokld.evaluation import metrics
from echokld.infer import runs as infer_runs

PLATEAU = ["--config.train.plateau_patience=5", "--config.train.early_stop_patience=12",
           "--config.train.max_epochs=60"]
NO_GEOMETRY = ["--config.augment.rotation_deg=0", "--config.augment.scale=0",
               "--config.augment.translate=0"]
NO_INTENSITY = ["--config.augment.gamma=0", "--config.augment.contrast=0",
                "--config.augment.brightness=0"]
AUGMENT = ["--config.augment.enabled=True"]
SPECKLE_BLUR = ["--config.augment.speckle=16", "--config.augment.blur=0.5"]
# A fixed 40 epochs ending at the schedule's low rate (early stopping off).
COSINE = ["--config.train.schedule=cosine", "--config.train.warmup_epochs=2",
          "--config.train.max_epochs=40", "--config.train.early_stop_patience=40"]
GEOMETRY = PLATEAU + AUGMENT + NO_INTENSITY  # The geometry row, which later rows extend.
# Row -> (config argument, overrides): every piece alone, all of them, and `:best`.
ROWS = {
    "none": ("", PLATEAU),
    "geometry": ("", GEOMETRY),
    "intensity": ("", PLATEAU + AUGMENT + NO_GEOMETRY),
    "speckle_blur": ("", PLATEAU + AUGMENT + NO_GEOMETRY + NO_INTENSITY
                     + SPECKLE_BLUR),
    "cosine": ("", COSINE),
    "ema": ("", PLATEAU + ["--config.train.ema_decay=0.999"]),
    "all": ("", AUGMENT + SPECKLE_BLUR + COSINE + ["--config.train.ema_decay=0.999"]),
    # Beyond the pieces (#20's "left" items): geometry at 160 px (capped at 45 epochs to stay
    # within the hour), with a cross-entropy term beside the Dice loss, with Dice per image.
    "geometry_160": ("", GEOMETRY + ["--config.data.image_size=160",
                                     "--config.train.max_epochs=45"]),
    "geometry_bce": ("", GEOMETRY + ["--config.loss.terms=('dice','bce')",
                                     "--config.model.name=dice_bce",
                                     "--config.model.display_name=Dice+BCE",
                                     "--config.model.paper_number=0"]),
    # Eq. (7) per image, as the score averages it, instead of over the mini-batch.
    "geometry_image_dice": ("", GEOMETRY + ["--config.loss.dice_reduction=image"]),
    # Wider networks (1.8x and 2.8x the epoch time of 16 filters on the 2-core CPU), capped at
    # the epochs that fit the hour.
    "geometry_w24": ("", GEOMETRY + ["--config.model.init_features=24",
                                     "--config.train.max_epochs=38"]),
    "geometry_w32": ("", GEOMETRY + ["--config.model.init_features=32",
                                     "--config.train.max_epochs=25"]),
    "best": ("best", []),  # Today the geometry row's settings (a test checks they agree).
}
TTA = ("none", "flip", "affine")
SMALL_FILES = ("summary.json", "config.json", "metrics.jsonl", "split.json",
               "environment.json", "wall.json", "recipe_eval.json")


def train(row: str, seed: int, model: str, data_root: str, workdir: str,
          extra: list[str]) -> float:
  """Trains one row's run; returns its wall seconds (process start to exit).

  `extra` overrides come last and win (a smoke run: `-- --config.train.max_epochs=1`).
  """
  arg, overrides = ROWS[row]
  command = [sys.executable, "-m", "echokld.main", f"--config={model}" + (f":{arg}" if arg else ""),
             f"--workdir={workdir}", "--config.data.source=folder",
             f"--config.data.root={data_root}", "--config.data.split=official",
             "--config.data.image_size=128", f"--config.seed={seed}",
             "--config.log.progress=False", "--config.log.tensorboard=False", *overrides, *extra]
  start = time.perf_counter()
  subprocess.run(command, check=True)
  return time.perf_counter() - start


def native_val_dice(workdir: str, records: list[dict]) -> dict[str, float]:
  """Mean Dice of the run's best checkpoint on the frames at native size, per TTA mode."""
  images = [r["image"] for r in records]
  truths = [r["label"] == pipeline.LV_LABEL for r in records]
  scores = {}
  for tta in TTA:
    run = infer_runs.load_run(workdir, tta=tta)
    start = time.perf_counter()
    masks = infer_runs.predict_masks([run], images)
    scores[tta] = metrics.mean_dice(masks, truths)
    scores[f"{tta}_seconds"] = time.perf_counter() - start
    # As predict_masks(..., postprocess="largest"), without predicting twice.
    scores[f"{tta}_largest"] = metrics.mean_dice([metrics.lv_region(m) for m in masks], truths)
  return scores


def scores_of(path: str) -> dict:
  """The native scores a result file holds ({} if none yet; older files lack some)."""
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)["native"]


def table(out: str, rows: list[str], seeds: list[int]) -> str:
  lines = ["| row | seed | epochs (stopped early) | wall min "
           "| best val Dice at the training size (epoch) "
           "| val Dice, native 224 px: no TTA / flip / affine | the same, largest region |",
           "|---|---|---|---|---|---|---|"]
  for row in rows:
    for seed in seeds:
      path = os.path.join(out, f"{row}_seed{seed}", "recipe_eval.json")
      if not os.path.isfile(path):
        continue
      with open(path) as f:
        e = json.load(f)
      s = e["summary"]
      lines.append(f"| {row} | {seed} | {s['epochs']} ({'yes' if s['stopped_early'] else 'no'}) "
                   f"| {e['wall_seconds'] / 60:.1f} | {s['val']['best_dice']:.4f} "
                   f"({s['val']['best_epoch']}) | {e['native']['none']:.4f} / "
                   f"{e['native']['flip']:.4f} / {e['native']['affine']:.4f} | "
                   + " / ".join(f"{e['native'][f'{t}_largest']:.4f}" for t in TTA) + " |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_root", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--rows", default=",".join(ROWS))
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--model", default="dice")
  parser.add_argument("--export", default="")
  parser.add_argument("--score_only", action="store_true",
                      help="Train nothing: (re)score the runs already trained.")
  parser.add_argument("overrides", nargs="*", help="After --: config overrides of every run.")
  args = parser.parse_args()
  rows = args.rows.split(",")
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    sys.exit(f"error: --rows: unknown row {unknown[0]!r} ({', '.join(ROWS)})")
  seeds = [int(s) for s in args.seeds.split(",")]
  records = [r for r in folder.read_folder(args.data_root) if r["split"] == "val"]
  for row in rows:
    for seed in seeds:
      workdir = os.path.join(args.out, f"{row}_seed{seed}")
      result = os.path.join(workdir, "recipe_eval.json")
      timing = os.path.join(workdir, "wall.json")
      if not os.path.isfile(timing):  # Trained but not scored: only the scoring reruns.
        if args.score_only:
          continue
        wall = train(row, seed, args.model, args.data_root, workdir, args.overrides)
        with open(timing, "w") as f:
          json.dump({"wall_seconds": wall}, f)
      scored = scores_of(result)
      if not all(k in scored for tta in TTA for k in (tta, f"{tta}_largest")):
        with open(timing) as f:
          wall = json.load(f)["wall_seconds"]
        with open(os.path.join(workdir, "summary.json")) as f:
          summary = json.load(f)
        native = {**native_val_dice(workdir, records), **scored}  # Earlier scores stand.
        evaluation = {"row": row, "seed": seed, "wall_seconds": wall, "summary": summary,
                      "native": native, "frames": len(records)}
        with open(result, "w") as f:
          json.dump(evaluation, f, indent=1)
      if args.export:
        study_outputs.copy_small_files(workdir, os.path.join(args.export, f"{row}_seed{seed}"),
                                       SMALL_FILES)
      print(table(args.out, [row], [seed]).splitlines()[-1], flush=True)
  report = table(args.out, rows, seeds)
  with open(os.path.join(args.out, "ablation.md"), "w") as f:
    f.write(report + "\n")
  print(report)


if __name__ == "__main__":
  main()
