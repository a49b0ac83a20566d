"""The Dagster platform on an ephemeral instance: partitions and mappings, schedules, the retrain sensor,
a 30-day x 2-market candle backfill that triggers one retrain, the candle IO manager, launchpad config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest
from upath import UPath

from quant_assets.defs.automation import SENSOR_NAME, retrain_requests
from quant_assets.defs.live.assets import forward_partitions
from quant_assets.defs.market_data.assets import INGEST_JOB, OHLCV_KEY
from quant_assets.defs.training.assets import TrainConfig
from quant_assets.io import CandleIOManager
from quant_assets.partitions import (
    first_retrain_week,
    latest_retrain_week,
    lookback_weeks,
    ohlcv_partitions,
    retrain_candle_keys,
    retrain_partitions,
)
from quant_core.provenance import numerical_environment
from quant_core.retrain import week_seed
from quant_core.store import ConfigurationStore
from quant_core.universe import load_registry

U = "momentum_aaa_bbb"
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = TODAY - timedelta(days=70)

REGISTRY = f"""
partitions_start: "{START:%Y-%m-%d}"
markets:
  - {{exchange: synth, symbol: AAA/USD, timeframe: 1d, source: synthetic, since: "{START:%Y-%m-%d}", seed: 1}}
  - {{exchange: synth, symbol: BBB/USD, timeframe: 1d, source: synthetic, since: "{START:%Y-%m-%d}", seed: 2}}
  - {{exchange: synth, symbol: CCC/USD, timeframe: 1d, source: synthetic, since: "{START:%Y-%m-%d}", seed: 3}}
universes:
  - name: {U}
    markets: {{AAA: synth.AAA-USD.1d, BBB: synth.BBB-USD.1d}}
    walk_forward: {{train_days: 6, test_days: 3, min_folds: 2}}
    spec:
      rule: momentum
      tokens: [AAA, BBB]
      startDateString: "2024-01-01"
      endDateString: "2024-01-11"
      endTestDateString: "2024-01-15"
      max_memory_days: 5
      bout_offset: 1440
      optimisation_settings:
        method: optuna
        val_fraction: 0
        optuna_settings: {{n_trials: 4, n_jobs: 4, n_startup_trials: 2}}
"""


@pytest.fixture
def platform(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    monkeypatch.setenv("QUANT_REGISTRY", str(path))
    monkeypatch.setenv("QUANT_HOME", str(tmp_path / "quant"))
    monkeypatch.setenv("QUANT_DATABASE_URL", f"sqlite:///{tmp_path / 'configs.db'}")
    from quant_assets.definitions import build_definitions

    return load_registry(path), build_definitions()


def _day(d: datetime) -> str:
    return f"{d:%Y-%m-%d}"


def test_partitions_and_what_a_retrain_reads(platform):
    registry, _ = platform
    u = registry.universe(U)
    assert lookback_weeks(u) == 3  # 14 days of windows + 5 of warm-up = 19 days
    with dg.partition_loading_context(effective_dt=TODAY):
        ohlcv_keys = ohlcv_partitions(registry).get_partition_keys()
    assert len(ohlcv_keys) == 3 * 70 and f"{_day(START)}|synth.AAA-USD.1d" in ohlcv_keys
    first = datetime.fromisoformat(first_retrain_week(registry, u)).replace(tzinfo=UTC)
    assert first.weekday() == 0 and START + timedelta(days=21) <= first < START + timedelta(days=28)
    week = latest_retrain_week(registry, u, TODAY)
    # a retrain week is keyed by its Monday alone (the UI's partition bars and metadata plots read "2024-12-16")
    week_start = datetime.fromisoformat(week).replace(tzinfo=UTC)
    with dg.partition_loading_context(effective_dt=TODAY):
        assert week_start.weekday() == 0 and week in retrain_partitions(registry, u).get_partition_keys()
    keys = retrain_candle_keys(u, week)
    days = {_day(week_start + timedelta(days=i)) for i in range(-21, 7)}  # 3 lookback weeks + the week
    assert keys == {f"{d}|{m}" for d in days for m in ("synth.AAA-USD.1d", "synth.BBB-USD.1d")}
    assert keys <= set(ohlcv_keys)


def test_schedules_request_yesterday_per_market_and_last_week(platform):
    registry, defs = platform
    ingest = defs.resolve_schedule_def(f"{INGEST_JOB}_schedule")
    at = datetime(TODAY.year, TODAY.month, TODAY.day, 0, 15, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as ctx:
            reqs = ingest.evaluate_tick(ctx).run_requests
        yesterday = _day(TODAY - timedelta(days=1))
        assert sorted(r.partition_key for r in reqs) == [f"{yesterday}|synth.{t}-USD.1d" for t in ("AAA", "BBB", "CCC")]
        assert ingest.execution_timezone == "UTC" and ingest.cron_schedule == "15 0 * * *"
        retrain = defs.resolve_schedule_def(f"retrain_{U}_schedule")
        assert retrain.cron_schedule == "0 3 * * 1"
        monday = TODAY - timedelta(days=TODAY.weekday())
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=monday.replace(hour=3)) as ctx:
            reqs = retrain.evaluate_tick(ctx).run_requests
        assert [r.partition_key for r in reqs] == [_day(monday - timedelta(days=7))]


def _backfill(defs, instance, first: datetime, last: datetime, markets=("AAA", "BBB")) -> dg.ExecuteInProcessResult:
    keys = sorted(f"synth.{m}-USD.1d" for m in markets)
    return dg.materialize(list(defs.assets), selection=[OHLCV_KEY], instance=instance, resources=dict(defs.resources),
                          tags={"dagster/asset_partition_range_start": f"{_day(first)}|{keys[0]}",
                                "dagster/asset_partition_range_end": f"{_day(last)}|{keys[-1]}"})


@pytest.mark.slow
def test_backfill_of_30_days_x_2_markets_triggers_one_retrain(platform):
    registry, defs = platform
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        assert isinstance(sensor(ctx), dg.SkipReason)  # nothing landed yet
        week = latest_retrain_week(registry, registry.universe(U), datetime.now(UTC))
        # the 30 days up to the end of the latest complete week (its lookback is 28 of them)
        last = datetime.fromisoformat(week).replace(tzinfo=UTC) + timedelta(days=6)
        res = _backfill(defs, instance, last - timedelta(days=29), last)
        assert res.success
        assert len(res.get_asset_materialization_events()) == 60  # one per market x day, in one run
        assert len(instance.get_materialized_partitions(OHLCV_KEY)) == 60
        checks = res.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks)
        result = sensor(dg.build_sensor_context(instance=instance))
        assert [(r.job_name, r.partition_key, r.run_key) for r in result.run_requests
                if r.job_name.startswith("retrain_")] == [(f"retrain_{U}", week, week)]
        # and one forward run per landed day of the universe's forward partitions, each day once
        forward = [(r.job_name, r.partition_key, r.run_key) for r in result.run_requests
                   if r.job_name.startswith("forward_")]
        first = forward_partitions(registry, registry.universe(U)).start.date()
        expected_days = [last.date() - timedelta(days=i) for i in range(29, -1, -1)]
        assert forward == [(f"forward_{U}", f"{d}", f"forward|{d}") for d in expected_days if d >= first]
        # more candles of the same lookback: the same run key, so the daemon launches nothing new
        res = _backfill(defs, instance, last - timedelta(days=2), last, markets=("AAA",))
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert [r.run_key for r in again.run_requests if r.job_name.startswith("retrain_")] == [week]
        # a market outside the universe requests nothing
        _backfill(defs, instance, last, last, markets=("CCC",))
        cursor = again.cursor
        assert not [r for r in sensor(dg.build_sensor_context(instance=instance, cursor=cursor)).run_requests
                    if r.job_name.startswith("retrain_")]
        # the requested retrain runs and stores a configuration
        job = defs.resolve_job_def(f"retrain_{U}")
        run = job.execute_in_process(partition_key=week, instance=instance, resources=dict(defs.resources))
        assert run.success
        store = ConfigurationStore()
        try:
            rows = store.list_configurations(universe_key=U)
            assert len(rows) == 1 and rows[0].test_end.date() == (datetime.fromisoformat(week)
                                                                  + timedelta(days=7)).date()
            # the registry sets no seed: the week's own, recorded on the version (issue 18 item 18); its
            # metrics in natural signs (item 14)
            seed = week_seed(U, rows[0].test_end)
            assert rows[0].seed == seed == rows[0].run_spec["optimisation_settings"]["initial_random_key"]
            assert rows[0].metrics["signs"] == "natural" and rows[0].metrics["in_sample"]["ulcer"] >= 0
            # and the numerical stack and JAX backend its training step ran on (issue 21)
            assert rows[0].environment == numerical_environment()
        finally:
            store.dispose()


def test_sensor_waits_for_the_whole_lookback(platform):
    registry, defs = platform
    with dg.instance_for_test() as instance:
        last = TODAY - timedelta(days=1)
        _backfill(defs, instance, last - timedelta(days=5), last)
        new = set(instance.get_materialized_partitions(OHLCV_KEY))
        requests, skipped = retrain_requests(registry, instance, new, datetime.now(UTC))
        assert not requests and "waiting for" in skipped[0]


def test_bad_candle_batch_writes_nothing(platform, monkeypatch):
    registry, defs = platform
    from quant_assets.resources import ExchangeResource

    def broken_fetch(self, entry):
        class Bad:
            def fetch(self, market, start=None, end=None):
                ts = pl.datetime_range(start, end, "1d", closed="left", eager=True, time_zone="UTC")
                return pl.DataFrame({"timestamp": ts, "open": 1.0, "high": 0.5, "low": 2.0, "close": -1.0,
                                     "volume": 1.0})
        return Bad()

    monkeypatch.setattr(ExchangeResource, "source", broken_fetch)
    with dg.instance_for_test() as instance:
        last = TODAY - timedelta(days=1)
        res = dg.materialize(list(defs.assets), selection=[OHLCV_KEY], instance=instance,
                             resources=dict(defs.resources), partition_key=f"{_day(last)}|synth.AAA-USD.1d",
                             raise_on_error=False)
        assert not res.success and not instance.get_materialized_partitions(OHLCV_KEY)


def test_candle_io_manager_writes_ranges_to_any_upath(tmp_path):
    parts = dg.MultiPartitionsDefinition({"market": dg.StaticPartitionsDefinition(["x.A-USD.1d", "x.B-USD.1d"]),
                                          "date": dg.DailyPartitionsDefinition("2024-01-01")})
    frame = pl.DataFrame({"timestamp": [datetime(2024, 1, 1, tzinfo=UTC)], "close": [1.0]})
    for base in (UPath(tmp_path / "candles"), UPath("memory://candles")):
        io = CandleIOManager(base_path=base)
        keys = [dg.MultiPartitionKey({"market": m, "date": d}) for m in ("x.A-USD.1d", "x.B-USD.1d")
                for d in ("2024-01-01", "2024-01-02")]
        ctx = dg.build_output_context(asset_key=OHLCV_KEY, partition_key=None, asset_partitions_def=parts,
                                      asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]))
        io.handle_output(ctx, {k: frame.with_columns(pl.lit(i).alias("i")) for i, k in enumerate(keys)})
        path = base / "market_data" / "ohlcv" / "2024-01-02" / "x.B-USD.1d.parquet"
        assert pl.read_parquet(path.open("rb"))["i"].to_list() == [3]
        assert not [p for p in (base / "market_data" / "ohlcv").rglob("*.tmp")]


def test_candle_io_manager_reads_many_partitions_as_written_local_in_one_scan_or_one_by_one(tmp_path):
    parts = dg.MultiPartitionsDefinition({"market": dg.StaticPartitionsDefinition(["x.A-USD.1d", "x.B-USD.1d"]),
                                          "date": dg.DailyPartitionsDefinition("2024-01-01")})
    keys = [dg.MultiPartitionKey({"market": m, "date": d}) for m in ("x.A-USD.1d", "x.B-USD.1d")
            for d in ("2024-01-01", "2024-01-02", "2024-01-03")]
    day = pl.DataFrame({"timestamp": [datetime(2024, 1, 1, tzinfo=UTC)] * 3, "close": [1.0, 2.0, 3.0]})
    written = {k: day.with_columns(pl.col("close") * (i + 1)) for i, k in enumerate(keys)}
    written[keys[4]] = day.clear()  # a day without candles reads back as an empty frame of the same columns
    span = dg.PartitionKeyRange(keys[0], keys[-1])
    for base in (UPath(tmp_path / "candles"), UPath("memory://candles-read")):
        io = CandleIOManager(base_path=base)
        io.handle_output(dg.build_output_context(asset_key=OHLCV_KEY, partition_key=None, asset_partitions_def=parts,
                                                 asset_partition_key_range=span), written)
        ctx = dg.build_input_context(asset_key=OHLCV_KEY, asset_partitions_def=parts,
                                     asset_partition_key_range=span)
        read = io.load_partitions(ctx)
        assert set(read) == set(keys)
        for k in keys:
            assert read[k].equals(written[k]), k


def test_launchpad_config_overrides_the_spec(platform):
    registry, _ = platform
    spec = registry.universe(U).spec
    out = TrainConfig(method="random", budget=12, seed=5, metric="sortino").apply(spec)
    opt = out.optimisation_settings
    assert (opt.method, opt.search_settings.n_samples, opt.initial_random_key, out.return_val) == (
        "random", 12, 5, "sortino")
    assert TrainConfig(budget=30).apply(spec).optimisation_settings.optuna_settings.n_trials == 30
    assert TrainConfig(method="gradient_descent", budget=7).apply(spec).optimisation_settings.n_iterations == 7
    assert TrainConfig(metric="daily_var_95%").apply(spec).return_val == "daily_var_95%"


def test_launchpad_refuses_a_bad_metric_before_the_run_and_bad_numbers_at_its_first_step():
    """`metric: sharp` used to pass the launchpad and fail 45 s into training; `seed: 2**70` inside a step with
    numpy's message. The metric is an enum of the config schema (checked at launch); seed and budget ranges are
    checked when the config is built, before any work."""
    from pydantic import ValidationError

    @dg.op(config_schema=TrainConfig.to_config_schema())
    def retrain() -> None:
        pass

    @dg.job
    def job():
        retrain()

    with pytest.raises(dg.DagsterInvalidConfigError, match="metric not in enum type Metric got sharp"):
        dg.validate_run_config(job, {"ops": {"retrain": {"config": {"metric": "sharp"}}}})
    dg.validate_run_config(job, {"ops": {"retrain": {"config": {"metric": "daily_var_95pct", "seed": 3}}}})
    with pytest.raises(ValidationError, match="seed\n  Input should be less than or equal to 4294967295"):
        TrainConfig(seed=2**70)
    with pytest.raises(ValidationError, match="budget\n  Input should be greater than or equal to 1"):
        TrainConfig(budget=0)
