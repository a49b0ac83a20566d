"""Seeded retrains whose results must not move across refactors (issue 15's "behaviour stays the same").

`golden_run(name)` trains, walk-forwards and builds the stored configuration of one registry universe on
fixed data with a small budget, exactly as the platform's assets do, and returns what a configuration row
holds (parameters, metrics, stage, reason, sample size, data hash). `cd tests && python -m golden.runs [NAME ...]`
rewrites the recorded JSON; do that only when a numerical change is intended, and say so in the commit. (The
demo's pool universe was re-recorded for issue 19, at its 0.3 % fee and deployable parameter ranges.)
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
    from quant_core.data.market_candles import MarketCandles
    from quant_core.data.panel import panel_from_long_prices
    from quant_core.data.price_file import shipped_prices_path
    from quant_core.data.synthetic import SyntheticSource
    from quant_core.runspec import with_training
    from quant_core.train.trainer import train
    from quant_core.tunables import tunable_for
    from quant_core.universe import load_registry
    from quant_core.validate.walk_forward import walk_forward

    registry = load_registry(REGISTRY)
    universe = registry.universe(name)
    spec = with_training(universe.spec, budget=RUNS[name], seed=0)
    universe = universe.model_copy(update={"spec": spec})
    if spec.kind == "pool":
        data = panel_from_long_prices(shipped_prices_path(), spec.tokens)
    else:
        entry = registry.market(universe.markets[spec.tokens[0]])
        source = SyntheticSource(seed=entry.seed, symbols=(entry.symbol,), exchange=entry.exchange)
        frame = source.fetch(entry.market, datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 12, 31, tzinfo=UTC))
        data = MarketCandles(frame, entry.timeframe)
    tunable = tunable_for(spec)
    trained = train(data, spec)
    report = walk_forward(data, spec, universe.walk_forward)
    in_sample = tunable.evaluate(data, [trained.params], spec.start, spec.end, benchmarks=False).metrics[0]
    holdout = tunable.evaluate(data, [trained.params], spec.end, spec.end_test, benchmarks=False).metrics[0]
    data_hash = tunable.data_hash(data)
    config = build_configuration(registry, universe, data_hash, trained, in_sample, holdout, report)
    return _finite({
        "parameters": config.parameters, "metrics": config.metrics, "stage": str(config.lifecycle_stage),
        "stage_reason": config.stage_reason, "stage_evidence": config.stage_evidence,
        "sample_size": config.sample_size, "data_hash": config.data_hash, "objective": trained.objective,
        "oos_equity": report.oos_equity,
    })


def path(name: str) -> Path:
    return HERE / f"{name}.json"


if __name__ == "__main__":
    import sys

    for run in sys.argv[1:] or RUNS:  # `python -m golden.runs NAME ...` rewrites only those
        path(run).write_text(json.dumps(golden_run(run), indent=1, sort_keys=True) + "\n")
        print("wrote", path(run))
