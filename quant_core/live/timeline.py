"""The live timeline of a universe, derived from its versions and its data: which version is live each day,
which are candidates (and why), their stages, and the circuit breakers' readings.

Why derived and not accumulated: a decision on day d reads only versions available by d and data up to d, and
the whole timeline is recomputed from the store and the candles whenever a day or a version lands, so weeks
and days backfilled in any order end in the same timeline as running them in order. `replay` is pure: its
data come through `TimelineData` (quant_core.live.sync reads the store and the candles).

Rules, day by day (day d is [d, d+1) UTC):
1. At d's start, versions whose windows end at d arrive, oldest window first. Each must pass the universe's
   live gate (out of sample, after costs, beat its benchmark / flat). With nothing live, a version that passes
   goes live. With a champion live, it goes live only if it beats the champion on the challenger's hold-out
   days in a one-sided paired t-test (quant_core.live.paired); the replaced champion is retired. Otherwise it
   is stored as a candidate, with the reason.
2. Once d's candles have landed, the live version and the newest `candidates` candidates are run forward for d.
3. At d's close the live version's circuit breakers are read (quant_core.live.breakers): a 'retire' trip takes
   it off live and retires it that day; a 'pause' trip records a pause (it stays live; the trader stands aside).
4. Stages from forward evidence (quant_core.lifecycle.assign_stage, the one function that decides stages): the
   sample is the forward days (pools) or forward trades (strategies), the Sharpe the forward Sharpe, with the
   walk-forward's deflated-Sharpe p-value and PBO. A retired live version comes off live the same day.
A universe has no live version after a retirement until a new version passes the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np

from quant_core.lifecycle import LifecycleStage, StageEvidence, StageThresholds, assign_stage
from quant_core.live.breakers import ForwardStream, Reading, read_breakers, tripped
from quant_core.live.forward import ForwardDay
from quant_core.live.paired import PairedResult, paired_test
from quant_core.live.settings import LiveSettings
from quant_core.metrics import sharpe_of_returns
from quant_core.store.records import ForwardRecord, StoredConfiguration, TimelineEvent

S = LifecycleStage
DAY = timedelta(days=1)


class TimelineData(Protocol):
    kind: str

    def complete(self, day: str) -> bool:
        """Whether every market's candles of `day` have landed."""
        ...

    def forward(self, version: StoredConfiguration) -> dict[str, ForwardDay]:
        """The version's forward days, from the day it is available up to the last complete day."""
        ...

    def holdout(self, version: StoredConfiguration) -> np.ndarray:
        """The version's daily log returns on its own hold-out window (the regime-break reference)."""
        ...

    def market_returns(self, day: str, days: int) -> np.ndarray:
        """[markets, <= days] daily log returns of the universe's markets, ending with `day`."""
        ...

    def compare(self, challenger: StoredConfiguration, champion: StoredConfiguration) -> tuple[np.ndarray, np.ndarray]:
        """(challenger, champion) daily log returns on the challenger's hold-out days."""
        ...


@dataclass
class Timeline:
    events: list[TimelineEvent] = field(default_factory=list)
    records: list[ForwardRecord] = field(default_factory=list)
    live: int | None = None  # at the end
    stages: dict[int, S] = field(default_factory=dict)
    last_day: str | None = None  # the last day evaluated
    pending: str | None = None  # the first day whose candles have not landed


def day_start(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def gate(version: StoredConfiguration, settings: LiveSettings, kind: str) -> tuple[bool, str, dict]:
    """The live gate on the version's stored walk-forward evidence."""
    g = settings.gate
    wf = version.metrics.get("walk_forward", {})
    value = wf.get(g.metric)
    against = g.against_for(kind)
    ref = 0.0 if against == "flat" else wf.get(g.metric.replace("oos_", "oos_benchmark_"))
    label = "flat" if against == "flat" else f"its benchmark ({version.metrics.get('benchmark', 'benchmark')})"
    evidence = {"metric": g.metric, "value": value, "against": against, "reference": ref, "margin": g.margin}
    if value is None or ref is None:
        return False, f"live gate: {g.metric} of the version or {label} was not measured", evidence
    passed = value > ref + g.margin
    verb = "beats" if passed else "does not beat"
    return passed, (f"live gate: out-of-sample {g.metric} {value:.4g} {verb} {label} {ref:.4g}"
                    + (f" + margin {g.margin}" if g.margin else "")), evidence


def _sharpe(log_returns: list[float]) -> float:
    return float(sharpe_of_returns(np.asarray(log_returns, dtype=np.float64), xp=np)) if len(log_returns) > 1 else 0.0


class _Replay:
    def __init__(self, versions: list[StoredConfiguration], data: TimelineData, settings: LiveSettings,
                 thresholds: StageThresholds, limits: dict[str, float]) -> None:
        self.versions = sorted(versions, key=lambda v: (v.available, v.test_start, v.id))
        self.data, self.settings, self.thresholds, self.limits = data, settings, thresholds, limits
        self.out = Timeline()
        self.live: StoredConfiguration | None = None
        self.candidates: list[StoredConfiguration] = []  # newest last
        self.stage: dict[int, S] = {v.id: S(v.lifecycle_stage) for v in self.versions}
        self.days_seen: dict[int, list[ForwardDay]] = {}

    def event(self, v: StoredConfiguration, kind: str, day: str, reason: str, evidence: dict | None = None,
              to_stage: S | None = None) -> None:
        from_stage = self.stage[v.id] if to_stage is not None else None
        self.out.events.append(TimelineEvent(configuration_id=v.id, kind=kind, day=day_start(day), reason=reason,
                                             evidence=evidence or {}, from_stage=from_stage, to_stage=to_stage))
        if to_stage is not None:
            self.stage[v.id] = to_stage

    def retire(self, v: StoredConfiguration, day: str, reason: str, evidence: dict) -> None:
        if self.stage[v.id] is not S.RETIRED:
            self.event(v, "stage", day, reason, evidence, to_stage=S.RETIRED)
        if self.live is v:
            self.event(v, "off", day, reason, evidence)
            self.live = None
        if v in self.candidates:
            self.candidates.remove(v)

    def arrive(self, v: StoredConfiguration, day: str) -> None:
        passed, why, evidence = gate(v, self.settings, self.data.kind)
        if not passed:
            self.event(v, "candidate", day, why, {"gate": evidence})
            self.candidates.append(v)
            return
        if self.live is None:
            self.event(v, "live", day, f"{why}; no configuration was live", {"gate": evidence})
            self.live = v
            return
        champion = self.live
        challenger_r, champion_r = self.data.compare(v, champion)
        c = self.settings.challenger
        result: PairedResult = paired_test(challenger_r, champion_r, margin=c.margin, alpha=c.p_value,
                                           min_days=c.min_days)
        cmp = {"gate": evidence, "champion": champion.id, "paired_days": result.n,
               "mean_difference": result.mean_difference, "t_stat": result.t_stat, "p_value": result.p_value}
        if result.better:
            self.retire(champion, day, f"replaced by challenger {v.id}: {result.reason()}", {"challenger": v.id, **cmp})
            self.event(v, "live", day, f"{why}; {result.reason()} (champion {champion.id})", cmp)
            self.live = v
        else:
            self.event(v, "candidate", day, f"{why}, but against champion {champion.id}: {result.reason()}", cmp)
            self.candidates.append(v)

    def forward_day(self, day: str) -> None:
        tracked = ([self.live] if self.live else []) + self.candidates[::-1][: self.settings.candidates]
        readings: dict[str, Reading] = {}
        for v in tracked:
            fd = self.data.forward(v).get(day)
            if fd is None:  # an evaluation that does not reach the day: data missing for this version
                continue
            self.days_seen.setdefault(v.id, []).append(fd)
            if v is self.live:
                readings = self.breakers(v, day)
            self.out.records.append(ForwardRecord(
                configuration_id=v.id, universe_key=v.universe_key, day=day_start(day),
                role="live" if v is self.live else "candidate", log_return=fd.log_return, value=fd.value,
                benchmark_log_return=fd.benchmark_log_return, n_trades=len(fd.trades), trades=fd.trades,
                readings={k: {"value": r.value, "limit": r.limit, "tripped": r.tripped, "action": r.action,
                              "detail": r.detail} for k, r in readings.items()} if v is self.live else {}))
        if self.live is not None and readings:
            v = self.live
            trips = tripped(readings, "retire")
            evidence = {r.name: {"reading": r.value, "limit": r.limit} for r in trips}
            for r in trips:
                self.event(v, "trip", day, f"circuit breaker {r.name}: {r.detail}", {"reading": r.value,
                                                                                   "limit": r.limit})
            if trips:
                self.retire(v, day, "circuit breaker " + ", ".join(r.name for r in trips) + " tripped", evidence)
            for r in [] if trips else tripped(readings, "pause"):  # a retired configuration has nothing to pause
                self.event(v, "pause", day, f"circuit breaker {r.name}: {r.detail}", {"reading": r.value,
                                                                                     "limit": r.limit})
        for v in tracked:
            if self.stage[v.id] is not S.RETIRED and v.id in self.days_seen:
                self.restage(v, day)

    def breakers(self, v: StoredConfiguration, day: str) -> dict[str, Reading]:
        seen = self.days_seen[v.id]
        stream = ForwardStream(
            kind=self.data.kind,  # type: ignore[arg-type]
            log_returns=np.array([d.log_return for d in seen]),
            benchmark_log_returns=np.array([d.benchmark_log_return for d in seen]),
            market_log_returns=self.data.market_returns(day, len(seen) + 120),
            trade_returns=np.array([t["return"] for d in seen for t in d.trades], dtype=np.float64),
            holdout_log_returns=self.data.holdout(v))
        return read_breakers(stream, self.limits)

    def restage(self, v: StoredConfiguration, day: str) -> None:
        seen = self.days_seen[v.id]
        sample = sum(len(d.trades) for d in seen) if self.data.kind == "strategy" else len(seen)
        sig = v.metrics.get("significance", {})
        ev = StageEvidence(sample_size=sample, oos_sharpe=_sharpe([d.log_return for d in seen]),
                           p_value=sig.get("deflated_sharpe_p_value"), pbo=sig.get("pbo"),
                           previous_stage=self.stage[v.id])
        decision = assign_stage(ev, self.thresholds)
        if decision.stage is not self.stage[v.id]:
            unit = "trades" if self.data.kind == "strategy" else "days"
            self.retire(v, day, f"forward: {decision.reason}", decision.evidence) \
                if decision.stage is S.RETIRED else \
                self.event(v, "stage", day, f"forward ({sample} {unit}): {decision.reason}", decision.evidence,
                           to_stage=decision.stage)

    def run(self, through: str) -> Timeline:
        if not self.versions:
            return self.out
        arrivals: dict[str, list[StoredConfiguration]] = {}
        for v in self.versions:
            arrivals.setdefault(v.available.strftime("%Y-%m-%d"), []).append(v)
        day = min(arrivals)
        while day <= through:
            for v in arrivals.get(day, []):
                self.arrive(v, day)
            if not self.data.complete(day):
                self.out.pending = day
                break
            self.forward_day(day)
            self.out.last_day = day
            day = (day_start(day) + DAY).strftime("%Y-%m-%d")
        self.out.live = self.live.id if self.live else None
        self.out.stages = dict(self.stage)
        return self.out


def replay(versions: list[StoredConfiguration], through: str, data: TimelineData, settings: LiveSettings,
           thresholds: StageThresholds, limits: dict[str, float]) -> Timeline:
    """The universe's timeline from its first version's arrival through `through` (YYYY-MM-DD), or up to the
    first day whose candles have not landed."""
    return _Replay(versions, data, settings, thresholds, limits).run(through)
