"""Seeded synthetic candles: a market with regimes and jumps, for tests, demos and offline runs.

Real data is slow to get and cannot be ordered to misbehave; this generator can. Log prices follow a
geometric Brownian motion whose volatility and drift switch between Markov regimes (calm/volatile by
default, with per-candle switching probabilities derived from mean durations in days, so the regime
story is the same at any timeframe) plus compound-Poisson jumps. Intrabar highs and lows are drawn from
the exact distribution of a Brownian bridge's extremes, so they are consistent with open and close by
construction, and volume grows with the candle's range (wide candles and long wicks trade more).

Determinism: candle k (counted from the path's start) is generated from random draws keyed by
(seed, market key, k // BLOCK) only - a counter-based scheme - and the price/regime state carried from
the previous block. Any window of a path therefore has exactly the same values however it is requested,
which is what lets `SyntheticSource` serve repeated and incremental fetches that agree bit for bit.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import polars as pl

from quant_core.data.schema import (
    CANDLE_SCHEMA,
    Market,
    empty_candles,
    grid_offset_ms,
    timeframe_minutes,
    timeframe_ms,
    to_epoch_ms,
)
from quant_core.data.validation import validate_candles
from quant_core.units import MINUTES_PER_DAY

_MATH_EXP, _MATH_LOG = np.frompyfunc(math.exp, 1, 1), np.frompyfunc(math.log, 1, 1)


def _exp(x: np.ndarray) -> np.ndarray:
    """exp through the C library, element by element: numpy's own SIMD exp/log (used on CPUs with AVX-512)
    differ from it in the last bit for ~5 % of values, which made the same seed give different candles, and
    data hashes, on different machines. ~50 ns a value; the candles are the same wherever they are generated."""
    return _MATH_EXP(x).astype(np.float64)


def _log(x: np.ndarray) -> np.ndarray:
    return _MATH_LOG(x).astype(np.float64)

# Candles per block of random draws. Part of the determinism contract: changing it changes every path.
BLOCK = 4096
_MINUTES_PER_YEAR = 365 * MINUTES_PER_DAY  # crypto trades around the clock
_VOLUME_NOISE = 0.6  # lognormal spread of volume around its level (real 5m crypto volume: ~0.6-0.8)
_DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Regime:
    """One market regime: `vol_scale` multiplies the base annual volatility, `drift` (annual, log) is added
    to the base drift, and the market stays `mean_days` days on average before switching."""

    name: str
    vol_scale: float = 1.0
    drift: float = 0.0
    mean_days: float = 30.0

    def __post_init__(self) -> None:
        if not self.vol_scale > 0:
            raise ValueError(f"Regime {self.name!r}: vol_scale must be > 0, got {self.vol_scale}")
        if not self.mean_days > 0:
            raise ValueError(f"Regime {self.name!r}: mean_days must be > 0, got {self.mean_days}")


DEFAULT_REGIMES: tuple[Regime, ...] = (
    Regime("calm", vol_scale=0.7, drift=0.05, mean_days=45.0),
    Regime("volatile", vol_scale=1.8, drift=-0.10, mean_days=12.0),
)


@dataclass(frozen=True)
class SyntheticParams:
    """The generator's knobs. Volatilities and drifts are annual (log), `jump_intensity` is expected jumps
    per year, `jump_scale`/`jump_mean` the std/mean of a jump's log size, `base_volume` the volume of an
    average day. An empty `regimes` means one regime with the base volatility and drift."""

    start_price: float = 100.0
    annual_vol: float = 0.6
    drift: float = 0.0
    regimes: tuple[Regime, ...] = DEFAULT_REGIMES
    jump_intensity: float = 4.0
    jump_scale: float = 0.05
    jump_mean: float = 0.0
    base_volume: float = 1_000_000.0

    def __post_init__(self) -> None:
        for name in ("start_price", "annual_vol", "base_volume"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (self.jump_intensity >= 0 and self.jump_scale >= 0):
            raise ValueError("jump_intensity and jump_scale must be >= 0")
        object.__setattr__(self, "regimes", tuple(self.regimes) or (Regime("single"),))


@dataclass
class _PathGenerator:
    """One synthetic path at one timeframe: generates any range of candle indices [k0, k1) reproducibly.

    Keeps the (log price, regime) state at each block start it has passed, so later windows need not
    regenerate the history's values, only walk its states once.
    """

    params: SyntheticParams
    timeframe: str
    key: tuple[int, ...]
    _states: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        p = self.params
        minutes = timeframe_minutes(self.timeframe)
        self.dt = minutes / _MINUTES_PER_YEAR
        days = minutes / MINUTES_PER_DAY
        k = len(p.regimes)
        self.leave = np.array([1 - math.exp(-days / r.mean_days) if k > 1 else 0.0 for r in p.regimes])
        self.sigma = np.array([p.annual_vol * r.vol_scale for r in p.regimes])
        self.mu = np.array([p.drift + r.drift for r in p.regimes])
        self.volume_per_candle = p.base_volume * days
        if not self._states:
            # Regime before candle 0: drawn from the chain's stationary law (time share ~ mean duration).
            weights = np.array([r.mean_days for r in p.regimes])
            u = np.random.default_rng(np.random.SeedSequence([*self.key, 2**32 - 1])).random()
            first = int(np.searchsorted(np.cumsum(weights) / weights.sum(), u, side="right"))
            self._states.append((math.log(p.start_price), min(first, k - 1)))

    def _block(self, b: int) -> dict[str, np.ndarray]:
        """All values of block b, from its start state (which must already be known)."""
        p = self.params
        logp0, reg0 = self._states[b]
        rng = np.random.default_rng(np.random.SeedSequence([*self.key, b]))
        # Always the same draws in the same order: a block's values depend on (key, b) only.
        u_switch = rng.random(BLOCK)
        u_choice = rng.random(BLOCK)
        z = rng.standard_normal(BLOCK)
        n_jumps = rng.poisson(p.jump_intensity * self.dt, BLOCK)
        z_jump = rng.standard_normal(BLOCK)
        u_high = 1.0 - rng.random(BLOCK)  # (0, 1]: log() below stays finite
        u_low = 1.0 - rng.random(BLOCK)
        z_vol = rng.standard_normal(BLOCK)

        regime = self._regimes(reg0, u_switch, u_choice)
        sigma, mu = self.sigma[regime], self.mu[regime]
        diffusion = sigma * math.sqrt(self.dt)
        jumps = n_jumps * p.jump_mean + np.sqrt(n_jumps) * p.jump_scale * z_jump
        r = (mu - 0.5 * sigma**2) * self.dt + diffusion * z + jumps
        log_close = logp0 + np.cumsum(r)
        log_open = np.concatenate([[logp0], log_close[:-1]])
        # Exact law of the max/min of a Brownian bridge from 0 to r with variance diffusion^2:
        # always >= max(0, r) resp. <= min(0, r), so high/low cover open and close.
        spread = -2.0 * diffusion**2
        up = 0.5 * (r + np.sqrt(r**2 + spread * _log(u_high)))
        down = 0.5 * (r - np.sqrt(r**2 + spread * _log(u_low)))
        # volume follows the candle's range (high - low, in units of the base volatility): wide candles,
        # long wicks included, trade more, as on exchanges (mean range ~1.6, so the mean factor stays ~1)
        move = (up - down) / (p.annual_vol * math.sqrt(self.dt))
        volume = self.volume_per_candle * _exp(_VOLUME_NOISE * z_vol - 0.5 * _VOLUME_NOISE**2) * (0.25 + 0.5 * move)
        if len(self._states) == b + 1:
            self._states.append((float(log_close[-1]), int(regime[-1])))
        return {
            "log_open": log_open,
            "log_close": log_close,
            "log_high": log_open + up,
            "log_low": log_open + down,
            "volume": volume,
            "regime": regime,
        }

    def _regimes(self, start: int, u_switch: np.ndarray, u_choice: np.ndarray) -> np.ndarray:
        """The Markov chain over one block: at candle i the regime leaves with probability leave[state]
        (u_switch[i] < leave) to another regime picked uniformly by u_choice[i]; looped per switch."""
        k = len(self.leave)
        out = np.empty(BLOCK, dtype=np.int64)
        hits = [np.flatnonzero(u_switch < q) for q in self.leave]
        i, cur = 0, start
        while i < BLOCK:
            h = hits[cur]
            pos = int(np.searchsorted(h, i))
            if pos == len(h):
                out[i:] = cur
                break
            j = int(h[pos])
            out[i:j] = cur
            others = [s for s in range(k) if s != cur]
            cur = others[min(int(u_choice[j] * (k - 1)), k - 2)]
            out[j] = cur
            i = j + 1
        return out

    def generate(self, k0: int, k1: int) -> dict[str, np.ndarray]:
        """Values of candles k0 <= k < k1."""
        if k1 <= k0:
            return {name: np.empty(0) for name in ("log_open", "log_close", "log_high", "log_low", "volume", "regime")}
        b0, b1 = k0 // BLOCK, (k1 - 1) // BLOCK
        while len(self._states) <= b0:  # walk the history's states once; later calls reuse them
            self._block(len(self._states) - 1)
        blocks = [self._block(b) for b in range(b0, b1 + 1)]
        lo = k0 - b0 * BLOCK
        return {name: np.concatenate([blk[name] for blk in blocks])[lo : lo + (k1 - k0)] for name in blocks[0]}


def _frame(values: dict[str, np.ndarray], first_ms: int, step_ms: int, timeframe: str) -> pl.DataFrame:
    """Candles from generated values; validated so a generator bug can never pass for data."""
    n = len(values["log_close"])
    if n == 0:
        return empty_candles()
    open_ = _exp(values["log_open"])
    close = _exp(values["log_close"])
    # exp() rounding must not let high/low slip inside open/close.
    high = np.maximum(_exp(values["log_high"]), np.maximum(open_, close))
    low = np.minimum(_exp(values["log_low"]), np.minimum(open_, close))
    ts = pl.Series("timestamp", first_ms + np.arange(n, dtype=np.int64) * step_ms)
    frame = pl.DataFrame(
        {
            "timestamp": pl.from_epoch(ts, time_unit="ms").dt.replace_time_zone("UTC"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": values["volume"],
        },
        schema=CANDLE_SCHEMA,
    )
    validated, _ = validate_candles(frame, timeframe)
    return validated


def _grid_index(ms: int, timeframe: str, *, ceil: bool) -> int:
    """Index of the grid point at or after (ceil) / at or before ms, counted from the timeframe's grid origin."""
    step, offset = timeframe_ms(timeframe), grid_offset_ms(timeframe)
    return -((offset - ms) // step) if ceil else (ms - offset) // step


def _stable_hash(text: str) -> int:
    """A process-independent hash (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode())


TimeLike = datetime | date | str


def synthetic_candles(
    n_candles: int | None = None,
    timeframe: str = "1d",
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    seed: int = 0,
    start_price: float = 100.0,
    annual_vol: float = 0.6,
    drift: float = 0.0,
    regimes: Sequence[Regime] | None = DEFAULT_REGIMES,
    jump_intensity: float = 4.0,
    jump_scale: float = 0.05,
    jump_mean: float = 0.0,
    base_volume: float = 1_000_000.0,
    with_regime: bool = False,
) -> pl.DataFrame:
    """Seeded synthetic candles of any length and timeframe; the same arguments give the same frame.

    The span is `n_candles` from `start` (default 2024-01-01), `n_candles` ending before `end`, or every
    candle opening in [start, end); start is rounded up to the timeframe's grid. `regimes=None` (or ())
    means a single regime. Returns validated CANDLE_SCHEMA candles; `with_regime=True` adds the regime
    index per candle as an extra `regime` column (for inspecting the generator, not for storing).
    """
    step = timeframe_ms(timeframe)
    params = SyntheticParams(
        start_price=start_price,
        annual_vol=annual_vol,
        drift=drift,
        regimes=tuple(regimes or ()),
        jump_intensity=jump_intensity,
        jump_scale=jump_scale,
        jump_mean=jump_mean,
        base_volume=base_volume,
    )
    if n_candles is not None and (not isinstance(n_candles, int) or n_candles < 0):
        raise ValueError(f"n_candles must be an integer >= 0, got {n_candles!r}")
    if n_candles is not None and start is not None and end is not None:
        raise ValueError("give two of n_candles, start, end - not all three")
    if n_candles is None and (start is None or end is None):
        raise ValueError("give n_candles, or both start and end")
    if start is not None:
        k0 = _grid_index(to_epoch_ms(start), timeframe, ceil=True)
        n = n_candles if n_candles is not None else max(0, _grid_index(to_epoch_ms(end), timeframe, ceil=True) - k0)  # type: ignore[arg-type]
    elif end is not None:
        n = n_candles  # type: ignore[assignment]
        k0 = _grid_index(to_epoch_ms(end), timeframe, ceil=True) - n
    else:
        n = n_candles  # type: ignore[assignment]
        k0 = _grid_index(to_epoch_ms(_DEFAULT_START), timeframe, ceil=True)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    gen = _PathGenerator(params, timeframe, (seed, _stable_hash(f"synthetic_candles/{timeframe}")))
    values = gen.generate(0, n)
    frame = _frame(values, grid_offset_ms(timeframe) + k0 * step, step, timeframe)
    if with_regime:
        frame = frame.with_columns(regime=pl.Series(values["regime"], dtype=pl.Int8))
    return frame


DEFAULT_SYMBOLS: tuple[str, ...] = ("BTC/USD", "ETH/USD", "SOL/USD")
_DEFAULT_START_PRICES: dict[str, float] = {"BTC": 30_000.0, "ETH": 2_000.0, "SOL": 50.0}


class SyntheticSource:
    """A CandleSource of synthetic markets, deterministic per (market, seed, params).

    Each market's path starts at `origin` (its 'listing': nothing earlier exists) and candle k of it
    depends only on k, so overlapping or incremental fetches agree exactly. `fetch` without `end` serves
    the candles closed by now (or by the source's fixed `end`, for reproducible runs).
    """

    def __init__(
        self,
        seed: int = 0,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        *,
        exchange: str = "synthetic",
        origin: TimeLike = "2020-01-01",
        end: TimeLike | None = None,
        params: SyntheticParams | None = None,
        start_prices: Mapping[str, float] | None = None,
        shocks: Mapping[str, float] | None = None,
    ) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        for symbol in symbols:
            Market(exchange, symbol, "1d")  # validates exchange and symbols with the market's rules
        if not symbols:
            raise ValueError("SyntheticSource needs at least one symbol")
        self.seed = seed
        self.symbols = tuple(symbols)
        self.exchange = exchange
        self.origin_ms = to_epoch_ms(origin)
        self.end_ms = to_epoch_ms(end) if end is not None else None
        self.params = params or SyntheticParams()
        prices = dict(_DEFAULT_START_PRICES)
        prices.update(start_prices or {})
        self.start_prices = prices
        self.shocks = _check_shocks(shocks or {})
        self._paths: dict[str, _PathGenerator] = {}

    def __repr__(self) -> str:
        return f"SyntheticSource(seed={self.seed}, symbols={list(self.symbols)}, exchange={self.exchange!r})"

    def markets(self, timeframe: str = "1d") -> list[Market]:
        """One market per configured symbol."""
        return [Market(self.exchange, symbol, timeframe) for symbol in self.symbols]

    def _path(self, market: Market) -> _PathGenerator:
        gen = self._paths.get(market.key)
        if gen is None:
            start_price = self.start_prices.get(market.base, self.params.start_price)
            params = SyntheticParams(**{**self.params.__dict__, "start_price": start_price})
            gen = _PathGenerator(params, market.timeframe, (self.seed, _stable_hash(market.key)))
            self._paths[market.key] = gen
        return gen

    def fetch(self, market: Market, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        """Validated candles of `market` whose open time is in [start, end) (naive times are UTC)."""
        if market.exchange != self.exchange or market.symbol not in self.symbols:
            raise ValueError(
                f"market {market.key} is not from this source, which serves exchange {self.exchange!r} "
                f"symbols {list(self.symbols)}; use one of source.markets()"
            )
        tf, step = market.timeframe, timeframe_ms(market.timeframe)
        k_origin = _grid_index(self.origin_ms, tf, ceil=True)
        k0 = k_origin if start is None else max(k_origin, _grid_index(to_epoch_ms(start), tf, ceil=True))
        if end is not None:
            k1 = _grid_index(to_epoch_ms(end), tf, ceil=True)
        else:
            # Only closed candles: open + step <= now (or the fixed end).
            limit = self.end_ms if self.end_ms is not None else to_epoch_ms(datetime.now(UTC))
            k1 = _grid_index(limit, tf, ceil=False) if self.end_ms is None else _grid_index(limit, tf, ceil=True)
        if self.end_ms is not None:
            k1 = min(k1, _grid_index(self.end_ms, tf, ceil=True))
        if k1 <= k0:
            return empty_candles()
        values = self._path(market).generate(k0 - k_origin, k1 - k_origin)
        frame = _frame(values, grid_offset_ms(tf) + k0 * step, step, tf)
        return _apply_shocks(frame, self.shocks) if self.shocks else frame


def _check_shocks(shocks: Mapping[str, float]) -> dict[int, float]:
    """{UTC day: log jump} -> {day start ms: jump}; names the bad entry."""
    out = {}
    for day, jump in shocks.items():
        if not isinstance(jump, int | float) or isinstance(jump, bool) or not math.isfinite(jump):
            raise ValueError(f"shocks[{day!r}]: {jump!r} must be a finite log return (e.g. -0.3 for a 26% drop)")
        out[to_epoch_ms(str(day)) // 86_400_000 * 86_400_000] = float(jump)
    return out


def _apply_shocks(frame: pl.DataFrame, shocks: dict[int, float]) -> pl.DataFrame:
    """Planted events: a shock is a jump at its day's first candle; every price from then on is multiplied by
    exp(shock) (volume unchanged). Deterministic, so incremental fetches still agree."""
    ms = frame["timestamp"].dt.epoch("ms").to_numpy()
    factor = np.ones(len(ms))
    for start, jump in shocks.items():
        factor[ms >= start] *= math.exp(jump)
    scale = pl.Series(factor)
    return frame.with_columns([(pl.col(c) * scale).alias(c) for c in ("open", "high", "low", "close")])


__all__ = [
    "BLOCK",
    "DEFAULT_REGIMES",
    "DEFAULT_SYMBOLS",
    "Regime",
    "SyntheticParams",
    "SyntheticSource",
    "synthetic_candles",
]
