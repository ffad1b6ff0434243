"""Where a train step's time goes: a jax.profiler trace summarised by kind of operation.

  python experiments/profile_step.py --size=224x224 --batch=2 --model=dice --steps=5

Traces --steps synchronised train steps (after warm-up) into --trace_dir, then joins the
trace's per-operation durations with the compiled program's HLO metadata and prints the
time per step by kind: convolutions (forward, input gradient, weight gradient, by level),
GroupNorm statistics, layout transposes and the rest. Durations are summed over the
executor's threads, so the total can exceed the step's wall time when ops overlap.
The trace can also be opened in Perfetto or TensorBoard's profile plugin.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

import jax

import benchmark  # Beside this script.

HLO_LINE = re.compile(r'^\s*%?([\w.\-]+) = (\S+) .*?op_name="([^"]*)"')


def op_kind(hlo_name: str, shape: str, op_name: str) -> str:
  """A readable class for one fused HLO op, from its name, output shape and JAX origin."""
  backward = "transpose(jvp" in op_name
  if "conv_general_dilated" in op_name:
    dims = re.findall(r"\d+", shape[shape.find("[") + 1:shape.find("]")])
    if not backward:
      return f"conv forward ({'x'.join(dims[1:3])}x{dims[3]})" if len(dims) == 4 else \
          "conv forward"
    # The weight gradient's output is the kernel (kh, kw, cin, cout); the input gradient's
    # is an activation (b, h, w, c).
    if len(dims) == 4 and dims[0] in ("1", "3") and dims[1] in ("1", "3"):
      return f"conv weight gradient ({dims[2]}->{dims[3]} ch)"
    if len(dims) == 4 and dims[1] in ("1", "3") and dims[2] in ("1", "3"):
      return f"conv weight gradient ({dims[0]}->{dims[3]} ch)"
    return f"conv input gradient ({'x'.join(dims[1:3])}x{dims[3]})" if len(dims) == 4 else \
        "conv input gradient"
  if "GroupNorm" in op_name:
    return "GroupNorm " + ("backward" if backward else "forward")
  if hlo_name.startswith(("transpose", "copy")):
    return "layout transposes and copies"
  if "adam" in op_name or "optax" in op_name or "apply_updates" in op_name:
    return "optimizer"
  return "other " + ("backward" if backward else "forward")


def hlo_index(hlo_text: str) -> dict[str, tuple[str, str]]:
  index = {}
  for line in hlo_text.splitlines():
    match = HLO_LINE.match(line)
    if match:
      index[match.group(1)] = (match.group(2), match.group(3))
  return index


def summarise(trace_dir: str, hlo_text: str, steps: int) -> list[tuple[str, float, int]]:
  path = max(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True),
             key=os.path.getmtime)  # The newest trace in the folder.
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  index = hlo_index(hlo_text)
  total: dict[str, float] = collections.Counter()
  count: dict[str, int] = collections.Counter()
  for event in events:
    name = event.get("name", "")
    if event.get("ph") != "X" or name.startswith(("$", "end:")):
      continue
    if name in index:
      kind = op_kind(name, *index[name])
    elif name.split(".")[0] in ("transpose_copy_fusion", "copy", "transpose"):
      kind = "layout transposes and copies"
    else:
      continue  # Executor bookkeeping, Python frames.
    total[kind] += event.get("dur", 0) / 1e3 / steps
    count[kind] += 1
  return sorted(((k, total[k], count[k] // steps) for k in total), key=lambda r: -r[1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="224x224")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--model", default="dice")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--trace_dir", default="/tmp/echokld-profile")
  args = parser.parse_args()
  shape = benchmark.parse_size(args.size)
  runner = benchmark.jax_runner(args.model, shape, args.batch)
  for _ in range(3):
    runner.step()
  jax.profiler.start_trace(args.trace_dir, create_perfetto_trace=True)
  wall = [runner.step() for _ in range(args.steps)]
  jax.profiler.stop_trace()
  rows = summarise(args.trace_dir, runner.hlo_text, args.steps)
  op_total = sum(r[1] for r in rows)
  print(f"# {args.model}, {args.size}, batch {args.batch}: median step "
        f"{sorted(wall)[len(wall) // 2] * 1e3:.0f} ms wall, {op_total:.0f} ms of op time "
        f"(summed over threads); trace in {args.trace_dir}\n")
  print("| kind | ms per step | share of op time | ops per step |")
  print("|---|---|---|---|")
  for kind, ms, n in rows:
    print(f"| {kind} | {ms:.1f} | {100 * ms / op_total:.0f}% | {n} |")


if __name__ == "__main__":
  main()
