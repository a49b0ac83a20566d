"""Candles from any exchange ccxt supports, fetched page by page and ingested incrementally.

Exchanges page their candle history (binance: 1000 per request, kraken: 720 and only the most recent
720 at all), throttle callers and fail transiently, so this module owns the loop around ccxt's
`fetch_ohlcv`: it pages with `since`/`limit` until the window is covered or the exchange has nothing
newer, retries transient failures with bounded exponential backoff, stops with a message that says
what to do on permanent ones, drops the still-open last candle, and reports what could not be covered
instead of pretending the history is complete.

Credentials never live in configuration files: they come from QUANT_<EXCHANGE>_API_KEY / _SECRET /
_PASSWORD / _UID environment variables only (public candles need none).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import ccxt
import polars as pl

from quant_core.data.schema import CANDLE_SCHEMA, Market, empty_candles, timeframe_ms, to_epoch_ms, to_utc
from quant_core.data.validation import (
    CandleValidationError,
    ValidationReport,
    ms_to_datetime,
    validate_candles,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# ccxt constructor keys that hold secrets, and the environment variable suffix each is read from.
_CREDENTIAL_ENV: dict[str, str] = {"apiKey": "API_KEY", "secret": "SECRET", "password": "PASSWORD", "uid": "UID"}
_CREDENTIAL_KEYS = frozenset(_CREDENTIAL_ENV) | {"privateKey", "walletAddress", "token", "login", "twofa"}

# Only spot markets are modelled (Market refuses 'BASE/QUOTE:SETTLE'), so skip what spot ingestion never
# needs: binance's futures/margin market lists (extra hosts and requests) and its signed currency list
# (a private call as soon as keys are present). User `options` still override these.
_EXCHANGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "binance": {"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}},
}

# Exchanges that serve only the most recent N candles per timeframe whatever `since` says.
_HISTORY_CAP: dict[str, int] = {"kraken": 720}

_DEFAULT_PAGE_LIMIT = 500

# ccxt's OperationFailed covers NetworkError and its children (RequestTimeout, ExchangeNotAvailable,
# OnMaintenance, DDoSProtection, RateLimitExceeded) plus failures the exchange itself calls transient;
# HTTP 429/5xx are mapped onto these by ccxt.
_TRANSIENT: tuple[type[Exception], ...] = (ccxt.OperationFailed,)


class CcxtSourceError(RuntimeError):
    """A fetch that cannot succeed as asked; the message says what is wrong and what to do."""


class ExchangeUnavailableError(CcxtSourceError):
    """The exchange kept failing transiently (network, rate limit, 5xx) through every retry."""


class IncompleteHistoryError(CcxtSourceError):
    """The exchange cannot serve the whole requested window (raised only with `require_complete=True`)."""


@dataclass
class FetchReport:
    """What one `fetch` did: requests made, rows kept, open candles dropped, and the parts of the
    requested window the exchange could not serve (`head_gap`, `tail_gap`: half-open [from, to))."""

    market: Market
    start: datetime | None
    end: datetime
    requests: int = 0
    retries: int = 0
    pages: int = 0
    rows: int = 0
    dropped_open: int = 0
    head_gap: tuple[datetime, datetime] | None = None
    tail_gap: tuple[datetime, datetime] | None = None
    notes: list[str] = field(default_factory=list)
    validation: ValidationReport | None = None

    @property
    def complete(self) -> bool:
        """Whether every closed candle of the window the exchange should have was asked for and served."""
        return self.head_gap is None and self.tail_gap is None

    def as_metadata(self) -> dict[str, Any]:
        """JSON-safe summary for asset metadata and logs."""

        def gap(g: tuple[datetime, datetime] | None) -> list[str] | None:
            return [g[0].isoformat(), g[1].isoformat()] if g else None

        return {
            "market": self.market.key,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat(),
            "requests": self.requests,
            "retries": self.retries,
            "pages": self.pages,
            "rows": self.rows,
            "dropped_open": self.dropped_open,
            "complete": self.complete,
            "head_gap": gap(self.head_gap),
            "tail_gap": gap(self.tail_gap),
            "notes": list(self.notes),
            "validation": self.validation.as_metadata() if self.validation else None,
        }


def credential_env_var(exchange_id: str, key: str) -> str:
    """The environment variable a ccxt credential is read from, e.g. QUANT_BINANCE_API_KEY."""
    return f"QUANT_{re.sub(r'[^A-Z0-9]', '_', exchange_id.upper())}_{_CREDENTIAL_ENV[key]}"


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, merging nested dicts (as ccxt merges its own defaults with config)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class CcxtSource:
    """A CandleSource backed by one ccxt exchange (spot markets), e.g. `CcxtSource("binance")`.

    `config` goes to the ccxt constructor as users write it (`urls`, `options`, `timeout`, ...); it may
    not contain credentials. Transient failures are retried `max_retries` times, sleeping
    `min(backoff_max, backoff_base * 2**attempt)` seconds (at least the server's Retry-After, still
    capped) through the injectable `sleep`; `now` (returns an aware datetime) decides which candle is
    still open. `page_limit` overrides the exchange's per-request maximum. `require_complete=True`
    turns an uncoverable window into IncompleteHistoryError instead of a report entry.
    """

    def __init__(
        self,
        exchange_id: str,
        config: dict[str, Any] | None = None,
        *,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] | None = None,
        page_limit: int | None = None,
        require_complete: bool = False,
    ) -> None:
        if exchange_id not in ccxt.exchanges:
            close = difflib.get_close_matches(str(exchange_id), ccxt.exchanges, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown ccxt exchange id {exchange_id!r}{hint}; ccxt.exchanges lists the valid ids")
        config = dict(config or {})
        secrets = sorted(_CREDENTIAL_KEYS & set(config))
        if secrets:
            env = ", ".join(credential_env_var(exchange_id, k) for k in _CREDENTIAL_ENV)
            raise ValueError(
                f"exchange config for {exchange_id!r} must not contain credentials {secrets}: "
                f"set them in the environment instead ({env})"
            )
        if max_retries < 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("max_retries, backoff_base and backoff_max must be >= 0")
        if page_limit is not None and page_limit < 1:
            raise ValueError(f"page_limit must be >= 1, got {page_limit}")

        settings = _deep_merge(_EXCHANGE_DEFAULTS.get(exchange_id, {}), config)
        settings["enableRateLimit"] = True  # ccxt's own throttle keeps us under the exchange's limits
        for key in _CREDENTIAL_ENV:
            value = os.environ.get(credential_env_var(exchange_id, key))
            if value:
                settings[key] = value
        self.exchange_id = exchange_id
        self.exchange: ccxt.Exchange = getattr(ccxt, exchange_id)(settings)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._now = now or (lambda: datetime.now(UTC))
        self.page_limit = page_limit or self._exchange_page_limit()
        self.require_complete = require_complete
        self.last_report: FetchReport | None = None

    def __repr__(self) -> str:  # never shows credentials
        return f"CcxtSource({self.exchange_id!r})"

    # ----------------------------------------------------------------- exchange calls with retries

    def _exchange_page_limit(self) -> int:
        """The most candles one request may ask for, from ccxt's per-exchange feature table."""
        try:
            limit = self.exchange.features["spot"]["fetchOHLCV"]["limit"]
        except (KeyError, TypeError, AttributeError):
            limit = None
        return int(limit) if isinstance(limit, int) and limit > 0 else _DEFAULT_PAGE_LIMIT

    def _retry_after(self) -> float | None:
        """Seconds the last response asked us to wait (Retry-After), if it said."""
        headers = getattr(self.exchange, "last_response_headers", None)
        if not headers:
            return None
        value = headers.get("Retry-After") or headers.get("retry-after")
        try:
            return max(0.0, float(value)) if value is not None else None
        except (TypeError, ValueError):
            return None

    def _call(self, what: str, fn: Callable[[], T], report: FetchReport | None = None, symbol: str = "") -> T:
        """Run one exchange request, retrying transient failures with bounded exponential backoff."""
        for attempt in range(self.max_retries + 1):
            self.exchange.last_response_headers = None
            if report is not None:
                report.requests += 1
            try:
                return fn()
            except _TRANSIENT as exc:
                if attempt >= self.max_retries:
                    raise ExchangeUnavailableError(
                        f"{self.exchange_id}: {what} still failing after {self.max_retries + 1} attempt(s) "
                        f"({type(exc).__name__}: {_short(exc)}); the exchange is down, throttling us or "
                        "unreachable - try again later, or raise max_retries/backoff_max"
                    ) from exc
                delay = min(self.backoff_max, self.backoff_base * 2**attempt)
                wait = self._retry_after()
                if wait is not None:
                    delay = min(self.backoff_max, max(delay, wait))
                log.warning(
                    "%s: %s failed (%s: %s); retry %d/%d in %.2fs",
                    self.exchange_id,
                    what,
                    type(exc).__name__,
                    _short(exc),
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                if report is not None:
                    report.retries += 1
                self._sleep(delay)
            except (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended) as exc:
                env = ", ".join(credential_env_var(self.exchange_id, k) for k in ("apiKey", "secret"))
                raise CcxtSourceError(
                    f"{self.exchange_id}: {what} was refused ({type(exc).__name__}: {_short(exc)}); public "
                    f"candles need no keys - check or unset {env}"
                ) from exc
            except ccxt.BadSymbol as exc:
                raise CcxtSourceError(f"{_short(exc)}; {self._bad_symbol_message(symbol)}") from exc
            except ccxt.BaseError as exc:
                raise CcxtSourceError(
                    f"{self.exchange_id}: {what} failed ({type(exc).__name__}: {_short(exc)}); this is not "
                    "a transient error, so it was not retried"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def load_markets(self) -> dict[str, Any]:
        """The exchange's markets (loaded once, with retries)."""
        if not self.exchange.markets:
            self._call("loading markets", lambda: self.exchange.load_markets())
        return self.exchange.markets

    def _check_timeframe(self, timeframe: str) -> None:
        if not self.exchange.has.get("fetchOHLCV"):
            raise CcxtSourceError(
                f"{self.exchange_id} does not offer candles (OHLCV) through ccxt; use another exchange"
            )
        supported = self.exchange.timeframes or {}
        if supported and timeframe not in supported:
            raise CcxtSourceError(
                f"{self.exchange_id} has no {timeframe!r} candles; its timeframes are: {', '.join(supported)}"
            )

    def _check_symbol(self, symbol: str) -> None:
        markets = self.load_markets()
        if symbol not in markets:
            raise CcxtSourceError(self._bad_symbol_message(symbol))

    def _bad_symbol_message(self, symbol: str) -> str:
        close = difflib.get_close_matches(symbol, list(self.exchange.markets or {}), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return (
            f"{self.exchange_id} has no market {symbol!r}{hint}; list its markets with "
            f"CcxtSource({self.exchange_id!r}).markets()"
        )

    # ----------------------------------------------------------------------------- CandleSource

    def markets(self, timeframe: str = "1d") -> list[Market]:
        """Active spot markets of the exchange at `timeframe`, sorted by symbol."""
        self._check_timeframe(timeframe)
        out = []
        for symbol, info in sorted(self.load_markets().items()):
            if not info.get("spot") or info.get("active") is False:
                continue
            try:
                out.append(Market(self.exchange_id, symbol, timeframe))
            except ValueError:  # symbols Market cannot name (derivatives, odd characters)
                continue
        return out

    def fetch(self, market: Market, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        """Closed candles of `market` with open time in [start, end); the report lands in `last_report`."""
        frame, _ = self.fetch_with_report(market, start, end)
        return frame

    def fetch_with_report(
        self, market: Market, start: datetime | None = None, end: datetime | None = None
    ) -> tuple[pl.DataFrame, FetchReport]:
        """Page through the exchange from `start` (None: the earliest candle it serves) to `end`
        (None: now); return the validated closed candles and what the fetch saw."""
        if market.exchange != self.exchange_id:
            raise ValueError(f"market {market} belongs to {market.exchange!r}, this source is {self.exchange_id!r}")
        self._check_timeframe(market.timeframe)
        self._check_symbol(market.symbol)
        step = timeframe_ms(market.timeframe)
        now_ms = to_epoch_ms(self._now())
        end_ms = now_ms if end is None else min(to_epoch_ms(end), now_ms)
        start_ms = None if start is None else to_epoch_ms(start)
        report = FetchReport(market=market, start=to_utc(start) if start else None, end=ms_to_datetime(end_ms))
        self.last_report = report

        rows: dict[int, list[Any]] = {}
        cursor = 0 if start_ms is None else start_ms
        while cursor < end_ms:
            since = cursor
            page = self._call(
                f"fetching {market.symbol} {market.timeframe} candles since {_fmt(since)}",
                lambda since=since: self.exchange.fetch_ohlcv(
                    market.symbol, market.timeframe, since=since, limit=self.page_limit
                ),
                report,
                market.symbol,
            )
            report.pages += 1
            fresh = [r for r in page or [] if r and r[0] is not None and int(r[0]) >= since]
            if not fresh:
                break  # nothing at or after the cursor: the exchange has no newer candles
            for r in fresh:
                rows[int(r[0])] = list(r)
            newest = max(int(r[0]) for r in fresh)
            if newest + step > now_ms:
                break  # reached the still-open candle: nothing closed can follow
            cursor = newest + step  # strictly after `since`, so the loop always advances

        kept: list[list[Any]] = []
        for ts in sorted(rows):
            if ts + step > now_ms:
                report.dropped_open += 1
            elif (start_ms is None or ts >= start_ms) and ts < end_ms:
                kept.append(rows[ts])
        self._note_gaps(report, kept, start_ms, end_ms, now_ms, step)
        for note in report.notes:
            log.warning("%s %s: %s", self.exchange_id, market.symbol, note)

        if not kept:
            frame = empty_candles()
        else:
            raw = pl.DataFrame(
                [r[:6] for r in kept],
                schema={"timestamp": pl.Int64, **{c: pl.Float64 for c in list(CANDLE_SCHEMA)[1:]}},
                orient="row",
            )
            try:
                frame, report.validation = validate_candles(raw, market.timeframe, repair=True)
            except CandleValidationError as exc:
                raise CandleValidationError(
                    [f"{market} from {self.exchange_id}: {p}" for p in exc.problems], exc.timeframe, exc.rows
                ) from None
        report.rows = frame.height
        if not report.complete and self.require_complete:
            raise IncompleteHistoryError("; ".join(report.notes))
        return frame, report

    def _note_gaps(
        self, report: FetchReport, kept: list[list[Any]], start_ms: int | None, end_ms: int, now_ms: int, step: int
    ) -> None:
        """Record the parts of [start, end) the exchange did not serve, with the likely reason."""
        # The last closed candle that could exist in the window.
        last_possible = min((now_ms // step) * step - step, ((end_ms - 1) // step) * step)
        first_wanted = None if start_ms is None else -(-start_ms // step) * step
        cap = _HISTORY_CAP.get(self.exchange_id)
        if not kept:
            if first_wanted is not None and first_wanted <= last_possible:
                report.head_gap = (ms_to_datetime(first_wanted), ms_to_datetime(last_possible + step))
                report.notes.append(
                    f"{self.exchange_id} returned no closed {report.market.timeframe} candles for "
                    f"{report.market.symbol} in [{_fmt(first_wanted)}, {_fmt(last_possible + step)})"
                    + (f"; it serves only its most recent {cap} candles" if cap else "")
                )
            return
        first, last = int(kept[0][0]), int(kept[-1][0])
        if first_wanted is not None and first > first_wanted:
            report.head_gap = (ms_to_datetime(first_wanted), ms_to_datetime(first))
            if cap and first_wanted < now_ms - cap * step:
                why = (
                    f"{self.exchange_id} serves only its most recent {cap} {report.market.timeframe} candles, "
                    f"so candles before {_fmt(first)} cannot be fetched from it - start later or import older "
                    "history from a file"
                )
            else:
                why = (
                    f"{self.exchange_id} returned nothing before {_fmt(first)}: the market may have been "
                    "listed then, or the exchange does not keep older history"
                )
            report.notes.append(f"requested from {_fmt(first_wanted)} but {why}")
        if last < last_possible:
            report.tail_gap = (ms_to_datetime(last + step), ms_to_datetime(last_possible + step))
            report.notes.append(
                f"{self.exchange_id} returned nothing after {_fmt(last)} although closed candles up to "
                f"{_fmt(last_possible)} were expected (delisted or halted market?)"
            )


def _fmt(ms: int) -> str:
    return ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- incremental ingestion


class _Store(Protocol):
    def exists(self, market: Market) -> bool: ...

    def read(self, market: Market, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame: ...

    def write(self, market: Market, candles: pl.DataFrame, *, repair: bool = False) -> ValidationReport: ...


@dataclass
class IngestResult:
    """What one incremental ingest did: rows fetched from the source, rows written to the store
    (a written row may replace a stored one), rows the store gained, and the extent of what was fetched."""

    market: Market
    rows_fetched: int
    rows_written: int
    rows_added: int
    first: datetime | None
    last: datetime | None
    report: ValidationReport | None
    fetch_reports: list[FetchReport] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        """JSON-safe summary for asset metadata and logs."""
        return {
            "market": self.market.key,
            "rows_fetched": self.rows_fetched,
            "rows_written": self.rows_written,
            "rows_added": self.rows_added,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "report": self.report.as_metadata() if self.report else None,
            "fetches": [r.as_metadata() for r in self.fetch_reports],
        }


def fetch_incremental(
    store: _Store,
    source: Any,
    market: Market,
    *,
    start: datetime | str,
    end: datetime | str | None = None,
    overlap_candles: int = 2,
) -> IngestResult:
    """Bring the store's candles of `market` up to date over [start, end), fetching only what is new.

    With nothing stored, fetches from `start`. Otherwise re-fetches from `overlap_candles` before the
    last stored candle (the exchange may have revised its most recent candles; the store's merge lets
    the fresh rows replace them) and, if `start` is before the first stored candle, back-fills that
    head. Re-running for the same window fetches only the overlap and writes no duplicates.
    `source` is any CandleSource; one with `fetch_with_report` also contributes its fetch reports.
    """
    if overlap_candles < 0:
        raise ValueError(f"overlap_candles must be >= 0, got {overlap_candles}")
    start_dt = to_utc(start)
    end_dt = to_utc(end) if end is not None else None
    step = timeframe_ms(market.timeframe)

    segments: list[tuple[datetime, datetime | None]] = []
    before = 0
    if store.exists(market):
        stored = store.read(market)
        before = stored.height
    if before:
        first_ms = to_epoch_ms(stored["timestamp"].min())
        last_ms = to_epoch_ms(stored["timestamp"].max())
        start_ms = to_epoch_ms(start_dt)
        end_ms = None if end_dt is None else to_epoch_ms(end_dt)
        tail_start = max(start_ms, last_ms - overlap_candles * step)
        if start_ms < first_ms:  # back-fill before what is stored; the tail fetch then starts at the stored data
            head_end = first_ms if end_ms is None else min(first_ms, end_ms)
            segments.append((start_dt, ms_to_datetime(head_end)))
            tail_start = max(tail_start, first_ms)
        if end_ms is None or tail_start < end_ms:
            segments.append((ms_to_datetime(tail_start), end_dt))
    else:
        segments.append((start_dt, end_dt))

    frames: list[pl.DataFrame] = []
    reports: list[FetchReport] = []
    for seg_start, seg_end in segments:
        if hasattr(source, "fetch_with_report"):
            frame, fetch_report = source.fetch_with_report(market, seg_start, seg_end)
            reports.append(fetch_report)
        else:
            frame = source.fetch(market, seg_start, seg_end)
        frames.append(frame)
    batch = pl.concat(frames) if frames else empty_candles()

    report = None
    after = before
    if batch.height:
        report = store.write(market, batch)
        after = store.read(market).height
    return IngestResult(
        market=market,
        rows_fetched=batch.height,
        rows_written=batch.height,
        rows_added=after - before,
        first=batch["timestamp"].min() if batch.height else None,  # type: ignore[arg-type]
        last=batch["timestamp"].max() if batch.height else None,  # type: ignore[arg-type]
        report=report,
        fetch_reports=reports,
    )
