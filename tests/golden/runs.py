"""Seeded retrains whose results must not move across refactors (issue 15's "behaviour stays the same").

`golden_run(name)` trains, walk-forwards and builds the stored configuration of one registry universe on
fixed data with a small budget, exactly as the platform's assets do, and returns what a configuration row
holds (parameters, metrics, stage, reason, sample size, data hash). `cd tests && python -m golden.runs` rewrites
the recorded JSON; do that only when a numerical change is intended, and say so in the commit.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
REGISTRY = HERE.parents[1] / "quant_assets" / "registry.yaml"
RUNS = {
    # the demo's pool universe and two sweep universes (different exchange, market and timeframe)
    "momentum_btc_eth_usdc_1d": 16,
    "sweep_binance_btc_usdt_1h": 64,
    "sweep_kraken_eth_usdt_4h": 64,
}


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    return obj


def golden_run(name: str) -> dict:
    from quant_core.configuration import build_configuration
    from quant_core.data.panel import panel_from_long_prices
    from quant_core.data.price_file import shipped_prices_path
    from quant_core.data.synthetic import SyntheticSource
    from quant_core.universe import load_registry

    registry = load_registry(REGISTRY)
    universe = registry.universe(name)
    spec = universe.spec.with_training(budget=RUNS[name], seed=0)
    universe = universe.model_copy(update={"spec": spec})
    if spec.strategy is None:
        from quant_core.sim.simulate import simulate
        from quant_core.train.pool import train_pool
        from quant_core.validate.walk_forward import walk_forward

        panel = panel_from_long_prices(shipped_prices_path(), spec.tokens)
        trained = train_pool(panel, spec)
        report = walk_forward(panel, spec, universe.walk_forward)
        in_sample = simulate(panel, spec, trained.params).summary()
        holdout = simulate(panel, spec, trained.params, start=spec.end, end=spec.end_test).summary()
        data_hash = panel.data_hash
    else:
        from quant_assets.defs.strategies.assets import candles_hash
        from quant_core.strategies.train import train_strategy
        from quant_core.strategies.walk_forward import run_backtest, summary_of, walk_forward_strategy

        entry = registry.market(universe.markets[spec.tokens[0]])
        source = SyntheticSource(seed=entry.seed, symbols=(entry.symbol,), exchange=entry.exchange)
        candles = source.fetch(entry.market, datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 12, 31, tzinfo=UTC))
        tf = entry.timeframe
        trained = train_strategy(candles, tf, spec)
        report = walk_forward_strategy(candles, tf, spec, universe.walk_forward)
        in_sample = summary_of(run_backtest(candles, tf, spec, [trained.params], spec.start, spec.end))
        holdout = summary_of(run_backtest(candles, tf, spec, [trained.params], spec.end, spec.end_test))
        data_hash = candles_hash(candles)
    config = build_configuration(registry, universe, data_hash, trained, in_sample, holdout, report, None)
    return _finite({
        "parameters": config.parameters, "metrics": config.metrics, "stage": str(config.lifecycle_stage),
        "stage_reason": config.stage_reason, "stage_evidence": config.stage_evidence,
        "sample_size": config.sample_size, "data_hash": config.data_hash, "objective": trained.objective,
        "oos_equity": report.oos_equity,
    })


def path(name: str) -> Path:
    return HERE / f"{name}.json"


if __name__ == "__main__":
    for run in RUNS:
        path(run).write_text(json.dumps(golden_run(run), indent=1, sort_keys=True) + "\n")
        print("wrote", path(run))
