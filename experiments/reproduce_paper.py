"""The paper's study in one command: 7 models x seeds x quality groups, then the report.

  python experiments/reproduce_paper.py --protocol=paper --paper_models --out=runs/study \
      --seeds=0,1,2 -- --config.data.source=camus --config.data.root=/path/to/CAMUS
  python experiments/reproduce_paper.py --smoke --out=/tmp/smoke   # minutes, synthetic
  python experiments/reproduce_paper.py --protocol=paper --smoke --out=/tmp/smoke_paper

As in the paper, each model is trained, validated and tested on one image-quality group at a
time: `--groups` defaults to Poor,Medium,Good (its Tables 1-7); add `all` to also train once
on every frame (unknown quality included), which the paper does not do. `--protocol=paper`
makes each run load `<config>:paper`, the paper's §3.3 protocol (Adam 1e-5, batch 2,
plateau and early stopping, native resolution; default `quick`: the configs' defaults), and
`--paper_models` trains the models the paper evaluated per group (Poor without Models 3 and
7, §4). Runs go through echokld.study.sweep (resumable: rerun the same command after an
interruption), the report through `python -m echokld.report`. `--replicas=S` trains S seeds
of a model at a time as one program (BENCHMARKS.md says when that is faster). Extra config
overrides after `--` apply to every run. `--smoke` shrinks the models, the synthetic frames
and the epochs so that either protocol runs end to end in minutes on a CPU (under `paper`
the frames stay at their native 32x32 and batch 2). Bad arguments: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from echokld import cli
from echokld.errors import InputError
from echokld.study import protocol, sweep

# Tiny models on tiny synthetic frames: every table and figure, in minutes on a CPU.
SMOKE_OVERRIDES = [
    "--config.model.init_features=8", "--config.model.blocks_down=(1,1,1,1)",
    "--config.model.vae_latent=16", "--config.data.synthetic_patients=24",
    "--config.data.test_frames.Good=4", "--config.data.test_frames.Medium=4",
    "--config.data.test_frames.Poor=2", "--config.train.max_epochs=2",
    "--config.log.progress=False", "--config.log.tensorboard=False",
]
SMOKE_PROTOCOL_OVERRIDES = {
    # 48x48 frames resized to 32x32, batch 4.
    "quick": ["--config.data.synthetic_shape=(48,48)", "--config.data.image_size=32",
              "--config.train.batch_size=4", "--config.train.eval_batch_size=8"],
    # :paper keeps the native size and its batch of 2: render the frames at 32x32.
    "paper": ["--config.data.synthetic_shape=(32,32)"],
}


def smoke_overrides(name: str) -> list[str]:
  """The smoke settings; protocols that resize (cpu_study, best) shrink like quick."""
  return SMOKE_OVERRIDES + SMOKE_PROTOCOL_OVERRIDES.get(protocol.check(name),
                                                        SMOKE_PROTOCOL_OVERRIDES["quick"])


def main() -> None:
  argv, overrides = sweep.split_overrides(sys.argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--seeds", default=None,
                      help="Comma list or range; default 0,1,2 (0 with --smoke).")
  parser.add_argument("--models", default=None,
                      help="Comma list of models; default the paper's seven.")
  parser.add_argument("--groups", default=",".join(sweep.GROUPS),
                      help=f"Comma list of {sweep.ALL}, {', '.join(sweep.GROUPS)}.")
  parser.add_argument("--smoke", action="store_true")
  sweep.add_protocol_flags(parser)
  sweep.add_replica_flags(parser)
  args = parser.parse_args(argv)
  sweep_dir = os.path.join(args.out, "runs")
  try:
    protocol.check(args.protocol)
    groups = sweep.parse_groups(args.groups)
    seeds = cli.parse_seeds(args.seeds or ("0" if args.smoke else "0,1,2"))
    sweep.check_replicas(args.replicas)
    runs = sweep.choose_runs(args.models, args.paper_models, seeds, groups)
    protocol.record(sweep_dir, args.protocol)
  except InputError as exc:
    cli.fail(exc)
  overrides = (smoke_overrides(args.protocol) if args.smoke else []) + overrides
  failures = sweep.run_grid(sweep_dir, runs, overrides, args.replicas, args.replica_mode,
                            args.protocol)
  if failures:
    sys.exit(f"{failures} run(s) failed; rerun the same command to resume them")
  report = subprocess.run([sys.executable, "-m", "echokld.report", f"--sweep_dir={sweep_dir}",
                           f"--out={os.path.join(args.out, 'report')}"])
  sys.exit(report.returncode)


if __name__ == "__main__":
  main()
