"""Whole sweeps timed as commands: S seeds one after another against one replica group.

The step benchmarks (bench_replicas.py) leave out what a sweep also pays per run: starting
Python and JAX, building the data, compiling and evaluating. This times the two sweeps a
user would type, for each epoch count, and reads every run's test Dice back:

  python -m echokld.sweep --out=D/seq_E --models=M --seeds=0-(S-1) -- --config.train.max_epochs=E
  python -m echokld.sweep --out=D/rep_E --models=M --seeds=0-(S-1) --replicas=S -- ...

    python experiments/bench_sweeps.py --out=/tmp/sweeps --epochs=8,20 --seeds=8

Wall seconds and the CPU seconds of the child processes (all threads) per sweep; ratios are
in turn / group (> 1: the group finishes sooner). Run it on a quiet machine.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def timed(command: list[str]) -> tuple[float, float]:
  """Runs a command to completion; returns (wall s, CPU s of its process tree)."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return wall, cpu


def test_dice(sweep_dir: str) -> list[float]:
  """The test Dice of every finished run under a sweep folder (one summary.json each)."""
  values = []
  for name in sorted(os.listdir(sweep_dir)):
    path = os.path.join(sweep_dir, name, "summary.json")
    if os.path.isfile(path):
      with open(path) as f:
        values.append(json.load(f)["test"]["dice"])
  return values


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--epochs", default="8,20")
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--model", default="dice")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  seeds = f"0-{args.seeds - 1}"
  rows = []
  for epochs in [int(e) for e in args.epochs.split(",")]:
    row = {"epochs": epochs}
    for kind, extra in (("seq", []), ("rep", [f"--replicas={args.seeds}"])):
      out = os.path.join(args.out, f"{kind}_{epochs}")
      command = [sys.executable, "-m", "echokld.sweep", f"--out={out}",
                 f"--models={args.model}", f"--seeds={seeds}", *extra, "--",
                 f"--config.train.max_epochs={epochs}"]
      wall, cpu = timed(command)
      dice = test_dice(out)
      row[kind] = {"wall_s": wall, "cpu_s": cpu, "runs": len(dice),
                   "dice_mean": statistics.mean(dice), "dice_sd": statistics.stdev(dice)}
      print(json.dumps({"epochs": epochs, kind: row[kind]}), flush=True)
    rows.append(row)
  print("| epochs | in turn: wall s (CPU s) | one group: wall s (CPU s) | wall ratio "
        "| CPU ratio | test Dice, mean ± sd: in turn / group |")
  print("|---|---|---|---|---|---|")
  for row in rows:
    seq, rep = row["seq"], row["rep"]
    print(f"| {row['epochs']} | {seq['wall_s']:.0f} ({seq['cpu_s']:.0f}) "
          f"| {rep['wall_s']:.0f} ({rep['cpu_s']:.0f}) "
          f"| **{seq['wall_s'] / rep['wall_s']:.2f}** | {seq['cpu_s'] / rep['cpu_s']:.2f} "
          f"| {seq['dice_mean']:.3f} ± {seq['dice_sd']:.3f} / "
          f"{rep['dice_mean']:.3f} ± {rep['dice_sd']:.3f} |")
  with open(os.path.join(args.out, "bench_sweeps.json"), "w") as f:
    json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
