"""Bring a universe's live timeline in the store up to a day: read its versions and candles, replay
(quant_core.live.timeline), and write the forward records and derived events in one transaction.

Called by the forward-performance asset for each landed day and by the configuration asset after a new
version, so both paths write the same derived state (and a backfill in any order converges to it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import polars as pl

from quant_core.contract import Tunable
from quant_core.live.forward import BUCKET_DAYS, DAY, ForwardDay, pad_flat, run_days, window_log_returns
from quant_core.live.timeline import Timeline, day_start, replay
from quant_core.runspec import load_run_spec
from quant_core.store import Comparison, ConfigurationStore, StoredConfiguration
from quant_core.tunables import tunable_for
from quant_core.universe import Registry, Universe

#: Days of market history before a version's hold-out that the breakers' trailing statistics read.
HISTORY_DAYS = 130
#: Comparison window when a version has no hold-out: the days just before it became available.
FALLBACK_COMPARISON_DAYS = 30


class CandleSource(Protocol):
    """Candles by market and UTC day (the forward asset reads the candle partitions directly)."""

    def present_days(self, market_keys: list[str], first: str) -> set[str]:
        """Days from `first` (YYYY-MM-DD) on whose candles have landed for every one of the markets."""
        ...

    def frames(self, market_keys: list[str], first: str, last: str) -> dict[str, pl.DataFrame]:
        """{market key: candles of the days [first, last]}, sorted by time."""
        ...


def _ymd(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def comparison_window(v: StoredConfiguration) -> tuple[datetime, datetime]:
    """The challenger's hold-out [test_start, test_end), or the days just before it became available."""
    if v.test_end > v.test_start:
        return v.test_start, v.test_end
    return v.available - timedelta(days=FALLBACK_COMPARISON_DAYS), v.available


class _Data:
    """TimelineData over one load of the universe's candles (see quant_core.live.timeline)."""

    def __init__(self, store: ConfigurationStore, registry: Registry, universe: Universe,
                 versions: list[StoredConfiguration], source: CandleSource) -> None:
        self.store = store
        self.kind = universe.spec.kind
        self.market_keys = [universe.markets[t] for t in universe.spec.tokens]
        markets = {t: registry.market(universe.markets[t]).market for t in universe.spec.tokens}
        markets_by_key = {m.key: m for m in markets.values()}
        warmup = math.ceil(max(v_spec_warmup(v) for v in versions)) if versions else 0
        first = min(comparison_window(v)[0] for v in versions) - timedelta(days=max(warmup, HISTORY_DAYS) + 2)
        self.first = _ymd(first)
        present = source.present_days(self.market_keys, self.first)
        day, self.last_complete = min(_ymd(v.available) for v in versions), None
        while day in present:
            self.last_complete, day = day, _ymd(day_start(day) + DAY)
        last = max(self.last_complete or self.first, max(_ymd(v.available - DAY) for v in versions))
        self.frames = source.frames(self.market_keys, self.first, last)
        padded = {k: pad_flat(f, markets_by_key[k].timeframe, BUCKET_DAYS + 2) for k, f in self.frames.items()}
        self.data = tunable_for(universe.spec).load_data(markets, padded)
        self._forward: dict[int, dict[str, ForwardDay]] = {}
        self._holdout: dict[int, np.ndarray] = {}
        closes = [self.frames[k].group_by_dynamic("timestamp", every="1d").agg(pl.col("close").last())
                  .sort("timestamp") for k in self.market_keys]
        days = sorted(set.intersection(*(set(c["timestamp"].dt.strftime("%Y-%m-%d")) for c in closes)))
        self.market_days = days[1:]
        self.market_r = np.stack([np.diff(np.log(c.filter(pl.col("timestamp").dt.strftime("%Y-%m-%d").is_in(days))
                                                 ["close"].to_numpy())) for c in closes]) if days else np.zeros((0, 0))

    def tunable(self, v: StoredConfiguration) -> tuple[Tunable, dict]:
        t = tunable_for(load_run_spec(v.run_spec))
        return t, t.params_from_stored(v.parameters)

    def complete(self, day: str) -> bool:
        return self.last_complete is not None and day <= self.last_complete

    def forward(self, v: StoredConfiguration) -> dict[str, ForwardDay]:
        if v.id not in self._forward:
            first = v.available
            if self.last_complete is None or _ymd(first) > self.last_complete:
                self._forward[v.id] = {}
            else:
                t, params = self.tunable(v)
                self._forward[v.id] = run_days(t, self.data, params, first, day_start(self.last_complete),
                                               bucket=BUCKET_DAYS)
        return self._forward[v.id]

    def holdout(self, v: StoredConfiguration) -> np.ndarray:
        if v.id not in self._holdout:
            t, params = self.tunable(v)
            start, end = comparison_window(v)
            self._holdout[v.id] = np.asarray(list(window_log_returns(t, self.data, params, start, end).values()))
        return self._holdout[v.id]

    def market_returns(self, day: str, days: int) -> np.ndarray:
        n = sum(1 for d in self.market_days if d <= day)
        return self.market_r[:, max(0, n - days):n]

    def compare(self, challenger: StoredConfiguration, champion: StoredConfiguration) -> tuple[np.ndarray, np.ndarray]:
        stored = self.store.comparison(challenger.id, champion.id)
        if stored is None:
            start, end = comparison_window(challenger)
            t, params = self.tunable(challenger)
            mine = window_log_returns(t, self.data, params, start, end)
            t2, params2 = self.tunable(champion)
            theirs = window_log_returns(t2, self.data, params2, start, end)
            days = sorted(set(mine) & set(theirs))
            stored = Comparison(challenger.id, champion.id, start, end, [mine[d] for d in days],
                                [theirs[d] for d in days])
            self.store.write_comparison(stored)
        return np.asarray(stored.challenger_log_returns), np.asarray(stored.champion_log_returns)


def v_spec_warmup(v: StoredConfiguration) -> float:
    return float(v.run_spec.get("max_memory_days") or 0.0)


@dataclass(frozen=True)
class SyncResult:
    timeline: Timeline
    versions: list[StoredConfiguration]


def sync_universe(store: ConfigurationStore, registry: Registry, universe: Universe, source: CandleSource
                  ) -> SyncResult:
    """Replay the universe's timeline as far as its versions and landed candles go, write its forward records
    and derived events, and return it.

    Whichever day or version triggered it, the whole timeline is derived again, so a re-materialised old day
    never cuts off later ones and any order of backfill ends in the same state."""
    versions = store.list_configurations(universe_key=universe.name)
    if not versions:
        return SyncResult(Timeline(), [])
    data = _Data(store, registry, universe, versions, source)
    last = max([_ymd(v.available) for v in versions] + [data.last_complete or ""])
    timeline = replay(versions, last, data, universe.live,
                      universe.stage_thresholds.thresholds(), universe.effective_circuit_breakers)
    store.write_timeline(universe.name, timeline.records, timeline.events)
    return SyncResult(timeline, versions)


__all__ = ["CandleSource", "SyncResult", "sync_universe"]
