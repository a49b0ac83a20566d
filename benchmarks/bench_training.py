"""The issue-5 training speed figures: a momentum pool, 3 tokens, minute prices, zero fees.

    .venv/bin/python benchmarks/bench_training.py [--iterations 10] [--candidates 256]

Prints:
  one training update (value-and-grad of the mean daily_log_sharpe over 8 windows of ~285 days,
    one parameter set, adamw): compile time and warm time per update, with the closed-form daily path
    and with the per-minute path;
  the whole gradient-descent loop with 4 parameter sets and 9-month windows: start-up and seconds per
    iteration (update + the per-iteration evaluation of every set on train and validation);
  search throughput: evaluations per second scoring candidates in vmapped batches vs one jitted call
    per candidate, on a year of minute prices and on three years of daily prices.
Reference simulator on this machine (issue 5): 0.51 s per update after 5.7 s compilation; its full
loop ~1.9 s per iteration after ~25 s of start-up.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from bench_minute_year import minute_panel

from quant_core.data.panel import panel_from_long_prices
from quant_core.data.price_file import shipped_prices_path
from quant_core.runspec import load_run_spec
from quant_core.train import gradient
from quant_core.train.grid import run_grid
from quant_core.train.params import initial_sets, parameter_layout
from quant_core.train.split import plan_split
from quant_core.tunables import tunable_for


def spec(**opt):
    # 30 warm-up days, then a year: val_fraction 0.2 leaves 292 days; bout_offset 7 days -> 285-day windows
    return load_run_spec({
        "rule": "momentum", "tokens": ["BTC", "ETH", "USDC"], "startDateString": "2023-01-31",
        "endDateString": "2024-01-31", "max_memory_days": 30,
        "parameters": {"memory_days": 10, "k_per_day": 20},
        "optimisation_settings": {"optimiser": "adamw", "batch_size": 8, **opt}})


def one_update(panel, s, closed_form: bool, repeats: int = 5) -> tuple[float, float]:
    layout = parameter_layout(s)
    split = plan_split(panel, s)
    loss = gradient.WindowLoss(panel, s, split, layout, closed_form=closed_form)
    tx = gradient.optimiser(s.optimisation_settings)
    sources = jnp.asarray(loss.sources)

    @jax.jit
    def step(u, state, key):
        starts, phases = loss.sample(key)
        rows = loss.windows(sources, starts, key)
        values, grads = jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None))(u, rows, phases)
        updates, state = jax.vmap(tx.update)(grads, state, u)
        return jax.tree_util.tree_map(jnp.add, u, updates), state, values

    u = {k: jnp.asarray(v) for k, v in initial_sets(layout, s).items()}
    state = jax.vmap(tx.init)(u)
    key = jax.random.PRNGKey(0)
    t = time.perf_counter()
    jax.block_until_ready(step(u, state, key))
    first = time.perf_counter() - t
    times = []
    for i in range(repeats):
        key = jax.random.fold_in(key, i)
        t = time.perf_counter()
        u, state, _ = step(u, state, key)
        jax.block_until_ready(u)
        times.append(time.perf_counter() - t)
    return first, min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=256)
    args = ap.parse_args()
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    panel = minute_panel()
    s1 = spec(n_parameter_sets=1)
    split = plan_split(panel, s1)
    print(f"windows: {s1.optimisation_settings.batch_size} x {split.window_steps / 1440:.0f} days "
          f"(train part {split.train_steps / 1440:.0f} days, offsets in [0, {split.offset_range}) minutes)")
    for closed in (True, False):
        first, warm = one_update(panel, s1, closed)
        label = "closed-form daily path" if closed else "per-minute path     "
        print(f"one update, {label}: compile+first {first:6.2f} s, warm {warm:.3f} s")

    # the full loop: 4 parameter sets, the same year (285-day, ~9-month windows, 73 days held out)
    s4 = spec(n_parameter_sets=4, n_iterations=args.iterations, early_stopping=False)
    t = time.perf_counter()
    r = gradient.train_gradient(panel, s4)
    total = time.perf_counter() - t
    tm = r.timings
    print(f"full loop, 4 sets, {r.split['window_steps'] / 1440:.0f}-day windows, {r.n_iterations} iterations: "
          f"start-up {tm['startup_s']:.2f} s (compile+first update {tm['compile_s']:.2f} s), "
          f"{tm['loop_per_iteration_s']:.3f} s per iteration ({tm['per_iteration_s']:.3f} s of it the update), "
          f"total {total:.1f} s")

    for label, pnl, sp in (
        ("minute year", panel, spec(method="random", val_fraction=0.0)),
        ("3 years daily", panel_from_long_prices(shipped_prices_path(), ["BTC", "ETH", "USDC"]),
         spec(method="random", val_fraction=0.0).model_copy(update={"startDateString": "2022-03-01",
                                                                    "endDateString": "2024-12-01"})),
    ):
        n = args.candidates if label.startswith("3") else min(args.candidates, 64)
        rates = {}
        for batch in (min(n, 64), 1):
            settings = sp.optimisation_settings.search_settings.model_copy(update={"batch_size": batch,
                                                                                   "n_samples": n})
            sb = sp.model_copy(update={"optimisation_settings": sp.optimisation_settings.model_copy(
                update={"search_settings": settings})})
            problem = tunable_for(sb).problem(pnl, sb.start, sb.end)
            run_grid(problem, sb, n_samples=batch)  # compile
            res = run_grid(problem, sb)
            rates[batch] = res.evaluations_per_second
        print(f"random search, {label}, {n} candidates: batched (64 per call) {rates[min(n, 64)]:.1f} eval/s, "
              f"one call per candidate {rates[1]:.1f} eval/s, ratio {rates[min(n, 64)] / rates[1]:.1f}x")


if __name__ == "__main__":
    main()
