"""The fixed pool objective of methods `bfgs` and `cma_es`, and how they pick their result.

Gradient descent draws fresh training windows every step; BFGS needs one fixed function (its line search
compares values) and CMA-ES is seeded and reproducible with one, so both maximise, as the reference does,
the mean of return_val over fixed evaluation windows of the training part:
- window starts (offsets into the training part, in data steps): `n_evaluation_points` drawn uniformly
  from [0, R) (seeded by initial_random_key) together with as many evenly spaced over [0, R], deduplicated
  and sorted (R = bout_offset in data steps; R = 0 leaves the one window at offset 0);
- every window has gradient descent's window length W and its loss (quant_core.train.gradient.WindowLoss:
  turnover_penalty included; with include_flipped_training_data each start is also taken from the
  time-reversed training part); no price noise;
- parameters in the unconstrained training space of gradient descent (the schema transforms), one set
  flattened to a vector x, so the function is f(x) = -mean objective (+ the Hessian-trace term when
  train_on_hessian_trace is set: quant_core.train.hessian_trace).

The result, as the reference's: every parameter set (restart) is scored in one pass over [start, end) on
the training and validation parts, and the one with the best early_stopping_metric on the validation part
(on the training part when val_fraction = 0) is selected; the rest follow best first as candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from quant_core.data.panel import PricePanel
from quant_core.spec import RunSpec
from quant_core.train.gradient import WindowLoss
from quant_core.train.hessian_trace import window_objective
from quant_core.train.method_settings import HessianTraceSettings
from quant_core.train.params import ParamLayout
from quant_core.train.problem import NoFiniteCandidate
from quant_core.train.split import TrainSplit


@dataclass
class MethodOutcome:
    """What `bfgs` and `cma_es` hand the trainer (the fields of quant_core.train.trainer.TrainedParameters)."""

    params: dict[str, list]  # the selected set, the tunable's units ({name: [n]} lists)
    objective: float  # its selection score (the monitored metric)
    n_evaluations: int  # bfgs: iterations; cma_es: candidates scored
    n_configurations: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)


def evaluation_offsets(offset_range: int, n_points: int, seed: int) -> np.ndarray:
    """Window starts in [0, offset_range] (module docstring)."""
    if offset_range <= 0:
        return np.zeros(1, dtype=np.int64)
    drawn = np.random.default_rng(seed).integers(0, offset_range, n_points)
    even = np.linspace(0, offset_range, n_points).astype(np.int64)
    return np.unique(np.concatenate([drawn, even]))


def with_seed(spec: RunSpec, seed: int | None) -> RunSpec:
    opt = spec.optimisation_settings
    if seed is None or seed == opt.initial_random_key:
        return spec
    return spec.model_copy(update={"optimisation_settings": opt.model_copy(update={"initial_random_key": seed})})


class FixedWindowObjective:
    """f(x) = -(mean return_val over the fixed windows) [+ trace term] for one flat parameter vector x, and
    the same over a population in one vmapped call (module docstring). Call it inside `device()`."""

    def __init__(self, panel: PricePanel, spec: RunSpec, split: TrainSplit, layout: ParamLayout, n_points: int,
                 hessian: HessianTraceSettings | None = None) -> None:
        seed = spec.optimisation_settings.initial_random_key
        loss = WindowLoss(panel, spec, split, layout)
        self.loss, self.layout, self.hessian = loss, layout, hessian
        self.offsets = evaluation_offsets(split.offset_range, n_points, seed)
        stride = loss.stride
        aligned = (self.offsets // stride) * stride
        n_src = loss.sources.shape[0]
        self.n_windows = len(self.offsets) * n_src
        self.device = loss.device
        template = layout.to_unconstrained(layout.initial)
        flat, self._unravel = ravel_pytree({k: jnp.asarray(v) for k, v in template.items()})
        self.dim = int(flat.size)
        with loss.device():
            sources = jnp.asarray(loss.sources)
            src = np.repeat(np.arange(n_src), len(aligned))
            self._rows = jax.vmap(lambda s, o: jax.lax.dynamic_slice_in_dim(sources[s], o, loss.rows_per_window))(
                jnp.asarray(src), jnp.asarray(np.tile(aligned, n_src)))
            self._phases = jnp.asarray(np.tile(self.offsets - aligned, n_src))
            self._value = window_objective(loss, sources, hessian, seed)
        # the windows are arguments, not constants folded into the compiled functions
        both = jax.vmap(self._flat_both, in_axes=(0, None, None))
        self._population = jax.jit(lambda x, rows, phases: both(x, rows, phases)[0])
        self._population_with_trace = jax.jit(both)
        self._value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(self.flat_value), in_axes=(0, None, None)))

    def _flat_both(self, x: jax.Array, rows: jax.Array, phases: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._value(self._unravel(x), rows, phases)

    def flat_value(self, x: jax.Array, rows: jax.Array, phases: jax.Array) -> jax.Array:
        """The function minimised, of one flat vector x [d]: -(mean objective over the windows `rows`)
        [+ weight x trace of the loss's Hessian]."""
        return self._flat_both(x, rows, phases)[0]

    def population(self, x) -> jax.Array:
        """[N, d] -> [N] values in one compiled, vmapped call."""
        return self._population(jnp.asarray(x), self._rows, self._phases)

    def population_with_trace(self, x) -> tuple[jax.Array, jax.Array]:
        """[N, d] -> ([N] values, [N] traces of the objective's Hessian; 0 without the penalty)."""
        return self._population_with_trace(jnp.asarray(x), self._rows, self._phases)

    def value_and_grad(self, x) -> tuple[jax.Array, jax.Array]:
        """[N, d] -> ([N] values, [N, d] gradients) in one compiled, vmapped call."""
        return self._value_and_grad(jnp.asarray(x), self._rows, self._phases)

    def flatten(self, sets: dict[str, np.ndarray]) -> np.ndarray:
        """{name: [P, ...]} unconstrained sets -> [P, d]."""
        n = next(iter(sets.values())).shape[0]
        return np.stack([np.asarray(ravel_pytree({k: jnp.asarray(v[i]) for k, v in sets.items()})[0])
                         for i in range(n)])

    def unflatten(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """[P, d] -> {name: [P, ...]} unconstrained sets."""
        parts = [self._unravel(jnp.asarray(row)) for row in np.asarray(x)]
        return {k: np.stack([np.asarray(p[k]) for p in parts]) for k in parts[0]}

    def user_sets(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """[P, d] -> every parameter in user units, {name: [P, ...]} (fixed ones broadcast)."""
        with self.device():
            u = {k: jnp.asarray(v) for k, v in self.unflatten(x).items()}
            user = {k: np.asarray(v) for k, v in self.layout.to_user(u).items()}
        n = len(x)
        return {**user, **{k: np.broadcast_to(v, (n, *v.shape)).copy() for k, v in self.layout.fixed.items()}}


def selection_metrics(spec: RunSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys((spec.return_val, spec.optimisation_settings.early_stopping_metric)))


def select(scores: np.ndarray, names: tuple[str, ...], has_val: bool, monitor: str) -> tuple[np.ndarray, np.ndarray]:
    """(order best first, monitored value) of sets scored [P, metrics, segments]: the monitored metric on
    the validation part (training part without one); a set whose training objective is not finite (a failed
    guard such as min_trades) ranks last."""
    mon = scores[:, names.index(monitor), -1 if has_val else 0].copy()
    mon[~np.isfinite(scores[:, 0, 0]) | ~np.isfinite(mon)] = -np.inf
    if not np.isfinite(mon).any():
        raise NoFiniteCandidate(f"every parameter set ended with a non-finite {monitor}; check the prices, the "
                                "search ranges and the starting values (strategies: or lower "
                                "strategy_settings.min_trades)")
    return np.argsort(-mon, kind="stable"), mon


def score_record(rec: dict, scores: np.ndarray, names: tuple[str, ...], has_val: bool) -> dict:
    """A history entry `rec` with gradient descent's per-set scores added: each metric on the training (and
    validation) part."""
    rec = dict(rec)
    for i, name in enumerate(names):
        rec[f"train_{name}"] = scores[:, i, 0].tolist()
        if has_val:
            rec[f"validation_{name}"] = scores[:, i, -1].tolist()
    return rec


def to_lists(user: dict[str, np.ndarray], i: int) -> dict[str, list]:
    return {k: np.asarray(v[i]).tolist() for k, v in user.items()}

