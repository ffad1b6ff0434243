"""Runs a grid of models x seeds x quality groups: python -m echokld.sweep --out=DIR ...

  python -m echokld.sweep --out=runs/sweep --models=dice,kld_alpha --seeds=0,1 \
      --groups=Poor,Medium,Good --shard=0/2 -- --config.data.source=folder --config.data.root=DIR
  python -m echokld.sweep --out=runs/paper --protocol=paper --paper_models \
      --groups=Poor,Medium,Good -- --config.data.source=camus --config.data.root=DIR

Resumable and shardable (echokld.study.sweep). `--protocol=paper` runs `<config>:paper`
(the paper's §3.3 protocol); `--paper_models` the paper's models per group (Poor without
Models 3 and 7). Everything after `--` is passed to each run as config overrides. Bad
arguments: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from echokld import cli
from echokld.errors import InputError
from echokld.study import protocol, sweep


def main() -> None:
  argv, overrides = sweep.split_overrides(sys.argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--models", default=None,
                      help="Comma list of registered models (or config files); default "
                           "the paper's seven.")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--groups", default=sweep.ALL,
                      help=f"Comma list of {sweep.ALL}, {', '.join(sweep.GROUPS)}.")
  parser.add_argument("--shard", default="0/1", help="i/n: every n-th run from the i-th.")
  sweep.add_protocol_flags(parser)
  sweep.add_replica_flags(parser)
  args = parser.parse_args(argv)
  try:
    protocol.check(args.protocol)
    groups = sweep.parse_groups(args.groups)
    seeds = cli.parse_seeds(args.seeds)
    sweep.check_replicas(args.replicas)
    runs = sweep.choose_runs(args.models, args.paper_models, seeds, groups)
    mine = sweep.shard(runs, args.shard)
    if not mine:  # Legal (more shards than runs), but said: exit 0 must not look like work.
      print(f"note: --shard={args.shard} holds none of the {len(runs)} runs of this grid",
            file=sys.stderr, flush=True)
    protocol.record(args.out, args.protocol)
  except InputError as exc:
    cli.fail(exc)
  failures = sweep.run_grid(args.out, mine, overrides, args.replicas, args.replica_mode,
                            args.protocol)
  print(sweep.table(args.out, runs))
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()
