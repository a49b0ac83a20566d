"""Gap policy (fill-and-flag vs fail) and resampling onto the UTC timeframe grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.data.gaps import GapError, GapPolicy, apply_gap_policy, infer_timeframe, resample_candles
from quant_core.data.schema import CANDLE_SCHEMA
from quant_core.data.synthetic import synthetic_candles
from quant_core.data.validation import validate_candles

T0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def frame(rows: list[tuple[datetime, float, float, float, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CANDLE_SCHEMA, orient="row")


# ---------------------------------------------------------------------------------------------- gaps


def test_gap_policy_fill_and_flag() -> None:
    c = synthetic_candles(10, "1h", seed=1)
    holey = c.filter(~pl.int_range(pl.len()).is_in([3, 4, 7]))
    out, filled, left = apply_gap_policy(holey, "1h", GapPolicy(max_fill_candles=2), flag_column="filled")
    assert left == [] and [n for _, _, n in filled] == [2, 1]
    assert out["timestamp"].equals(c["timestamp"])
    assert out["filled"].to_list() == [False] * 3 + [True, True] + [False] * 2 + [True] + [False] * 2
    made = out.filter("filled")
    assert made["open"].to_list() == [c["close"][2], c["close"][2], c["close"][6]]
    assert (made["high"] == made["open"]).all() and (made["low"] == made["close"]).all()
    assert (made["volume"] == 0).all()
    validate_candles(out.drop("filled"), "1h")


def test_gap_policy_fail_and_keep() -> None:
    c = synthetic_candles(10, "1d", seed=1)
    holey = c.filter(~pl.int_range(pl.len()).is_in([3, 4, 5]))
    with pytest.raises(GapError) as err:
        apply_gap_policy(holey, "1d", GapPolicy())
    msg = str(err.value)
    assert "2024-01-04T00:00Z..2024-01-07T00:00Z (3 candles)" in msg
    assert "max_fill_candles=0" in msg and "at least 3" in msg and "on_larger='keep'" in msg
    out, filled, left = apply_gap_policy(holey, "1d", GapPolicy(max_fill_candles=2, on_larger="keep"))
    assert out.equals(holey) and filled == [] and [n for _, _, n in left] == [3]
    same, filled, left = apply_gap_policy(c, "1d", GapPolicy())
    assert same.equals(c) and filled == left == []


def test_gap_policy_arguments() -> None:
    with pytest.raises(ValueError, match="max_fill_candles"):
        GapPolicy(max_fill_candles=-1)
    with pytest.raises(ValueError, match="on_larger"):
        GapPolicy(on_larger="fill")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- resample


def test_resample_hand_computed() -> None:
    # 1m candles from 00:58 to 02:01: a partial hour at each end, one full hour (01:00-01:59) in between.
    rows = []
    for i in range(64):
        t = T0 + timedelta(minutes=58 + i)
        p = 100.0 + i
        rows.append((t, p, p + 1.5 + (i % 7), p - 0.25 - (i % 3), p + 1.0, float(i)))
    minutes = frame(rows)
    hourly = resample_candles(minutes, "1h")
    full = [r for r in rows if r[0].hour == 1]
    assert hourly.rows() == [
        (
            T0 + timedelta(hours=1),
            full[0][1],
            max(r[2] for r in full),
            min(r[3] for r in full),
            full[-1][4],
            sum(r[5] for r in full),
        )
    ]
    kept = resample_candles(minutes, "1h", keep_incomplete=True)
    assert kept["timestamp"].to_list() == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert kept["open"][0] == rows[0][1] and kept["close"][0] == rows[1][4] and kept["volume"][0] == 0 + 1
    assert kept["volume"][2] == 62 + 63


def test_resample_weekly_is_monday_aligned() -> None:
    # Daily candles from Thursday 2024-01-04: the first, partial week (opening Monday 2024-01-01) is dropped.
    daily = synthetic_candles(25, "1d", seed=4, start="2024-01-04")
    weekly = resample_candles(daily, "1w")
    assert weekly["timestamp"].to_list() == [T0 + timedelta(weeks=w) for w in (1, 2, 3)]
    assert all(t.weekday() == 0 for t in weekly["timestamp"].to_list())
    week = daily.filter(
        (pl.col("timestamp") >= T0 + timedelta(weeks=1)) & (pl.col("timestamp") < T0 + timedelta(weeks=2))
    )
    assert weekly.row(0) == (
        T0 + timedelta(weeks=1),
        week["open"][0],
        week["high"].max(),
        week["low"].min(),
        week["close"][-1],
        pytest.approx(week["volume"].sum()),
    )


def test_resample_errors_and_identity() -> None:
    hourly = synthetic_candles(48, "1h", seed=2)
    with pytest.raises(ValueError, match="cannot resample 1h candles to 15m"):
        resample_candles(hourly, "15m")
    assert resample_candles(hourly, "1h").equals(hourly)
    assert resample_candles(hourly.head(0), "4h").height == 0
    assert infer_timeframe(hourly["timestamp"]) == "1h"
    with pytest.raises(ValueError, match="not a supported timeframe"):
        infer_timeframe(hourly["timestamp"].gather_every(2))  # 2h spacing


@settings(max_examples=25, deadline=None)
@given(
    start_minute=st.integers(0, 200),
    length=st.integers(30, 400),
    holes=st.lists(st.integers(0, 399), max_size=40),
    seed=st.integers(0, 1000),
)
def test_resample_composes(start_minute: int, length: int, holes: list[int], seed: int) -> None:
    base = synthetic_candles(length, "1m", seed=seed, start=T0 + timedelta(minutes=start_minute))
    minutes = base.filter(~pl.int_range(pl.len()).is_in(holes))
    if minutes.height < 2:
        return
    direct = resample_candles(minutes, "1h", source_timeframe="1m")
    quarter = resample_candles(minutes, "15m", source_timeframe="1m")
    via = resample_candles(quarter, "1h", source_timeframe="15m") if quarter.height else quarter
    assert direct["timestamp"].equals(via["timestamp"])
    for col in ("open", "high", "low", "close"):
        assert direct[col].equals(via[col])
    np.testing.assert_allclose(direct["volume"].to_numpy(), via["volume"].to_numpy(), rtol=1e-12)
