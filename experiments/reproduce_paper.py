"""The paper's study in one command: 7 models x seeds x quality groups, then the report.

  python experiments/reproduce_paper.py --out=runs/study --seeds=0,1,2 -- \
      --config.data.source=camus --config.data.root=/path/to/CAMUS
  python experiments/reproduce_paper.py --smoke --out=/tmp/smoke   # minutes, synthetic

As in the paper, each model is trained, validated and tested on one image-quality group at a
time: `--groups` defaults to Poor,Medium,Good (its Tables 1-7); add `all` to also train once
on every frame (unknown quality included), which the paper does not do. Runs go through
echokld.study.sweep (resumable: rerun the same command after an interruption), the report
through `python -m echokld.report`. `--replicas=S` trains S seeds of a model at a time as
one program (BENCHMARKS.md says when that is faster). Extra config overrides after `--`
apply to every run (e.g. `:paper` protocol settings or an image size). Bad arguments: one
line, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from echokld import cli, registry
from echokld.errors import InputError
from echokld.study import sweep

# Tiny models on tiny synthetic frames: every table and figure, in minutes on a CPU.
SMOKE_OVERRIDES = [
    "--config.model.init_features=8", "--config.model.blocks_down=(1,1,1,1)",
    "--config.model.vae_latent=16", "--config.data.synthetic_patients=24",
    "--config.data.synthetic_shape=(48,48)", "--config.data.image_size=32",
    "--config.data.test_frames.Good=4", "--config.data.test_frames.Medium=4",
    "--config.data.test_frames.Poor=2", "--config.train.batch_size=4",
    "--config.train.max_epochs=2", "--config.train.eval_batch_size=8",
    "--config.log.progress=False", "--config.log.tensorboard=False",
]


def main() -> None:
  argv, overrides = sweep.split_overrides(sys.argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--seeds", default=None,
                      help="Comma list or range; default 0,1,2 (0 with --smoke).")
  parser.add_argument("--models", default=",".join(registry.paper_models()))
  parser.add_argument("--groups", default=",".join(sweep.GROUPS),
                      help=f"Comma list of {sweep.ALL}, {', '.join(sweep.GROUPS)}.")
  parser.add_argument("--smoke", action="store_true")
  sweep.add_replica_flags(parser)
  args = parser.parse_args(argv)
  try:
    groups = sweep.parse_groups(args.groups)
    seeds = cli.parse_seeds(args.seeds or ("0" if args.smoke else "0,1,2"))
    models = sweep.check_models(args.models.split(","))
    sweep.check_replicas(args.replicas)
  except InputError as exc:
    cli.fail(exc)
  overrides = (SMOKE_OVERRIDES if args.smoke else []) + overrides
  sweep_dir = os.path.join(args.out, "runs")
  runs = sweep.grid(models, seeds, groups)
  failures = sweep.run_grid(sweep_dir, runs, overrides, args.replicas, args.replica_mode)
  if failures:
    sys.exit(f"{failures} run(s) failed; rerun the same command to resume them")
  report = subprocess.run([sys.executable, "-m", "echokld.report", f"--sweep_dir={sweep_dir}",
                           f"--out={os.path.join(args.out, 'report')}"])
  sys.exit(report.returncode)


if __name__ == "__main__":
  main()
