"""Runs a grid of models x seeds x quality groups, each in its own workdir; resumable, shardable.

  python experiments/sweep.py --out=runs/sweep --models=dice,kld_alpha --seeds=0,1 \
      --groups=Poor,Medium,Good --shard=0/2 -- --config.data.source=folder --config.data.root=DIR

`--groups`: `all` (default) trains and tests on every frame, in `<model>_seed<seed>/`; a
quality group (Good, Medium, Poor) trains, validates and tests on that group's frames only,
unknown quality excluded, as the paper does (Tables 1-3), in `<model>_<group>_seed<seed>/`.
Finished runs (summary.json present) are skipped; interrupted ones resume from their latest
checkpoint. `--shard=i/n` runs every n-th run starting at i, so n machines split a sweep
without coordination. Everything after `--` is passed to each run as config overrides (after
the group's own). Ends with a markdown table of the finished runs. Bad arguments: one line,
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from echokld.errors import InputError  # noqa: E402

MODELS = ("dice", "wdecay", "vae", "kld_alpha", "kld_kde", "rd_vae", "bd_vae")
ALL = "all"
GROUPS = ("Poor", "Medium", "Good")  # The paper's quality groups, in its table order.


def parse_groups(spec: str) -> list[str]:
  """`all` and/or quality groups from a comma list (any case), in order, without repeats."""
  known = {g.lower(): g for g in (ALL, *GROUPS)}
  out = []
  for item in (x.strip() for x in spec.split(",")):
    if item.lower() not in known:
      raise InputError("--groups", f"unknown group {item!r} (all, {', '.join(GROUPS)})")
    if known[item.lower()] not in out:
      out.append(known[item.lower()])
  return out


def run_name(model: str, seed: int, group: str = ALL) -> str:
  """Workdir name: `<model>_seed<seed>` for group all, `<model>_<group>_seed<seed>` otherwise."""
  return f"{model}_seed{seed}" if group == ALL else f"{model}_{group}_seed{seed}"


def group_overrides(group: str) -> list[str]:
  """Config overrides restricting a run to one quality group (none for `all`)."""
  if group == ALL:
    return []
  return [f"--config.data.qualities=('{group}',)", "--config.data.keep_unknown_quality=False"]


def grid(models: Sequence[str], seeds: Sequence[int],
         groups: Sequence[str] = (ALL,)) -> list[tuple[str, int, str]]:
  """(model, seed, group) runs; seed outermost, so a partial sweep holds whole seeds."""
  return [(m, s, g) for s in seeds for g in groups for m in models]


def shard(runs: list, spec: str) -> list:
  index, count = (int(v) for v in spec.split("/"))
  return runs[index::count]


def table(out: str, runs: list[tuple[str, int, str]]) -> str:
  """Markdown table of the finished runs among `runs`."""
  lines = ["| model | group | seed | epochs | best val Dice (epoch) | test Dice | test MHD px | "
           "train s | img/s |", "|---|---|---|---|---|---|---|---|---|"]
  for model, seed, group in runs:
    path = os.path.join(out, run_name(model, seed, group), "summary.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      s = json.load(f)
    lines.append(f"| {model} | {group} | {seed} | {s['epochs']} | {s['val']['best_dice']:.4f} "
                 f"({s['val']['best_epoch']}) | {s['test']['dice']:.4f} | "
                 f"{s['test']['mhd_px']:.2f} | {s['train_seconds']:.0f} | "
                 f"{s['train_images_per_second']:.1f} |")
  return "\n".join(lines)


def run_grid(out: str, runs: list[tuple[str, int, str]], overrides: list[str]) -> int:
  """Runs (or resumes, or skips) each (model, seed, group) in its own workdir; returns failures."""
  failures = 0
  for model, seed, group in runs:
    workdir = os.path.join(out, run_name(model, seed, group))
    if os.path.exists(os.path.join(workdir, "summary.json")):
      print(f"[skip] {workdir} is finished", flush=True)
      continue
    print(f"[run] {model} seed {seed} group {group} -> {workdir}", flush=True)
    t0 = time.time()
    cmd = [sys.executable, "-m", "echokld.main", f"--config={ROOT}/configs/{model}.py",
           f"--workdir={workdir}", f"--config.seed={seed}", *group_overrides(group),
           *overrides]
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


def fail(exc: InputError) -> None:
  """One line on stderr, exit code 2."""
  print(f"error: {exc}", file=sys.stderr)
  sys.exit(InputError.exit_code)


def main() -> None:
  argv, overrides = split_overrides(sys.argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--groups", default=ALL, help=f"Comma list of {ALL}, {', '.join(GROUPS)}.")
  parser.add_argument("--shard", default="0/1")
  args = parser.parse_args(argv)
  try:
    groups = parse_groups(args.groups)
  except InputError as exc:
    fail(exc)
  runs = grid(args.models.split(","), [int(s) for s in args.seeds.split(",")], groups)
  failures = run_grid(args.out, shard(runs, args.shard), overrides)
  print(table(args.out, runs))
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()
