"""Long-format price files (`date,token,price_usd`) and a candle source over them.

The project's real data comes as point-in-time USD snapshots, one row per (time, token). Reading goes
through one function so the CSV and Parquet forms give identical frames and the same clear errors,
and `PriceFileSource` turns snapshots into candles so the shipped data flows through the same
validation, store and panel path as exchange data.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from quant_core.data.schema import (
    Market,
    format_minutes,
    timeframe_for_minutes,
    timeframe_minutes,
    to_utc,
)
from quant_core.data.validation import to_utc_ms, validate_candles
from quant_core.units import MS_PER_MINUTE

SHIPPED_PRICES_FILE = "real_daily_prices_2022_2024.csv"
LONG_PRICE_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("ms", "UTC"),
    "token": pl.String(),
    "price_usd": pl.Float64(),
}
_EXAMPLES = 3


class PriceFileError(ValueError):
    """A long-format price file that cannot be used as it is; the message names the fix."""


def shipped_prices_path() -> Path:
    """The daily BTC/ETH/USDC prices (2022-01-01..2024-12-29) shipped inside the package for demos and
    tests, so they work without the shared data folder."""
    return Path(__file__).resolve().parent / "shipped" / SHIPPED_PRICES_FILE


def _describe_rows(rows: pl.DataFrame, *, csv: bool) -> str:
    """'data row 7 (line 8): 2021-03-02 BTC price_usd=-1.0' for a few rows."""
    out = []
    for r in rows.head(_EXAMPLES).iter_rows(named=True):
        where = f"data row {r['_row']}" + (f" (line {r['_row'] + 1})" if csv else "")
        ts = r.get("timestamp")
        when = ts.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(ts, datetime) else repr(r.get("_time_raw"))
        out.append(f"{where}: {when} {r.get('token')!r} price_usd={r.get('price_usd')!r}")
    more = f" and {rows.height - _EXAMPLES} more" if rows.height > _EXAMPLES else ""
    return "; ".join(out) + more


_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def parse_utc_times(text: pl.Series) -> pl.Series:
    """ISO dates/timestamps (mixed forms allowed; no offset = UTC) as Datetime(ms, UTC); null where
    unreadable. Explicit formats, because format inference fails on a file's odd first row."""
    norm = text.str.strip_chars().str.replace(r"[zZ]$", "+00:00").str.replace(" ", "T", literal=True)
    parsed = [norm.str.to_datetime(f, time_unit="ms", time_zone="UTC", strict=False) for f in _AWARE_FORMATS]
    parsed += [
        norm.str.to_datetime(f, time_unit="ms", strict=False).dt.replace_time_zone("UTC") for f in _NAIVE_FORMATS
    ]
    frame = pl.DataFrame([p.alias(f"f{i}") for i, p in enumerate(parsed)])
    return frame.select(pl.coalesce(frame.columns).alias(text.name))[text.name]


def read_long_prices(path: str | Path, value_column: str = "price_usd", allow_zero: bool = False) -> pl.DataFrame:
    """Read a long price file: CSV `date,token,price_usd` or Parquet `timestamp,token,price_usd`.

    `value_column` reads another positive per-(time, token) series in the same layout (e.g.
    `market_cap_usd` for index pools, or `spread` with `allow_zero`, which may be 0); it is returned under the
    name `price_usd`.

    Times are UTC (naive values are taken as UTC; CSV dates may be plain dates or ISO timestamps).
    Returns `timestamp` (Datetime ms UTC), `token`, `price_usd` sorted by timestamp then token.
    Raises PriceFileError naming the missing column, the bad row, or the duplicate (timestamp, token).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"price file {path} does not exist")
    name = path.name.lower()
    csv = name.endswith((".csv", ".csv.gz"))
    try:
        if csv:
            raw = pl.read_csv(path, infer_schema=False, glob=False)  # a name may hold [ ] * ?
        elif name.endswith((".parquet", ".pq")):
            raw = pl.read_parquet(path, glob=False)  # a name may hold [ ] * ?
        else:
            raise PriceFileError(
                f"{path}: unknown price file type; use a .csv (date,token,price_usd) "
                "or .parquet (timestamp,token,price_usd) file"
            )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise PriceFileError(f"{path}: cannot read the file: {exc}") from exc

    time_col = "date" if "date" in raw.columns else "timestamp"
    missing = [c for c in (time_col, "token", value_column) if c not in raw.columns]
    if missing:
        expected = f"date,token,{value_column}" if csv else f"timestamp,token,{value_column}"
        names = ", ".join(repr(c) if c != time_col else "'date' (or 'timestamp')" for c in missing)
        raise PriceFileError(f"{path}: missing column {names}; found {raw.columns}, expected {expected}")

    df = raw.select(
        pl.col(time_col).alias("_time_raw"),
        pl.col("token").cast(pl.String).str.strip_chars(),
        pl.col(value_column).alias("_price_raw"),
    ).with_row_index("_row", offset=1)

    time_raw = df["_time_raw"]
    if time_raw.dtype == pl.String:
        ts = parse_utc_times(time_raw)
    else:
        ts, why = to_utc_ms(time_raw)
        if ts is None:
            raise PriceFileError(f"{path}: {why}")
    price_raw = df["_price_raw"]
    if price_raw.dtype == pl.String:
        price = price_raw.str.strip_chars().cast(pl.Float64, strict=False)
    elif price_raw.dtype.is_numeric():
        price = price_raw.cast(pl.Float64)
    else:
        raise PriceFileError(f"{path}: column {value_column!r} has dtype {price_raw.dtype}; expected numbers")
    df = df.with_columns(timestamp=ts.alias("timestamp"), price_usd=price.alias("price_usd"))

    def fail(mask: pl.Expr, what: str, fix: str) -> None:
        bad = df.filter(mask)
        if bad.height:
            raise PriceFileError(f"{path}: {bad.height} row(s) with {what}: {_describe_rows(bad, csv=csv)}; fix: {fix}")

    fail(
        pl.col("timestamp").is_null(),
        f"an unreadable or empty {time_col!r}",
        "write UTC dates like 2024-01-31 or ISO timestamps like 2024-01-31T00:00:00Z",
    )
    fail(
        pl.col("token").is_null() | (pl.col("token") == ""),
        "an empty 'token'",
        "give every row a token symbol",
    )
    fail(
        pl.col("price_usd").is_null() | ~pl.col("price_usd").is_finite(),
        f"a missing or non-numeric {value_column!r}",
        "drop those rows (missing days are reported as gaps) or correct the value",
    )
    if allow_zero:
        fail(pl.col("price_usd") < 0, f"a negative {value_column!r}", "values must be >= 0; correct or drop those rows")
    else:
        fail(pl.col("price_usd") <= 0, f"a non-positive {value_column!r}",
             "values must be > 0; correct or drop those rows")

    df = df.sort("timestamp", "token", "_row")
    dups = df.filter(repeated_pairs("timestamp", "token"))
    if dups.height:
        pairs = dups.unique(subset=["timestamp", "token"], maintain_order=True)
        examples = ", ".join(
            f"({t.strftime('%Y-%m-%dT%H:%M:%SZ')}, {tok!r})"
            for t, tok in pairs.head(_EXAMPLES).select("timestamp", "token").iter_rows()
        )
        raise PriceFileError(
            f"{path}: {pairs.height} duplicate (timestamp, token) pair(s) over {dups.height} rows, "
            f"e.g. {examples} (rows {dups['_row'].head(2 * _EXAMPLES).to_list()}); "
            "fix: keep exactly one price per token per time"
        )

    return df.select(pl.col(c).cast(t) for c, t in LONG_PRICE_SCHEMA.items()).rechunk()


def repeated_pairs(a: str, b: str) -> pl.Expr:
    """Rows whose (a, b) equals a neighbour's, in a frame sorted by (a, b): every member of a
    duplicate group, found in one pass (a struct `is_duplicated` hashes every row, far slower)."""
    same_prev = ((pl.col(a) == pl.col(a).shift(1)) & (pl.col(b) == pl.col(b).shift(1))).fill_null(False)
    return same_prev | same_prev.shift(-1).fill_null(False)


def infer_step_minutes(prices: pl.DataFrame) -> int:
    """The data's step: the median spacing between a token's consecutive timestamps, checked so
    that every spacing is a whole number of steps (an irregular file is an error, not a guess)."""
    diffs = (
        prices.select("token", "timestamp")
        .sort("token", "timestamp")
        .with_columns(d=pl.col("timestamp").dt.epoch("ms").diff().over("token"))
        .filter(pl.col("d").is_not_null())
    )
    if diffs.height == 0:
        raise PriceFileError("cannot infer the data's step: no token has two timestamps")
    median_ms = int(diffs["d"].median())  # type: ignore[arg-type]
    if median_ms <= 0 or median_ms % MS_PER_MINUTE:
        raise PriceFileError(
            f"the data's median spacing is {median_ms} ms, not a whole number of minutes; "
            "prices must be sampled on a regular minute grid"
        )
    step = median_ms // MS_PER_MINUTE
    odd = diffs.filter(pl.col("d") % median_ms != 0)
    if odd.height:
        examples = ", ".join(
            f"{tok} at {t.strftime('%Y-%m-%dT%H:%M:%SZ')}"
            for tok, t in odd.head(_EXAMPLES).select("token", "timestamp").iter_rows()
        )
        raise PriceFileError(
            f"{odd.height} spacing(s) are not whole multiples of the inferred step "
            f"{format_minutes(step)} (e.g. {examples}); fix: put every price on the same regular grid"
        )
    return step


class PriceFileSource:
    """A candle source over a long price file of point-in-time snapshots.

    The snapshot at t_i closes the candle that opened one timeframe earlier: open = the previous
    snapshot (when it is exactly one step earlier, else the close itself, as for the first snapshot),
    close = this snapshot, high/low = max/min of the two, volume 0. Missing snapshots stay missing.
    """

    def __init__(self, path: str | Path | None = None, exchange: str = "shipped", quote: str = "USD") -> None:
        Market(exchange, f"X/{quote}", "1d")  # validates exchange and quote with the market's rules
        self.path = Path(path) if path is not None else shipped_prices_path()
        self.exchange = exchange
        self.quote = quote
        self._prices: pl.DataFrame | None = None
        self._step: int | None = None

    def __repr__(self) -> str:
        return f"PriceFileSource({str(self.path)!r}, exchange={self.exchange!r}, quote={self.quote!r})"

    @property
    def prices(self) -> pl.DataFrame:
        """The file's long prices, read once."""
        if self._prices is None:
            self._prices = read_long_prices(self.path)
        return self._prices

    @property
    def step_minutes(self) -> int:
        """Spacing of the file's snapshots in minutes."""
        if self._step is None:
            self._step = infer_step_minutes(self.prices)
        return self._step

    @property
    def tokens(self) -> list[str]:
        """Tokens in the file, sorted."""
        return sorted(self.prices["token"].unique().to_list())

    def _check_timeframe(self, timeframe: str) -> None:
        minutes = timeframe_minutes(timeframe)
        if minutes != self.step_minutes:
            step = format_minutes(self.step_minutes)
            native = timeframe_for_minutes(self.step_minutes)
            hint = f"use timeframe {native!r}" if native else "resample the file to a known timeframe"
            raise ValueError(
                f"timeframe {timeframe!r} does not match {self.path.name}, which has one price every "
                f"{step}; snapshots only give candles of their own step - {hint}"
            )

    def markets(self, timeframe: str = "1d") -> list[Market]:
        """One market per token in the file, symbol 'TOKEN/quote'."""
        self._check_timeframe(timeframe)
        return [Market(self.exchange, f"{token}/{self.quote}", timeframe) for token in self.tokens]

    def fetch(self, market: Market, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        """Validated candles of `market` whose open time is in [start, end) (naive times are UTC)."""
        if market.exchange != self.exchange or market.quote != self.quote:
            raise ValueError(
                f"market {market.key} is not from this source, which serves exchange {self.exchange!r} "
                f"in quote {self.quote!r}; use one of source.markets()"
            )
        self._check_timeframe(market.timeframe)
        token = market.base
        if token not in self.tokens:
            raise ValueError(f"token {token!r} is not in {self.path}; it has: {', '.join(self.tokens)}")
        step = pl.duration(minutes=self.step_minutes)
        snaps = self.prices.filter(pl.col("token") == token).select("timestamp", "price_usd")
        contiguous = (pl.col("timestamp") - pl.col("timestamp").shift(1)) == step
        candles = snaps.select(
            (pl.col("timestamp") - step).alias("timestamp"),
            pl.when(contiguous.fill_null(False))
            .then(pl.col("price_usd").shift(1))
            .otherwise(pl.col("price_usd"))
            .alias("open"),
            pl.col("price_usd").alias("close"),
        ).select(
            "timestamp",
            "open",
            pl.max_horizontal("open", "close").alias("high"),
            pl.min_horizontal("open", "close").alias("low"),
            "close",
            pl.lit(0.0, dtype=pl.Float64).alias("volume"),
        )
        if start is not None:
            candles = candles.filter(pl.col("timestamp") >= to_utc(start))
        if end is not None:
            candles = candles.filter(pl.col("timestamp") < to_utc(end))
        frame, _ = validate_candles(candles, market.timeframe)
        return frame
