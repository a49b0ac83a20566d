"""Walk-forward folds: the settings a universe declares and the windows they cut.

Folds from (train, gap, test, step) in days over [start, end):
    rolling:  train [start + i step, + train), test [train_end + gap, + test)
    anchored: train [start, start + train + i step), test as above
Kept apart from the walk-forward itself so the registry can validate a universe's settings without
loading the trainer (or JAX).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field


class WalkForwardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_days: int = Field(180, ge=2, description="length of each training window")
    test_days: int = Field(60, ge=2, description="length of each out-of-sample window")
    gap_days: int = Field(0, ge=0, description="days skipped between training and test")
    step_days: int | None = Field(None, ge=1, description="roll step (default: test_days)")
    anchored: bool = Field(False, description="expanding training window from the start")
    min_folds: int = Field(2, ge=1)


@dataclass(frozen=True)
class Fold:
    index: int
    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime


def make_folds(start: datetime, end: datetime, s: WalkForwardSettings) -> list[Fold]:
    step = timedelta(days=s.step_days or s.test_days)
    train, gap, test = timedelta(days=s.train_days), timedelta(days=s.gap_days), timedelta(days=s.test_days)
    folds: list[Fold] = []
    i = 0
    while True:
        train_start = start if s.anchored else start + i * step
        train_end = start + train + i * step
        test_start = train_end + gap
        test_end = test_start + test
        if test_end > end:
            break
        folds.append(Fold(i, train_start, train_end, test_start, test_end))
        i += 1
    if len(folds) < s.min_folds:
        need = s.train_days + s.gap_days + s.test_days + (s.min_folds - 1) * (s.step_days or s.test_days)
        raise ValueError(
            f"walk-forward over {start:%Y-%m-%d}..{end:%Y-%m-%d} ({(end - start).days} days) gives {len(folds)} "
            f"fold(s), fewer than min_folds={s.min_folds}: it needs {need} days; shorten train_days/test_days "
            f"or extend the data window"
        )
    return folds
