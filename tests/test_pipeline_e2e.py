"""The demo slice materialises end-to-end on a real (ephemeral) Dagster instance, against the
SQLite store and against a throw-away PostgreSQL database, and the stored row is checked."""

import dagster as dg
import numpy as np
import pytest

from quant_assets.definitions import build_definitions
from quant_assets.defs.market_data.assets import CANDLES_KEY
from quant_assets.registry import current_registry
from quant_core.data.candle_store import ParquetCandleStore
from quant_core.data.panel import build_panel
from quant_core.lifecycle import LifecycleStage, StageEvidence, assign_stage
from quant_core.store import ConfigurationStore

UNIVERSE = "momentum_btc_eth_usdc_1d"
N_TRIALS = 8


def _materialise_all(instance) -> None:
    defs = build_definitions()
    assets, resources = list(defs.assets), dict(defs.resources)
    for market in current_registry().markets:
        res = dg.materialize(assets, selection=[CANDLES_KEY], partition_key=market.key, instance=instance,
                             resources=resources)
        assert res.success
        checks = res.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks)
    cfg = {"config": {"n_trials": N_TRIALS, "seed": 3}}
    res = dg.materialize(
        assets, selection=dg.AssetSelection.groups(UNIVERSE), instance=instance, resources=resources,
        run_config={"ops": {f"{UNIVERSE}__trained_parameters": cfg, f"{UNIVERSE}__walk_forward_report": cfg}},
    )
    assert res.success
    mats = {m.asset_key.to_user_string(): m for m in res.get_asset_materialization_events()}
    assert set(mats) == {f"{UNIVERSE}/{n}" for n in
                         ("price_panel", "trained_parameters", "walk_forward_report", "configuration")}
    md = mats[f"{UNIVERSE}/configuration"].materialization.metadata
    assert md["configuration_id"].value >= 1
    assert mats[f"{UNIVERSE}/trained_parameters"].materialization.metadata["n_evaluations"].value == N_TRIALS


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
            spec = universe.spec
            assert (c.strategy, c.method, c.timeframe) == ("momentum", "optuna", "1d")
            assert c.symbols == ["BTC/USD", "ETH/USD", "USDC/USD"] and c.exchanges == ["shipped"]
            assert (c.train_start, c.train_end, c.test_end) == (spec.start, spec.end, spec.end_test)
            assert c.seed == 3
            # parameters in user units, per token, inside the search range
            assert set(c.parameters) == {"memory_days", "k_per_day"}
            assert set(c.parameters["memory_days"]) == {"BTC", "ETH", "USDC"}
            assert all(1 <= v <= 200 for v in c.parameters["memory_days"].values())
            # evidence: 9 folds of 60 days -> 9 x 59 out-of-sample daily returns
            assert c.sample_size == 9 * 59
            wf = c.metrics["walk_forward"]
            assert np.isfinite(wf["oos_sharpe"]) and wf["n_folds"] == 9
            assert np.isfinite(c.metrics["in_sample"]["daily_log_sharpe"])
            # the stage is the pure function of the stored evidence
            expected = assign_stage(StageEvidence(c.sample_size, wf["oos_sharpe"]),
                                    universe.stage_thresholds.thresholds())
            assert c.lifecycle_stage == expected.stage and c.stage_reason == expected.reason
            assert c.lifecycle_stage in (LifecycleStage.VALIDATION, LifecycleStage.MATURE)
            # provenance: the hash of exactly the data it was trained on
            cs = ParquetCandleStore(tmp_path / "quant" / "candles")
            reg = current_registry()
            panel = build_panel({t: cs.read(reg.market(universe.markets[t]).market) for t in spec.tokens}, "1d")
            assert c.data_hash == panel.data_hash
            assert c.circuit_breakers["max_daily_loss"] == 0.02
            events = store.lifecycle_events(c.id)
            assert [(e.from_stage, e.to_stage) for e in events] == [(None, str(c.lifecycle_stage))]
            first_id, first_updated = c.id, c.updated_at
        finally:
            store.dispose()

        # idempotence: the same universe and window again -> still one row, updated in place
        _materialise_all(instance)
        store = ConfigurationStore(url)
        try:
            rows = store.list_configurations(universe_key=UNIVERSE)
            assert len(rows) == 1 and rows[0].id == first_id
            assert rows[0].updated_at >= first_updated
            assert len(store.lifecycle_events(first_id)) == 1
            jobs = store.list_training_jobs(universe_key=UNIVERSE)
            assert [(j.status, j.configuration_id) for j in jobs] == [("stored", first_id)] * 2
            assert all(j.finished_at >= j.started_at and j.settings["n_trials"] == N_TRIALS for j in jobs)
            kept = rows[0]
        finally:
            store.dispose()

        # a failed retrain is recorded and leaves the stored configuration as it was
        import quant_assets.defs.training.assets as training_assets

        def broken(*args, **kwargs):
            raise RuntimeError("simulated training failure")

        monkeypatch.setattr(training_assets, "train_pool", broken)
        defs = build_definitions()
        res = dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups(UNIVERSE), instance=instance,
                             resources=dict(defs.resources), raise_on_error=False)
        assert not res.success
        store = ConfigurationStore(url)
        try:
            assert store.list_configurations(universe_key=UNIVERSE) == [kept]
            last = store.list_training_jobs(universe_key=UNIVERSE)[-1]
            assert last.status == "failed" and "simulated training failure" in last.error
        finally:
            store.dispose()
