"""Runs a grid of models x seeds x quality groups: python -m echokld.sweep --out=DIR ...

  python -m echokld.sweep --out=runs/sweep --models=dice,kld_alpha --seeds=0,1 \
      --groups=Poor,Medium,Good --shard=0/2 -- --config.data.source=folder --config.data.root=DIR

Resumable and shardable (echokld.study.sweep). Everything after `--` is passed to each run
as config overrides. Bad arguments: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from echokld import cli, registry
from echokld.errors import InputError
from echokld.study import sweep


def main() -> None:
  argv, overrides = sweep.split_overrides(sys.argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--models", default=",".join(registry.paper_models()),
                      help="Comma list of registered models (or config files).")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--groups", default=sweep.ALL,
                      help=f"Comma list of {sweep.ALL}, {', '.join(sweep.GROUPS)}.")
  parser.add_argument("--shard", default="0/1", help="i/n: every n-th run from the i-th.")
  sweep.add_replica_flags(parser)
  args = parser.parse_args(argv)
  try:
    groups = sweep.parse_groups(args.groups)
    seeds = cli.parse_seeds(args.seeds)
    models = sweep.check_models(args.models.split(","))
    sweep.check_replicas(args.replicas)
    runs = sweep.grid(models, seeds, groups)
    mine = sweep.shard(runs, args.shard)
  except InputError as exc:
    cli.fail(exc)
  failures = sweep.run_grid(args.out, mine, overrides, args.replicas, args.replica_mode)
  print(sweep.table(args.out, runs))
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()
