"""Candles from any exchange ccxt supports, fetched page by page and ingested incrementally.

Exchanges page their candle history (binance: 1000 per request, kraken: 720 and only the most recent
720 at all), throttle callers and fail transiently, so this module owns the loop around ccxt's
`fetch_ohlcv`: it pages with `since`/`limit` until the window is covered or the exchange has nothing
newer, retries transient failures with bounded exponential backoff, stops with a message that says
what to do on permanent ones, drops the still-open last candle, and reports what could not be covered
instead of pretending the history is complete.

"Closed" is decided by the exchange's clock as well as ours: a candle is closed when the exchange served a
later one, or when its close time has passed by both our clock and the exchange's (the `Date` header of its
answer). Judged by our clock alone, an exchange whose clock lags ours had its open candle stored as closed.
A fetch that fails part-way carries the complete candles it had fetched (`CcxtSourceError.partial`), so the
ingestion can keep them and continue from them instead of fetching everything again.

Credentials never live in configuration files: they come from QUANT_<EXCHANGE>_API_KEY / _SECRET /
_PASSWORD / _UID environment variables only (public candles need none).

The incremental ingestion (`fetch_incremental`) lives in incremental_ingest, the fetch report in
fetch_report and the credential rules in ccxt_settings; all are importable from here as before.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import ccxt
import polars as pl

from quant_core.data.ccxt_settings import (
    _CREDENTIAL_ENV,
    _CREDENTIAL_KEYS,
    _EXCHANGE_DEFAULTS,
    _deep_merge,
    check_exchange_id,
    credential_env_var,
)
from quant_core.data.fetch_report import FetchReport
from quant_core.data.incremental_ingest import IngestResult, fetch_incremental
from quant_core.data.schema import CANDLE_SCHEMA, Market, empty_candles, timeframe_ms, to_epoch_ms, to_utc
from quant_core.data.validation import (
    CandleValidationError,
    ValidationReport,
    ms_to_datetime,
    validate_candles,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Exchanges that serve only the most recent N candles per timeframe whatever `since` says.
_HISTORY_CAP: dict[str, int] = {"kraken": 720}

_DEFAULT_PAGE_LIMIT = 500

# ccxt's OperationFailed covers NetworkError and its children (RequestTimeout, ExchangeNotAvailable,
# OnMaintenance, DDoSProtection, RateLimitExceeded) plus failures the exchange itself calls transient;
# HTTP 429/5xx are mapped onto these by ccxt.
_TRANSIENT: tuple[type[Exception], ...] = (ccxt.OperationFailed,)


class CcxtSourceError(RuntimeError):
    """A fetch that cannot succeed as asked; the message says what is wrong and what to do.

    Raised by `fetch_with_report` after some pages were fetched, it carries the closed candles of the pages that
    were complete (`partial`, validated) and the report so far, for the caller to keep."""

    partial: pl.DataFrame | None = None
    report: FetchReport | None = None


class ExchangeUnavailableError(CcxtSourceError):
    """The exchange kept failing transiently (network, rate limit, 5xx) through every retry."""


class IncompleteHistoryError(CcxtSourceError):
    """The exchange cannot serve the whole requested window (raised only with `require_complete=True`)."""


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
        check_exchange_id(exchange_id)
        config = dict(config or {})
        secrets = sorted(_CREDENTIAL_KEYS & set(config))
        if secrets:
            env = ", ".join(credential_env_var(exchange_id, k) for k in _CREDENTIAL_ENV)
            raise ValueError(
                f"exchange config for {exchange_id!r} must not contain credentials {secrets}: "
                f"set them in the environment instead ({env})"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        for name, value in (("backoff_base", backoff_base), ("backoff_max", backoff_max)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value)
                                                                                     and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (seconds), got {value!r}")
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

    def _exchange_clock_ms(self) -> int | None:
        """The exchange's clock when it answered the last request (its Date header), if it said."""
        headers = getattr(self.exchange, "last_response_headers", None)
        value = (headers.get("Date") or headers.get("date")) if headers else None
        if not value:
            return None
        try:
            return to_epoch_ms(parsedate_to_datetime(str(value)))
        except (TypeError, ValueError, IndexError, OverflowError):
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
                        "unreachable - try again later, or raise max_retries/backoff_max (`quant data fetch "
                        "--max-retries N --backoff-max SECONDS`; in Dagster the `exchange` resource's max_retries "
                        "and backoff_max_seconds)"
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
        ours_ms = to_epoch_ms(self._now())
        end_ms = ours_ms if end is None else min(to_epoch_ms(end), ours_ms)
        start_ms = None if start is None else to_epoch_ms(start)
        report = FetchReport(market=market, start=to_utc(start) if start else None, end=ms_to_datetime(end_ms))
        self.last_report = report

        rows: dict[int, list[Any]] = {}
        theirs_ms: int | None = None  # the exchange's clock at its latest answer

        def judged_now() -> int:
            """The earlier of our clock and the exchange's: a candle open by either is not closed yet."""
            return ours_ms if theirs_ms is None else min(ours_ms, theirs_ms)

        cursor = 0 if start_ms is None else start_ms
        try:
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
                seen = self._exchange_clock_ms()
                if seen is not None:
                    theirs_ms = seen if theirs_ms is None else max(theirs_ms, seen)
                report.pages += 1
                fresh = [r for r in page or [] if r and r[0] is not None and int(r[0]) >= since]
                if not fresh:
                    break  # nothing at or after the cursor: the exchange has no newer candles
                for r in fresh:
                    rows[int(r[0])] = list(r)
                newest = max(int(r[0]) for r in fresh)
                if newest + step > judged_now():
                    break  # reached the still-open candle: nothing closed can follow
                cursor = newest + step  # strictly after `since`, so the loop always advances
        except CcxtSourceError as exc:
            # keep what the complete pages brought: the caller may store it and continue from there
            try:
                exc.partial = self._frame(market, self._closed(rows, start_ms, end_ms, judged_now(), step, None))[0]
            except CandleValidationError:
                exc.partial = None
            exc.report = report
            raise

        now_ms = judged_now()
        if theirs_ms is not None:
            report.exchange_time = ms_to_datetime(theirs_ms)
            if ours_ms - theirs_ms > 60_000:
                report.notes.append(
                    f"{self.exchange_id}'s clock ({_fmt(theirs_ms)}) is {(ours_ms - theirs_ms) / 60_000:.0f} min "
                    f"behind ours ({_fmt(ours_ms)}): candles were judged closed by its clock"
                )
        kept = self._closed(rows, start_ms, end_ms, now_ms, step, report)
        self._note_gaps(report, kept, start_ms, end_ms, now_ms, step)
        for note in report.notes:
            log.warning("%s %s: %s", self.exchange_id, market.symbol, note)

        frame, report.validation = self._frame(market, kept)
        report.rows = frame.height
        if not report.complete and self.require_complete:
            raise IncompleteHistoryError("; ".join(report.notes))
        return frame, report

    @staticmethod
    def _closed(rows: dict[int, list[Any]], start_ms: int | None, end_ms: int, now_ms: int, step: int,
                report: FetchReport | None) -> list[list[Any]]:
        """The rows of closed candles in [start, end), oldest first. A candle the exchange served a later one after
        is closed; the newest is closed only once its close time has passed by `now_ms` (the earlier of our clock
        and the exchange's), else it is the open candle and dropped (counted in `report`)."""
        newest = max(rows, default=None)
        kept: list[list[Any]] = []
        for ts in sorted(rows):
            if ts == newest and ts + step > now_ms:
                if report is not None:
                    report.dropped_open += 1
            elif (start_ms is None or ts >= start_ms) and ts < end_ms:
                kept.append(rows[ts])
        return kept

    def _frame(self, market: Market, kept: list[list[Any]]) -> tuple[pl.DataFrame, ValidationReport | None]:
        """Validated candles from closed rows, and the validation report (None when there were none)."""
        if not kept:
            return empty_candles(), None
        raw = pl.DataFrame(
            [r[:6] for r in kept],
            schema={"timestamp": pl.Int64, **{c: pl.Float64 for c in list(CANDLE_SCHEMA)[1:]}},
            orient="row",
        )
        try:
            return validate_candles(raw, market.timeframe, repair=True)
        except CandleValidationError as exc:
            raise CandleValidationError(
                [f"{market} from {self.exchange_id}: {p}" for p in exc.problems], exc.timeframe, exc.rows
            ) from None

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


__all__ = [
    "CcxtSource",
    "CcxtSourceError",
    "ExchangeUnavailableError",
    "FetchReport",
    "IncompleteHistoryError",
    "IngestResult",
    "credential_env_var",
    "fetch_incremental",
]
