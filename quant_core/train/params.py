"""Which parameters gradient descent trains, in which space, and where the parameter sets start.

Training happens in each parameter's unconstrained space (its schema's transform: logit lambda for
memory lengths, log2 for k, squareplus for exponents, ...) so every step lands on a valid pool;
results are reported in user units. A pool-wide (`scalar`) parameter trains one value and is
broadcast to every token.

Starting points: set 0 is the run spec's initial point; sets 1..P-1 add N(0, noise_scale^2) to
every unconstrained value (seeded by initial_random_key). For `ensemble__` rules the members are
spread around the initial point first: member offsets z in [-1, 1]^d from a Latin hypercube, a
scrambled Sobol sequence or a grid (or standard normal for `gaussian`), times ensemble_init_scale,
seeded by ensemble_init_seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from scipy.stats import qmc

from quant_core.params import Param
from quant_core.sim.pool import get_pool
from quant_core.sim.resolve import resolve_params
from quant_core.spec import RunSpec

GRADIENT_FREE = "optuna, grid or random"


@dataclass(frozen=True)
class ParamLayout:
    trainable: tuple[Param, ...]
    fixed: dict[str, np.ndarray]  # user units, not trained
    initial: dict[str, np.ndarray]  # user units, every parameter
    n_tokens: int
    chunk_period: int
    ensemble: bool

    def _shape(self, p: Param) -> tuple[int, ...]:
        lead = self.initial[p.name].shape[:-1]
        return (*lead, 1 if p.scalar else self.n_tokens)

    def to_unconstrained(self, user: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for p in self.trainable:
            v = np.asarray(user[p.name], dtype=np.float64)
            if p.scalar:
                v = v[..., :1]
            out[p.name] = np.asarray(p.to_unconstrained(v, self.chunk_period))
        return out

    def to_user(self, u: dict) -> dict:
        """Unconstrained (any leading batch axes) -> user units for the simulator (JAX-traceable)."""
        out = {}
        for p in self.trainable:
            v = p.from_unconstrained(u[p.name], self.chunk_period)
            out[p.name] = jnp.broadcast_to(v, (*v.shape[:-1], self.n_tokens)) if p.scalar else v
        return out

    def full_user(self, u: dict, batch: int | None = None) -> dict:
        """Trained and fixed parameters together, user units (fixed ones broadcast to the batch)."""
        user = self.to_user(u)
        for name, v in self.fixed.items():
            user[name] = jnp.asarray(v) if batch is None else jnp.broadcast_to(jnp.asarray(v), (batch, *v.shape))
        return user


def parameter_layout(spec: RunSpec, *, overrides: dict | None = None) -> ParamLayout:
    """The layout for gradient descent; refuses rules or settings it cannot train."""
    pool = get_pool(spec.rule)
    if not pool.rule.differentiable:
        raise ValueError(f"rule {spec.rule!r} is not differentiable in its parameters, so gradient descent cannot "
                         f"train it: set optimisation_settings.method to {GRADIENT_FREE}")
    trainable = tuple(p for p in pool.params if p.trainable and p.active(spec))
    if not trainable:
        frozen = [p.name for p in pool.params]
        raise ValueError(f"rule {spec.rule!r} has no parameter gradient descent can train "
                         f"({frozen or 'it has none'}{' are not differentiable' if frozen else ''}): set "
                         f"optimisation_settings.method to {GRADIENT_FREE}" + ("" if frozen else " or simulate it"))
    initial = resolve_params(spec, overrides)
    names = {p.name for p in trainable}
    return ParamLayout(trainable, {k: v for k, v in initial.items() if k not in names}, initial,
                       len(spec.tokens), spec.chunk_period, pool.has("ensemble"))


def ensemble_offsets(method: str, n_members: int, dim: int, seed: int) -> np.ndarray:
    """[n_members, dim] offsets in [-1, 1] (lhs, sobol, grid) or standard normal (gaussian)."""
    rng = np.random.default_rng(seed)
    if method == "gaussian":
        return rng.standard_normal((n_members, dim))
    if method == "lhs":
        unit = qmc.LatinHypercube(d=dim, seed=rng).random(n_members)
    elif method == "sobol":
        # Sobol points balance in blocks of powers of two: draw the next block and keep the first n
        unit = qmc.Sobol(d=dim, scramble=True, seed=rng).random_base2(max(0, math.ceil(math.log2(n_members))))
        unit = unit[:n_members]
    else:  # grid: the first n_members points of the coarsest grid with at least n_members points
        per_axis = max(2, math.ceil(n_members ** (1.0 / dim)))
        axis = np.linspace(0.0, 1.0, per_axis)
        unit = np.array(list(itertools.islice(itertools.product(axis, repeat=dim), n_members)))
    return 2.0 * unit - 1.0


def initial_sets(layout: ParamLayout, spec: RunSpec) -> dict[str, np.ndarray]:
    """Unconstrained starting points, a leading axis of n_parameter_sets."""
    opt = spec.optimisation_settings
    u0 = layout.to_unconstrained(layout.initial)
    if layout.ensemble:
        sizes = [u0[p.name][0].size for p in layout.trainable]
        members = u0[layout.trainable[0].name].shape[0]
        z = ensemble_offsets(opt.ensemble_init_method, members, sum(sizes), opt.ensemble_init_seed)
        z = z * opt.ensemble_init_scale
        at = 0
        for p, size in zip(layout.trainable, sizes, strict=True):
            u0[p.name] = u0[p.name] + z[:, at : at + size].reshape(u0[p.name].shape)
            at += size
    rng = np.random.default_rng(opt.initial_random_key)
    sets = {}
    for p in layout.trainable:
        base = np.broadcast_to(u0[p.name], (opt.n_parameter_sets, *u0[p.name].shape)).copy()
        noise = rng.standard_normal(base.shape) * opt.noise_scale
        noise[0] = 0.0
        sets[p.name] = base + noise
    return sets
