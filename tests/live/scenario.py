"""Simulated weeks: a real Dagster instance, the platform's own schedules and sensors evaluated at given times,
candles landing day by day from seeded synthetic markets with planted events, the configuration store on
PostgreSQL (or SQLite). Used by test_simulated_weeks; runnable by hand for a look at the result.

The driver does what the Dagster daemon does and nothing more: evaluate each due schedule tick and the sensors,
skip run keys it already launched, and execute the requested runs (in this process, one at a time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

START = "2024-01-01"
CRASH_DAY = "2024-05-29"  # a Wednesday in the sixth simulated week: BTC and ETH drop 30% at the open

REGISTRY = f"""
partitions_start: "{START}"
markets:
  - {{exchange: synthetic, symbol: BTC/USD, timeframe: 1d, source: synthetic, since: "{START}", seed: 11,
     shocks: {{"{CRASH_DAY}": -0.36}}}}
  - {{exchange: synthetic, symbol: ETH/USD, timeframe: 1d, source: synthetic, since: "{START}", seed: 12,
     shocks: {{"{CRASH_DAY}": -0.36}}}}
  - {{exchange: synthetic, symbol: BTC/USDT, timeframe: 4h, source: synthetic, since: "{START}", seed: 13}}
universes:
  - name: pool
    markets: {{BTC: synthetic.BTC-USD.1d, ETH: synthetic.ETH-USD.1d}}
    walk_forward: {{train_days: 28, test_days: 14, gap_days: 0}}
    live: {{gate: {{against: flat, margin: -1.0}}}}
    spec:
      rule: momentum
      tokens: [BTC, ETH]
      startDateString: "2024-01-15 00:00:00"
      endDateString: "2024-03-01 00:00:00"
      endTestDateString: "2024-03-22 00:00:00"
      max_memory_days: 10
      chunk_period: 1440
      weight_interpolation_period: 1440
      return_val: daily_log_sharpe
      optimisation_settings:
        method: random
        initial_random_key: 0
        val_fraction: 0
        search_settings: {{n_samples: 16, batch_size: 16}}
  - name: sweep
    markets: {{BTC: synthetic.BTC-USDT.4h}}
    walk_forward: {{train_days: 28, test_days: 14, gap_days: 0}}
    spec:
      strategy: liquidity_sweep
      tokens: [BTC]
      startDateString: "2024-01-15 00:00:00"
      endDateString: "2024-03-01 00:00:00"
      endTestDateString: "2024-03-22 00:00:00"
      max_memory_days: 34
      return_val: net_profit
      strategy_settings: {{taker_fee_bps: 10, slippage_bps: 2, min_trades: 1}}
      optimisation_settings:
        method: random
        initial_random_key: 0
        val_fraction: 0
        search_settings: {{n_samples: 32, batch_size: 32}}
  - name: breakout
    markets: {{BTC: synthetic.BTC-USDT.4h}}
    walk_forward: {{train_days: 28, test_days: 14, gap_days: 0}}
    # permissive on purpose: the planted challengers are decided by the paired test alone (p < 0.5: t > 0)
    live: {{gate: {{margin: -1.0}}, challenger: {{p_value: 0.5, min_days: 5}}}}
    spec:
      strategy: donchian_breakout
      tokens: [BTC]
      startDateString: "2024-01-15 00:00:00"
      endDateString: "2024-03-01 00:00:00"
      endTestDateString: "2024-03-22 00:00:00"
      max_memory_days: 34
      return_val: net_profit
      strategy_settings: {{taker_fee_bps: 10, slippage_bps: 2, min_trades: 1}}
      optimisation_settings:
        method: random
        initial_random_key: 0
        val_fraction: 0
        search_settings:
          n_samples: 32
          batch_size: 32
          parameter_space:
            entry_period: {{low: 20, high: 60}}
            exit_period: {{low: 5, high: 19}}
"""


def ymd(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def day(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


@dataclass
class Platform:
    """One deployment: registry, state directory (candles, instance), store URL, and the daemon's memory."""

    home: Path
    store_url: str
    launched: set[str] = field(default_factory=set)  # (job, run key) the daemon already launched
    cursor: str | None = None
    runs: list[tuple[str, str]] = field(default_factory=list)  # (job, partition) in execution order

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "registry.yaml").write_text(REGISTRY)
        os.environ["QUANT_REGISTRY"] = str(self.home / "registry.yaml")
        os.environ["QUANT_HOME"] = str(self.home)
        os.environ["QUANT_DATABASE_URL"] = self.store_url
        from quant_assets.definitions import build_definitions

        self.defs = build_definitions()
        (self.home / "dagster").mkdir(exist_ok=True)
        self.instance = dg.DagsterInstance.local_temp(tempdir=str(self.home / "dagster"))

    def execute(self, job: str, partition: str, tags: dict | None = None) -> dg.ExecuteInProcessResult:
        result = self.defs.get_job_def(job).execute_in_process(instance=self.instance, partition_key=partition,
                                                               tags=tags or {}, raise_on_error=True)
        self.runs.append((job, partition))
        return result

    def launch(self, requests, job: str | None = None) -> None:
        for r in requests:
            name = r.job_name or job
            if r.run_key is not None:
                if (name, r.run_key) in self.launched:
                    continue
                self.launched.add((name, r.run_key))
            self.execute(name, r.partition_key, r.tags)

    def backfill_candles(self, first: str, last: str) -> None:
        """History before the simulation: one single-run backfill per market (as the UI's backfill does)."""
        from quant_assets.partitions import DATE_DIM, MARKET_DIM

        job = self.defs.get_job_def("ingest_ohlcv")
        for m in self.markets:
            job.execute_in_process(instance=self.instance, tags={
                "dagster/asset_partition_range_start": str(dg.MultiPartitionKey({MARKET_DIM: m, DATE_DIM: first})),
                "dagster/asset_partition_range_end": str(dg.MultiPartitionKey({MARKET_DIM: m, DATE_DIM: last}))})

    @property
    def markets(self) -> list[str]:
        from quant_core.universe import load_registry

        return [m.key for m in load_registry(self.home / "registry.yaml").markets]

    def tick_schedule(self, name: str, at: datetime) -> None:
        schedule = self.defs.get_schedule_def(name)
        ctx = dg.build_schedule_context(instance=self.instance, scheduled_execution_time=at)
        self.launch(schedule.evaluate_tick(ctx).run_requests or [], schedule.job_name)

    def tick_sensor(self) -> None:
        sensor = self.defs.get_sensor_def("retrain_on_new_candles")
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=self.defs)
        result = sensor.evaluate_tick(ctx)
        self.cursor = result.cursor or self.cursor
        self.launch(result.run_requests or [])

    def live_day(self, d: str) -> None:
        """What happens around one UTC day's end: its candles land (ingest schedule at 00:15 the next day), the
        sensor requests forward runs, and on Mondays the weekly retrains run at 03:00."""
        nxt = day(d) + timedelta(days=1)
        self.tick_schedule("ingest_ohlcv_schedule", nxt + timedelta(minutes=15))
        self.tick_sensor()
        if nxt.weekday() == 0:
            for name in ("pool", "sweep", "breakout"):
                self.tick_schedule(f"retrain_{name}_schedule", nxt + timedelta(hours=3))
