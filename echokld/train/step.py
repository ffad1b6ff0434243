"""The jitted device functions of training: the train step, chunks of steps, prediction.

Training data lives on the device; one call runs `num_steps` optimizer steps under
`lax.scan`, gathering each batch with the epoch's permutation, so the host only dispatches
and never waits inside an epoch.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from echokld.data import augment
from echokld.objectives import conditioning
from echokld.objectives import terms as loss_terms
from echokld.train.state import TrainState

Array = jax.Array


def to_unit(images_u8: Array) -> Array:
  """uint8 (B, H, W) -> float32 (B, H, W, 1) in [0, 1]."""
  return (images_u8.astype(jnp.float32) / 255.0)[..., None]


def select(mask: Array, new: Any, old: Any) -> Any:
  """`new` where the scalar `mask` holds, else `old` (a masked run keeps its state)."""
  return jax.tree_util.tree_map(lambda n, o: jnp.where(mask, n, o), new, old)


def first_pass_of(model: Any, params: Any) -> Callable[[Array, Array], Array]:
  """first_pass(images, inject) -> the model's probabilities without gradient (Model 7's
  fit of its own prediction, echokld.objectives.conditioning)."""

  def first_pass(images: Array, inject: Array) -> Array:
    logits = model.apply({"params": params}, images, inject)["logits"]
    return jax.lax.stop_gradient(jax.nn.sigmoid(logits))

  return first_pass


def make_train_step(model: Any, tx: optax.GradientTransformation, config: Any,
                    batch_sharding: Any = None, masked: bool = False) -> Callable:
  """Returns the pure, unjitted step(state, images, masks, aux, index) -> (state, terms).

  Args:
    model: the SegModel.
    tx: the optimizer.
    config: the run's config (loss terms, batch size, conditioning).
    batch_sharding: splits the gathered batch over devices (train.mesh), so XLA shards the
      whole step by batch and all-reduces the gradients; None on one device.
    masked: the step leaves the state unchanged when the run has stopped or has no step
      `index` this epoch (runs of a group that train for different numbers of steps).

  The step's `aux` is (perm, num_steps, reference): the run's epoch order (indices into
  `images`), its steps this epoch, and its training-set fit (Models 6-7; zeros otherwise).
  Batch `index` of the epoch is gathered on the device with `perm`.
  """
  batch_size, names = config.train.batch_size, tuple(config.loss.terms)

  def one_step(state: TrainState, images: Array, masks: Array, aux: Sequence[Array],
               index: Array):
    perm, num_steps, reference = aux
    idx = jax.lax.dynamic_slice(perm, (index * batch_size,), (batch_size,))
    x, y = to_unit(images[idx]), masks[idx].astype(jnp.float32)[..., None]
    if batch_sharding is not None:
      x, y = jax.lax.with_sharding_constraint((x, y), batch_sharding)
    rng = jax.random.fold_in(state.rng, state.step)
    if config.augment.enabled:  # Its own key: the model's draws stay those of rng.
      x, y = augment.augment_batch(jax.random.fold_in(rng, 1), x, y, config.augment)
    condition = conditioning.make_conditioning(config, reference).train
    batch = {"images": x, "masks": y,
             **(condition(x, y, first_pass_of(model, state.params)) if condition else {})}

    def loss_fn(params):
      outputs = model.apply({"params": params}, x, batch.get("dist_inject"), rng=rng,
                            train=True)
      return loss_terms.total_loss(outputs, batch, config.loss, names)

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    if masked:
      new = select(~state.stopped & (index < num_steps), new, state)
    return new, terms

  return one_step


def chunk_of_steps(one_step: Callable) -> Callable:
  """chunk(state, images, masks, aux, start, num_steps): `num_steps` steps in one call."""

  def chunk(state: Any, images: Array, masks: Array, aux: Any, start: Array,
            num_steps: int):
    if num_steps == 1:
      # XLA:CPU runs convolutions inside a while loop (lax.scan) many times slower than at
      # the top level (BENCHMARKS.md), so a single step is traced without the loop.
      state, terms = one_step(state, images, masks, aux, start)
      return state, jax.tree_util.tree_map(lambda t: t[None], terms)

    def body(carry, i):
      return one_step(carry, images, masks, aux, start + i)
    return jax.lax.scan(body, state, jnp.arange(num_steps))

  return chunk


def make_train_chunk(model: Any, tx: optax.GradientTransformation, config: Any,
                     batch_sharding: Any = None) -> Callable:
  """jit(chunk)(state, images, masks, aux, start, num_steps) -> (state, terms) of one run.

  The state is donated: parameters and optimizer moments are updated in place. (The loop
  trains through train.loop.make_group_chunk, which is this for a group of S runs.)
  """
  one_step = make_train_step(model, tx, config, batch_sharding)
  return jax.jit(chunk_of_steps(one_step), static_argnames="num_steps", donate_argnums=0)


def make_predict(model: Any, config: Any, batch_size: int, batch_sharding: Any = None,
                 views: bool = False) -> Callable:
  """Returns jit(predict)(params, images_u8, reference) -> probabilities (N, H, W).

  Batched by lax.map in `batch_size` frames; `batch_sharding` (train.mesh) splits each batch
  over the devices, as training does, instead of every device predicting every frame.
  `reference` is the run's training-set fit, injected by Models 6-7
  (echokld.objectives.conditioning); other models ignore it.
  config.augment.tta averages test-time views (echokld.data.augment; "none" by default).
  With `views`, predict returns (that average, the views' own (N, V, H, W) probabilities),
  the members of a test-time ensemble (echokld.infer.qc).
  """

  @jax.jit
  def predict(params: Any, images: Array, reference: Array) -> Any:
    n = images.shape[0]
    padded = -(-n // batch_size) * batch_size
    images = jnp.pad(images, ((0, padded - n), (0, 0), (0, 0)))
    batches = images.reshape((padded // batch_size, batch_size) + images.shape[1:])
    infer = conditioning.make_conditioning(config, reference).infer

    def probs_of(x):
      inject = infer(x, first_pass_of(model, params)) if infer is not None else None
      return jax.nn.sigmoid(model.apply({"params": params}, x, inject)["logits"][..., 0])

    def run(batch):
      if batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      if not views:
        return augment.test_time_average(probs_of, to_unit(batch), config.augment.tta)
      each = augment.test_time_views(probs_of, to_unit(batch), config.augment.tta)
      return augment.mean_of_views(each), jnp.stack(each, axis=1)

    out = jax.lax.map(run, batches)
    return jax.tree_util.tree_map(lambda x: x.reshape((padded,) + x.shape[2:])[:n], out)

  return predict
