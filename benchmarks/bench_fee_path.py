"""Fee-path reserves (G3M with fees, quant_core.sim.amm.g3m_fees): a year of minutes, single and batched.

    .venv/bin/python benchmarks/bench_fee_path.py [--days 365] [--batch 64] [--batch-days 30] [--repeats 5]

Synthetic data: seeded geometric Brownian motion for 3 tokens (one a stablecoin) and smooth
momentum-like weights (slow sinusoidal tilts, per parameter set in the batch). fees = 0.003.
Prints compile time and the best of several warm runs, for one pool and for a vmapped batch.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import quant_core  # noqa: F401  (float64)
from quant_core.sim.amm.g3m_fees import g3m_reserves_with_fees

MINUTES_PER_DAY = 1440


def synthetic_prices(minutes: int, seed: int = 0) -> np.ndarray:
    """GBM minute prices for [BTC-like, ETH-like, stablecoin]."""
    rng = np.random.default_rng(seed)
    vol = np.array([0.6, 0.8, 0.01]) / np.sqrt(365 * MINUTES_PER_DAY)
    drift = np.array([0.2, 0.1, 0.0]) / (365 * MINUTES_PER_DAY)
    steps = drift - 0.5 * vol**2 + vol * rng.standard_normal((minutes, 3))
    steps[0] = 0.0
    return np.array([30000.0, 2000.0, 1.0]) * np.exp(np.cumsum(steps, axis=0))


def smooth_weights(minutes: int, batch: int | None = None, seed: int = 1) -> np.ndarray:
    """Slowly varying weights in [~0.1, ~0.6] summing to 1: [minutes, 3] or [batch, minutes, 3]."""
    rng = np.random.default_rng(seed)
    size = 1 if batch is None else batch
    t = np.arange(minutes)[None, :, None] / MINUTES_PER_DAY
    period = rng.uniform(10.0, 60.0, (size, 1, 3))
    phase = rng.uniform(0.0, 2 * np.pi, (size, 1, 3))
    tilt = 0.6 * np.sin(2 * np.pi * t / period + phase)
    w = np.exp(tilt)
    w = w / w.sum(axis=-1, keepdims=True)
    return w[0] if batch is None else w


def best_time(fn, args, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-days", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}")

    minutes = args.days * MINUTES_PER_DAY
    prices = jnp.asarray(synthetic_prices(minutes))
    weights = jnp.asarray(smooth_weights(minutes))
    reserves0 = 1e6 * weights[0] / prices[0]
    single = jax.jit(lambda p, w, r: g3m_reserves_with_fees(p, w, r, fees=0.003))
    first, warm = best_time(single, (prices, weights, reserves0), args.repeats)
    out = single(prices, weights, reserves0)
    value = float(out.reserves[-1] @ prices[-1])
    print(
        f"single pool, {minutes} minutes x 3 tokens: compile+run {first:.2f} s, warm {warm:.3f} s "
        f"({minutes / warm / 1e6:.2f} M pool-minutes/s); final value {value:,.0f}, "
        f"fees {float(out.fee_revenue.sum()):,.0f}, arbitrage in {float((out.arb_volume > 0).mean()):.1%} of minutes"
    )

    b_minutes = args.batch_days * MINUTES_PER_DAY
    b_prices = prices[:b_minutes]
    b_weights = jnp.asarray(smooth_weights(b_minutes, args.batch, seed=2))
    b_reserves0 = 1e6 * b_weights[:, 0] / b_prices[0]
    batched = jax.jit(jax.vmap(lambda w, r: g3m_reserves_with_fees(b_prices, w, r, fees=0.003)))
    first, warm = best_time(batched, (b_weights, b_reserves0), args.repeats)
    pool_minutes = args.batch * b_minutes
    print(
        f"vmap {args.batch} parameter sets x {b_minutes} minutes: compile+run {first:.2f} s, warm {warm:.3f} s "
        f"({pool_minutes / warm / 1e6:.2f} M pool-minutes/s)"
    )


if __name__ == "__main__":
    main()
