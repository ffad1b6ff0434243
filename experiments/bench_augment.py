"""What on-device augmentation costs: the train step with and without it, timed in turn.

  python experiments/bench_augment.py --sizes=96x96:8,224x224:2 --steps=20

Rows alternate step by step (benchmark.time_rows), so load on a shared machine hits both
alike; printed: median seconds per step and the ratio augmented / plain (target <= 1.1).
"""

from __future__ import annotations

import argparse
import platform
import statistics

import jax

import benchmark  # Beside this script.


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="96x96:8,224x224:2", help="HxW:batch, comma-separated")
  parser.add_argument("--model", default="dice")
  parser.add_argument("--steps", type=int, default=20)
  args = parser.parse_args()
  print(f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}")
  for spec in args.sizes.split(","):
    size, batch = spec.split(":")
    shape = benchmark.parse_size(size)
    runners = [benchmark.jax_runner(args.model, shape, int(batch)),
               benchmark.jax_runner(args.model, shape, int(batch), augment=True)]
    times = benchmark.time_rows(runners, args.steps)
    plain, augmented = (statistics.median(times[r.name]) for r in runners)
    print(f"{size} batch {batch}: plain {plain:.4f} s, augmented {augmented:.4f} s, "
          f"ratio {augmented / plain:.3f}")


if __name__ == "__main__":
  main()
