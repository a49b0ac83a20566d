"""Circuit breakers evaluated once a day on a configuration's forward stream.

Why a pure function of arrays: a trader asking "why was this retired / paused?" must get the same answer from
the stored stream alone, so `read_breakers` reads no clock, file or database. The limits come from
`quant_core.lifecycle.DEFAULT_CIRCUIT_BREAKERS` (overridable per configuration; `check_limits` validates them).

Notation. r = the configuration's daily log returns over its forward days, oldest first, r[-1] = today;
b = its benchmark's (HODL of the pool's tokens; the market's buy-and-hold for a strategy); m = each market's
daily log returns over H days ending today (history before the forward start included); trades = closed
forward trades' returns as a fraction of notional; h = the configuration's daily log returns on its hold-out
window. A reading with value None (not enough data yet, or live-only) never trips.

Breaker (action; trips when)   value
------------------------------ ------------------------------------------------------------------------------
max_daily_loss                 today's loss as a fraction of the day's start value, max(0, -(exp(r[-1]) - 1)).
  (retire; value > limit)      Pool: value of its reserves; strategy: account equity.
consecutive_losses_limit       pools: the number of most recent forward days in a row with r < 0;
  (retire; value >= limit)     strategies: the same count over closed forward trades (return < 0).
unusual_market_threshold       max over markets of |m[-1]| / sigma, sigma = sample std (ddof=1) of that
  (pause; value > limit)       market's log returns over the 30 days before today (>= 10 needed, else None;
                               a market with sigma 0 is skipped).
regime_break_threshold         two-sample Kolmogorov-Smirnov D between the last (up to) 30 forward r and h
  (pause; value > limit)       (>= 20 forward days and >= 20 hold-out days, else None).
max_correlation_spike          pools (>= 2 markets): max over market pairs of the Pearson correlation over the
  (pause; value > limit)       trailing 14 days minus that over the up-to-90 days before them (>= 30 needed;
                               pairs with a zero std skipped). Strategies: corr(r, m) over the trailing 14
                               forward days minus corr(h, m) over the hold-out (nonzero std on both).
max_adverse_selection          pools: share of the trailing 20 forward days with r < b (the pool returned less
  (pause; value > limit)       than HODL: its loss to arbitrageurs that day); strategies: share of the last
                               20 closed forward trades with return < 0. >= 10 observations, else None.
latency_threshold_ms           not evaluated on the forward stream (value None): it limits live order latency
  (live_only; never here)      and is carried in the export for the trader.

Retire: the configuration leaves live trading for good. Pause: it stays live but the trader stands aside the
next day.

Strategy correlation baseline: the hold-out is taken to end the day before the forward start, so the market's
hold-out returns are the columns of m just before the forward days; the baseline uses the last
min(len(h), H - D) hold-out days (>= 14 needed, nonzero std on both).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from numbers import Real
from typing import Literal, get_args

import numpy as np

from quant_core.lifecycle import DEFAULT_CIRCUIT_BREAKERS

Action = Literal["retire", "pause", "live_only"]
ACTIONS: tuple[str, ...] = get_args(Action)

TRAILING_SIGMA_DAYS = 30
MIN_SIGMA_DAYS = 10
KS_FORWARD_DAYS = 30
KS_MIN_DAYS = 20
CORR_RECENT_DAYS = 14
CORR_BASELINE_DAYS = 90
CORR_MIN_BASELINE_DAYS = 30
ADVERSE_WINDOW = 20
ADVERSE_MIN_OBS = 10


@dataclass(frozen=True)
class Breaker:
    """One breaker's definition, worded for people (the CLI and UI print it)."""

    name: str
    action: Action
    unit: str
    definition: str
    pools: str
    strategies: str


BREAKERS: dict[str, Breaker] = {
    b.name: b
    for b in (
        Breaker(
            "max_daily_loss", "retire", "fraction of the day's start value",
            "Today's loss as a fraction of the value at the start of the day, max(0, 1 - exp(r_today)); "
            "trips when above the limit.",
            "value of the pool's reserves", "account equity",
        ),
        Breaker(
            "consecutive_losses_limit", "retire", "days (pools) / trades (strategies)",
            "The length of the most recent losing streak; trips when it reaches the limit.",
            "consecutive most recent forward days with a negative log return",
            "consecutive most recent closed forward trades with a negative return",
        ),
        Breaker(
            "unusual_market_threshold", "pause", "sigma",
            "The largest move today over the markets, in standard deviations of that market's daily log "
            "returns over the 30 days before today (at least 10 needed); trips when above the limit.",
            "every market of the pool", "the strategy's market",
        ),
        Breaker(
            "regime_break_threshold", "pause", "Kolmogorov-Smirnov statistic D (0 to 1)",
            "How far the last (up to) 30 forward daily log returns are distributed from the hold-out's: the "
            "two-sample KS statistic, with at least 20 days of each; trips when above the limit.",
            "the pool's daily log returns", "the strategy's daily log returns",
        ),
        Breaker(
            "max_correlation_spike", "pause", "increase in Pearson correlation (-2 to 2)",
            "How much a correlation rose over the trailing 14 days against its baseline; trips when the rise "
            "is above the limit.",
            "largest rise over market pairs, baseline the up-to-90 days before the 14 (at least 30 needed)",
            "the strategy's correlation with its market, baseline the hold-out",
        ),
        Breaker(
            "max_adverse_selection", "pause", "fraction of days (pools) / trades (strategies)",
            "The share of recent observations that went against the configuration, over the last 20 (at "
            "least 10 needed); trips when above the limit.",
            "days the pool returned less than HODL (its loss to arbitrageurs)",
            "closed forward trades with a negative return",
        ),
        Breaker(
            "latency_threshold_ms", "live_only", "milliseconds",
            "The largest acceptable order latency in live execution; not evaluated on the forward stream, "
            "carried in the export for the trader.",
            "live execution only", "live execution only",
        ),
    )
}


@dataclass(frozen=True)
class Reading:
    """One breaker's value today; `value` None means it could not be read (never trips)."""

    name: str
    value: float | None
    limit: float
    tripped: bool
    action: Action
    detail: str


@dataclass(frozen=True)
class ForwardStream:
    """A configuration's forward days and what the breakers compare them against (see the module docstring)."""

    kind: Literal["pool", "strategy"]
    log_returns: np.ndarray
    benchmark_log_returns: np.ndarray
    market_log_returns: np.ndarray
    trade_returns: np.ndarray
    holdout_log_returns: np.ndarray


def check_limits(limits: dict[str, float]) -> None:
    """Refuse unknown breaker names and limits that are not finite numbers >= 0 (the registry calls it at load)."""
    valid = ", ".join(BREAKERS)
    for name, value in limits.items():
        if name not in BREAKERS:
            close = difflib.get_close_matches(name, list(BREAKERS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown circuit breaker {name!r}{hint}; valid names: {valid}")
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: {value!r} must be a finite number >= 0")


def _vector(name: str, arr: np.ndarray, ndim: int = 1) -> np.ndarray:
    out = np.asarray(arr, dtype=float)
    if out.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: contains NaN or infinite values; returns must be finite")
    return out


def _validate(stream: ForwardStream) -> tuple[np.ndarray, ...]:
    if stream.kind not in ("pool", "strategy"):
        raise ValueError(f"kind: {stream.kind!r} must be 'pool' or 'strategy'")
    r = _vector("log_returns", stream.log_returns)
    b = _vector("benchmark_log_returns", stream.benchmark_log_returns)
    m = _vector("market_log_returns", stream.market_log_returns, ndim=2)
    trades = _vector("trade_returns", stream.trade_returns)
    h = _vector("holdout_log_returns", stream.holdout_log_returns)
    if b.shape != r.shape:
        raise ValueError(f"benchmark_log_returns: shape {b.shape} must match log_returns {r.shape}")
    if m.shape[0] < 1:
        raise ValueError("market_log_returns: needs at least one market (shape [M, H] with M >= 1)")
    if m.shape[1] < r.shape[0]:
        raise ValueError(f"market_log_returns: covers {m.shape[1]} days, fewer than the {r.shape[0]} forward days")
    if stream.kind == "strategy" and m.shape[0] != 1:
        raise ValueError(f"market_log_returns: a strategy trades one market, got {m.shape[0]}")
    if stream.kind == "pool" and trades.size:
        raise ValueError("trade_returns: pools have no closed trades; pass an empty array")
    return r, b, m, trades, h


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _lim_pct(x: float) -> str:
    return f"{x * 100:g}%"


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS D = sup |F_a - F_b|, evaluated at every pooled observation (the sup is attained there)."""
    a, b = np.sort(a), np.sort(b)
    pooled = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, pooled, side="right") / a.size
    cdf_b = np.searchsorted(b, pooled, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _corr(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation, None when either series is constant (undefined)."""
    if np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _trailing_streak(losses: np.ndarray) -> int:
    not_loss = np.flatnonzero(~losses)
    return int(losses.size if not_loss.size == 0 else losses.size - 1 - not_loss[-1])


def _daily_loss(r: np.ndarray) -> tuple[float | None, str]:
    if r.size == 0:
        return None, "needs 1 forward day, has 0"
    return max(0.0, float(-np.expm1(r[-1]))), ""


def _consecutive(kind: str, r: np.ndarray, trades: np.ndarray) -> tuple[float | None, str]:
    series, what = (r, "days") if kind == "pool" else (trades, "trades")
    n = _trailing_streak(series < 0)
    return float(n), f"losing {what} in a row"


def _unusual(m: np.ndarray) -> tuple[float | None, str]:
    past = m[:, max(0, m.shape[1] - 1 - TRAILING_SIGMA_DAYS): -1] if m.shape[1] else m
    if past.shape[1] < MIN_SIGMA_DAYS:
        return None, f"needs {MIN_SIGMA_DAYS} market days before today, has {past.shape[1]}"
    sigma = np.std(past, axis=1, ddof=1)
    ok = sigma > 0
    if not ok.any():
        return None, "every market was flat over the trailing window (sigma 0)"
    z = np.where(ok, np.abs(m[:, -1]) / np.where(ok, sigma, 1.0), -np.inf)
    i = int(np.argmax(z))
    return float(z[i]), f"largest move today (market {i}), sigma"


def _regime(r: np.ndarray, h: np.ndarray) -> tuple[float | None, str]:
    if r.size < KS_MIN_DAYS or h.size < KS_MIN_DAYS:
        return None, f"needs {KS_MIN_DAYS} forward and hold-out days, has {r.size} and {h.size}"
    recent = r[-KS_FORWARD_DAYS:]
    d = ks_statistic(recent, h)
    return d, f"KS D, last {recent.size} forward vs {h.size} hold-out days"


def _corr_pools(m: np.ndarray) -> tuple[float | None, str]:
    if m.shape[0] < 2:
        return None, "needs at least 2 markets"
    recent = m[:, -CORR_RECENT_DAYS:]
    base = m[:, max(0, m.shape[1] - CORR_RECENT_DAYS - CORR_BASELINE_DAYS): -CORR_RECENT_DAYS]
    if recent.shape[1] < CORR_RECENT_DAYS or base.shape[1] < CORR_MIN_BASELINE_DAYS:
        return None, (f"needs {CORR_RECENT_DAYS + CORR_MIN_BASELINE_DAYS} market days, has {m.shape[1]}")
    best: tuple[float, int, int] | None = None
    for i in range(m.shape[0]):
        for j in range(i + 1, m.shape[0]):
            now, then = _corr(recent[i], recent[j]), _corr(base[i], base[j])
            if now is None or then is None:
                continue
            if best is None or now - then > best[0]:
                best = (now - then, i, j)
    if best is None:
        return None, "every market pair had a flat window (std 0)"
    return best[0], f"correlation change, markets {best[1]} and {best[2]}"


def _corr_strategy(r: np.ndarray, m: np.ndarray, h: np.ndarray) -> tuple[float | None, str]:
    d = r.size
    if d < CORR_RECENT_DAYS:
        return None, f"needs {CORR_RECENT_DAYS} forward days, has {d}"
    now = _corr(r[-CORR_RECENT_DAYS:], m[0, -CORR_RECENT_DAYS:])
    if now is None:
        return None, f"flat strategy or market over the last {CORR_RECENT_DAYS} forward days (std 0)"
    n = min(h.size, m.shape[1] - d)
    if n < CORR_RECENT_DAYS:
        return None, f"needs {CORR_RECENT_DAYS} hold-out days with market history, has {n}"
    then = _corr(h[-n:], m[0, m.shape[1] - d - n: m.shape[1] - d])
    if then is None:
        return None, "flat strategy or market over the hold-out (std 0)"
    return now - then, f"correlation with the market {now:.2f} vs {then:.2f} on the hold-out, change"


def _adverse(kind: str, r: np.ndarray, b: np.ndarray, trades: np.ndarray) -> tuple[float | None, str]:
    if kind == "pool":
        against, what = (r < b)[-ADVERSE_WINDOW:], "days below HODL"
    else:
        against, what = (trades < 0)[-ADVERSE_WINDOW:], "losing trades"
    if against.size < ADVERSE_MIN_OBS:
        unit = "forward days" if kind == "pool" else "closed trades"
        return None, f"needs {ADVERSE_MIN_OBS} {unit}, has {against.size}"
    share = float(np.mean(against))
    return share, f"{int(against.sum())} of the last {against.size} were {what}"


def _describe(name: str, value: float, limit: float, trip: bool) -> str:
    """The comparison part of a detail, in the breaker's unit."""
    at_limit_trips = name == "consecutive_losses_limit"
    op = (">=" if trip else "<") if at_limit_trips else (">" if trip else "<=")
    if name in ("max_daily_loss", "max_adverse_selection"):
        return f"{_pct(value)} {op} {_lim_pct(limit)}"
    return f"{value:.4g} {op} {limit:g}"


def read_breakers(stream: ForwardStream, limits: dict[str, float]) -> dict[str, Reading]:
    """Every breaker's reading today, keyed like `BREAKERS`; see the module docstring for the definitions."""
    check_limits(limits)
    missing = [n for n in BREAKERS if n not in limits]
    if missing:
        fix = ", ".join(f"{n}={DEFAULT_CIRCUIT_BREAKERS[n]:g}" for n in missing)
        raise ValueError(f"limits: missing {', '.join(missing)}; add them (defaults: {fix})")
    r, b, m, trades, h = _validate(stream)
    pool = stream.kind == "pool"
    raw: dict[str, tuple[float | None, str]] = {
        "max_daily_loss": _daily_loss(r),
        "consecutive_losses_limit": _consecutive(stream.kind, r, trades),
        "unusual_market_threshold": _unusual(m),
        "regime_break_threshold": _regime(r, h),
        "max_correlation_spike": _corr_pools(m) if pool else _corr_strategy(r, m, h),
        "max_adverse_selection": _adverse(stream.kind, r, b, trades),
        "latency_threshold_ms": (None, "applies to live execution; carried in the export for the trader"),
    }
    out = {}
    for name, breaker in BREAKERS.items():
        value, why = raw[name]
        limit = float(limits[name])
        if value is None:
            out[name] = Reading(name, None, limit, False, breaker.action, why)
            continue
        trip = value >= limit if name == "consecutive_losses_limit" else value > limit
        detail = f"{why}: {_describe(name, value, limit, trip)}" if why else _describe(name, value, limit, trip)
        if name == "max_daily_loss":
            detail = f"day loss {detail}"
        out[name] = Reading(name, value, limit, trip, breaker.action, detail)
    return out


def tripped(readings: dict[str, Reading], action: Action) -> list[Reading]:
    """The readings that tripped with this action (e.g. every 'retire' trip), in breaker order."""
    if action not in ACTIONS:
        raise ValueError(f"action: {action!r} must be one of {', '.join(ACTIONS)}")
    return [r for r in readings.values() if r.tripped and r.action == action]
