"""Parameter counts of every packaged model at the paper's input sizes, next to Table 8.

  python experiments/param_counts.py [--models=dice,bd_vae]

Shapes only (jax.eval_shape through train.build), so it takes seconds. The paper's frames
(§4.1): Poor 1152 x 496, Medium 1184 x 624, Good 1136 x 704 (rows x cols; divisible by 16).
Table 8 gives one count per model; Models 3 and 7 grow with the input through their dense
layers, so their counts are printed per size.
"""

from __future__ import annotations

import argparse

from echokld import registry
from echokld.train import build as build_lib

SIZES = {"Poor": (1152, 496), "Medium": (1184, 624), "Good": (1136, 704), "224": (224, 224)}
TABLE_8 = {1: 1_506_689, 2: 1_506_689, 3: 14_906_790, 4: 1_506_721, 5: 1_506_721,
           6: 1_519_332, 7: 38_088_420}


def count(name: str, shape: tuple[int, int]) -> int:
  config = registry.load_config(name)
  return build_lib.build(config, shape, reference=[0.5, 0.3, 0.1], abstract=True).num_params


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(registry.paper_models()))
  args = parser.parse_args()
  print("| model | " + " | ".join(f"{k} {r}x{c}" for k, (r, c) in SIZES.items()) +
        " | Table 8 | nearest / Table 8 - 1 |")
  print("| --- " * (len(SIZES) + 3) + "|")
  for name in args.models.split(","):
    spec = registry.get(name)
    counts = {k: count(name, s) for k, s in SIZES.items()}
    paper = TABLE_8.get(spec.paper_number) if spec else None
    near = (min(counts.values(), key=lambda v: abs(v - paper)) if paper else None)
    tail = f" | {paper:,} | {near / paper - 1:+.2%} |" if paper else " | | |"
    print(f"| {spec.paper_number if spec else '-'} {name} | " +
          " | ".join(f"{v:,}" for v in counts.values()) + tail)


if __name__ == "__main__":
  main()
