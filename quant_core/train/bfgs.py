"""Method `bfgs`: BFGS on a pool's fixed objective from every parameter set at once.

The objective, the parameter space and the selection of the result are those of
quant_core.train.fixed_windows. Starting points are gradient descent's (set 0 the run's initial
parameters, sets 1.. with N(0, noise_scale^2) added in the unconstrained space).

The algorithm (Nocedal & Wright, Numerical Optimization, algorithm 6.1), every set advanced together, each
objective and gradient evaluation of all sets one vmapped, compiled call:
- direction p = -H g (H the inverse-Hessian estimate; the identity at first, and again whenever p is not a
  descent direction);
- step a by a weak-Wolfe bisection line search from a = 1: Armijo f(x + a p) <= f + c1 a g'p (c1 = 1e-4)
  and curvature g(x + a p)'p >= c2 g'p (c2 = 0.9); too long halves towards the last short step, too short
  doubles (or bisects once bracketed); a non-finite value counts as too long; after LINE_SEARCH_STEPS
  trials the best Armijo point is taken, else the set stops (status 2);
- s = a p, y = g_new - g; before the first update H = (s'y / y'y) I (N&W eq. 6.20); the BFGS update
  H <- (I - r s y') H (I - r y s') + r s s', r = 1 / y's, skipped when y's is not positive;
- a set stops when its gradient's largest entry falls below `bfgs_settings.tol` (status 0, SciPy's meaning
  of `tol` for BFGS), or after `bfgs_settings.maxiter` iterations (status 1).

With `bfgs_settings.memory_budget` (forward passes that fit at once), n_parameter_sets is capped at
memory_budget // evaluation windows, as the reference does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import jax.numpy as jnp
import numpy as np

from quant_core.data.panel import PricePanel
from quant_core.spec import RunSpec
from quant_core.train.fixed_windows import (
    FixedWindowObjective,
    MethodOutcome,
    score_record,
    select,
    selection_metrics,
    to_lists,
    with_seed,
)
from quant_core.train.method_settings import BfgsSettings, bfgs_settings, hessian_trace_settings
from quant_core.train.objective import PoolEvaluator
from quant_core.train.params import initial_sets, parameter_layout
from quant_core.train.split import plan_split

C1, C2 = 1e-4, 0.9
LINE_SEARCH_STEPS = 20
STATUS = {0: "converged", 1: "maxiter", 2: "line search failed", 3: "non-finite start"}

ValueAndGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # [P, d] -> ([P], [P, d])


@dataclass
class BfgsRun:
    x: np.ndarray  # [P, d] final points
    f: np.ndarray  # [P] final values
    grad: np.ndarray  # [P, d]
    status: np.ndarray  # [P] (STATUS)
    iterations: np.ndarray  # [P]
    n_calls: int  # value-and-gradient calls (each one for every set)
    history: list[dict] = field(default_factory=list)  # per iteration: value, gradient norm, step per set


def _line_search(vg: ValueAndGrad, x, f, g, p, active):
    """Weak-Wolfe bisection (module docstring) for every active set at once: (step, f, g, ok, calls)."""
    n = len(x)
    slope = np.einsum("ij,ij->i", g, p)
    a, lo, hi = np.ones(n), np.zeros(n), np.full(n, np.inf)
    best_a, best_f, best_g = np.zeros(n), f.copy(), g.copy()
    done = ~active
    calls = 0
    for _ in range(LINE_SEARCH_STEPS):
        f_new, g_new = vg(x + a[:, None] * p)
        calls += 1
        armijo = np.isfinite(f_new) & (f_new <= f + C1 * a * slope)
        curvature = np.einsum("ij,ij->i", g_new, p) >= C2 * slope
        better = armijo & ~done & (f_new < best_f)
        best_a, best_f = np.where(better, a, best_a), np.where(better, f_new, best_f)
        best_g = np.where(better[:, None], g_new, best_g)
        wolfe = armijo & curvature & ~done
        best_a, best_f = np.where(wolfe, a, best_a), np.where(wolfe, f_new, best_f)
        best_g = np.where(wolfe[:, None], g_new, best_g)
        done |= wolfe
        if done.all():
            break
        too_long, too_short = ~done & ~armijo, ~done & armijo
        hi = np.where(too_long, a, hi)
        lo = np.where(too_short, a, lo)
        a = np.where(too_long, 0.5 * (lo + hi), a)
        a = np.where(too_short, np.where(np.isinf(hi), 2.0 * a, 0.5 * (lo + hi)), a)
    ok = active & (best_a > 0)
    return best_a, best_f, best_g, ok, calls


def minimise_bfgs(vg: ValueAndGrad, x0: np.ndarray, *, maxiter: int, tol: float,
                  log: Callable[[str], None] | None = None, log_every: int = 0) -> BfgsRun:
    """Minimise from every row of x0 [P, d] (module docstring); `vg` scores all rows in one call. With `log`
    and `log_every`, a progress line every log_every iterations."""
    x = np.array(x0, dtype=np.float64)
    n, d = x.shape
    f, g = (np.asarray(a, dtype=np.float64) for a in vg(x))
    calls = 1
    h = np.broadcast_to(np.eye(d), (n, d, d)).copy()
    first = np.ones(n, dtype=bool)
    status = np.where(np.isfinite(f) & np.isfinite(g).all(axis=1), -1, 3)
    iterations = np.zeros(n, dtype=np.int64)
    history = [{"iteration": 0, "value": f.tolist(), "grad_norm": np.abs(g).max(axis=1).tolist()}]
    for it in range(1, maxiter + 1):
        status = np.where((status == -1) & (np.abs(g).max(axis=1) < tol), 0, status)
        active = status == -1
        if not active.any():
            break
        p = -np.einsum("ijk,ik->ij", h, g)
        uphill = np.einsum("ij,ij->i", g, p) >= 0
        if uphill.any():  # not a descent direction: start again from steepest descent
            h[uphill] = np.eye(d)
            first |= uphill
            p[uphill] = -g[uphill]
        step, f_new, g_new, ok, used = _line_search(vg, x, f, g, p, active)
        calls += used
        status = np.where(active & ~ok, 2, status)
        moved = active & ok
        s = step[:, None] * p
        y = g_new - g
        sy = np.einsum("ij,ij->i", s, y)
        update = moved & (sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1))
        scale = np.where(update & first, sy / np.maximum(np.einsum("ij,ij->i", y, y), 1e-300), 1.0)
        h = np.where((update & first)[:, None, None], scale[:, None, None] * np.eye(d), h)
        rho = np.where(update, 1.0 / np.where(update, sy, 1.0), 0.0)
        v = np.eye(d) - rho[:, None, None] * np.einsum("ij,ik->ijk", s, y)
        h_new = np.einsum("ijk,ikl,iml->ijm", v, h, v) + rho[:, None, None] * np.einsum("ij,ik->ijk", s, s)
        h = np.where(update[:, None, None], h_new, h)
        first &= ~update
        x = np.where(moved[:, None], x + s, x)
        f, g = np.where(moved, f_new, f), np.where(moved[:, None], g_new, g)
        iterations += moved
        history.append({"iteration": it, "value": f.tolist(), "grad_norm": np.abs(g).max(axis=1).tolist(),
                        "step": np.where(moved, step, 0.0).tolist()})
        if log and log_every and it % log_every == 0:
            log(f"bfgs iteration {it}: best value {np.nanmin(f):.6g}, {int(active.sum())} set(s) running")
    status = np.where((status == -1) & (np.abs(g).max(axis=1) < tol), 0, status)
    status = np.where(status == -1, 1, status)
    return BfgsRun(x, f, g, status, iterations, calls, history)


def train_bfgs(
    panel: PricePanel,
    spec: RunSpec,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    maxiter: int | None = None,
    settings: BfgsSettings | None = None,
    log: Callable[[str], None] | None = None,
    iterations_per_print: int | None = None,
) -> MethodOutcome:
    """Maximise spec.return_val over [start, end) (default: the spec's training window) by BFGS."""
    began = time.perf_counter()
    spec = with_seed(spec, seed)
    opt = spec.optimisation_settings
    settings = settings or bfgs_settings(opt)
    maxiter = maxiter or settings.maxiter
    hessian = hessian_trace_settings(opt)
    layout = parameter_layout(spec)
    split = plan_split(panel, spec, start, end)
    names = selection_metrics(spec)
    has_val = split.val_steps > 0
    evaluator = PoolEvaluator(panel, spec, split.start, split.end, metrics=names, segments=split.segments)
    objective = FixedWindowObjective(panel, spec, split, layout, settings.n_evaluation_points, hessian)
    x0 = objective.flatten(initial_sets(layout, spec))
    n_sets = len(x0)
    if settings.memory_budget is not None:
        n_sets = max(1, min(n_sets, settings.memory_budget // objective.n_windows))
        x0 = x0[:n_sets]
    if log:
        log(f"bfgs: {n_sets} parameter set(s) of {objective.dim} parameters, {objective.n_windows} evaluation "
            f"windows, maxiter {maxiter}, tol {settings.tol:g}")

    with objective.device():
        def vg(x):
            return tuple(np.asarray(v) for v in objective.value_and_grad(x))

        t0 = time.perf_counter()
        run = minimise_bfgs(vg, x0, maxiter=maxiter, tol=settings.tol, log=log, log_every=iterations_per_print or 0)
        solve_s = time.perf_counter() - t0
        traces = ([np.asarray(objective.population_with_trace(jnp.asarray(x))[1]) for x in (x0, run.x)]
                  if hessian is not None else None)
    f0, f1, status, nit = np.asarray(run.history[0]["value"]), run.f, run.status, run.iterations
    user0, user1 = objective.user_sets(x0), objective.user_sets(run.x)
    scores0, scores1 = evaluator.scores(user0), evaluator.scores(user1)
    order, monitored = select(scores1, names, has_val, opt.early_stopping_metric)
    best = int(order[0])
    history = [{"iteration": h["iteration"], "objective": [-v for v in h["value"]],
                **{k: v for k, v in h.items() if k not in ("iteration", "value")}} for h in run.history]
    history[0] = score_record(history[0], scores0, names, has_val)
    history[-1] = score_record({**history[-1], "status": status.tolist(), "iterations": nit.tolist()}, scores1,
                               names, has_val)
    if traces is not None:
        history[0]["hessian_trace"], history[-1]["hessian_trace"] = traces[0].tolist(), traces[1].tolist()
    if log:
        for i in range(n_sets):
            log(f"bfgs set {i}: objective {-f0[i]:.4f} -> {-f1[i]:.4f} in {nit[i]} iterations "
                f"({STATUS[int(status[i])]})")
    total = time.perf_counter() - began
    return MethodOutcome(
        params=to_lists(user1, best), objective=float(monitored[best]), n_evaluations=int(nit.max(initial=0)),
        n_configurations=n_sets, seconds=total, history=history,
        candidates=[to_lists(user1, int(i)) for i in order],
        details={"best_set": best, "selected_on": "validation" if has_val else "train",
                 "monitored_per_set": monitored.tolist(), "objective_per_set": (-f1).tolist(),
                 "initial_objective_per_set": (-f0).tolist(), "status_per_set": status.tolist(),
                 "iterations_per_set": nit.tolist(), "value_and_gradient_calls": run.n_calls,
                 "evaluation_offsets": objective.offsets.tolist(),
                 "n_windows": objective.n_windows, "hessian_trace": hessian is not None,
                 "split": {"train_steps": split.train_steps, "validation_steps": split.val_steps,
                           "window_steps": split.window_steps, "offset_range": split.offset_range},
                 "timings": {"solve_s": solve_s, "total_s": total}},
    )
