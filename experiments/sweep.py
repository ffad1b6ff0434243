"""Runs a grid of models x seeds x quality groups, each in its own workdir; resumable, shardable.

  python experiments/sweep.py --out=runs/sweep --models=dice,kld_alpha --seeds=0,1 \
      --groups=Poor,Medium,Good --shard=0/2 -- --config.data.source=folder --config.data.root=DIR

`--groups`: `all` (default) trains and tests on every frame, in `<model>_seed<seed>/`; a
quality group (Good, Medium, Poor) trains, validates and tests on that group's frames only,
unknown quality excluded, as the paper does (Tables 1-3), in `<model>_<group>_seed<seed>/`.
Finished runs (summary.json present) are skipped; interrupted ones resume from their latest
checkpoint. `--replicas=S` trains the unfinished seeds of one model and group S at a time in
one program (echokld.replicas: one compile, one copy of the data; each seed still gets its
own split, workdir and files, with the same meaning as a run of its own). `--shard=i/n` runs
every n-th run starting at i, so n machines split a sweep without coordination. Everything
after `--` is passed to each run as config overrides (after the group's own). Ends with a
markdown table of the finished runs. Bad arguments: one line, exit code 2.
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
from echokld.replicas import parse_seeds  # noqa: E402

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


def add_replica_flags(parser: argparse.ArgumentParser) -> None:
  """--replicas and --replica_mode, shared by this script and reproduce_paper.py."""
  parser.add_argument("--replicas", type=int, default=1,
                      help="Train this many seeds of one model and group at a time in one "
                           "program (echokld.replicas).")
  parser.add_argument("--replica_mode", default=None,
                      help="echokld.replicas --replica_mode (unroll, hybrid, vmap).")


def check_replicas(replicas: int) -> None:
  if replicas < 1:
    raise InputError("--replicas", f"expected a positive integer, got {replicas}")


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


def replica_batches(runs: list[tuple[str, int, str]], size: int
                    ) -> list[list[tuple[str, int, str]]]:
  """Runs of one model and group, `size` seeds at a time in the given order (size 1: alone)."""
  by_key: dict[tuple[str, str], list] = {}
  for run in runs:
    by_key.setdefault((run[0], run[2]), []).append(run)
  return [same[i:i + size] for same in by_key.values() for i in range(0, len(same), size)]


def run_command(batch: list[tuple[str, int, str]], out: str, overrides: list[str],
                replica_mode: str | None = None) -> list[str]:
  """The command of one run (echokld.main) or of a replica group (echokld.replicas)."""
  model, seed, group = batch[0]
  common = [f"--config={ROOT}/configs/{model}.py", *group_overrides(group), *overrides]
  if len(batch) == 1:
    return [sys.executable, "-m", "echokld.main", *common[:1],
            f"--workdir={os.path.join(out, run_name(model, seed, group))}",
            f"--config.seed={seed}", *common[1:]]
  mode = [f"--replica_mode={replica_mode}"] if replica_mode else []
  return [sys.executable, "-m", "echokld.replicas", *common[:1],
          f"--workdir={os.path.join(out, run_name(model, '{seed}', group))}",
          f"--seeds={','.join(str(s) for _, s, _ in batch)}", *mode, *common[1:]]


def run_grid(out: str, runs: list[tuple[str, int, str]], overrides: list[str],
             replicas: int = 1, replica_mode: str | None = None) -> int:
  """Runs (or resumes, or skips) each (model, seed, group) in its own workdir; returns failures.

  replicas > 1: unfinished seeds of one model and group train `replicas` at a time as one
  program; a failed group counts each of its unfinished runs.
  """
  failures, pending = 0, []
  for model, seed, group in runs:
    workdir = os.path.join(out, run_name(model, seed, group))
    if os.path.exists(os.path.join(workdir, "summary.json")):
      print(f"[skip] {workdir} is finished", flush=True)
    else:
      pending.append((model, seed, group))
  for batch in replica_batches(pending, max(1, replicas)):
    names = ", ".join(run_name(*run) for run in batch)
    print(f"[run] {names} -> {out}", flush=True)
    t0 = time.time()
    result = subprocess.run(run_command(batch, out, overrides, replica_mode), cwd=ROOT)
    if result.returncode != 0:
      failures += sum(not os.path.exists(os.path.join(out, run_name(*run), "summary.json"))
                      for run in batch)
    status = "done" if result.returncode == 0 else f"failed (exit {result.returncode})"
    print(f"[{status}] {names} in {time.time() - t0:.0f}s", flush=True)
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
  add_replica_flags(parser)
  args = parser.parse_args(argv)
  try:
    groups = parse_groups(args.groups)
    seeds = parse_seeds(args.seeds)
    check_replicas(args.replicas)
  except InputError as exc:
    fail(exc)
  runs = grid(args.models.split(","), seeds, groups)
  failures = run_grid(args.out, shard(runs, args.shard), overrides, args.replicas,
                      args.replica_mode)
  print(table(args.out, runs))
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()
