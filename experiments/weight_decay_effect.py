"""What Model 2's decoupled weight decay does at the paper's learning rate (issue 14, item 6).

Trains Model 1 (Adam) and Model 2 (AdamW) from the same initialisation on the same batches
for `--steps` steps at the paper's learning rate (1e-5) and batch size (2), once per lambda,
and prints the global parameter norm of each against Adam's, next to the decay-only factor
(1 - lr * lambda)^steps of eq. (8):

  python experiments/weight_decay_effect.py --data_root=../shared/data/camus224 --steps=200

Decay multiplies every weight by (1 - lr * lambda) per step on top of Adam's update, so
AdamW's norm should sit at Adam's times that factor (Adam's updates are the same to first
order). A paper run of S steps shrinks the weights by the same factor with S in place of
--steps; the script extrapolates to S = steps/epoch x epochs.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from echokld import registry
from echokld.data import pipeline
from echokld.train import build as build_lib
from echokld.train import step as step_lib


def global_norm(params) -> float:
  return float(jnp.sqrt(sum(jnp.sum(p.astype(jnp.float32) ** 2)
                            for p in jax.tree_util.tree_leaves(params))))


def run(config, train, steps: int) -> dict:
  setup = build_lib.build(config, train.images.shape[1:])
  chunk = step_lib.make_train_chunk(setup.model, setup.tx, config)
  rng = np.random.default_rng(0)
  per_epoch = len(train.images) // config.train.batch_size
  perm = np.concatenate([rng.permutation(len(train.images))[:per_epoch * config.train.batch_size]
                         for _ in range(-(-steps // per_epoch))]).astype(np.int32)
  images, masks = jnp.asarray(train.images), jnp.asarray(train.masks)
  state = setup.state
  init = global_norm(state.params)
  for i in range(steps):
    state, _ = chunk(state, images, masks, (jnp.asarray(perm), jnp.int32(steps),
                                             jnp.asarray(setup.reference)),
                     jnp.int32(i), num_steps=1)
  return {"params": state.params, "init": init, "norm": global_norm(state.params),
          "per_epoch": per_epoch}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_root", required=True)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--lambdas", default="0.0001,0.01")
  parser.add_argument("--paper_epochs", type=int, default=150,
                      help="epochs of a paper run, for the extrapolation")
  args = parser.parse_args()

  def config_of(name, weight_decay=None):
    config = registry.load_config(f"{name}:paper")
    config.data.source, config.data.root = "folder", args.data_root
    config.data.image_size = args.image_size
    config.log.progress = False
    if weight_decay is not None:
      config.train.weight_decay = weight_decay
    return config

  base_config = config_of("dice")
  train = pipeline.build_splits(base_config)[0]["train"]
  adam = run(base_config, train, args.steps)
  lr = base_config.train.learning_rate
  print(f"{len(train.images)} training frames at {args.image_size}x{args.image_size}, "
        f"batch 2, lr {lr:g}, {args.steps} steps; initial norm {adam['init']:.4f}, "
        f"Adam's after {adam['norm']:.4f}")
  print("| lambda | AdamW / Adam norm - 1 | (1 - lr lambda)^steps - 1 | "
        "relative distance to Adam | paper run: shrink after "
        f"{args.paper_epochs} epochs x {adam['per_epoch']} steps |")
  print("| --- | --- | --- | --- | --- |")
  for lam in (float(v) for v in args.lambdas.split(",")):
    adamw = run(config_of("wdecay", lam), train, args.steps)
    diff = float(jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(
        jax.tree_util.tree_leaves(adamw["params"]), jax.tree_util.tree_leaves(adam["params"])))))
    paper_steps = args.paper_epochs * adam["per_epoch"]
    print(f"| {lam:g} | {adamw['norm'] / adam['norm'] - 1:.3e} | "
          f"{(1 - lr * lam) ** args.steps - 1:.3e} | {diff / adam['norm']:.3e} | "
          f"{(1 - lr * lam) ** paper_steps - 1:.3e} |")


if __name__ == "__main__":
  main()
