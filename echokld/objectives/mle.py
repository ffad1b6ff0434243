"""Weighted maximum likelihood by damped Newton, differentiable by the implicit function theorem.

Shared by the parametric families (objectives.families): a family supplies its per-sample
weighted log-likelihoods and the gradient and Hessian of the weighted mean negative
log-likelihood in its unconstrained parameters theta (closed form or `autodiff_system`).
The solver runs a fixed number of steps (no data-dependent Python loop, jit- and vmap-able)
and its VJP costs one Newton system, not the unrolled loop.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

STEP_SIZES = 10  # The line search tries the step sizes 1, 1/2, ..., 2**-9 in parallel.
MAX_STEP = 4.0  # Longest Newton step, in normalized parameters.


class Problem(NamedTuple):
  """A family's ML problem. Functions take (theta, consts, x, w); consts are fixed
  normalization constants (a pytree of arrays, no gradient).

  logliks: per-sample w * log f, -inf for a weighted sample outside the support.
  system: (gradient, Hessian) in theta of the weighted mean negative log-likelihood.
  """

  logliks: Callable[..., Array]
  system: Callable[..., tuple[Array, Array]]
  num_steps: int


def as_float(x) -> Array:
  """float32 by default, float64 kept when x64 is enabled."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def regularized_solve(hess: Array, vec: Array) -> Array:
  """|H|^-1 v with eigenvalues floored: a Newton step that is a descent direction even
  where H is indefinite or singular (saturated parameters, constant data)."""
  lam, vecs = jnp.linalg.eigh(hess)
  floor = 16.0 * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam)) + 1e-12
  return vecs @ ((vecs.T @ vec) / jnp.maximum(jnp.abs(lam), floor))


def normalized_on_grid(logf: Array, grid: Array) -> Array:
  """exp(logf) renormalized so that sum(p) * spacing = 1; uniform where every logf is -inf
  (support outside the grid), so a KL against it stays finite."""
  top = jax.lax.stop_gradient(jnp.max(logf))
  ok = jnp.isfinite(top)
  p = jnp.where(ok, jnp.exp(logf - jnp.where(ok, top, 0.0)), 1.0)
  return p / (jnp.sum(p) * (grid[1] - grid[0]))


def autodiff_system(mean_nll: Callable[..., Array]) -> Callable[..., tuple[Array, Array]]:
  """Problem.system from a scalar mean_nll(theta, consts, x, w) by autodiff (a few
  parameters: the Hessian costs a handful of passes over the samples)."""

  def system(theta, consts, x, w):
    return (jax.grad(mean_nll)(theta, consts, x, w),
            jax.hessian(mean_nll)(theta, consts, x, w))

  return system


def newton(problem: Problem, x: Array, w: Array, theta: Array, consts: Any) -> Array:
  """problem.num_steps damped Newton steps on the weighted mean negative log-likelihood.

  Each step tries the step sizes 2^-k in parallel and keeps the best one, or the full step
  when it is as good up to the float resolution of the loss (near the optimum the change
  is below rounding and the Newton step is what converges).
  """
  wsum = jnp.sum(w)
  steps = 0.5 ** jnp.arange(STEP_SIZES, dtype=x.dtype)
  resolution = 8.0 * jnp.finfo(x.dtype).eps

  def body(state, _):
    theta, old = state
    grad, hess = problem.system(theta, consts, x, w)
    d = -regularized_solve(hess, grad)
    d = jnp.where(jnp.all(jnp.isfinite(d)), d, 0.0)
    d = d * jnp.minimum(1.0, MAX_STEP / (jnp.linalg.norm(d) + 1e-30))
    new = jax.vmap(lambda t: problem.logliks(theta + t * d, consts, x, w))(steps)
    # Loss change per candidate as a sum of per-sample differences: float32 sees the last
    # digits of a 50k-sample likelihood.
    change = jnp.sum(old - new, axis=1) / wsum
    change = jnp.where(jnp.isnan(change), jnp.inf, change)
    noise = resolution * jnp.sum(jnp.abs(old)) / wsum
    best = jnp.argmin(change)
    best = jnp.where(change[0] <= jnp.minimum(change[best], 0.0) + noise, 0, best)
    accept = change[best] <= noise
    return (theta + jnp.where(accept, steps[best], 0.0) * d,
            jnp.where(accept, new[best], old)), None

  old = problem.logliks(theta, consts, x, w)
  (theta, _), _ = jax.lax.scan(body, (theta, old), None, length=problem.num_steps)
  return theta


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def solve(problem: Problem, x: Array, w: Array, theta0: Array, consts: Any) -> Array:
  """The ML theta from theta0; gradients in x and w by the implicit function theorem."""
  return newton(problem, x, w, theta0, consts)


def _solve_fwd(problem, x, w, theta0, consts):
  theta = newton(problem, x, w, theta0, consts)
  return theta, (x, w, theta, consts)


def _solve_bwd(problem, res, cotangent):
  """At the optimum grad_theta L(theta*, x, w) = 0, so d theta* = -H^-1 d(grad_theta L)."""
  x, w, theta, consts = res
  (_, hess), vjp = jax.vjp(lambda x, w: problem.system(theta, consts, x, w), x, w)
  u = regularized_solve(hess, cotangent)
  cx, cw = vjp((-u, jnp.zeros_like(hess)))
  return cx, cw, jnp.zeros_like(theta), jax.tree.map(jnp.zeros_like, consts)


solve.defvjp(_solve_fwd, _solve_bwd)
