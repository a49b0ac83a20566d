"""Plain records the store takes and returns, and the checks a value passes before it is written.

Why plain dataclasses rather than ORM objects: callers (Dagster assets, the CLI, notebooks) get values
that do not depend on an open session, compare with ==, and serialise with dataclasses.asdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quant_core.lifecycle import DEFAULT_CIRCUIT_BREAKERS, LifecycleStage

WINDOW_FIELDS: tuple[str, ...] = ("train_start", "train_end", "test_start", "test_end")


def parse_stage(value: LifecycleStage | str, field_name: str = "lifecycle_stage") -> LifecycleStage:
    """A LifecycleStage from an enum member or its name (any case); ValueError lists the valid ones."""
    if isinstance(value, LifecycleStage):
        return value
    if isinstance(value, str):
        try:
            return LifecycleStage(value.strip().upper())
        except ValueError:
            pass
    valid = ", ".join(s.value for s in LifecycleStage)
    raise ValueError(f"{field_name}: {value!r} is not a lifecycle stage; use one of {valid}")


def as_utc(value: Any, field_name: str) -> datetime:
    """The datetime in UTC; naive datetimes are refused because their zone is a guess."""
    if not isinstance(value, datetime):
        raise ValueError(f"{field_name}: expected a timezone-aware datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{field_name}: naive datetime {value.isoformat()} has no timezone; "
            "pass a tz-aware UTC datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC)"
        )
    return value.astimezone(UTC)


def strict_json(value: Any, field_name: str) -> Any:
    """A copy of `value` made of plain JSON types, or ValueError naming the offending field path.

    Why: NaN/inf are not JSON (PostgreSQL rejects them, SQLite would store non-standard text) and numpy
    scalars are not serialisable; both are caught here with the field named instead of deep in a driver.
    Floats stay Python floats, so they round-trip exactly (json writes the shortest exact repr).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{field_name} is {value!r}: NaN and infinity cannot be stored as JSON; "
                "store None (or leave the key out) for an undefined value"
            )
        return float(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"{field_name}: key {key!r} is a {type(key).__name__}; JSON object keys must be strings"
                )
            out[str(key)] = strict_json(item, f"{field_name}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [strict_json(item, f"{field_name}[{i}]") for i, item in enumerate(value)]
    if hasattr(value, "dtype") and hasattr(value, "tolist"):
        # numpy / JAX scalars and arrays: tolist() gives Python scalars (nested lists for arrays).
        return strict_json(value.tolist(), field_name)
    raise ValueError(
        f"{field_name}: {type(value).__name__} value {value!r} cannot be stored as JSON; "
        "use str, int, float, bool, None, list or dict"
    )


@dataclass(frozen=True)
class NewConfiguration:
    """A trained configuration as produced by training + validation, before it has an id."""

    universe_key: str
    strategy: str
    method: str
    exchanges: list[str]
    symbols: list[str]
    timeframe: str
    parameters: dict
    metrics: dict
    lifecycle_stage: LifecycleStage
    stage_reason: str
    stage_evidence: dict
    sample_size: int
    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime
    data_hash: str
    code_version: str
    seed: int
    run_spec: dict
    circuit_breakers: dict = field(default_factory=lambda: dict(DEFAULT_CIRCUIT_BREAKERS))
    orchestrator_run_id: str | None = None
    #: the numerical stack's versions and the JAX backend/device it was trained on
    #: (quant_core.provenance.numerical_environment); None for versions stored before migration 0004
    environment: dict | None = None

    def __post_init__(self) -> None:
        # Fail at construction for the mistakes that would otherwise surface as a confusing database error.
        object.__setattr__(self, "lifecycle_stage", parse_stage(self.lifecycle_stage))
        for name in WINDOW_FIELDS:
            object.__setattr__(self, name, as_utc(getattr(self, name), name))
        if self.train_start > self.train_end:
            raise ValueError(f"train window is reversed: train_start {self.train_start} > train_end {self.train_end}")
        if self.test_start > self.test_end:
            raise ValueError(f"test window is reversed: test_start {self.test_start} > test_end {self.test_end}")


@dataclass(frozen=True, kw_only=True)
class StoredConfiguration(NewConfiguration):
    """An immutable version as stored: every NewConfiguration field, its id, revision and bookkeeping.

    `lifecycle_stage` is the stage it was written with; its current stage and live status are events."""

    id: int
    created_at: datetime
    updated_at: datetime
    revision: int = 1

    @property
    def available(self) -> datetime:
        """When the version exists for the live timeline: the end of its last window (its data ends there)."""
        return self.test_end


@dataclass
class LifecycleEventRecord:
    """One label change of a version. kind 'created': its first stage (from_stage None); 'stage': a stage change;
    'live' / 'off': the universe's live pointer moved to / away from it; 'candidate': stored as a candidate with
    the reason; 'trip' / 'pause': a circuit breaker took it off live / paused it. `day` is the timeline day."""

    id: int
    configuration_id: int
    from_stage: LifecycleStage | None
    to_stage: LifecycleStage | None
    reason: str
    evidence: dict
    at: datetime
    universe_key: str | None = None
    kind: str = "stage"
    day: datetime | None = None


@dataclass(frozen=True)
class TimelineEvent:
    """An event the live timeline derives (written by ConfigurationStore.write_timeline)."""

    configuration_id: int
    kind: str
    day: datetime
    reason: str
    evidence: dict = field(default_factory=dict)
    from_stage: LifecycleStage | None = None
    to_stage: LifecycleStage | None = None

    def key(self) -> tuple:
        return (self.configuration_id, self.kind, as_utc(self.day, "day"),
                self.from_stage.value if self.from_stage else None, self.to_stage.value if self.to_stage else None,
                self.reason, strict_json(self.evidence, "evidence"))


@dataclass(frozen=True)
class ForwardRecord:
    """One version's forward performance on one UTC day [day, day + 1): the day's log return and closing
    value (simulated without a break since its forward start), its benchmark's log return, the trades closed
    that day, and the circuit-breaker readings taken at the day's close (live configurations)."""

    configuration_id: int
    universe_key: str
    day: datetime
    role: str
    log_return: float
    value: float
    benchmark_log_return: float
    n_trades: int = 0
    trades: list = field(default_factory=list)
    readings: dict = field(default_factory=dict)
    data_hash: str = ""


@dataclass(frozen=True)
class Comparison:
    """A challenger's and a champion's daily log returns over the challenger's hold-out [window_start, window_end)."""

    challenger_id: int
    champion_id: int
    window_start: datetime
    window_end: datetime
    challenger_log_returns: list[float]
    champion_log_returns: list[float]


@dataclass
class TrainingJobRecord:
    """One training run as recorded by record_job_start / record_job_end; `heartbeat_at`, `host` and `pid` say
    whether the process behind an open one still lives (None for rows written before migration 0003)."""

    id: int
    orchestrator_run_id: str | None
    universe_key: str
    method: str
    settings: dict
    status: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    configuration_id: int | None
    heartbeat_at: datetime | None = None
    host: str | None = None
    pid: int | None = None
