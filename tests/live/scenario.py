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
import numpy as np
import polars as pl

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
    spec: &strategy_spec
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
      <<: *strategy_spec
      strategy: donchian_breakout
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
        self.activate()
        from quant_assets.definitions import build_definitions

        self.defs = build_definitions()
        from dagster._core.instance.ref import InstanceRef

        (self.home / "dagster").mkdir(exist_ok=True)
        self.instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home / "dagster")))

    def activate(self) -> None:
        """This deployment's registry, state directory and store for what runs next (resources read them)."""
        os.environ["QUANT_REGISTRY"] = str(self.home / "registry.yaml")
        os.environ["QUANT_HOME"] = str(self.home)
        os.environ["QUANT_DATABASE_URL"] = self.store_url

    def execute(self, job: str, partition: str | None, tags: dict | None = None) -> dg.ExecuteInProcessResult:
        self.activate()
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

        self.activate()
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
        self.activate()
        schedule = self.defs.get_schedule_def(name)
        # as a context manager: a schedule context opens its own instance from the ref, and an unclosed one
        # leaves Dagster's current defs-state storage pointing at it after it is gone
        with dg.build_schedule_context(instance=self.instance, scheduled_execution_time=at) as ctx:
            requests = schedule.evaluate_tick(ctx).run_requests or []
        self.launch(requests, schedule.job_name)

    def tick_sensor(self) -> None:
        self.activate()
        sensor = self.defs.get_sensor_def("retrain_on_new_candles")
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=self.defs) as ctx:
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


FIRST_DAY, LAST_DAY = "2024-04-21", "2024-06-15"  # 8 weeks; Mondays 04-22 .. 06-10 retrain the week before
UNIVERSES = ("pool", "sweep", "breakout")
WORSE_WEEK, BETTER_WEEK = "2024-05-06", "2024-05-20"  # planted breakout challengers arrive on these Mondays


def days(first: str = FIRST_DAY, last: str = LAST_DAY) -> list[str]:
    out, d = [], day(first)
    while ymd(d) <= last:
        out.append(ymd(d))
        d += timedelta(days=1)
    return out


def store_of(p: Platform):
    from quant_core.store import ConfigurationStore

    return ConfigurationStore(p.store_url)


def _holdout_returns(p: Platform, version, params: dict) -> np.ndarray:
    """Daily log returns of `params` on `version`'s hold-out, computed here from the candle files (not through
    the platform's forward code)."""
    from quant_core.data.market_candles import MarketCandles
    from quant_core.runspec import load_run_spec
    from quant_core.tunables import tunable_for

    files = sorted((p.home / "ohlcv" / "market_data" / "ohlcv").glob("*/synthetic.BTC-USDT.4h.parquet"))
    data = MarketCandles(pl.read_parquet(files).sort("timestamp"), "4h")
    t = tunable_for(load_run_spec(version.run_spec))
    ev = t.evaluate(data, [t.params_from_stored(params)], version.test_start, version.test_end, benchmarks=False)
    return ev.log_returns[0]


def plant_challengers(p: Platform, monday: str, want: str) -> tuple[int, float]:
    """Add a second revision of the breakout's version of the week ending `monday` with parameters chosen to beat
    (want='better') or lose to (want='worse') the live champion on the hold-out; returns (its id, mean diff)."""
    import dataclasses

    from quant_core.live.status import live_status
    from quant_core.runspec import load_run_spec
    from quant_core.store import NewConfiguration
    from quant_core.tunables import tunable_for

    store = store_of(p)
    try:
        base = next(v for v in store.list_configurations(universe_key="breakout") if ymd(v.available) == monday)
        champion = store.get_configuration(live_status(store, "breakout").configuration_id)
        t = tunable_for(load_run_spec(base.run_spec))
        rng = np.random.default_rng(7)
        champ_r = _holdout_returns(p, base, champion.parameters)
        scored = []
        for _ in range(64):
            params = {q.name: float(rng.choice(q.choices) if q.kind == "choice" else
                                    rng.integers(q.low, q.high + 1) if q.kind == "int" else rng.uniform(q.low, q.high))
                      for q in t.params()}
            try:
                diff = float(np.mean(_holdout_returns(p, base, params) - champ_r))
            except ValueError:  # outside the strategy's constraints (e.g. exit_period >= entry_period)
                continue
            scored.append((diff, params))
        diff, params = max(scored, key=lambda x: x[0]) if want == "better" else min(scored, key=lambda x: x[0])
        assert (diff > 0) if want == "better" else (diff < 0), f"no {want} parameter set among 64: {diff}"
        new = NewConfiguration(**{f.name: getattr(base, f.name) for f in dataclasses.fields(NewConfiguration)})
        planted = store.add_version(dataclasses.replace(new, parameters=params))
        assert planted.revision == 2
        return planted.id, diff
    finally:
        store.dispose()




def run_in_order(home: Path, url: str) -> Platform:
    """Scenario A: history backfilled, then eight weeks landing day by day, challengers planted on two Mondays."""
    p = Platform(home, url)
    p.backfill_candles("2024-01-01", ymd(day(FIRST_DAY) - timedelta(days=1)))
    p.planted = {}
    for d in days():
        p.live_day(d)
        monday = ymd(day(d) + timedelta(days=1))
        if monday == WORSE_WEEK:
            p.planted["worse"] = plant_challengers(p, monday, "worse")
        if monday == BETTER_WEEK:
            p.planted["better"] = plant_challengers(p, monday, "better")
    return p


if __name__ == "__main__":  # python tests/live/scenario.py DIR: scenario A into DIR (SQLite), for a look
    import pickle
    import sys

    home = Path(sys.argv[1])
    p = run_in_order(home, f"sqlite:///{home}/store.db")
    (home / "scenario.pickle").write_bytes(pickle.dumps({"runs": p.runs, "planted": p.planted}))
