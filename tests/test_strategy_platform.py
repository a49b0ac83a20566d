"""A CEX-strategy universe on the Dagster platform (ephemeral instance, real store): one synthetic 1h market's
candles backfilled, the universe's week retrained, and the stored configuration's evidence checked against the
walk-forward report; the retrain sensor serves strategy universes as it serves pools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from quant_assets.backfill import backfill_candles
from quant_assets.defs.automation import retrain_requests
from quant_assets.defs.market_data.assets import OHLCV_KEY
from quant_assets.partitions import latest_retrain_week
from quant_core.lifecycle import StageEvidence, assign_stage
from quant_core.store import ConfigurationStore
from quant_core.strategies import get_strategy
from quant_core.universe import load_registry

U = "sweep_synth_aaa_1h"
MARKET = "synth.AAA-USDT.1h"
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = TODAY - timedelta(days=120)

REGISTRY = f"""
partitions_start: "{START:%Y-%m-%d}"
markets:
  - {{exchange: synth, symbol: AAA/USDT, timeframe: 1h, source: synthetic, since: "{START:%Y-%m-%d}", seed: 4}}
universes:
  - name: {U}
    markets: {{AAA: {MARKET}}}
    walk_forward: {{train_days: 30, gap_days: 2, test_days: 14, step_days: 14}}
    spec:
      strategy: liquidity_sweep
      tokens: [AAA]
      startDateString: "2024-01-01"
      endDateString: "2024-02-16"
      endTestDateString: "2024-03-01"
      max_memory_days: 9
      return_val: net_profit
      strategy_settings: {{min_trades: 1, taker_fee_bps: 10}}
      optimisation_settings:
        method: random
        val_fraction: 0
        search_settings:
          n_samples: 64
          batch_size: 64
          parameter_space: {{volume_spike_threshold: {{low: 1.5, high: 2.0}}, lookback: {{low: 10, high: 30}}}}
"""


def make_platform(tmp_path, monkeypatch):
    """The registry above as the code location's (QUANT_REGISTRY, QUANT_HOME under tmp_path) and its definitions."""
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    monkeypatch.setenv("QUANT_REGISTRY", str(path))
    monkeypatch.setenv("QUANT_HOME", str(tmp_path / "quant"))
    from quant_assets.definitions import build_definitions

    return load_registry(path), build_definitions()


def land_lookback(defs, instance) -> None:
    """The market's candles of the last 12 weeks, in one ranged run (quant_assets.backfill)."""
    first, last = TODAY - timedelta(days=7 * 12), TODAY - timedelta(days=1)
    results = backfill_candles(defs, instance, f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}", [MARKET], [MARKET])
    assert all(r.success for r in results)


@pytest.fixture
def platform(tmp_path, monkeypatch):
    return make_platform(tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_strategy_universe_retrains_and_stores_its_trades(platform, backend, request, monkeypatch):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    monkeypatch.setenv("QUANT_DATABASE_URL", url)
    registry, defs = platform
    universe = registry.universe(U)
    assets, resources = list(defs.assets), dict(defs.resources)
    with dg.instance_for_test() as instance:
        week = latest_retrain_week(registry, universe, TODAY)
        land_lookback(defs, instance)
        # new candles ask for this universe's latest week, like a pool's
        new = {k for k in instance.get_materialized_partitions(OHLCV_KEY)}
        requests, _ = retrain_requests(registry, instance, new, TODAY)
        assert [(r.job_name, r.partition_key) for r in requests] == [(f"retrain_{U}", week)]

        res = dg.materialize(assets, selection=dg.AssetSelection.groups(U), instance=instance, resources=resources,
                             partition_key=week, run_config={"ops": {f"{U}__{a}": {"config": {"seed": 5}} for a in
                                                                     ("trained_parameters", "walk_forward_report",
                                                                      "configuration")}})
        assert res.success
        mats = {m.asset_key.to_user_string(): m.materialization.metadata
                for m in res.get_asset_materialization_events()}
        assert set(mats) == {f"{U}/{a}" for a in ("candles", "trained_parameters", "walk_forward_report",
                                                   "configuration")}
        checks = {c.check_name: c.passed for c in res.get_asset_check_evaluations()}
        assert checks["complete_data"] and checks["finite_objective"] and checks["finite_oos_metrics"]
        assert "oos_thresholds" in checks
        trained = mats[f"{U}/trained_parameters"]
        assert trained["n_evaluations"].value == 64 and trained["method"].value == "random"
        # the UI shows trades and equity curves: a trades table and an inline PNG on each step
        for key in (f"{U}/trained_parameters", f"{U}/configuration"):
            assert "data:image/png;base64," in mats[key]["plot"].value
        assert "| entry | exit | side |" in mats[f"{U}/trained_parameters"]["trades"].value.replace("fold | ", "")
        report = mats[f"{U}/walk_forward_report"]["report"].value
        n_oos = report["trades"]
        assert mats[f"{U}/walk_forward_report"]["sample_size"].value == n_oos
        assert f"{n_oos} trades" in mats[f"{U}/configuration"]["oos_trades"].value

    store = ConfigurationStore(url)
    try:
        (c,) = store.list_configurations(universe_key=U)
    finally:
        store.dispose()
    schema = get_strategy("liquidity_sweep")
    assert (c.strategy, c.method, c.timeframe, c.exchanges, c.symbols) == (
        "liquidity_sweep", "random", "1h", ["synth"], ["AAA/USDT"])
    assert set(c.parameters) == {p.name for p in schema.params}
    schema.resolve(c.parameters)  # every stored value is admissible
    assert 10 <= c.parameters["lookback"] <= 30 and c.parameters["lookback"] == int(c.parameters["lookback"])
    assert c.seed == 5
    # sample size = out-of-sample trades; the stage is the pure function of the stored evidence
    wf = c.metrics["walk_forward"]
    assert c.sample_size == n_oos == wf["oos_trades"] and wf["n_folds"] == 2  # 60 days: 30 + 2 + 14, step 14
    sig = c.metrics["significance"]
    evidence = StageEvidence(0, float("nan"), p_value=sig["deflated_sharpe_p_value"], pbo=sig.get("pbo"))
    expected = assign_stage(evidence, universe.stage_thresholds.thresholds())  # no forward trades yet
    assert (c.lifecycle_stage, c.stage_reason) == (expected.stage, f"no forward data yet: {expected.reason}")
    assert {"n_trades", "net_profit", "win_rate", "profit_factor", "max_drawdown"} <= set(c.metrics["in_sample"])
    assert c.metrics["holdout"]["n_trades"] >= 0 and len(c.data_hash) == 64
