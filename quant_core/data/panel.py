"""The aligned [time x token] price panel the simulator consumes.

A panel row is what is KNOWN at its timestamp: for candles that is the close, observed at open time +
timeframe. Tokens are aligned on the times they all have, and a hole inside the common range is an
error here rather than a silently forward-filled price: a fabricated price would turn into fabricated
trades. `data_hash` identifies the exact numbers a model was trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_core.data.price_file import infer_step_minutes, read_long_prices, repeated_pairs
from quant_core.data.schema import (
    Market,
    format_minutes,
    timeframe_for_minutes,
    timeframe_minutes,
    to_epoch_ms,
)
from quant_core.data.validation import to_utc_ms, validate_candles
from quant_core.units import MS_PER_MINUTE

_EXAMPLES = 5

TimeLike = datetime | date | str | np.datetime64


def _iso(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms").astype("datetime64[s]")) + "Z"


@dataclass(frozen=True, eq=False)
class PricePanel:
    """Prices of `tokens` (columns, USD/quote) at evenly spaced UTC observation times (rows).

    Arrays are copied and made read-only on construction, so `data_hash` stays true to the data.
    """

    timestamps: np.ndarray
    tokens: tuple[str, ...]
    prices: np.ndarray
    step_minutes: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps)
        if ts.dtype.kind != "M":
            raise TypeError(f"PricePanel.timestamps must be numpy datetime64, got dtype {ts.dtype}")
        ts = np.array(ts.astype("datetime64[ms]"), copy=True)
        if ts.ndim != 1:
            raise ValueError(f"PricePanel.timestamps must be 1-D, got shape {ts.shape}")
        tokens = tuple(str(t) for t in self.tokens)
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"PricePanel.tokens has duplicates: {tokens}")
        if "timestamp" in tokens:
            raise ValueError("PricePanel.tokens may not contain 'timestamp' (the time column's name)")
        prices = np.array(self.prices, dtype=np.float64, copy=True, order="C")
        if prices.shape != (ts.shape[0], len(tokens)):
            raise ValueError(
                f"PricePanel.prices has shape {prices.shape}; expected (rows, tokens) = ({ts.shape[0]}, {len(tokens)})"
            )
        bad = ~(np.isfinite(prices) & (prices > 0))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"PricePanel.prices must be finite and > 0; {int(bad.sum())} are not, e.g. "
                f"{tokens[col]} at {_iso(ts[row].astype(np.int64))} = {prices[row, col]}"
            )
        step = int(self.step_minutes)
        if step <= 0:
            raise ValueError(f"PricePanel.step_minutes must be > 0, got {self.step_minutes}")
        if ts.shape[0] >= 2:
            diffs = np.diff(ts.astype(np.int64))
            if not np.all(diffs == step * MS_PER_MINUTE):
                i = int(np.argmax(diffs != step * MS_PER_MINUTE))
                raise ValueError(
                    f"PricePanel.timestamps must be strictly increasing every {format_minutes(step)}; "
                    f"{_iso(ts[i].astype(np.int64))} is followed by {_iso(ts[i + 1].astype(np.int64))}"
                )
        ts.setflags(write=False)
        prices.setflags(write=False)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "prices", prices)
        object.__setattr__(self, "step_minutes", step)
        object.__setattr__(self, "metadata", dict(self.metadata))

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def __repr__(self) -> str:
        span = f"{self._range()}" if len(self) else "empty"
        return f"PricePanel(tokens={self.tokens}, rows={len(self)}, {span}, hash={self.data_hash[:12]})"

    def _range(self) -> str:
        ms = self.timestamps.astype(np.int64)
        return f"{_iso(ms[0])} .. {_iso(ms[-1])} every {format_minutes(self.step_minutes)}"

    @cached_property
    def data_hash(self) -> str:
        """sha256 over tokens, timestamps and prices: the identity of the data a model saw."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.tokens).encode("utf-8"))
        h.update(b"\x00")
        h.update(self.timestamps.astype("<i8").tobytes())
        h.update(b"\x00")
        h.update(self.prices.astype("<f8").tobytes())
        return h.hexdigest()

    def index_of(self, when: TimeLike) -> int:
        """Row of exactly this timestamp (naive/date/ISO = UTC); KeyError with the panel's range if absent."""
        ms = to_epoch_ms(when)
        stamps = self.timestamps.astype(np.int64)
        i = int(np.searchsorted(stamps, ms))
        if i < len(stamps) and stamps[i] == ms:
            return i
        where = self._range() if len(self) else "the panel is empty"
        raise KeyError(f"{_iso(ms)} is not a timestamp of this panel ({where})")

    def slice(self, start: TimeLike | None = None, end: TimeLike | None = None) -> PricePanel:
        """Rows with timestamp in [start, end); a new panel with its own hash."""
        stamps = self.timestamps.astype(np.int64)
        i0 = int(np.searchsorted(stamps, to_epoch_ms(start))) if start is not None else 0
        i1 = int(np.searchsorted(stamps, to_epoch_ms(end))) if end is not None else len(stamps)
        i1 = max(i0, i1)
        meta = dict(self.metadata)
        meta.pop("data_hash", None)
        panel = PricePanel(
            timestamps=self.timestamps[i0:i1],
            tokens=self.tokens,
            prices=self.prices[i0:i1],
            step_minutes=self.step_minutes,
            metadata=meta,
        )
        panel.metadata.update(_extent(panel), data_hash=panel.data_hash)
        return panel

    def to_frame(self) -> pl.DataFrame:
        """Wide frame: `timestamp` (Datetime ms UTC), then one price column per token."""
        ts = pl.Series("timestamp", self.timestamps).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
        cols = [pl.Series(tok, self.prices[:, j]) for j, tok in enumerate(self.tokens)]
        return pl.DataFrame([ts, *cols])


def _extent(panel: PricePanel) -> dict[str, Any]:
    ms = panel.timestamps.astype(np.int64)
    return {
        "rows": len(panel),
        "first": _iso(ms[0]) if len(ms) else None,
        "last": _iso(ms[-1]) if len(ms) else None,
    }


def _align(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]], step_ms: int
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, int]]]:
    """Align per-token (sorted epoch-ms times, prices) on the common range; raise on any hole."""
    for tok, (ts, _) in series.items():
        if ts.size == 0:
            raise ValueError(f"token {tok!r} has no prices to put in the panel")
    start = max(int(ts[0]) for ts, _ in series.values())
    end = min(int(ts[-1]) for ts, _ in series.values())
    if start > end:
        ranges = "; ".join(f"{tok} {_iso(ts[0])} .. {_iso(ts[-1])}" for tok, (ts, _) in series.items())
        raise ValueError(f"the tokens' data do not overlap in time, so no panel can be built: {ranges}")
    grid = np.arange(start, end + 1, step_ms, dtype=np.int64)
    out = np.empty((grid.size, len(series)), dtype=np.float64)
    trimmed: dict[str, dict[str, int]] = {}
    holes: list[str] = []
    first_token, (first_ts, _) = next(iter(series.items()))
    phase = int(first_ts[0]) % step_ms
    for j, (tok, (ts, values)) in enumerate(series.items()):
        off = ts[ts % step_ms != phase]
        if off.size:
            every = format_minutes(step_ms // MS_PER_MINUTE)
            examples = ", ".join(_iso(t) for t in off[:_EXAMPLES])
            raise ValueError(
                f"token {tok!r} has {off.size} timestamp(s) off the {every} grid of {first_token!r}, "
                f"the first token (e.g. {examples}); fix: put every token on the same time grid"
            )
        lo, hi = np.searchsorted(ts, start), np.searchsorted(ts, end, side="right")
        inside = ts[lo:hi]
        idx = np.searchsorted(inside, grid)
        found = (idx < inside.size) & (inside[np.minimum(idx, inside.size - 1)] == grid)
        if not found.all():
            missing = grid[~found]
            shown = ", ".join(_iso(t) for t in missing[:_EXAMPLES])
            more = f" and {missing.size - _EXAMPLES} more" if missing.size > _EXAMPLES else ""
            holes.append(f"{tok!r} is missing {missing.size} timestamp(s): {shown}{more}")
            continue
        out[:, j] = values[lo:hi][idx]
        trimmed[tok] = {"before": int(lo), "after": int(ts.size - hi)}
    if holes:
        raise ValueError(
            f"cannot align the tokens: holes inside their common range {_iso(start)} .. {_iso(end)}: "
            + "; ".join(holes)
            + ". Fix: choose a window without holes, or fill the gaps with an explicit gap policy first "
            "(the panel never fills them silently)"
        )
    return grid, out, trimmed


def _make_panel(
    tokens: Sequence[str],
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    step_minutes: int,
    metadata: dict[str, Any],
) -> PricePanel:
    grid, values, trimmed = _align(series, step_minutes * MS_PER_MINUTE)
    panel = PricePanel(
        timestamps=grid.astype("datetime64[ms]"),
        tokens=tuple(tokens),
        prices=values,
        step_minutes=step_minutes,
        metadata={
            "tokens": list(tokens),
            "step_minutes": step_minutes,
            "timeframe": timeframe_for_minutes(step_minutes),
            **metadata,
            "trimmed": trimmed,
        },
    )
    panel.metadata.update(_extent(panel), data_hash=panel.data_hash)
    return panel


def _check_tokens(tokens: Sequence[str]) -> list[str]:
    tokens = [tokens] if isinstance(tokens, str) else list(tokens)
    if not tokens:
        raise ValueError("a panel needs at least one token")
    dup = sorted({t for t in tokens if tokens.count(t) > 1})
    if dup:
        raise ValueError(f"tokens listed more than once: {dup}")
    return tokens


def build_panel(
    candles: Mapping[str, pl.DataFrame],
    timeframe: str,
    *,
    markets: Mapping[str, Market] | None = None,
) -> PricePanel:
    """Panel of candle closes, observed at open time + timeframe, tokens in the mapping's order.

    Each frame is validated for `timeframe`. Raises ValueError naming the token and the missing
    timestamps if any token has a hole inside the tokens' common range.
    """
    tokens = _check_tokens(list(candles))
    step = timeframe_minutes(timeframe)
    step_ms = step * MS_PER_MINUTE
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    gaps: dict[str, int] = {}
    for tok in tokens:
        frame, report = validate_candles(candles[tok], timeframe)
        opens = frame["timestamp"].dt.epoch("ms").to_numpy().astype(np.int64)
        series[tok] = (opens + step_ms, frame["close"].to_numpy().astype(np.float64))
        gaps[tok] = report.missing_candles
    meta: dict[str, Any] = {"source": "candles", "missing_steps": gaps}
    if markets is not None:
        meta["markets"] = {tok: markets[tok].key for tok in tokens if tok in markets}
    return _make_panel(tokens, series, step, meta)


def panel_from_long_prices(prices: pl.DataFrame | str | Path, tokens: Sequence[str]) -> PricePanel:
    """Panel straight from long prices (a frame from `read_long_prices`, or a file path): observation
    time = the snapshot time; the step is inferred (median spacing) and checked; same alignment rules."""
    source = None
    if isinstance(prices, str | Path):
        source = str(prices)
        prices = read_long_prices(prices)
    tokens = _check_tokens(tokens)
    missing_cols = [c for c in ("timestamp", "token", "price_usd") if c not in prices.columns]
    if missing_cols:
        raise ValueError(f"long prices need columns timestamp, token, price_usd; missing {missing_cols}")
    available = set(prices["token"].unique().to_list())
    absent = [t for t in tokens if t not in available]
    if absent:
        raise ValueError(f"token(s) {absent} not in the prices; available: {sorted(available)}")
    ts, why = to_utc_ms(prices["timestamp"])
    if ts is None:
        raise ValueError(why)
    sub = (
        prices.with_columns(ts)
        .filter(pl.col("token").is_in(tokens))
        .select("timestamp", "token", pl.col("price_usd").cast(pl.Float64))
        .sort("token", "timestamp")
    )
    dups = sub.filter(repeated_pairs("token", "timestamp"))
    if dups.height:
        raise ValueError(
            f"{dups.height} rows share a (timestamp, token), e.g. {dups.head(2).rows()}; keep one price each"
        )
    step = infer_step_minutes(sub)
    step_ms = step * MS_PER_MINUTE
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    gaps: dict[str, int] = {}
    parts = sub.partition_by("token", as_dict=True)
    for tok in tokens:
        part = parts[(tok,)]
        stamps = part["timestamp"].dt.epoch("ms").to_numpy().astype(np.int64)
        series[tok] = (stamps, part["price_usd"].to_numpy().astype(np.float64))
        d = np.diff(stamps)
        gaps[tok] = int(np.sum(d[d > step_ms] // step_ms - 1))
    meta: dict[str, Any] = {"source": source or "long prices", "missing_steps": gaps}
    return _make_panel(tokens, series, step, meta)


# USD stablecoins a panel may price at exactly 1 USD when no market for them is configured.
USD_STABLECOINS = ("USDT", "USDC", "DAI", "BUSD", "TUSD", "FDUSD", "USDP", "PYUSD")


def _close_series(frame: pl.DataFrame, market: Market) -> tuple[np.ndarray, np.ndarray]:
    """(observation times = open + timeframe, closes) of a validated candle frame."""
    frame, _ = validate_candles(frame, market.timeframe)
    step_ms = timeframe_minutes(market.timeframe) * MS_PER_MINUTE
    opens = frame["timestamp"].dt.epoch("ms").to_numpy().astype(np.int64)
    return opens + step_ms, frame["close"].to_numpy().astype(np.float64)


def _product(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ts, ia, ib = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    return ts, a[1][ia] * b[1][ib]


def build_numeraire_panel(
    candles: Mapping[Market, pl.DataFrame],
    tokens: Sequence[str],
    timeframe: str,
    *,
    numeraire: str = "USD",
    pin_stablecoins: bool = True,
) -> PricePanel:
    """Panel of `tokens` priced in `numeraire` from whatever markets are given.

    Per token, in order of preference: a TOKEN/NUMERAIRE market; TOKEN/Q times a Q/NUMERAIRE market;
    the inverse of a NUMERAIRE/TOKEN market; with `pin_stablecoins` and a USD numeraire, TOKEN/Q with Q
    a USD stablecoin pinned at 1, or the token itself pinned at 1 when it is a USD stablecoin with no
    market. Every conversion and pin is stated in `metadata["pricing"]` (a pin hides depegs: the
    metadata says so, so nobody mistakes it for a price)."""
    tokens = _check_tokens(tokens)
    usd = numeraire.upper() in ("USD",)
    by_pair = {(m.base, m.quote): (m, f) for m, f in candles.items() if m.timeframe == timeframe}
    wrong_tf = sorted({m.key for m in candles if m.timeframe != timeframe})
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pricing: dict[str, str] = {}
    pinned: list[str] = []

    def close(pair):
        m, f = by_pair[pair]
        return _close_series(f, m)

    def price(tok: str, seen: frozenset[str]):
        """(series or None for a constant 1, how) of tok in the numeraire; None when it cannot be priced."""
        if tok == numeraire:
            return None, f"the numeraire itself: 1 {numeraire}"
        if (tok, numeraire) in by_pair:
            return close((tok, numeraire)), by_pair[(tok, numeraire)][0].key
        if (numeraire, tok) in by_pair:
            ts, v = close((numeraire, tok))
            return (ts, 1.0 / v), f"1 / {by_pair[(numeraire, tok)][0].key}"
        if usd and pin_stablecoins and tok in USD_STABLECOINS:
            return None, f"{tok} pinned at 1 USD (no {tok}/USD market configured)"
        for (base, q) in by_pair:
            if base != tok or q in seen:
                continue
            inner = price(q, seen | {tok})
            if inner is None:
                continue
            q_series, how = inner
            leg = by_pair[(tok, q)][0].key
            if q_series is None:
                return close((tok, q)), f"{leg} with {how}"
            return _product(close((tok, q)), q_series), f"{leg} x ({how})"
        return None

    for tok in tokens:
        found = price(tok, frozenset())
        if found is None:
            have = sorted(m.key for m, _ in by_pair.values())
            raise ValueError(
                f"token {tok!r} cannot be priced in {numeraire}: give a {tok}/{numeraire} market, or {tok}/Q with Q "
                f"priced in {numeraire}" + (" (USD stablecoins may be pinned at 1)" if usd else "")
                + f"; markets for {timeframe}: {have}"
                + (f"; other timeframes ignored: {wrong_tf}" if wrong_tf else ""))
        tok_series, pricing[tok] = found
        if tok_series is None:
            pinned.append(tok)
        else:
            series[tok] = tok_series
    if not series:
        raise ValueError(f"tokens {tokens} are all pinned or the numeraire: at least one needs a market")
    if pinned:
        times = np.unique(np.concatenate([ts for ts, _ in series.values()]))
        for tok in pinned:
            series[tok] = (times, np.ones(times.size))
    ordered = {tok: series[tok] for tok in tokens}
    meta: dict[str, Any] = {"source": "candles", "numeraire": numeraire, "pricing": pricing, "pinned": pinned}
    return _make_panel(tokens, ordered, timeframe_minutes(timeframe), meta)
