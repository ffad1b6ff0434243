"""The training state and what moves it between epochs: optimizer, plateau, early stopping.

Everything is a pure function of a TrainState: the plateau, the best checkpoint's bookkeeping
and early stopping live inside the state, so a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from echokld.nn.model import DIST_DIM

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """All that training carries; a plain pytree, so it checkpoints, vmaps and shards."""

  step: Array
  epoch: Array  # Epochs completed.
  params: Any
  opt_state: Any
  plateau: Any  # optax.contrib.reduce_on_plateau state (learning-rate scale).
  rng: Array  # Raw uint32 key; per-step keys are folded in from `step`.
  best_dice: Array  # Best validation Dice so far and its epoch (the best checkpoint).
  best_epoch: Array
  stop_ref: Array  # Reference Dice of early stopping (moves only on > min_delta gains).
  bad_epochs: Array  # Epochs since the last > min_delta gain.
  stopped: Array  # Early stopping has fired.


SCHEDULES = ("plateau", "cosine", "onecycle")


def make_schedule(train_config: Any, steps_per_epoch: int) -> Any:
  """The learning rate: a constant the plateau scales (the paper), or a per-step schedule.

  cosine: linear warm-up over `warmup_epochs`, then cosine decay to 1% over the rest of
  `max_epochs`; onecycle: optax's one-cycle (up for 30% of the run, then down). Both span
  max_epochs, so a run resumed with another max_epochs continues on another curve.
  """
  lr, kind = train_config.learning_rate, train_config.schedule
  if kind == "plateau":
    return lr
  total = max(1, train_config.max_epochs * max(1, steps_per_epoch))
  if kind == "cosine":
    warmup = min(train_config.warmup_epochs * max(1, steps_per_epoch), total - 1)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total, end_value=lr * 1e-2)
  if kind == "onecycle":
    return optax.cosine_onecycle_schedule(total, lr)
  raise ValueError(f"unknown schedule {kind!r} ({', '.join(SCHEDULES)})")


class ParamsEmaState(NamedTuple):
  count: Array
  ema: Any


def track_params_ema(decay: float) -> optax.GradientTransformation:
  """Keeps an exponential moving average of the parameters after each update.

  The updates pass unchanged; the average rides in the optimizer state, so it is donated,
  sharded, vmapped and checkpointed with it. The decay warms up as min(decay,
  (1 + t) / (10 + t)) so that the first steps do not pin the average to the initialisation.
  """

  def init(params):
    return ParamsEmaState(jnp.zeros([], jnp.int32), jax.tree_util.tree_map(jnp.copy, params))

  def update(updates, state, params=None):
    new_params = optax.apply_updates(params, updates)
    t = state.count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    ema = jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, state.ema, new_params)
    return updates, ParamsEmaState(state.count + 1, ema)

  return optax.GradientTransformation(init, update)


def make_optimizer(train_config: Any, steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """Adam (Model 1) or AdamW with decoupled weight decay (Model 2, eq. 8-10).

  With train.ema_decay > 0 a parameter average follows (eval_params evaluates it).
  """
  lr = make_schedule(train_config, steps_per_epoch)
  if train_config.optimizer == "adam":
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
  elif train_config.optimizer == "adamw":
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=lr,
                                               weight_decay=train_config.weight_decay)
  else:
    raise ValueError(f"unknown optimizer {train_config.optimizer!r} (adam, adamw)")
  return optax.chain(tx, track_params_ema(train_config.ema_decay)) if \
      train_config.ema_decay > 0 else tx


def _has_ema(opt_state: Any) -> bool:
  return (isinstance(opt_state, tuple) and len(opt_state) == 2 and
          isinstance(opt_state[1], ParamsEmaState))


def _injected(opt_state: Any) -> Any:
  """The inject_hyperparams state (first of the chain when the EMA follows)."""
  return opt_state[0] if _has_ema(opt_state) else opt_state


def eval_params(state: "TrainState") -> Any:
  """The parameters to evaluate and predict with: the EMA when kept, else the live ones."""
  return state.opt_state[1].ema if _has_ema(state.opt_state) else state.params


def make_plateau(train_config: Any) -> optax.GradientTransformationExtraArgs:
  """The paper's halving after `patience` epochs without a validation gain > min_delta.

  optax's plateau is min-mode, so it is fed 1 - val_dice; atol=min_delta, rtol=0 is the
  paper's absolute threshold. It reduces at the patience-th bad epoch (Keras semantics).
  """
  return optax.contrib.reduce_on_plateau(factor=train_config.plateau_factor,
                                         patience=train_config.plateau_patience,
                                         rtol=0.0, atol=train_config.min_delta)


def create_train_state(model: Any, tx: optax.GradientTransformation, plateau: Any,
                       seed: int, image_shape: tuple[int, int],
                       dist_dim: int = DIST_DIM) -> TrainState:
  init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
  dummy = jnp.zeros((1,) + tuple(image_shape) + (1,), jnp.float32)
  params = model.init(init_key, dummy, jnp.zeros((1, dist_dim)), rng=init_key)["params"]
  return TrainState(step=jnp.int32(0), epoch=jnp.int32(0), params=params,
                    opt_state=tx.init(params), plateau=plateau.init(params), rng=state_key,
                    best_dice=jnp.float32(-1.0), best_epoch=jnp.int32(0),
                    stop_ref=jnp.float32(-1.0), bad_epochs=jnp.int32(0),
                    stopped=jnp.bool_(False))


def learning_rate(state: TrainState) -> Array:
  return _injected(state.opt_state).hyperparams["learning_rate"]


def make_end_epoch(plateau: Any, train_config: Any) -> Callable:
  """Returns jit(end_epoch)(state, val_dice): plateau, best and early-stopping bookkeeping."""

  @jax.jit
  def end_epoch(state: TrainState, val_dice: Array) -> TrainState:
    _, plateau_state = plateau.update(updates={}, state=state.plateau, value=1.0 - val_dice)
    opt_state = state.opt_state
    if train_config.schedule == "plateau":  # Otherwise the schedule sets it every step.
      _injected(opt_state).hyperparams["learning_rate"] = (train_config.learning_rate *
                                                           plateau_state.scale)
    epoch = state.epoch + 1
    better = val_dice > state.best_dice
    gained = val_dice > state.stop_ref + train_config.min_delta
    bad = jnp.where(gained, 0, state.bad_epochs + 1)
    return state.replace(
        epoch=epoch, opt_state=opt_state, plateau=plateau_state,
        best_dice=jnp.where(better, val_dice, state.best_dice),
        best_epoch=jnp.where(better, epoch, state.best_epoch),
        stop_ref=jnp.where(gained, val_dice, state.stop_ref), bad_epochs=bad,
        stopped=state.stopped | (bad >= train_config.early_stop_patience))

  return end_epoch
