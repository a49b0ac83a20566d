"""The candle schema, timeframes and market identity shared by every candle source and store.

One definition here keeps sources (shipped file, ccxt, zip import, synthetic), the Parquet store,
validation and the price panel agreeing on column names, dtypes and what a timestamp means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from quant_core.units import MINUTES_PER_DAY, MS_PER_MINUTE

# `timestamp` is the candle's OPEN time; the close is known one timeframe later.
CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("ms", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
CANDLE_COLUMNS: tuple[str, ...] = tuple(CANDLE_SCHEMA)
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

TIMEFRAME_MINUTES: dict[str, int] = {
    "1m": 1,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "4h": 240,
    "1d": MINUTES_PER_DAY,
    "1w": 10080,
}

# Candle open times sit on a grid of whole timeframes counted from the UTC epoch, except weeks:
# 1970-01-01 was a Thursday and exchanges open weekly candles on Monday 00:00 UTC (epoch + 4 days).
TIMEFRAME_GRID_OFFSET_MINUTES: dict[str, int] = {"1w": 4 * MINUTES_PER_DAY}



def timeframe_minutes(tf: str) -> int:
    """Minutes in one candle of timeframe `tf`; the one place an unknown timeframe is rejected."""
    try:
        return TIMEFRAME_MINUTES[tf]
    except (KeyError, TypeError):
        valid = ", ".join(TIMEFRAME_MINUTES)
        raise ValueError(f"unknown timeframe {tf!r}; valid timeframes are: {valid}") from None


def timeframe_ms(tf: str) -> int:
    """Milliseconds in one candle: the unit timestamps are stored in."""
    return timeframe_minutes(tf) * MS_PER_MINUTE


def timeframe_delta(tf: str) -> timedelta:
    """One candle's length as a timedelta."""
    return timedelta(minutes=timeframe_minutes(tf))


def grid_offset_ms(tf: str) -> int:
    """Where the timeframe's grid starts relative to the epoch (non-zero for weeks only)."""
    timeframe_minutes(tf)
    return TIMEFRAME_GRID_OFFSET_MINUTES.get(tf, 0) * MS_PER_MINUTE


def timeframe_for_minutes(minutes: int) -> str | None:
    """The timeframe name of a step in minutes, or None if no timeframe has that length."""
    for name, value in TIMEFRAME_MINUTES.items():
        if value == minutes:
            return name
    return None


def format_minutes(minutes: int) -> str:
    """A step in minutes as people say it ('1d', '1h', '90m'), for error messages."""
    name = timeframe_for_minutes(minutes)
    if name is not None:
        return name
    if minutes % MINUTES_PER_DAY == 0:
        return f"{minutes // MINUTES_PER_DAY}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def to_utc(value: datetime | date | str | np.datetime64) -> datetime:
    """A time as an aware UTC datetime; naive values (and dates, and ISO strings) are taken as UTC.

    Every public function that takes a time goes through here so naive/aware mixing never reaches polars.
    """
    if isinstance(value, np.datetime64):
        ms = int(value.astype("datetime64[ms]").astype(np.int64))
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"cannot read time {value!r}; use an ISO date or timestamp such as '2024-01-31' "
                "or '2024-01-31T12:00:00Z'"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise TypeError(f"expected a datetime, date, ISO string or numpy datetime64, got {type(value).__name__}")


def to_epoch_ms(value: datetime | date | str | np.datetime64) -> int:
    """Milliseconds since the UTC epoch: the integer form timestamps are compared in."""
    dt = to_utc(value)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def empty_candles() -> pl.DataFrame:
    """A zero-row frame with the candle schema (what a source returns when it has nothing)."""
    return pl.DataFrame(schema=CANDLE_SCHEMA)


_EXCHANGE_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ASSET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class Market:
    """One exchange + one symbol + one timeframe; `key` names it in partitions and file names."""

    exchange: str
    symbol: str
    timeframe: str

    def __post_init__(self) -> None:
        if not isinstance(self.exchange, str) or not _EXCHANGE_RE.fullmatch(self.exchange):
            raise ValueError(
                f"Market.exchange {self.exchange!r} must be lowercase letters, digits, '_' or '-' "
                "(a ccxt id such as 'binance', or 'shipped')"
            )
        if not isinstance(self.symbol, str) or self.symbol.count("/") != 1:
            raise ValueError(f"Market.symbol {self.symbol!r} must be 'BASE/QUOTE', such as 'BTC/USD'")
        if ":" in self.symbol:
            raise ValueError(
                f"Market.symbol {self.symbol!r}: derivative symbols ('BASE/QUOTE:SETTLE') are not "
                "supported yet; use the spot symbol such as 'BTC/USDT'"
            )
        for part, name in zip(self.symbol.split("/"), ("base", "quote"), strict=True):
            if not _ASSET_RE.fullmatch(part):
                raise ValueError(
                    f"Market.symbol {self.symbol!r}: {name} {part!r} must start with a letter or digit "
                    "and contain only letters, digits, '_' or '.'"
                )
        if self.timeframe not in TIMEFRAME_MINUTES:
            raise ValueError(
                f"Market.timeframe {self.timeframe!r} is unknown; valid timeframes are: " + ", ".join(TIMEFRAME_MINUTES)
            )

    @property
    def base(self) -> str:
        """The asset being priced ('BTC' in 'BTC/USD')."""
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        """The asset prices are in ('USD' in 'BTC/USD')."""
        return self.symbol.split("/")[1]

    @property
    def minutes(self) -> int:
        """Candle length in minutes."""
        return TIMEFRAME_MINUTES[self.timeframe]

    @property
    def key(self) -> str:
        """Path- and partition-safe name 'exchange.BASE-QUOTE.timeframe', e.g. 'shipped.BTC-USD.1d'."""
        return f"{self.exchange}.{self.base}-{self.quote}.{self.timeframe}"

    @classmethod
    def from_key(cls, key: str) -> Market:
        """The market a `key` names (inverse of `Market.key`)."""
        example = "expected 'exchange.BASE-QUOTE.timeframe', e.g. 'shipped.BTC-USD.1d'"
        if not isinstance(key, str):
            raise ValueError(f"market key {key!r} is not a string; {example}")
        # Exchange and timeframe never contain '.', while base/quote may ('USDC.e').
        exchange, sep1, rest = key.partition(".")
        pair, sep2, timeframe = rest.rpartition(".")
        if not (sep1 and sep2) or pair.count("-") != 1:
            raise ValueError(f"market key {key!r} is malformed; {example}")
        base, quote = pair.split("-")
        try:
            return cls(exchange=exchange, symbol=f"{base}/{quote}", timeframe=timeframe)
        except ValueError as exc:
            raise ValueError(f"market key {key!r} is invalid: {exc}") from None

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} {self.timeframe}"


@runtime_checkable
class CandleSource(Protocol):
    """What every candle source offers: the markets it has, and validated candles for one of them."""

    def markets(self, timeframe: str = "1d") -> list[Market]: ...

    def fetch(self, market: Market, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame: ...
