"""Which parameters gradient descent trains, in which space, and where the parameter sets start.

Training happens in each parameter's unconstrained space (its schema's transform: logit lambda for
memory lengths, log2 for k, squareplus for exponents, ...) so every step lands on a valid pool;
results are reported in user units. A pool-wide (`scalar`) parameter trains one value and is
broadcast to every token; under force_scalar every rule parameter is one (quant_core.train.force_scalar).
With learnable_bounds_settings.freeze_bounds false, a bounded__ rule's per-asset bounds train too, jointly
in a space where every point is a feasible pair of bounds (quant_core.train.learnable_bounds).

Starting points: set 0 is the run spec's initial point; sets 1..P-1 add an offset of scale noise_scale
to every unconstrained value, seeded by initial_random_key. parameter_init_method picks the offsets, as
the reference's `add_noise`: `gaussian` draws N(0, 1) per value; `lhs`, `centered_lhs` and `sobol` place
the P-1 sets as points u of a space-filling design in [0, 1]^d over all trainable values together
(d = their count) and map them through the normal quantile, Phi^-1(clip(u, 1e-6, 1 - 1e-6)), so each
coordinate still has a standard-normal spread but the sets cover the space evenly.
For `ensemble__` rules the members are spread around the initial point first: member offsets z in
[-1, 1]^d from a Latin hypercube (random or centred in its cells), a scrambled Sobol sequence or a grid
(or standard normal for `gaussian`), times ensemble_init_scale, seeded by ensemble_init_seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from scipy.stats import norm, qmc

from quant_core.params import Param
from quant_core.sim.pool import BOUND_PARAMS, get_pool
from quant_core.sim.resolve import resolve_params
from quant_core.spec import RunSpec
from quant_core.train.force_scalar import check_force_scalar, shared_params
from quant_core.train.learnable_bounds import bounds_from_raw, learns_bounds, raw_from_bounds

GRADIENT_FREE = "optuna, grid or random"


@dataclass(frozen=True)
class ParamLayout:
    trainable: tuple[Param, ...]
    fixed: dict[str, np.ndarray]  # user units, not trained
    initial: dict[str, np.ndarray]  # user units, every parameter
    n_tokens: int
    chunk_period: int
    ensemble: bool
    # bounded__ with freeze_bounds false: the bounds train jointly (quant_core.train.learnable_bounds), as
    # the unconstrained keys RAW_KEYS, shared by the members of an ensemble__
    bounds: bool = False

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
        if self.bounds:
            out.update(raw_from_bounds(user[BOUND_PARAMS[0]], user[BOUND_PARAMS[1]]))
        return out

    def to_user(self, u: dict) -> dict:
        """Unconstrained (any leading batch axes) -> user units for the simulator (JAX-traceable)."""
        out = {}
        for p in self.trainable:
            v = p.from_unconstrained(u[p.name], self.chunk_period)
            out[p.name] = jnp.broadcast_to(v, (*v.shape[:-1], self.n_tokens)) if p.scalar else v
        if self.bounds:
            out[BOUND_PARAMS[0]], out[BOUND_PARAMS[1]] = bounds_from_raw(u)
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
    trainable = tuple(p for p in shared_params(pool, spec) if p.trainable and p.active(spec))  # force_scalar
    bounds = pool.has("bounded") and learns_bounds(spec)
    if not trainable and not bounds:
        frozen = [p.name for p in pool.params]
        raise ValueError(f"rule {spec.rule!r} has no parameter gradient descent can train "
                         f"({frozen or 'it has none'}{' are not differentiable' if frozen else ''}): set "
                         f"optimisation_settings.method to {GRADIENT_FREE}" + ("" if frozen else " or simulate it"))
    initial = resolve_params(spec, overrides)
    check_force_scalar(spec, pool, initial)
    names = {p.name for p in trainable} | (set(BOUND_PARAMS) if bounds else set())
    return ParamLayout(trainable, {k: v for k, v in initial.items() if k not in names}, initial,
                       len(spec.tokens), spec.chunk_period, pool.has("ensemble"), bounds)


def unit_design(method: str, n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """[n, dim] points in [0, 1]: a Latin hypercube (`lhs`: random within each cell; `centered_lhs`: at
    the cell centres), a scrambled Sobol sequence, or the first n points of the coarsest grid."""
    if method in ("lhs", "centered_lhs"):
        return qmc.LatinHypercube(d=dim, scramble=method == "lhs", seed=rng).random(n)
    if method == "sobol":
        # Sobol points balance in blocks of powers of two: draw the next block and keep the first n
        return qmc.Sobol(d=dim, scramble=True, seed=rng).random_base2(max(0, math.ceil(math.log2(n))))[:n]
    if method == "grid":
        per_axis = max(2, math.ceil(n ** (1.0 / dim)))
        axis = np.linspace(0.0, 1.0, per_axis)
        return np.array(list(itertools.islice(itertools.product(axis, repeat=dim), n)))
    raise ValueError(f"unknown sampling method {method!r}")


def ensemble_offsets(method: str, n_members: int, dim: int, seed: int) -> np.ndarray:
    """[n_members, dim] offsets in [-1, 1] (lhs, centered_lhs, sobol, grid) or standard normal (gaussian)."""
    rng = np.random.default_rng(seed)
    if method == "gaussian":
        return rng.standard_normal((n_members, dim))
    return 2.0 * unit_design(method, n_members, dim, rng) - 1.0


def design_offsets(method: str, n_sets: int, dim: int, seed: int) -> np.ndarray:
    """[n_sets, dim] offsets of the starting sets from a space-filling design through the normal quantile;
    row 0 (the spec's own point) is 0."""
    out = np.zeros((n_sets, dim))
    if n_sets > 1 and dim:
        unit = unit_design(method, n_sets - 1, dim, np.random.default_rng(seed))
        out[1:] = norm.ppf(np.clip(unit, 1e-6, 1.0 - 1e-6))
    return out


def initial_sets(layout: ParamLayout, spec: RunSpec) -> dict[str, np.ndarray]:
    """Unconstrained starting points, a leading axis of n_parameter_sets."""
    opt = spec.optimisation_settings
    u0 = layout.to_unconstrained(layout.initial)
    if layout.ensemble and layout.trainable:  # the members' own values; learned bounds are shared
        sizes = [u0[p.name][0].size for p in layout.trainable]
        members = u0[layout.trainable[0].name].shape[0]
        z = ensemble_offsets(opt.ensemble_init_method, members, sum(sizes), opt.ensemble_init_seed)
        z = z * opt.ensemble_init_scale
        at = 0
        for p, size in zip(layout.trainable, sizes, strict=True):
            u0[p.name] = u0[p.name] + z[:, at : at + size].reshape(u0[p.name].shape)
            at += size
    names = list(u0)  # the rule's parameters, then the learned bounds' unconstrained values
    shapes = [(opt.n_parameter_sets, *u0[name].shape) for name in names]
    if opt.parameter_init_method == "gaussian":  # one N(0, 1) draw per value, set 0's included and zeroed
        rng = np.random.default_rng(opt.initial_random_key)
        offsets = [rng.standard_normal(shape) for shape in shapes]
    else:
        sizes = [math.prod(shape[1:]) for shape in shapes]
        z = design_offsets(opt.parameter_init_method, opt.n_parameter_sets, sum(sizes), opt.initial_random_key)
        ends = np.cumsum(sizes)
        offsets = [z[:, end - size : end].reshape(shape) for end, size, shape in zip(ends, sizes, shapes, strict=True)]
    sets = {}
    for name, shape, off in zip(names, shapes, offsets, strict=True):
        off = off * opt.noise_scale
        off[0] = 0.0
        sets[name] = np.broadcast_to(u0[name], shape) + off
    return sets
