"""Times the train step of each model (batch 2 by default) and prints ratios to Model 1.

  python experiments/bench_steps.py --size=224,224 --models=dice,kld_alpha,kld_kde --steps=20

Median of --steps synchronised steps per model after two warm-up steps, models taken in
turn step by step so that load on a shared machine hits all alike (compilation excluded,
reported separately). Data is synthetic echo at the requested size.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from echokld import models, steps, variants  # noqa: E402
from echokld.data import pipeline, synthetic  # noqa: E402


def setup_model(name: str, shape: tuple[int, int], batch: int, per_call: int = 1
                ) -> tuple[Callable, float]:
  """Builds a model's jitted train step on synthetic echo; returns (run_one_step, compile s)."""
  config = importlib.import_module(f"configs.{name}").get_config()
  records = synthetic.make_synthetic(max(batch * per_call, 4) // 2 + 1, 0, shape)
  split = pipeline.to_arrays(records, shape, resize=False)
  model = models.model_from_config(config.model)
  tx, plateau = steps.make_optimizer(config.train), steps.make_plateau(config.train)
  box = [steps.create_train_state(model, tx, plateau, 0, shape)]
  reference = (variants.reference_params(split) if variants.needs_reference(config)
               else None)
  extras_fn, _ = variants.make_extras(config, reference)
  chunk = steps.make_train_chunk(model, tx, config.loss, batch, extras_fn)
  images, masks = jax.device_put(split.images), jax.device_put(split.masks)
  perm = jnp.arange(len(split))

  def run_one_step() -> float:
    """Seconds per train step, over one device call of `per_call` steps."""
    t0 = time.perf_counter()
    box[0], terms = chunk(box[0], images, masks, perm, jnp.int32(0), num_steps=per_call)
    jax.block_until_ready(terms)
    assert np.isfinite(np.asarray(terms["total"])).all(), name
    return (time.perf_counter() - t0) / per_call

  compile_s = run_one_step()
  run_one_step()
  return run_one_step, compile_s


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", default="224,224")
  parser.add_argument("--models", default="dice,wdecay,vae,kld_alpha,kld_kde,rd_vae,bd_vae")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--steps_per_call", default="1",
                      help="comma list: also time k steps fused by lax.scan per call")
  args = parser.parse_args()
  shape = tuple(int(v) for v in args.size.split(","))
  print(f"# train step, batch {args.batch}, {shape[0]}x{shape[1]}, {jax.devices()[0]}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}")
  print("| model[@steps per call] | median step s | images/s | ratio to dice | compile s |")
  print("|---|---|---|---|---|")
  names = [f"{m}@{k}" if k != "1" else m for k in args.steps_per_call.split(",")
           for m in args.models.split(",")]
  runners = {name: setup_model(name.split("@")[0], shape, args.batch,
                               int(name.split("@")[1]) if "@" in name else 1)
             for name in names}
  times: dict[str, list[float]] = {name: [] for name in names}
  for _ in range(args.steps):  # Round robin, so machine drift hits every model alike.
    for name in names:
      times[name].append(runners[name][0]())
  base = statistics.median(times[names[0]])
  for name in names:
    median = statistics.median(times[name])
    print(f"| {name} | {median:.3f} | {args.batch / median:.2f} | {median / base:.2f} | "
          f"{runners[name][1]:.1f} |", flush=True)


if __name__ == "__main__":
  main()
