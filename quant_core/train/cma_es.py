"""CMA-ES (Hansen, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772), several restarts at once.

Minimises f over R^n. Each restart keeps a mean m, a step size sigma, a covariance C = B diag(D^2) B' and
two evolution paths. One generation, for every restart together:
- ask: lambda points x_k = m + sigma B (D * z_k), z_k ~ N(0, I) drawn by NumPy's generator seeded with
  the run's seed (reproducible; drawn on the host, as JAX's threefry compiles slowly on CPUs);
- evaluate: all restarts x lambda points in one batched call (the caller's `evaluate`, [N, n] -> [N]; a
  non-finite value ranks last);
- tell: the mu = lambda // 2 best, with weights w_i proportional to ln((lambda + 1) / 2) - ln i, move the
  mean by sigma y_w (y_w = sum w_i y_i, y_i = (x_i - m) / sigma);
  p_s <- (1 - c_s) p_s + sqrt(c_s (2 - c_s) mu_eff) C^(-1/2) y_w;
  h_s = [|p_s| / sqrt(1 - (1 - c_s)^(2 (g + 1))) < (1.4 + 2 / (n + 1)) E|N(0, I)|];
  p_c <- (1 - c_c) p_c + h_s sqrt(c_c (2 - c_c) mu_eff) y_w;
  C <- (1 - c_1 - c_mu) C + c_1 (p_c p_c' + (1 - h_s) c_c (2 - c_c) C) + c_mu sum w_i y_i y_i'   (rank one +
  rank mu);
  sigma <- sigma exp(min(1, (c_s / d_s) (|p_s| / E|N(0, I)| - 1)));
  then C's eigendecomposition for the next generation. The tutorial's default constants (`constants`).
- a restart stops (its state frozen) when sigma sqrt(max eig C) < tol, when C's condition number passes
  1e14, or on a non-finite step size; the run stops when every restart has, or after n_generations.
The best point each restart evaluated is kept (elitist record, seeded with the starting point when its
value is given); the mean itself is not scored.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MAX_CONDITION = 1e14


@dataclass(frozen=True)
class Constants:
    """The tutorial's default strategy parameters for dimension n and population lambda."""

    n: int
    lam: int
    mu: int
    weights: tuple[float, ...]
    mu_eff: float
    c_sigma: float
    d_sigma: float
    c_c: float
    c_1: float
    c_mu: float
    chi_n: float  # E|N(0, I)|


def default_population(n: int) -> int:
    return 4 + int(math.floor(3 * math.log(n))) if n > 1 else 4


def constants(n: int, lam: int | None = None) -> Constants:
    lam = lam or default_population(n)
    if lam < 2:
        raise ValueError(f"CMA-ES needs a population of 2 or more, got {lam}")
    mu = lam // 2
    raw = np.log((lam + 1) / 2) - np.log(np.arange(1, mu + 1))
    w = raw / raw.sum()
    mu_eff = float(1.0 / np.sum(w**2))
    c_sigma = (mu_eff + 2) / (n + mu_eff + 5)
    d_sigma = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c_sigma
    c_c = (4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n)
    c_1 = 2 / ((n + 1.3) ** 2 + mu_eff)
    c_mu = min(1 - c_1, 2 * (mu_eff - 2 + 1 / mu_eff) / ((n + 2) ** 2 + mu_eff))
    chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
    return Constants(n, lam, mu, tuple(float(v) for v in w), mu_eff, c_sigma, d_sigma, c_c, c_1, c_mu, chi_n)


class State(NamedTuple):
    mean: jax.Array  # [n]
    sigma: jax.Array  # []
    cov: jax.Array  # [n, n]
    p_sigma: jax.Array  # [n]
    p_c: jax.Array  # [n]
    basis: jax.Array  # [n, n] eigenvectors of cov (columns)
    scales: jax.Array  # [n] square roots of its eigenvalues
    generation: jax.Array  # []
    best_x: jax.Array  # [n]
    best_f: jax.Array  # []
    done: jax.Array  # [] bool


def init_state(x0: jax.Array, sigma0: float, f0: jax.Array | float = jnp.inf) -> State:
    """The state at x0 with step size sigma0 and C = I; f0 (x0's value, when known) seeds the best point."""
    n = x0.shape[0]
    x0 = jnp.asarray(x0, dtype=jnp.float64)
    eye = jnp.eye(n, dtype=x0.dtype)
    zero = jnp.zeros(n, dtype=x0.dtype)
    f0 = jnp.asarray(f0, x0.dtype)
    return State(x0, jnp.asarray(sigma0, x0.dtype), eye, zero, zero, eye, jnp.ones(n, x0.dtype), jnp.asarray(0),
                  x0, jnp.where(jnp.isfinite(f0), f0, jnp.inf), jnp.asarray(False))


def ask(state: State, z: jax.Array) -> jax.Array:
    """[lam, n] candidates from standard normal draws z [lam, n]."""
    return state.mean + state.sigma * (z * state.scales) @ state.basis.T


def tell(state: State, x: jax.Array, f: jax.Array, k: Constants, tol: float) -> State:
    """The state after one generation's candidates x [lam, n] scored f [lam] (module docstring)."""
    n = k.n
    f = jnp.where(jnp.isfinite(f), f, jnp.inf)
    order = jnp.argsort(f)
    w = jnp.asarray(k.weights, dtype=x.dtype)
    y = (x[order[: k.mu]] - state.mean) / state.sigma  # [mu, n]
    y_w = w @ y
    mean = state.mean + state.sigma * y_w
    inv_sqrt = (state.basis / state.scales) @ state.basis.T
    p_sigma = (1 - k.c_sigma) * state.p_sigma + math.sqrt(k.c_sigma * (2 - k.c_sigma) * k.mu_eff) * inv_sqrt @ y_w
    norm = jnp.linalg.norm(p_sigma)
    g1 = state.generation + 1
    h_sigma = (norm / jnp.sqrt(1 - (1 - k.c_sigma) ** (2 * g1)) < (1.4 + 2 / (n + 1)) * k.chi_n).astype(x.dtype)
    p_c = (1 - k.c_c) * state.p_c + h_sigma * math.sqrt(k.c_c * (2 - k.c_c) * k.mu_eff) * y_w
    rank_one = jnp.outer(p_c, p_c) + (1 - h_sigma) * k.c_c * (2 - k.c_c) * state.cov
    rank_mu = (y.T * w) @ y
    cov = (1 - k.c_1 - k.c_mu) * state.cov + k.c_1 * rank_one + k.c_mu * rank_mu
    cov = 0.5 * (cov + cov.T)
    sigma = state.sigma * jnp.exp(jnp.minimum(1.0, (k.c_sigma / k.d_sigma) * (norm / k.chi_n - 1)))
    eig, basis = jnp.linalg.eigh(cov)
    eig = jnp.maximum(eig, 1e-300)
    best = order[0]
    improved = f[best] < state.best_f
    new = State(mean, sigma, cov, p_sigma, p_c, basis, jnp.sqrt(eig), g1,
                jnp.where(improved, x[best], state.best_x), jnp.where(improved, f[best], state.best_f),
                (sigma * jnp.sqrt(eig[-1]) < tol) | (eig[-1] / eig[0] > MAX_CONDITION) | ~jnp.isfinite(sigma)
                | ~jnp.all(jnp.isfinite(mean)))
    # a stopped restart keeps its state (its last candidates still count for its best point)
    frozen = jax.tree_util.tree_map(lambda old, upd: jnp.where(state.done, old, upd), state, new)
    return frozen


@functools.lru_cache(maxsize=16)
def _tell_ask(k: Constants, tol: float) -> Callable:
    """A generation's tell and the next one's ask for every restart: one compiled call."""

    @jax.jit
    def tell_ask(state, x, f, z):
        state = jax.vmap(lambda s, xs, fs: tell(s, xs, fs, k, tol))(state, x, f)
        return state, jax.vmap(ask)(state, z), state.best_f, state.sigma, state.done

    return tell_ask


@dataclass
class CmaRun:
    best_x: np.ndarray  # [P, n] best point each restart evaluated
    best_f: np.ndarray  # [P]
    mean: np.ndarray  # [P, n] final means
    sigma: np.ndarray  # [P]
    generations: np.ndarray  # [P] generations each restart ran
    stopped: np.ndarray  # [P] bool: stopped on tol / conditioning before n_generations
    n_evaluations: int  # candidates scored
    lam: int
    history: list[dict] = field(default_factory=list)  # per generation: best/median value, sigma per restart


def minimise_cma_es(
    evaluate: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    *,
    sigma0: float,
    n_generations: int,
    tol: float,
    seed: int,
    lam: int | None = None,
    f0: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 0,
) -> CmaRun:
    """Minimise from every row of x0 [P, n] (one restart each): `evaluate` gets every restart's population
    at once, [P * lam, n] -> [P * lam] (module docstring). With `log` and `log_every`, a progress line every
    log_every generations. `f0` [P]: the starting points' values, when known: the best point is then never
    worse than the start."""
    x0 = np.asarray(x0, dtype=np.float64)
    n_restarts, n = x0.shape
    k = constants(n, lam)
    tell_ask = _tell_ask(k, float(tol))

    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    f0 = np.full(n_restarts, np.inf) if f0 is None else np.asarray(f0, dtype=np.float64)
    state = jax.vmap(init_state, in_axes=(0, None, 0))(jnp.asarray(x0), sigma0, jnp.asarray(f0))
    x = x0[:, None, :] + sigma0 * rng.standard_normal((n_restarts, k.lam, n))  # [P, lam, n]: C = I at first
    history: list[dict] = []
    evaluated = 0
    running = np.ones(n_restarts, dtype=bool)
    for g in range(1, n_generations + 1):
        f = np.asarray(evaluate(np.asarray(x).reshape(n_restarts * k.lam, n)), dtype=np.float64)
        f = f.reshape(n_restarts, k.lam)
        evaluated += int(running.sum()) * k.lam
        z = rng.standard_normal((n_restarts, k.lam, n))
        state, x, best_f, sigma, done = tell_ask(state, jnp.asarray(x), jnp.asarray(f), jnp.asarray(z))
        finite = np.where(np.isfinite(f), f, np.inf)
        best_f, done = np.asarray(best_f), np.asarray(done)
        history.append({"generation": g, "best": finite.min(axis=1).tolist(),
                        "median": np.median(finite, axis=1).tolist(), "best_so_far": best_f.tolist(),
                        "sigma": np.asarray(sigma).tolist(), "running": running.tolist()})
        running = ~done
        if log and log_every and g % log_every == 0:
            log(f"cma_es generation {g}/{n_generations}: best value {best_f.min():.6g}, "
                f"{int(running.sum())} restart(s) running")
        if done.all():
            break
    gens = np.asarray(state.generation)
    return CmaRun(np.asarray(state.best_x), np.asarray(state.best_f), np.asarray(state.mean), np.asarray(state.sigma),
                  gens, np.asarray(state.done), evaluated, k.lam, history)
