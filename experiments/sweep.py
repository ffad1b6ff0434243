"""Runs a grid of models x seeds, each in its own workdir; resumable and shardable.

  python experiments/sweep.py --out=runs/sweep --models=dice,kld_alpha --seeds=0,1 \
      --shard=0/2 -- --config.data.source=folder --config.data.root=DIR

Finished runs (summary.json present) are skipped; interrupted ones resume from their latest
checkpoint. `--shard=i/n` runs every n-th run starting at i, so n machines split a sweep
without coordination. Everything after `--` is passed to each run as config overrides.
Ends with a markdown table of the finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("dice", "wdecay", "vae", "kld_alpha", "kld_kde", "rd_vae", "bd_vae")


def grid(models: list[str], seeds: list[int]) -> list[tuple[str, int]]:
  return [(m, s) for s in seeds for m in models]


def shard(runs: list, spec: str) -> list:
  index, count = (int(v) for v in spec.split("/"))
  return runs[index::count]


def table(out: str, runs: list[tuple[str, int]]) -> str:
  lines = ["| model | seed | epochs | best val Dice (epoch) | test Dice | test MHD px | "
           "train s | img/s |", "|---|---|---|---|---|---|---|---|"]
  for model, seed in runs:
    path = os.path.join(out, f"{model}_seed{seed}", "summary.json")
    if not os.path.exists(path):
      continue
    s = json.load(open(path))
    lines.append(f"| {model} | {seed} | {s['epochs']} | {s['val']['best_dice']:.4f} "
                 f"({s['val']['best_epoch']}) | {s['test']['dice']:.4f} | "
                 f"{s['test']['mhd_px']:.2f} | {s['train_seconds']:.0f} | "
                 f"{s['train_images_per_second']:.1f} |")
  return "\n".join(lines)


def run_grid(out: str, runs: list[tuple[str, int]], overrides: list[str]) -> int:
  """Runs (or resumes, or skips) each (model, seed) in its own workdir; returns failures."""
  failures = 0
  for model, seed in runs:
    workdir = os.path.join(out, f"{model}_seed{seed}")
    if os.path.exists(os.path.join(workdir, "summary.json")):
      print(f"[skip] {workdir} is finished", flush=True)
      continue
    print(f"[run] {model} seed {seed} -> {workdir}", flush=True)
    t0 = time.time()
    cmd = [sys.executable, "-m", "echokld.main", f"--config={ROOT}/configs/{model}.py",
           f"--workdir={workdir}", f"--config.seed={seed}", *overrides]
    result = subprocess.run(cmd, cwd=ROOT)
    failures += result.returncode != 0
    status = "done" if result.returncode == 0 else f"failed (exit {result.returncode})"
    print(f"[{status}] {workdir} in {time.time() - t0:.0f}s", flush=True)
  return failures


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(this script's arguments, config overrides after `--` passed to every run)."""
  if "--" not in argv:
    return argv, []
  return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def main() -> None:
  argv, overrides = split_overrides(sys.argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--shard", default="0/1")
  args = parser.parse_args(argv)
  runs = grid(args.models.split(","), [int(s) for s in args.seeds.split(",")])
  failures = run_grid(args.out, shard(runs, args.shard), overrides)
  print(table(args.out, runs))
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()
