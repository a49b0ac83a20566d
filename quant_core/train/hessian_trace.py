"""The trace of an objective's Hessian, and training on it (`optimisation_settings.train_on_hessian_trace`).

As in the reference, the maximised objective becomes

    objective(params) + weight * trace(H(params)),   H = the Hessian of the objective on one fixed window

(the training part's first window, never noised or flipped) with respect to the trained parameters in
their training space (the unconstrained transforms). Near a maximum the trace is negative and large for a
sharp peak, so the term favours flat maxima, which move less when the data shift. In loss form (loss =
-objective) this is loss + weight * trace(Hessian of the loss).

The exact trace (the reference's) sums the Hessian's diagonal: one forward-over-reverse Hessian-vector
product per parameter, vmapped. Hutchinson's estimator averages z'Hz over fixed Rademacher vectors z
(E[z'Hz] = trace H), K products instead of d, for many parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from quant_core.train.method_settings import HessianTraceSettings


def hessian_trace(f: Callable, params, probes: jax.Array | None = None) -> jax.Array:
    """trace of the Hessian of scalar `f` at `params` (an array or a pytree of arrays): exact when `probes`
    is None, else Hutchinson's mean of z'Hz over the rows z of `probes` [K, d] (d = params' size)."""
    x, unravel = ravel_pytree(params)
    grad = jax.grad(lambda y: f(unravel(y)))

    def quadratic(v):
        return jnp.vdot(v, jax.jvp(grad, (x,), (v,))[1])

    if probes is None:
        return jnp.sum(jax.vmap(quadratic)(jnp.eye(x.size, dtype=x.dtype)))
    return jnp.mean(jax.vmap(quadratic)(jnp.asarray(probes, dtype=x.dtype)))


def rademacher_probes(settings: HessianTraceSettings, dim: int, seed: int) -> np.ndarray | None:
    """Fixed probe vectors [n_probes, dim] of +-1 (hutchinson), seeded; None for the exact trace."""
    if settings.estimator == "exact":
        return None
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    return rng.choice(np.array([-1.0, 1.0]), size=(settings.n_probes, dim))


def trace_penalised(loss: Callable, fixed_loss: Callable, settings: HessianTraceSettings,
                    probes: np.ndarray | None = None) -> Callable:
    """(u, *args) -> (loss(u, *args) + weight * trace H_loss(u), trace of the objective's Hessian): the loss
    of module docstring, with the objective's trace (= -trace H_loss) as the auxiliary output."""
    weight = settings.weight

    def penalised(u, *args):
        trace = hessian_trace(fixed_loss, u, None if probes is None else jnp.asarray(probes))
        return loss(u, *args) + weight * trace, -trace

    return penalised


def plain(loss: Callable) -> Callable:
    """The same (value, aux) shape without a penalty (aux 0), so one training step serves both."""

    def unpenalised(u, *args):
        value = loss(u, *args)
        return value, jnp.zeros_like(value)

    return unpenalised


def window_objective(loss, sources: jax.Array, settings: HessianTraceSettings | None, seed: int) -> Callable:
    """(u, rows, phases) -> (value, objective's trace) for a gradient_descent.WindowLoss `loss`: the loss
    itself, plus with `settings` the trace term (module docstring) on the training part's first window
    (the first source, offset 0)."""
    if settings is None:
        return plain(loss)
    rows0 = jax.lax.dynamic_slice_in_dim(sources[0], 0, loss.rows_per_window)[None]
    phase0 = jnp.zeros(1, dtype=jnp.int32)
    dim = sum(int(np.size(v)) for v in loss.layout.to_unconstrained(loss.layout.initial).values())
    probes = rademacher_probes(settings, dim, seed)
    return trace_penalised(loss, lambda u: loss(u, rows0, phase0), settings, probes)
