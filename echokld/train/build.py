"""The one place that turns a config into what training and inference need.

`build(config, image_shape, reference)` gives the model, the optimizer, the plateau, the
conditioning of Models 6-7 and the initial TrainState. Training, prediction, the benchmarks
and the tests all build through it, so a model variant is configured in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from echokld.nn import model as model_lib
from echokld.objectives import conditioning
from echokld.train import state as state_lib

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Setup:
  """A built model and everything that trains it.

  Attributes:
    model: the SegModel.
    tx: the optimizer (learning rate injected, so the plateau can scale it).
    plateau: optax's reduce_on_plateau, driven once per epoch by `end_epoch`.
    conditioning: how Models 6-7 make their extra inputs (empty for the others).
    reference: the training-set fit (skew, loc, scale) as float32 (3,); zeros when unused.
    state: the initial TrainState for `seed` (abstract shapes with `abstract=True`).
  """

  model: model_lib.SegModel
  tx: optax.GradientTransformation
  plateau: Any
  conditioning: conditioning.Conditioning
  reference: np.ndarray
  state: state_lib.TrainState

  @property
  def num_params(self) -> int:
    return model_lib.count_params(self.state.params)


def build(config: Any, image_shape: Sequence[int], reference: Any = None,
          seed: int | None = None, abstract: bool = False, steps_per_epoch: int = 1) -> Setup:
  """Builds the model, optimizer, plateau, conditioning and initial state of `config`.

  Args:
    config: a full config (echokld.configs).
    image_shape: (rows, cols) of the frames the model sees.
    reference: the training-set fit of Models 6-7 (conditioning.reference_params); required
      when the model needs it.
    seed: initialisation seed (default config.seed).
    abstract: only shapes (jax.eval_shape), for restoring a checkpoint without computing.
    steps_per_epoch: sets the length of a per-step learning-rate schedule (train.schedule).
  """
  model = model_lib.build_model(config.model, COMPUTE_DTYPES[config.train.compute_dtype])
  tx = state_lib.make_optimizer(config.train, steps_per_epoch)
  plateau = state_lib.make_plateau(config.train)
  cond = conditioning.make_conditioning(config, reference)
  ref = np.zeros(model_lib.DIST_DIM, np.float32) if reference is None else np.asarray(
      reference, np.float32)
  seed = config.seed if seed is None else seed

  def init():
    return state_lib.create_train_state(model, tx, plateau, seed, tuple(image_shape))

  state = jax.eval_shape(init) if abstract else init()
  return Setup(model, tx, plateau, cond, ref, state)
