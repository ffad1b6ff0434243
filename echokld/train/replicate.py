"""One function over S replicas inside one program: unrolled, vmapped, or a hybrid.

Used by replica groups (echokld/replicas.py); timings of the three modes on this project's
CPU are in BENCHMARKS.md ("Replica groups").
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jcore
from jax.extend.core import primitives as jprim

from echokld.errors import InputError

MODES = ("unroll", "hybrid", "vmap", "devices")
DEFAULT_MODE = "unroll"


def stack(trees: Sequence[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, size: int) -> tuple:
  return tuple(jax.tree_util.tree_map(lambda x: x[k], tree) for k in range(size))


def _eval_hybrid(jaxpr: Any, consts: list, args: list, batched: list[bool], size: int):
  """Evaluates `jaxpr` over replicas: each op vmapped, except convolutions whose kernel is
  per replica, which run once per replica (XLA:CPU lowers vmapped ones to slow grouped convs)."""
  env: dict[Any, tuple[Any, bool]] = {}

  def read(v):
    return (v.val, False) if isinstance(v, jcore.Literal) else env[v]

  env.update({v: (c, False) for v, c in zip(jaxpr.constvars, consts)})
  env.update({v: (a, b) for v, a, b in zip(jaxpr.invars, args, batched)})
  for eqn in jaxpr.eqns:
    vals, flags = zip(*map(read, eqn.invars)) if eqn.invars else ((), ())
    prim, params = eqn.primitive, eqn.primitive.get_bind_params(eqn.params)
    if not any(flags):
      outs, out_flags = prim.bind(*vals, **params), False
    elif prim is jprim.jit_p:
      inner = eqn.params["jaxpr"]
      outs, out_flags = _eval_hybrid(inner.jaxpr, inner.consts, list(vals), list(flags), size)
    elif prim is jprim.conv_general_dilated_p and flags[1]:
      outs = jnp.stack([prim.bind(*[x[k] if b else x for x, b in zip(vals, flags)], **params)
                        for k in range(size)])
      out_flags = True
    else:
      outs = jax.vmap(lambda *a: prim.bind(*a, **params),
                      in_axes=[0 if b else None for b in flags], axis_size=size)(*vals)
      out_flags = True
    if not prim.multiple_results:
      outs = [outs]
    if isinstance(out_flags, bool):
      out_flags = [out_flags] * len(outs)
    for v, o, b in zip(eqn.outvars, outs, out_flags):
      if not isinstance(v, jcore.DropVar):
        env[v] = (o, b)
  results = [read(v) for v in jaxpr.outvars]
  return [r for r, _ in results], [b for _, b in results]


def _hybrid(fn: Callable, in_axes: Sequence[int | None], size: int) -> Callable:
  """Like jax.vmap(fn, in_axes) over stacked args, but through `_eval_hybrid`."""

  def batched(*args):
    leaves, tree = jax.tree_util.tree_flatten(args)
    axes = [ax for arg, ax in zip(args, in_axes) for _ in jax.tree_util.tree_leaves(arg)]
    single = [jax.ShapeDtypeStruct(x.shape[1:] if ax == 0 else x.shape, x.dtype)
              for x, ax in zip(leaves, axes)]
    closed, shapes = jax.make_jaxpr(
        lambda *xs: fn(*jax.tree_util.tree_unflatten(tree, xs)), return_shape=True)(*single)
    outs, flags = _eval_hybrid(closed.jaxpr, closed.consts, leaves, [ax == 0 for ax in axes],
                               size)
    outs = [o if b else jnp.broadcast_to(o, (size,) + jnp.shape(o)) for o, b in zip(outs, flags)]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), outs)

  return batched


def _shard_map() -> Callable:
  """jax.shard_map (jax >= 0.7), else its earlier home in jax.experimental."""
  if hasattr(jax, "shard_map"):
    return jax.shard_map
  from jax.experimental.shard_map import shard_map  # pylint: disable=g-import-not-at-top
  return shard_map


def _over_devices(fn: Callable, in_axes: Sequence[int | None], mesh: Any) -> Callable:
  """fn over S replicas, S/D of them on each of the mesh's D devices (contiguous blocks).

  The per-replica args are stacked and split over the mesh's one axis; each device runs its
  own replicas unrolled (no collectives: replicas never talk), shared args are replicated.
  """
  axis = mesh.axis_names[0]
  spec = jax.sharding.PartitionSpec

  def wrapped(*args):
    size = len(next(a for a, ax in zip(args, in_axes) if ax == 0))
    stacked = [stack(a) if ax == 0 else a for a, ax in zip(args, in_axes)]
    specs = tuple(spec(axis) if ax == 0 else spec() for ax in in_axes)

    def local(*block):
      n = size // mesh.size
      mine = [unstack(a, n) if ax == 0 else a for a, ax in zip(block, in_axes)]
      outs = tuple(fn(*[a[k] if ax == 0 else a for a, ax in zip(mine, in_axes)])
                   for k in range(n))
      return stack(outs)

    out = _shard_map()(local, mesh=mesh, in_specs=specs, out_specs=spec(axis))(*stacked)
    return unstack(out, size)

  return wrapped


def replicate(fn: Callable, in_axes: Sequence[int | None], mode: str = DEFAULT_MODE,
              mesh: Any = None) -> Callable:
  """fn over one replica -> fn over S replicas: args with in_axes 0 are tuples holding one
  entry per replica, the others are shared; returns the tuple of the S results.

  unroll: fn once per replica inside one program (XLA may overlap the replicas' ops).
  vmap: stacks the replicas and applies jax.vmap; convolutions become grouped convolutions
  (feature_group_count = S), which XLA:CPU runs several times slower than S dense ones.
  hybrid: stacks, vmaps every op except convolutions with per-replica kernels (unrolled).
  devices: S/D replicas on each of `mesh`'s D devices, unrolled there, all devices at once
  (S must divide by D; `fn` must not constrain shardings itself; no mesh: one device).
  """
  if mode not in MODES:
    raise InputError("--replica_mode", f"unknown mode {mode!r} ({', '.join(MODES)})")
  if mode == "devices":
    mesh = mesh if mesh is not None else jax.sharding.Mesh(jax.devices()[:1], ("replicas",))
    return _over_devices(fn, in_axes, mesh)

  def wrapped(*args):
    size = len(next(a for a, ax in zip(args, in_axes) if ax == 0))
    if mode == "unroll":
      return tuple(fn(*[a[k] if ax == 0 else a for a, ax in zip(args, in_axes)])
                   for k in range(size))
    args = [stack(a) if ax == 0 else a for a, ax in zip(args, in_axes)]
    batched = (jax.vmap(fn, in_axes=tuple(in_axes)) if mode == "vmap"
               else _hybrid(fn, in_axes, size))
    return unstack(batched(*args), size)

  return wrapped
