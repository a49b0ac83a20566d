"""Gradient descent (optax) on a pool's parameters, n_parameter_sets trained at once with vmap.

One iteration (one compiled call for all parameter sets):
1. draw batch_size window offsets (`quant_core.train.split`), the same for every set; with
   include_flipped_training_data each is also taken from the time-reversed training part;
2. with price_noise_sigma > 0, multiply each window's prices by exp(sigma * N(0, 1)) (fresh noise
   per iteration, row and token);
3. loss = -(mean over windows of return_val) + turnover_penalty * mean daily one-way turnover
   (0.5 * sum_i |w_t,i - w_t-1,i| summed over the window, per day); with train_on_hessian_trace,
   + weight * trace of this loss's Hessian on the training part's first window
   (quant_core.train.hessian_trace; the history records the objective's trace per set);
4. gradients in the unconstrained space -> clip_by_global_norm(clip_norm) -> adam | adamw
   (decoupled weight_decay) | sgd (weight_decay as L2) -> the learning-rate schedule (constant
   base_lr; cosine: base_lr -> min_lr at n_iterations; exponential: base_lr * (min_lr / base_lr)^(i / n);
   warmup_cosine: min_lr -> base_lr over warmup_steps, cosine to min_lr at n_iterations)
   -> times each set's plateau factor.
Then a no-gradient pass over the whole period [start, end) scores every set on the training part
and on the validation part (the same pool continued, never restarted). The monitored value is
early_stopping_metric on the validation part (on the training part when val_fraction = 0):
- plateau decay: a set that has not improved it for decay_lr_plateau iterations has its learning
  rate multiplied by decay_lr_ratio (and its counter reset);
- early stopping: training stops when no set has improved it for early_stopping_patience iterations;
- SWA: from iteration swa_start_frac * n_iterations, every swa_freq iterations, the unconstrained
  parameters join a running mean; the averaged set replaces a set's best when it scores higher;
- the result is the best (set, iteration) by the monitored value, with the whole history.

With a metric read at day boundaries only (metrics.DAILY_SAMPLED), minute data and zero costs, a
window's values are computed on its days alone, per chunk in closed form (`sim.simulate.values_at`:
the same numbers to ~1e-14), which makes a gradient step several times cheaper.

A window is a forward pass of fixed length W (static shapes: one compilation). The chunk grid stays
on the data's chunk boundaries: a window at offset o runs the pool from the chunk boundary at or
before o and is scored from o, so window starts need not be chunk-aligned.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import jax
import jax.numpy as jnp
import numpy as np
import optax

from quant_core.data.panel import PricePanel
from quant_core.metrics import BENCHMARK_NEEDS, DAILY_SAMPLED, benchmarks_for, get_metric
from quant_core.sim.resolve import initial_weights
from quant_core.sim.settings import static_settings
from quant_core.sim.simulate import _forward, run_device, values_at, values_at_supported
from quant_core.sim.window import plan_window, sorted_panel_rows
from quant_core.spec import OptimisationSettings, RunSpec
from quant_core.train.hessian_trace import window_objective
from quant_core.train.method_settings import HessianTraceSettings, hessian_trace_settings
from quant_core.train.objective import PoolEvaluator, check_trainable_series
from quant_core.train.params import ParamLayout, initial_sets, parameter_layout
from quant_core.train.split import TrainSplit, plan_split, stratified_offsets


@dataclass
class GradientResult:
    params: dict[str, list]  # user units of the selected set (alphabetical token order)
    best_set: int
    best_iteration: int  # 0 = the starting point; -1 = the SWA average
    monitored: float  # the selected set's monitored value (validation metric, or train when no hold-out)
    n_iterations: int  # iterations run
    stopped_early: bool
    history: list[dict] = field(default_factory=list)  # per iteration: loss, train/val metrics, lr per set
    checkpoints: list[dict] = field(default_factory=list)  # every checkpoint_interval: params of every set
    timings: dict[str, float] = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    candidates: list[dict] = field(default_factory=list)  # every set's best point, best first


def lr_schedule(opt: OptimisationSettings) -> optax.Schedule:
    """The learning rate by iteration (module docstring), the reference's four schedules."""
    n = opt.n_iterations
    if opt.lr_schedule_type == "warmup_cosine":
        warmup = min(opt.warmup_steps, max(n - 1, 0))
        return optax.warmup_cosine_decay_schedule(
            init_value=opt.min_lr, peak_value=opt.base_lr, warmup_steps=warmup,
            decay_steps=max(n, warmup + 1), end_value=opt.min_lr)
    if opt.lr_schedule_type == "cosine":
        return optax.cosine_decay_schedule(init_value=opt.base_lr, decay_steps=n, alpha=opt.min_lr / opt.base_lr)
    if opt.lr_schedule_type == "exponential":
        return optax.exponential_decay(init_value=opt.base_lr, transition_steps=1,
                                       decay_rate=(opt.min_lr / opt.base_lr) ** (1.0 / n))
    return optax.constant_schedule(opt.base_lr)


def optimiser(opt: OptimisationSettings) -> optax.GradientTransformation:
    """The optax chain of the module docstring (the learning-rate sign flip included)."""
    schedule = lr_schedule(opt)
    chain = [optax.clip_by_global_norm(opt.clip_norm)] if opt.use_gradient_clipping else []
    if opt.optimiser == "adam":
        chain.append(optax.scale_by_adam())
    elif opt.optimiser == "adamw":
        chain += [optax.scale_by_adam(), optax.add_decayed_weights(opt.weight_decay)]
    else:
        chain.append(optax.add_decayed_weights(opt.weight_decay))
    chain.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*chain)


def learning_rate(opt: OptimisationSettings, iteration: int) -> float:
    return float(lr_schedule(opt)(iteration))


class WindowLoss:
    """The batched training loss of module-docstring steps 1-3, for one set of unconstrained params."""

    def __init__(self, panel: PricePanel, spec: RunSpec, split: TrainSplit, layout: ParamLayout,
                 closed_form: bool | None = None) -> None:
        window = plan_window(panel, spec, split.start, split.end)
        self.stride = window.stride
        self.length = split.window_steps
        extra = self.stride - 1
        st = static_settings(spec, window)
        check_trainable_series(spec, st)
        self.st = dataclasses.replace(st, n_steps=self.length + extra)
        self.device = functools.partial(run_device, self.st, differentiated=True)  # gradients take the scan
        warm = window.warmup_rows
        rows = sorted_panel_rows(panel, spec)[window.first_row : window.start_row + split.train_steps]
        sources = [rows]
        if spec.include_flipped_training_data:
            sources.append(rows[::-1])
        # pad with the last row so a window's tail past the training part never reads validation data
        # (values after the window end are discarded, and nothing before them reads later prices)
        self.sources = np.stack([np.concatenate([s, np.repeat(s[-1:], extra, axis=0)]) for s in sources])
        self.rows_per_window = warm + self.length + extra
        self.split = split
        self.spec = spec
        self.layout = layout
        self.metric = get_metric(spec.return_val)
        self.needs_bench = BENCHMARK_NEEDS.get(spec.return_val) is not None
        self.steps_per_day = window.steps_per_day
        self.w0 = jnp.asarray(initial_weights(spec))
        self.v0 = jnp.float64(spec.initial_pool_value)
        # daily metric, minute data, zero costs: the values on the window's days, summed per chunk
        fast = (values_at_supported(self.st) and spec.return_val in DAILY_SAMPLED and spec.turnover_penalty == 0)
        self.closed_form = fast if closed_form is None else closed_form and fast
        opt = spec.optimisation_settings
        self.probs = split.offset_probabilities(opt.sample_method)
        self.stratified = opt.sample_method == "stratified"
        self.batch = opt.batch_size

    def sample(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Offsets [B] into each source; (row starts [S*B], score phases [S*B]) over all sources."""
        r = max(self.split.offset_range, 1)
        if self.stratified:
            offsets = stratified_offsets(key, r, self.batch)
        else:
            p = None if self.probs is None else jnp.asarray(self.probs)
            offsets = jax.random.choice(key, r, (self.batch,), replace=r < self.batch, p=p)
        aligned = (offsets // self.stride) * self.stride
        n_src = self.sources.shape[0]
        return jnp.tile(aligned, n_src), jnp.tile(offsets - aligned, n_src)

    def windows(self, sources: jax.Array, starts: jax.Array, key: jax.Array) -> jax.Array:
        """[S*B, rows_per_window, n] price rows (noised when price_noise_sigma > 0)."""
        src = jnp.arange(starts.shape[0]) * sources.shape[0] // starts.shape[0]  # equal shares per source
        rows = jax.vmap(lambda s, o: jax.lax.dynamic_slice_in_dim(sources[s], o, self.rows_per_window))(src, starts)
        sigma = self.spec.price_noise_sigma
        if sigma > 0:
            rows = rows * jnp.exp(sigma * jax.random.normal(key, rows.shape, dtype=rows.dtype))
        return rows

    def __call__(self, u: dict, rows: jax.Array, phases: jax.Array) -> jax.Array:
        """Loss of one parameter set over the batch of windows."""
        st, length = self.st, self.length
        params = self.layout.full_user(u)

        if self.closed_form:
            days = jnp.arange((length - 1) // self.steps_per_day + 1) * self.steps_per_day

            def daily(win_rows, phase):
                return self.metric(values_at(st, win_rows, params, self.w0, self.v0, phase + days), 1, None)

            return -jnp.mean(jax.vmap(daily)(rows, phases))

        def one(win_rows, phase):
            values, weights, _ = _forward(st, win_rows, params, self.w0, self.v0)
            values = jax.lax.dynamic_slice_in_dim(values, phase, length)
            bench = None
            if self.needs_bench:
                prices = win_rows[st.warmup_rows :]
                if st.numeraire_index is not None:
                    prices = prices / prices[:, st.numeraire_index : st.numeraire_index + 1]
                prices = jax.lax.dynamic_slice_in_dim(prices, phase, length)
                bench = benchmarks_for(prices, jax.lax.dynamic_index_in_dim(weights, phase, keepdims=False),
                                       values[0])
            score = self.metric(values, self.steps_per_day, bench)
            if self.spec.turnover_penalty > 0:
                w = jax.lax.dynamic_slice_in_dim(weights, phase, length)
                days = (length - 1) / self.steps_per_day
                turnover = 0.5 * jnp.sum(jnp.abs(w[1:] - w[:-1])) / days
                score = score - self.spec.turnover_penalty * turnover
            return score

        return -jnp.mean(jax.vmap(one)(rows, phases))


def _tree_norm(tree) -> jax.Array:
    """Global L2 norm per parameter set (leading axis)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1) for x in leaves))


def _to_lists(user: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(v).tolist() for k, v in user.items()}


def train_gradient(
    panel: PricePanel,
    spec: RunSpec,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int | None = None,
    n_iterations: int | None = None,
    iterations_per_print: int | None = None,
    log: Callable[[str], None] | None = None,
    hessian: HessianTraceSettings | bool | None = None,
) -> GradientResult:
    """Maximise spec.return_val over [start, end) (default: the spec's training window) by gradient descent.

    `hessian`: the trace penalty's settings (False: off); default: the spec's train_on_hessian_trace."""
    began = time.perf_counter()
    opt = spec.optimisation_settings
    if seed is not None:
        spec = spec.model_copy(update={"optimisation_settings": opt.model_copy(update={"initial_random_key": seed})})
        opt = spec.optimisation_settings
    n_iter = n_iterations or opt.n_iterations
    layout = parameter_layout(spec)
    split = plan_split(panel, spec, start, end)
    monitor = opt.early_stopping_metric
    metric_names = tuple(dict.fromkeys((spec.return_val, monitor)))
    evaluator = PoolEvaluator(panel, spec, split.start, split.end, metrics=metric_names, segments=split.segments)
    loss = WindowLoss(panel, spec, split, layout)
    tx = optimiser(opt)
    has_val = split.val_steps > 0
    mon_idx, mon_seg = metric_names.index(monitor), (1 if has_val else 0)

    if hessian is None:
        hessian = hessian_trace_settings(opt)
    elif hessian is True:
        hessian = HessianTraceSettings()
    hessian = hessian or None

    with loss.device():
        sources = jnp.asarray(loss.sources)
        objective = window_objective(loss, sources, hessian, opt.initial_random_key)  # loss [+ trace term]

        @jax.jit
        def step(u, state, key, lr_scale):
            k_off, k_noise = jax.random.split(key)
            starts, phases = loss.sample(k_off)
            rows = loss.windows(sources, starts, k_noise)
            (values, traces), grads = jax.vmap(jax.value_and_grad(objective, has_aux=True), in_axes=(0, None, None))(
                u, rows, phases)
            updates, state = jax.vmap(tx.update)(grads, state, u)
            updates = jax.tree_util.tree_map(
                lambda x: x * lr_scale.reshape((-1,) + (1,) * (x.ndim - 1)), updates)
            return optax.apply_updates(u, updates), state, values, traces, _tree_norm(grads), _tree_norm(updates)

        u = {k: jnp.asarray(v) for k, v in initial_sets(layout, spec).items()}
        state = jax.vmap(tx.init)(u)
        to_user = jax.jit(lambda u: layout.to_user(u))
    n_sets = opt.n_parameter_sets
    key = jax.random.PRNGKey(opt.initial_random_key)

    def evaluate(u) -> np.ndarray:
        with loss.device():
            user = {k: np.asarray(v) for k, v in to_user(u).items()}
        batch = {**user, **{k: np.broadcast_to(v, (n_sets, *v.shape)) for k, v in layout.fixed.items()}}
        return evaluator.scores(batch), user

    scores, user = evaluate(u)
    history = [_record(0, None, scores, metric_names, split, np.full(n_sets, opt.base_lr), None, None)]
    best_val = scores[:, mon_idx, mon_seg].copy()
    best_user = {k: v.copy() for k, v in user.items()}
    best_iter = np.zeros(n_sets, dtype=int)
    since_best = np.zeros(n_sets, dtype=int)
    since_plateau = np.zeros(n_sets, dtype=int)
    lr_scale = np.ones(n_sets)
    swa_sum, swa_n = None, 0
    swa_start = int(math.ceil(opt.swa_start_frac * n_iter))
    checkpoints = []
    stopped = False
    compile_s = per_iter = 0.0
    it = 0
    first_done = time.perf_counter()
    for it in range(1, n_iter + 1):
        key, sub = jax.random.split(key)
        t0 = time.perf_counter()
        with loss.device():
            u, state, losses, traces, gnorm, unorm = step(u, state, sub, jnp.asarray(lr_scale))
            jax.block_until_ready(u)
        if it == 1:
            compile_s = time.perf_counter() - t0
        else:
            per_iter += time.perf_counter() - t0
        scores, user = evaluate(u)
        if it == 1:
            first_done = time.perf_counter()
        lr_now = learning_rate(opt, it - 1) * lr_scale
        history.append(_record(it, np.asarray(losses), scores, metric_names, split, lr_now, np.asarray(gnorm),
                               np.asarray(unorm)))
        if hessian is not None:  # the trace of the objective's Hessian on the first window, per set
            history[-1]["hessian_trace"] = np.asarray(traces).tolist()
        mon = scores[:, mon_idx, mon_seg]
        improved = mon > best_val
        best_val = np.where(improved, mon, best_val)
        best_iter = np.where(improved, it, best_iter)
        for k in best_user:
            best_user[k][improved] = user[k][improved]
        since_best = np.where(improved, 0, since_best + 1)
        since_plateau = np.where(improved, 0, since_plateau + 1)
        if opt.use_plateau_decay:
            decay = since_plateau >= opt.decay_lr_plateau
            lr_scale = np.where(decay, lr_scale * opt.decay_lr_ratio, lr_scale)
            since_plateau = np.where(decay, 0, since_plateau)
        if opt.use_swa and it >= swa_start and (it - swa_start) % opt.swa_freq == 0:
            swa_sum = u if swa_sum is None else jax.tree_util.tree_map(jnp.add, swa_sum, u)
            swa_n += 1
        if opt.track_checkpoints and it % opt.checkpoint_interval == 0:
            checkpoints.append({"iteration": it, "params": [_to_lists({k: v[s] for k, v in user.items()})
                                                            for s in range(n_sets)],
                                "train": scores[:, 0, 0].tolist(),
                                "validation": scores[:, 0, 1].tolist() if has_val else None})
        every = iterations_per_print or 0
        if log and every and (it % every == 0 or it == n_iter):
            log(_progress(it, n_iter, history[-1], monitor, has_val))
        if opt.early_stopping and np.all(since_best >= opt.early_stopping_patience):
            stopped = True
            if log:
                log(f"early stop at iteration {it}: no set improved validation {monitor} for "
                    f"{opt.early_stopping_patience} iterations")
            break
    if swa_n:
        swa_u = jax.tree_util.tree_map(lambda x: x / swa_n, swa_sum)
        scores, swa_user = evaluate(swa_u)
        mon = scores[:, mon_idx, mon_seg]
        better = mon > best_val
        best_val = np.where(better, mon, best_val)
        best_iter = np.where(better, -1, best_iter)
        for k in best_user:
            best_user[k][better] = swa_user[k][better]
        history.append({**_record(it, None, scores, metric_names, split, lr_scale * 0, None, None), "swa": True,
                        "swa_members": swa_n})
    best_set = int(np.argmax(best_val))
    params = {k: v[best_set] for k, v in best_user.items()}
    params.update(layout.fixed)
    candidates = [_to_lists({**{k: v[s] for k, v in best_user.items()}, **layout.fixed})
                  for s in np.argsort(-best_val, kind="stable")]
    loop_end = time.perf_counter()
    timings = {"compile_s": compile_s, "per_iteration_s": per_iter / max(it - 1, 1),
               "startup_s": first_done - began,  # set-up, compilation and the first iteration
               "loop_per_iteration_s": (loop_end - first_done) / max(it - 1, 1),  # with evaluation, bookkeeping
               "total_s": loop_end - began}
    return GradientResult(
        params=_to_lists(params), best_set=best_set, best_iteration=int(best_iter[best_set]),
        monitored=float(best_val[best_set]), n_iterations=it, stopped_early=stopped, history=history,
        checkpoints=checkpoints, timings=timings, candidates=candidates,
        split={"train_steps": split.train_steps, "validation_steps": split.val_steps,
               "window_steps": split.window_steps, "offset_range": split.offset_range,
               "train_end": split.train_end.isoformat()},
    )


def _record(it, losses, scores, names, split, lr, gnorm, unorm) -> dict:
    rec: dict = {"iteration": it}
    if losses is not None:
        rec["objective"] = (-losses).tolist()  # the batch objective each set maximised
    for i, name in enumerate(names):
        rec[f"train_{name}"] = scores[:, i, 0].tolist()
        if split.val_steps:
            rec[f"validation_{name}"] = scores[:, i, 1].tolist()
    rec["lr"] = np.asarray(lr).tolist()
    if gnorm is not None:
        rec["grad_norm"] = gnorm.tolist()
        rec["update_norm"] = unorm.tolist()
    return rec


def _progress(it: int, n: int, rec: dict, monitor: str, has_val: bool) -> str:
    key = f"validation_{monitor}" if has_val else f"train_{monitor}"
    best = int(np.argmax(rec[key]))
    return (f"iteration {it}/{n}: batch objective {max(rec['objective']):.4f}, "
            f"{key} {rec[key][best]:.4f} (set {best}), lr {rec['lr'][best]:.3g}")
