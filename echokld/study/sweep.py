"""Runs a grid of models x seeds x quality groups, each in its own workdir; resumable, shardable.

  python -m echokld.sweep --out=runs/sweep --models=dice,kld_alpha --seeds=0,1 \
      --groups=Poor,Medium,Good --shard=0/2 -- --config.data.source=folder --config.data.root=DIR

`--groups`: `all` (default) trains and tests on every frame, in `<model>_seed<seed>/`; a
quality group (Good, Medium, Poor) trains, validates and tests on that group's frames only,
unknown quality excluded, as the paper does (Tables 1-3), in `<model>_<group>_seed<seed>/`.
Finished runs (summary.json present) are skipped; interrupted ones resume from their latest
checkpoint. `--replicas=S` trains the unfinished seeds of one model and group S at a time in
one program (`echokld.main --seeds`: one compile, one copy of the data; each seed still gets its
own split, workdir and files, with the same meaning as a run of its own). `--shard=i/n` runs
every n-th run starting at i, so n machines split a sweep without coordination. Everything
after `--` is passed to each run as config overrides (after the group's own). Ends with a
markdown table of the finished runs. Bad arguments: one line, exit code 2.

`--protocol=paper` makes each run load `<config>:paper` (the paper's §3.3 settings at native
resolution; study.protocol records it in OUT/sweep.json); `quick` (default) the configs'
defaults. `--paper_models` trains the paper's models per quality group as the paper did
(§4: Models 3 and 7 were not evaluated on Poor frames), read from the registry's paper
numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Sequence

from echokld import registry
from echokld.cli import parse_seeds
from echokld.errors import InputError
from echokld.study import protocol as protocol_lib

ALL = "all"
GROUPS = ("Poor", "Medium", "Good")  # The paper's quality groups, in its table order.
# Paper numbers of the models the paper did not evaluate on a group (§4: "Models 3 and 7
# were not evaluated on poor-quality images").
PAPER_NOT_EVALUATED = {"Poor": (3, 7)}


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
                           "program (echokld.main --seeds).")
  parser.add_argument("--replica_mode", default=None,
                      help="echokld.main --replica_mode (unroll, hybrid, vmap, devices).")


def add_protocol_flags(parser: argparse.ArgumentParser) -> None:
  """--protocol and --paper_models, shared by this script and reproduce_paper.py."""
  parser.add_argument("--protocol", default="quick",
                      help="quick (the configs' defaults), paper (each run loads "
                           "<config>:paper: the paper's §3.3 protocol at native size) or "
                           "cpu_study (<config>:cpu_study: 96x96, trained to early "
                           "stopping) or best (<config>:best: 128x128, geometric "
                           "augmentation; docs/RESULTS.md).")
  parser.add_argument("--paper_models", action="store_true",
                      help="The paper's models per group (Poor without Models 3 and 7); "
                           "replaces --models.")


def paper_models(group: str) -> list[str]:
  """The registered paper models the paper evaluated on `group`, in its order."""
  skip = PAPER_NOT_EVALUATED.get(group, ())
  return [s.name for s in registry.models()
          if s.paper_number and not s.variant and s.paper_number not in skip]


def choose_runs(models: str | None, use_paper_models: bool, seeds: Sequence[int],
                groups: Sequence[str]) -> list[tuple[str, int, str]]:
  """The grid of --models (default: the paper's seven) or of --paper_models (per group)."""
  if use_paper_models:
    if models is not None:
      raise InputError("--paper_models", "replaces --models; give one of them")
    return [(m, s, g) for s in seeds for g in groups for m in paper_models(g)]
  names = models.split(",") if models is not None else registry.paper_models()
  return grid(check_models(names), seeds, groups)


def check_replicas(replicas: int) -> None:
  if replicas < 1:
    raise InputError("--replicas", f"expected a positive integer, got {replicas}")


def grid(models: Sequence[str], seeds: Sequence[int],
         groups: Sequence[str] = (ALL,)) -> list[tuple[str, int, str]]:
  """(model, seed, group) runs; seed outermost, so a partial sweep holds whole seeds."""
  return [(m, s, g) for s in seeds for g in groups for m in models]


def parse_shard(spec: str) -> tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n; InputError otherwise."""
  try:
    index, count = (int(v) for v in spec.split("/"))
  except ValueError:
    raise InputError("--shard", f"expected i/n, e.g. 0/2, got {spec!r}") from None
  if not 0 <= index < count:
    raise InputError("--shard", f"expected 0 <= i < n, got {spec!r}")
  return index, count


def check_models(names: Sequence[str]) -> list[str]:
  """Registered model names (or config file paths); InputError naming an unknown one."""
  for name in names:
    if registry.get(name) is None and not os.path.isfile(name):
      raise InputError("--models", f"unknown model {name!r} (registered: "
                       f"{', '.join(registry.names())})")
  return list(names)


def shard(runs: list, spec: str) -> list:
  index, count = parse_shard(spec)
  return runs[index::count]


def _number(value, digits: int) -> str:
  return "" if value is None else f"{value:.{digits}f}"


def table(out: str, runs: list[tuple[str, int, str]]) -> str:
  """Markdown table of the finished runs among `runs` (blank where a summary lacks a key)."""
  lines = ["| model | group | seed | epochs | best val Dice (epoch) | test Dice | test MHD px | "
           "empty | train s | img/s |", "|---|---|---|---|---|---|---|---|---|---|"]
  for model, seed, group in runs:
    path = os.path.join(out, run_name(model, seed, group), "summary.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      s = json.load(f)
    test = s["test"]
    lines.append(f"| {model} | {group} | {seed} | {s['epochs']} | {s['val']['best_dice']:.4f} "
                 f"({s['val']['best_epoch']}) | {_number(test.get('dice'), 4)} | "
                 f"{_number(test.get('mhd_px'), 2)} | {test.get('empty_predictions', '')} | "
                 f"{s['train_seconds']:.0f} | {s['train_images_per_second']:.1f} |")
  return "\n".join(lines)


def replica_batches(runs: list[tuple[str, int, str]], size: int
                    ) -> list[list[tuple[str, int, str]]]:
  """Runs of one model and group, `size` seeds at a time in the given order (size 1: alone)."""
  by_key: dict[tuple[str, str], list] = {}
  for run in runs:
    by_key.setdefault((run[0], run[2]), []).append(run)
  return [same[i:i + size] for same in by_key.values() for i in range(0, len(same), size)]


def run_command(batch: list[tuple[str, int, str]], out: str, overrides: list[str],
                replica_mode: str | None = None, protocol: str = "quick") -> list[str]:
  """The command of one run, or of a replica group (echokld.main --seeds).

  protocol 'paper' loads `<config>:paper` (configs/base.py apply_paper_protocol), and
  'cpu_study' `<config>:cpu_study` and 'best' `<config>:best`.
  """
  model, seed, group = batch[0]
  spec = registry.get(model)
  config = spec.config_path if spec else model  # A registered name, or a config file.
  common = [f"--config={protocol_lib.config_value(config, protocol)}",
            *group_overrides(group), *overrides]
  if len(batch) == 1:
    return [sys.executable, "-m", "echokld.main", *common[:1],
            f"--workdir={os.path.join(out, run_name(model, seed, group))}",
            f"--config.seed={seed}", *common[1:]]
  mode = [f"--replica_mode={replica_mode}"] if replica_mode else []
  return [sys.executable, "-m", "echokld.main", *common[:1],
          f"--workdir={os.path.join(out, run_name(model, '{seed}', group))}",
          f"--seeds={','.join(str(s) for _, s, _ in batch)}", *mode, *common[1:]]


def run_grid(out: str, runs: list[tuple[str, int, str]], overrides: list[str],
             replicas: int = 1, replica_mode: str | None = None,
             protocol: str = "quick") -> int:
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
    result = subprocess.run(run_command(batch, out, overrides, replica_mode, protocol))
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
