"""What is live now, and each universe's history, read from the store (the CLI and the UI show the same).

The current state is read from the derived events: a 'live' event points the universe at a version, an
'off' event (a breaker trip, a retirement, a replacement) takes it away; a version's stage is its last stage
event (its 'created' stage before any)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from quant_core.lifecycle import LifecycleStage
from quant_core.metrics import sharpe_of_returns
from quant_core.store import ConfigurationStore, ForwardRecord, LifecycleEventRecord, StoredConfiguration


@dataclass
class LivePeriod:
    configuration_id: int
    since: str
    until: str | None  # None: still live
    reason: str
    ended_because: str | None = None


@dataclass
class LiveStatus:
    universe: str
    configuration_id: int | None
    stage: str | None
    live_since: str | None
    forward_days: int = 0
    forward_trades: int = 0
    forward_return: float | None = None
    forward_benchmark_return: float | None = None
    forward_sharpe: float | None = None
    max_drawdown: float | None = None
    last_day: str | None = None
    paused: bool = False
    breakers: dict = field(default_factory=dict)  # name -> {value, limit, tripped, action, detail}
    parameters: dict = field(default_factory=dict)
    why: str = ""  # why it is live, or why nothing is

    def to_dict(self) -> dict:
        return asdict(self)


def current_stages(events: list[LifecycleEventRecord]) -> dict[int, LifecycleStage]:
    stages: dict[int, LifecycleStage] = {}
    for e in events:
        if e.to_stage is not None:
            stages[e.configuration_id] = e.to_stage
    return stages


def live_periods(events: list[LifecycleEventRecord]) -> list[LivePeriod]:
    periods: list[LivePeriod] = []
    for e in events:
        day = f"{e.day:%Y-%m-%d}" if e.day else None
        if e.kind == "live":
            periods.append(LivePeriod(e.configuration_id, day or "", None, e.reason))
        elif e.kind == "off" and periods and periods[-1].until is None and periods[-1].configuration_id == \
                e.configuration_id:
            periods[-1].until, periods[-1].ended_because = day, e.reason
    return periods


def forward_summary(records: list[ForwardRecord]) -> dict:
    """Totals of one version's forward records (oldest first)."""
    if not records:
        return {"forward_days": 0, "forward_trades": 0}
    r = np.array([x.log_return for x in records])
    b = np.array([x.benchmark_log_return for x in records])
    values = np.array([x.value for x in records])
    start = values[0] / math.exp(r[0])
    path = np.concatenate([[start], values])
    return {
        "forward_days": len(records), "forward_trades": int(sum(x.n_trades for x in records)),
        "forward_return": float(math.expm1(r.sum())), "forward_benchmark_return": float(math.expm1(b.sum())),
        "forward_sharpe": float(sharpe_of_returns(r, xp=np)) if len(r) > 1 else None,
        # natural sign, as every reported drawdown (quant_core.signs): the deepest fall from a peak, >= 0
        "max_drawdown": float(np.max(1.0 - path / np.maximum.accumulate(path))),
        "last_day": f"{records[-1].day:%Y-%m-%d}",
    }


def live_status(store: ConfigurationStore, universe: str) -> LiveStatus:
    events = store.timeline_events(universe)
    periods = live_periods(events)
    stages = current_stages(events)
    current = periods[-1] if periods and periods[-1].until is None else None
    if current is None:
        last_off = next((e for e in reversed(events) if e.kind in ("off", "candidate")), None)
        why = ("no version yet" if not events else
               f"nothing is live: {last_off.reason}" if last_off else "nothing is live yet")
        return LiveStatus(universe, None, None, None, why=why)
    cid = current.configuration_id
    records = store.forward_records(universe, configuration_id=cid)
    version = store.get_configuration(cid)
    last = records[-1] if records else None
    paused = last is not None and any(e.kind == "pause" and e.configuration_id == cid and e.day == last.day
                                      for e in events)
    return LiveStatus(universe, cid, str(stages.get(cid)), current.since, paused=paused,
                      breakers=dict(last.readings) if last else {},
                      parameters=version.parameters if version else {}, why=current.reason,
                      **forward_summary(records))


def history(store: ConfigurationStore, universe: str) -> dict:
    """Versions (with their current stage), every event, and the live periods of one universe."""
    versions: list[StoredConfiguration] = store.list_configurations(universe_key=universe)
    events = store.timeline_events(universe)
    stages = current_stages(events)
    return {
        "universe": universe,
        "versions": [{"id": v.id, "revision": v.revision, "method": v.method, "train": [f"{v.train_start:%Y-%m-%d}",
                      f"{v.train_end:%Y-%m-%d}"], "available": f"{v.available:%Y-%m-%d}",
                      "stage": str(stages.get(v.id, v.lifecycle_stage)),
                      **forward_summary(store.forward_records(universe, configuration_id=v.id))}
                     for v in versions],
        "events": [{"day": f"{e.day:%Y-%m-%d}" if e.day else None, "configuration_id": e.configuration_id,
                    "kind": e.kind, "from_stage": str(e.from_stage) if e.from_stage else None,
                    "to_stage": str(e.to_stage) if e.to_stage else None, "reason": e.reason, "evidence": e.evidence}
                   for e in events],
        "live_periods": [asdict(p) for p in periods] if (periods := live_periods(events)) else [],
    }
