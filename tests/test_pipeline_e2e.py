"""The demo slice materialises end-to-end on a real (ephemeral) Dagster instance, against the
SQLite store and against a throw-away PostgreSQL database, and the stored row is checked."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pytest

from quant_assets.definitions import build_definitions
from quant_assets.defs.market_data.assets import OHLCV_KEY
from quant_assets.registry import current_registry
from quant_core.data.panel import build_panel
from quant_core.data.price_file import PriceFileSource
from quant_core.lifecycle import LifecycleStage, StageEvidence, assign_stage
from quant_core.retrain import spec_ending_at
from quant_core.store import ConfigurationStore

UNIVERSE = "momentum_btc_eth_usdc_1d"
N_TRIALS = 8
WEEK = "2024-12-16"  # the last week the shipped prices cover
WEEK_END = datetime(2024, 12, 23, tzinfo=UTC)
CANDLES = ("2023-10-01", "2024-12-22")  # its lookback and more


def _materialise_all(instance) -> None:
    defs = build_definitions()
    assets, resources = list(defs.assets), dict(defs.resources)
    keys = sorted(current_registry().universe(UNIVERSE).markets.values())  # the shipped markets only
    res = dg.materialize(assets, selection=[OHLCV_KEY], instance=instance, resources=resources,
                         tags={"dagster/asset_partition_range_start": f"{CANDLES[0]}|{keys[0]}",
                               "dagster/asset_partition_range_end": f"{CANDLES[1]}|{keys[-1]}"})
    assert res.success
    checks = res.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    cfg = {"config": {"budget": N_TRIALS, "seed": 3}}
    res = dg.materialize(
        assets, selection=dg.AssetSelection.groups(UNIVERSE), instance=instance, resources=resources,
        partition_key=WEEK, run_config={"ops": {f"{UNIVERSE}__{a}": cfg for a in
                                                ("trained_parameters", "walk_forward_report", "configuration")}},
    )
    assert res.success
    mats = {m.asset_key.to_user_string(): m for m in res.get_asset_materialization_events()}
    assert set(mats) == {f"{UNIVERSE}/{n}" for n in
                         ("price_panel", "trained_parameters", "walk_forward_report", "configuration")}
    md = mats[f"{UNIVERSE}/configuration"].materialization.metadata
    assert md["configuration_id"].value >= 1
    assert mats[f"{UNIVERSE}/trained_parameters"].materialization.metadata["n_evaluations"].value == N_TRIALS
    checks = {c.check_name: c for c in res.get_asset_check_evaluations()}
    assert checks["complete_data"].passed and checks["finite_objective"].passed
    assert checks["finite_oos_metrics"].passed and "oos_thresholds" in checks


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_slice_end_to_end(backend, request, tmp_path, monkeypatch):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    monkeypatch.setenv("QUANT_HOME", str(tmp_path / "quant"))
    monkeypatch.setenv("QUANT_DATABASE_URL", url)
    with dg.instance_for_test() as instance:
        _materialise_all(instance)
        store = ConfigurationStore(url)
        try:
            rows = store.list_configurations(universe_key=UNIVERSE)
            assert len(rows) == 1
            c = rows[0]
            universe = current_registry().universe(UNIVERSE)
            spec = spec_ending_at(universe.spec, WEEK_END)  # the week's windows
            assert (c.strategy, c.method, c.timeframe) == ("momentum", "optuna", "1d")
            assert c.symbols == ["BTC/USD", "ETH/USD", "USDC/USD"] and c.exchanges == ["shipped"]
            assert (c.train_start, c.train_end, c.test_end) == (spec.start, spec.end, spec.end_test)
            assert c.seed == 3
            # parameters in user units, per token, inside the search range
            assert set(c.parameters) == {"memory_days", "k_per_day"}
            assert set(c.parameters["memory_days"]) == {"BTC", "ETH", "USDC"}
            assert all(1 <= v <= 200 for v in c.parameters["memory_days"].values())
            # evidence: 3 folds of 60 days in the 360-day span -> 3 x 59 out-of-sample daily returns
            assert c.sample_size == 3 * 59
            wf = c.metrics["walk_forward"]
            assert np.isfinite(wf["oos_sharpe"]) and wf["n_folds"] == 3
            assert np.isfinite(c.metrics["in_sample"]["daily_log_sharpe"])
            # a new version's stage: forward data decide it (none yet), with the walk-forward's p-value and PBO
            sig = c.metrics["significance"]
            evidence = StageEvidence(0, float("nan"), p_value=sig["deflated_sharpe_p_value"], pbo=sig.get("pbo"))
            expected = assign_stage(evidence, universe.stage_thresholds.thresholds())
            assert c.lifecycle_stage == expected.stage == LifecycleStage.DISCOVERY
            assert c.stage_reason == f"no forward data yet: {expected.reason}"
            assert np.isfinite(wf["oos_return"]) and np.isfinite(wf["oos_benchmark_return"])  # the live gate's
            # provenance: the hash of exactly the data it was trained on (the week's lookback of candles)
            reg = current_registry()
            first = WEEK_END - timedelta(weeks=61)
            frames = {}
            for t in spec.tokens:
                m = reg.market(universe.markets[t]).market
                frames[t] = PriceFileSource(quote="USD").fetch(m, first, WEEK_END)
            assert c.data_hash == build_panel(frames, "1d").data_hash
            assert c.circuit_breakers["max_daily_loss"] == 0.08  # the registry's override for this pool
            events = store.lifecycle_events(c.id)
            assert [(e.kind, e.from_stage, e.to_stage) for e in events][0] == ("created", None, c.lifecycle_stage)
            # the version arrived on the live timeline: live (it passes the gate; nothing was live) or a candidate
            arrival = [e for e in events if e.kind in ("live", "candidate")]
            assert len(arrival) == 1 and arrival[0].reason.startswith("live gate: out-of-sample oos_return")
            first_id, first_updated = c.id, c.updated_at
        finally:
            store.dispose()

        # idempotence: the same universe and window again -> the same version, nothing rewritten
        _materialise_all(instance)
        store = ConfigurationStore(url)
        try:
            rows = store.list_configurations(universe_key=UNIVERSE)
            assert len(rows) == 1 and rows[0].id == first_id
            assert rows[0].updated_at >= first_updated
            assert [e.kind for e in store.lifecycle_events(first_id)].count("created") == 1
            jobs = store.list_training_jobs(universe_key=UNIVERSE)
            assert [(j.status, j.configuration_id) for j in jobs] == [("stored", first_id)] * 2
            assert all(j.finished_at >= j.started_at and j.settings["budget"] == N_TRIALS for j in jobs)
            kept = rows[0]
        finally:
            store.dispose()

        # a failed retrain is recorded and leaves the stored configuration as it was
        import quant_core.train.parts as search_parts  # what the search step runs

        def broken(*args, **kwargs):
            raise RuntimeError("simulated training failure")

        monkeypatch.setattr(search_parts, "train", broken)
        defs = build_definitions()
        res = dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups(UNIVERSE), instance=instance,
                             resources=dict(defs.resources), partition_key=WEEK, raise_on_error=False)
        assert not res.success
        store = ConfigurationStore(url)
        try:
            assert store.list_configurations(universe_key=UNIVERSE) == [kept]
            last = store.list_training_jobs(universe_key=UNIVERSE)[-1]
            assert last.status == "failed" and "simulated training failure" in last.error
        finally:
            store.dispose()
