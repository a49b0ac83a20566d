"""Which rows of a price panel a run reads: the evaluated window and the estimators' warm-up before it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from quant_core.data.panel import PricePanel
from quant_core.data.schema import to_epoch_ms
from quant_core.spec import RunSpec
from quant_core.units import MINUTES_PER_DAY, MS_PER_MINUTE


class SimulationInputError(ValueError):
    """The prices cannot support the requested run (window outside the data, step mismatch)."""


@dataclass(frozen=True)
class SimWindow:
    """Which panel rows a run reads: [first_row, start_row) warm-up, [start_row, end_row) evaluated."""

    first_row: int
    start_row: int
    end_row: int
    stride: int  # panel rows per chunk
    step_minutes: int
    max_memory_days: float  # after the reference's cap for short histories (see plan_window)

    @property
    def n_steps(self) -> int:
        return self.end_row - self.start_row

    @property
    def warmup_rows(self) -> int:
        return self.start_row - self.first_row

    @property
    def steps_per_day(self) -> int:
        return max(1, MINUTES_PER_DAY // self.step_minutes)


def plan_window(
    panel: PricePanel, spec: RunSpec, start: datetime | None = None, end: datetime | None = None
) -> SimWindow:
    """Rows for a run over [start, end) (default: the spec's start/end) and the estimator warm-up.

    As in the reference simulator: when the data before the start holds fewer than max_memory_days
    days, max_memory_days becomes (days before the start) - 1; the warm-up is ceil(max_memory_days)
    days before the start (rounded down to whole chunks), and the estimators start at its first row."""
    step = panel.step_minutes
    if spec.chunk_period % step:
        raise SimulationInputError(
            f"chunk_period ({spec.chunk_period} min) must be a multiple of the data step ({step} min): "
            f"set chunk_period to {step} x an integer"
        )
    start = start or spec.start
    end = end or spec.end
    stamps = panel.timestamps.astype("datetime64[ms]").astype(np.int64)
    try:
        start_row = panel.index_of(start)
    except KeyError as exc:
        raise SimulationInputError(_off_the_data(spec, start, end, "start", exc)) from None
    try:
        # the end is exclusive: one step past the last row is allowed
        past_last = to_epoch_ms(end) == stamps[-1] + step * MS_PER_MINUTE
        end_row = len(stamps) if past_last else panel.index_of(end)
    except KeyError as exc:
        raise SimulationInputError(_off_the_data(spec, start, end, "end", exc)) from None
    if end_row - start_row < 2:
        raise SimulationInputError(f"window {start} .. {end} holds fewer than 2 data steps")
    stride = spec.chunk_period // step
    days_before = start_row * step / MINUTES_PER_DAY
    memory = spec.max_memory_days
    if days_before < memory and days_before > 1:
        memory = days_before - 1
    warm_rows = min(math.ceil(memory) * MINUTES_PER_DAY // step, start_row)
    warm = (warm_rows // stride) * stride
    return SimWindow(start_row - warm, start_row, end_row, stride, step, memory)


def _off_the_data(spec: RunSpec, start: datetime, end: datetime, side: str, exc: KeyError) -> str:
    """The message for a window bound that is not a row of the data, naming the spec key that set it."""
    when = start if side == "start" else end
    keys = {spec.start: "startDateString", spec.end: "endDateString"}
    if spec.end_test is not None:
        keys[spec.end_test] = "endTestDateString"
    key = keys.get(when, f"the window's {side}")
    return (f"{key} ({when:%Y-%m-%d %H:%M}) must fall on the price data's rows (run window "
            f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}): {exc.args[0]}; move {key} inside the data or "
            "extend the data")


def sorted_panel_rows(panel: PricePanel, spec: RunSpec) -> np.ndarray:
    """Panel prices with columns in alphabetical token order (the simulator's order)."""
    missing = [t for t in spec.tokens if t not in panel.tokens]
    if missing:
        raise SimulationInputError(f"tokens {missing} are not in the price data (it has {list(panel.tokens)})")
    return panel.prices[:, [panel.tokens.index(t) for t in spec.sorted_tokens]]
