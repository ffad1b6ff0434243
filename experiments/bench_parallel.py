"""Train-step time with data parallelism over N devices against one device.

    python experiments/bench_parallel.py --devices=1,4 --size=96 --batch=8 --steps=10

Each device count runs in its own process (CPU fake devices need XLA_FLAGS before JAX is
imported; on a GPU/TPU host the real devices are used and --devices picks how many). Times
the jitted train step (echokld.train.step) with echokld.train.mesh's placement: median of --steps steps
after 2 warm-up steps, each synchronised with block_until_ready.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(args: argparse.Namespace) -> None:
  """Times one device count (this process sees at least that many devices)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from echokld.configs import dice
  from echokld.train import build, mesh, step as step_lib

  n = args.devices
  config = dice.get_config()
  config.train.batch_size = args.batch
  setup = build.build(config, (args.size, args.size))
  state = setup.state
  placement = mesh.first_devices(n)
  rng = np.random.default_rng(0)
  frames = args.batch * 4
  images = rng.integers(0, 256, (frames, args.size, args.size), dtype=np.uint8)
  masks = (images > 127).astype(np.uint8)
  chunk = step_lib.make_train_chunk(setup.model, setup.tx, config, placement.batch_sharding)
  state, images, masks = placement.put(state), placement.put(images), placement.put(masks)
  perm = jnp.arange(frames)
  aux = (perm, jnp.int32(4), setup.reference)
  t0 = time.perf_counter()
  state, _ = chunk(state, images, masks, aux, jnp.int32(0), num_steps=1)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  times, cpu = [], []
  for i in range(args.steps + 2):
    t0, c0 = time.perf_counter(), time.process_time()
    state, terms = chunk(state, images, masks, aux, jnp.int32(i % 4), num_steps=1)
    jax.block_until_ready((state, terms))
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  step_s = statistics.median(times[2:])
  cores_busy = sum(cpu[2:]) / sum(times[2:])
  print("RESULT " + json.dumps({"devices": n, "step_s": step_s,
                                "images_per_s": args.batch / step_s,
                                "first_call_s": compile_s,
                                "visible_devices": jax.device_count(),
                                "cores_busy": cores_busy}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", default="1,4", help="Device counts, comma-separated.")
  parser.add_argument("--size", type=int, default=96)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args, _ = parser.parse_known_args()
  if args.child:
    args.devices = int(args.devices)
    child(args)
    return
  print("| devices | step s | images/s | ratio to 1 device | first call s |")
  print("|---|---|---|---|---|")
  base = None
  for n in [int(v) for v in args.devices.split(",")]:
    env = dict(os.environ)
    if env.get("JAX_PLATFORMS", "cpu") == "cpu" and n > 1:
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={n}").strip()
    done = subprocess.run([sys.executable, __file__, "--child", f"--devices={n}",
                           f"--size={args.size}", f"--batch={args.batch}",
                           f"--steps={args.steps}"], env=env, capture_output=True, text=True)
    if done.returncode:
      sys.exit(f"error: {n} devices: {done.stderr.strip().splitlines()[-1]}")
    row = json.loads([l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
    base = base or row["step_s"]
    print(f"| {n} | {row['step_s']:.3f} | {row['images_per_s']:.1f} | "
          f"{row['step_s'] / base:.2f} | {row['first_call_s']:.1f} |", flush=True)


if __name__ == "__main__":
  main()
