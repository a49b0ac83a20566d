"""Offline candle sources: Binance public-data kline files, generic candle CSV/Parquet and long price files.

Offline files are where history beyond an exchange API's reach comes from, and they are messy:
headerless or not, milli- or microsecond timestamps, column names of every spelling, overlapping
downloads. `import_candles` reads any mix of them, says per file what it read, repairs what cannot
change the market's story, drops (and counts) rows that are unusable, applies an explicit gap policy
and validates the result, so what reaches the store is exactly what the report says.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from quant_core.data.gaps import Gap, GapPolicy, apply_gap_policy, format_gap, infer_timeframe, resample_candles
from quant_core.data.price_file import PriceFileError, PriceFileSource, parse_utc_times
from quant_core.data.schema import (
    CANDLE_COLUMNS,
    CANDLE_SCHEMA,
    PRICE_COLUMNS,
    TIMEFRAME_MINUTES,
    Market,
    grid_offset_ms,
    timeframe_minutes,
    timeframe_ms,
)
from quant_core.data.validation import CandleValidationError, ValidationReport, to_utc_ms, validate_candles

FileFormat = Literal["binance", "candles", "long"]
TimeUnit = Literal["s", "ms", "us", "ns"]

BINANCE_KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)

# Accepted spellings per candle column, in order of preference (matched case-insensitively).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "time", "date", "open_time", "datetime", "ts", "opentime"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "price"),
    "volume": ("volume", "vol", "v"),
}

# Binance interval names -> this package's timeframes (the others, such as 3m or 1mo, are not modelled).
_BINANCE_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1mo",
)
_BINANCE_NAME_RE = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>" + "|".join(sorted(_BINANCE_INTERVALS, key=len, reverse=True)) + r")-",
)
_TEXT_SUFFIXES = (".csv", ".csv.gz", ".zip", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")
# Magnitude bands of epoch integers around today: seconds ~1.7e9, ms ~1.7e12, us ~1.7e15, ns ~1.7e18.
_UNIT_BANDS: tuple[tuple[float, TimeUnit], ...] = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))
_MS_PER_UNIT: dict[str, float] = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_EXAMPLES = 3


class CandleImportError(ValueError):
    """An input file or batch that cannot be imported as it is; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------- helpers


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*_TEXT_SUFFIXES, *_PARQUET_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _read_text_bytes(path: Path) -> bytes:
    """The CSV bytes of a .csv, .csv.gz or single-CSV .zip file (Binance ships one CSV per zip)."""
    if not path.exists():
        raise CandleImportError(f"{path}: file does not exist")
    suffix = _suffix(path)
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
                csvs = [m for m in members if m.lower().endswith(".csv")] or members
                if len(csvs) != 1:
                    raise CandleImportError(
                        f"{path}: expected exactly one CSV inside the zip, found {len(csvs)} ({csvs[:5]}); "
                        "fix: unzip it and import the CSV files individually"
                    )
                data = zf.read(csvs[0])
        elif suffix == ".csv.gz":
            data = gzip.decompress(path.read_bytes())
        else:
            data = path.read_bytes()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CandleImportError(f"{path}: cannot read the file: {exc}") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data


def _first_line(data: bytes) -> list[str]:
    line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    return [f.strip().strip('"').strip() for f in line.split(",")]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_format(path: str | Path) -> FileFormat:
    """Which reader a file needs, from its contents rather than its name (names lie, headers do not).

    Headerless numeric rows or an `open_time`+`close_time` header -> "binance"; a `token` + `price_usd`
    layout -> "long"; any other header -> "candles" (named columns).
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix in _PARQUET_SUFFIXES:
        try:
            names = [c.lower() for c in pl.read_parquet_schema(path)]
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise CandleImportError(f"{path}: cannot read the Parquet file: {exc}") from exc
        return "long" if {"token", "price_usd"} <= set(names) else "candles"
    if suffix not in _TEXT_SUFFIXES:
        raise CandleImportError(
            f"{path}: unknown file format {suffix or '(no suffix)'!r}; import .csv, .csv.gz, .zip "
            "(Binance klines) or .parquet files"
        )
    fields = _first_line(_read_text_bytes(path))
    if not fields or fields == [""]:
        raise CandleImportError(f"{path}: the file is empty")
    if _is_number(fields[0]):
        if len(fields) < 6:
            raise CandleImportError(
                f"{path}: headerless rows with {len(fields)} column(s); a headerless file must use the Binance "
                "kline layout (open_time, open, high, low, close, volume, ...) - otherwise add a header row"
            )
        return "binance"
    names = [f.lower() for f in fields]
    if "token" in names and "price_usd" in names:
        return "long"
    if names[0] == "open_time" and "close_time" in names:
        return "binance"
    return "candles"


def epoch_unit(values: pl.Series, *, what: str = "timestamp") -> TimeUnit:
    """The unit of epoch numbers from their magnitude (s, ms, us or ns around the present era).

    Every value must fall in the same band: a file mixing units is an error, not a guess.
    """
    present = values.drop_nulls()
    if present.dtype.is_float():
        present = present.filter(present.is_finite())
    if present.len() == 0:
        raise CandleImportError(f"no {what} values to read")

    def band(v: float) -> TimeUnit:
        for limit, unit in _UNIT_BANDS:
            if v < limit:
                return unit
        return "ns"

    lo, hi = band(float(present.abs().min())), band(float(present.abs().max()))  # type: ignore[arg-type]
    if lo != hi:
        raise CandleImportError(
            f"{what} values mix epoch units ({lo} and {hi} by magnitude); fix: convert them to one unit"
        )
    return lo


def _epoch_to_utc(values: pl.Series, unit: TimeUnit) -> pl.Series:
    """Epoch numbers in `unit` as Datetime(ms, UTC).

    A value that is not a whole millisecond becomes null (an unreadable time) rather than being
    truncated onto the grid, where it would pass for a real candle open time.
    """
    scale = {"s": 1000, "ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    if values.dtype.is_integer():
        v = values.cast(pl.Int64)
        if unit in ("s", "ms"):
            ms, whole = v * scale, pl.repeat(True, v.len(), eager=True)
        else:
            ms, whole = v // scale, v % scale == 0
    else:
        f = values.cast(pl.Float64)
        scaled = f * scale if unit in ("s", "ms") else f / scale
        rounded = scaled.round(0)
        ms, whole = rounded.cast(pl.Int64, strict=False), (scaled - rounded).abs() < 1e-6
    frame = pl.DataFrame({"ms": ms, "whole": whole.fill_null(False)})
    out = frame.select(pl.when(pl.col("whole")).then(pl.col("ms")).alias("ms"))["ms"]
    return pl.from_epoch(out, time_unit="ms").dt.replace_time_zone("UTC").alias("timestamp")


_NUMERIC_RE = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


def _times(column: pl.Series, unit: TimeUnit | None, where: str) -> tuple[pl.Series, TimeUnit | None]:
    """Any reasonable time column as Datetime(ms, UTC) (null where unreadable), plus the epoch unit used."""
    dtype = column.dtype
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        ts, why = to_utc_ms(column)
        if ts is None:
            raise CandleImportError(f"{where}: {why}")
        return ts.alias("timestamp"), None
    if dtype == pl.String:
        present = column.drop_nulls().str.strip_chars()
        present = present.filter(present != "")
        if present.len() and bool(present.str.contains(_NUMERIC_RE).all()):
            numbers = column.str.strip_chars().cast(pl.Float64, strict=False)
            if bool(present.str.contains(r"^\s*[+-]?\d+\s*$").all()):
                numbers = column.str.strip_chars().cast(pl.Int64, strict=False)
            column, dtype = numbers, numbers.dtype
        else:
            return parse_utc_times(column).alias("timestamp"), None
    if dtype.is_numeric():
        try:
            used = unit or epoch_unit(column)
        except CandleImportError as exc:
            raise CandleImportError(f"{where}: {exc}") from None
        return _epoch_to_utc(column, used), used
    raise CandleImportError(
        f"{where}: the time column has dtype {dtype}; expected ISO times, epoch numbers or datetimes"
    )


def _numbers(column: pl.Series, name: str, where: str) -> pl.Series:
    """A price/volume column as Float64; unreadable text becomes null (and is rejected, with a count)."""
    if column.dtype == pl.String:
        return column.str.strip_chars().cast(pl.Float64, strict=False).alias(name)
    if column.dtype.is_numeric() or column.dtype == pl.Null:
        return column.cast(pl.Float64).alias(name)
    raise CandleImportError(f"{where}: column {column.name!r} ({name}) has dtype {column.dtype}; expected numbers")


def _as_schema(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items())


# ---------------------------------------------------------------------------------------------- Binance


def binance_file_info(path: str | Path) -> tuple[str | None, str | None]:
    """(symbol, timeframe) from a Binance public-data file name such as 'BTCUSDT-1h-2024-01.zip'.

    (None, None) when the name does not follow that pattern; raises for a Binance interval this package
    does not model (3m, 2h, 1mo, ...), since guessing a different timeframe would corrupt the grid.
    """
    m = _BINANCE_NAME_RE.match(Path(path).name)
    if not m:
        return None, None
    interval = m.group("interval")
    if interval not in TIMEFRAME_MINUTES:
        raise CandleImportError(
            f"{path}: Binance interval {interval!r} is not a supported timeframe; download one of "
            + ", ".join(TIMEFRAME_MINUTES)
            + " (or import a finer one with resample_to=...)"
        )
    return m.group("symbol"), interval


def _read_binance(path: Path) -> tuple[pl.DataFrame, TimeUnit, str | None]:
    """Binance klines as (candles, epoch unit of the file, timeframe implied by close_time - open_time)."""
    data = _read_text_bytes(path)
    fields = _first_line(data)
    header = not _is_number(fields[0])
    n = len(fields)
    if n < 6:
        raise CandleImportError(f"{path}: {n} column(s); Binance klines have 12 (open_time, open, ..., ignore)")
    names = list(BINANCE_KLINE_COLUMNS[:n]) + [f"extra_{i}" for i in range(n - len(BINANCE_KLINE_COLUMNS))]
    try:
        raw = pl.read_csv(io.BytesIO(data), has_header=header, new_columns=names, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise CandleImportError(f"{path}: cannot parse the kline CSV: {exc}") from exc
    where = str(path)
    open_time = raw["open_time"].str.strip_chars().cast(pl.Int64, strict=False)
    try:
        unit = epoch_unit(open_time, what="open_time")
    except CandleImportError as exc:
        raise CandleImportError(f"{where}: {exc}") from None
    if unit not in ("ms", "us"):
        raise CandleImportError(
            f"{where}: open_time values look like epoch {unit}; Binance klines use milliseconds (before 2025) "
            "or microseconds (2025 on) - is this a Binance kline file?"
        )
    frame = pl.DataFrame([_epoch_to_utc(open_time, unit)] + [_numbers(raw[c], c, where) for c in CANDLE_COLUMNS[1:]])
    frame = _as_schema(frame)
    implied: str | None = None
    if "close_time" in raw.columns:
        close_time = raw["close_time"].str.strip_chars().cast(pl.Int64, strict=False)
        span = (close_time - open_time).drop_nulls()
        if span.len():
            per_ms = 1 if unit == "ms" else 1000
            # close_time is the last instant of the candle: open + step - 1 unit.
            step_ms = (int(span.median()) + 1) / per_ms  # type: ignore[arg-type]
            minutes = step_ms / 60_000
            implied = next((tf for tf, m in TIMEFRAME_MINUTES.items() if abs(m - minutes) < 1e-9), None)
    return frame, unit, implied


def read_binance_klines(path: str | Path) -> pl.DataFrame:
    """Candles from a Binance public-data kline file (a CSV inside a ZIP, or the bare CSV).

    Headerless or with a header row; open times in milliseconds (files before 2025) or microseconds
    (2025 on), detected per file from their magnitude. Returns the candle columns in CANDLE_SCHEMA
    (timestamp = open time, ms UTC), unvalidated and in file order: `import_candles` validates.
    The timeframe is in the file name (`binance_file_info`) or the spacing (`infer_timeframe`).
    """
    frame, _, _ = _read_binance(Path(path))
    return frame


# ---------------------------------------------------------------------------------------------- generic


def _resolve_columns(names: list[str], overrides: Mapping[str, str], where: str) -> dict[str, str]:
    """Map each candle column to a file column: an explicit override, else the first alias present."""
    lower = {}
    for n in names:
        lower.setdefault(n.lower().strip(), n)
    found: dict[str, str] = {}
    missing: list[str] = []
    for role, aliases in COLUMN_ALIASES.items():
        if role in overrides:
            wanted = overrides[role]
            actual = wanted if wanted in names else lower.get(wanted.lower())
            if actual is None:
                raise CandleImportError(
                    f"{where}: column {wanted!r} (given for {role}) is not in the file; found {names}"
                )
            found[role] = actual
            continue
        hit = next((lower[a] for a in aliases if a in lower and lower[a] not in found.values()), None)
        if hit is None:
            missing.append(role)
        else:
            found[role] = hit
    if missing:
        details = "; ".join(f"{r}: one of {', '.join(COLUMN_ALIASES[r])}" for r in missing)
        raise CandleImportError(
            f"{where}: missing the {', '.join(missing)} column(s) (accepted names, any case - {details}); "
            f"found {names}; fix: rename the column(s) or pass columns={{'{missing[0]}': 'your_column'}}"
        )
    return found


def read_candle_file(
    path: str | Path,
    *,
    timestamp_col: str | None = None,
    columns: Mapping[str, str] | None = None,
    time_unit: TimeUnit | None = None,
    token: str | None = None,
) -> pl.DataFrame:
    """Candles from a CSV (optionally .gz/.zip) or Parquet file with named columns.

    Columns are found by common aliases (COLUMN_ALIASES, case-insensitive) or named explicitly with
    `timestamp_col` / `columns={'close': 'last_price', ...}`. Times may be ISO strings (no offset =
    UTC), datetimes, dates, or epoch s/ms/us/ns numbers (unit from magnitude unless `time_unit`). A
    file with a `token`/`symbol` column holding several markets needs `token=` to pick one.
    Returns CANDLE_SCHEMA columns, unvalidated; unreadable times or numbers are null (import rejects them).
    """
    return _read_candle_file(Path(path), timestamp_col, columns, time_unit, token)[0]


def _read_candle_file(
    path: Path,
    timestamp_col: str | None,
    columns: Mapping[str, str] | None,
    time_unit: TimeUnit | None,
    token: str | None,
) -> tuple[pl.DataFrame, TimeUnit | None]:
    where = str(path)
    try:
        if _suffix(path) in _PARQUET_SUFFIXES:
            if not path.exists():
                raise CandleImportError(f"{path}: file does not exist")
            raw = pl.read_parquet(path)
        else:
            raw = pl.read_csv(io.BytesIO(_read_text_bytes(path)), infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise CandleImportError(f"{where}: cannot read the file: {exc}") from exc
    overrides = dict(columns or {})
    if timestamp_col is not None:
        overrides["timestamp"] = timestamp_col
    unknown = set(overrides) - set(COLUMN_ALIASES)
    if unknown:
        raise CandleImportError(f"columns= keys must be among {list(COLUMN_ALIASES)}, got {sorted(unknown)}")
    mapping = _resolve_columns(raw.columns, overrides, where)

    market_col = next((c for c in raw.columns if c.lower() in ("token", "symbol")), None)
    if market_col is not None:
        values = raw[market_col].cast(pl.String).str.strip_chars()
        distinct = sorted(values.drop_nulls().unique().to_list())
        if token is not None:
            raw = raw.filter(values == token)
            if raw.height == 0:
                raise CandleImportError(f"{where}: no rows for {market_col} {token!r}; the file has {distinct}")
        elif len(distinct) > 1:
            raise CandleImportError(
                f"{where}: the {market_col!r} column holds {len(distinct)} markets ({distinct[:10]}); "
                "fix: pass token= to pick one"
            )
    ts, unit = _times(raw[mapping["timestamp"]], time_unit, where)
    frame = pl.DataFrame([ts] + [_numbers(raw[mapping[c]], c, where) for c in CANDLE_COLUMNS[1:]])
    return _as_schema(frame), unit


# ---------------------------------------------------------------------------------------------- long


def _read_long(path: Path, token: str | None, timeframe: str | None) -> tuple[pl.DataFrame, str]:
    """Candles of one token from a `date,token,price_usd` file, through PriceFileSource (snapshot ->
    candle rules live there only). Returns (validated candles, the file's timeframe)."""
    source = PriceFileSource(path)
    try:
        tokens = source.tokens
        if token is None:
            if len(tokens) != 1:
                raise CandleImportError(f"{path}: long price file with tokens {tokens}; fix: pass token= to pick one")
            token = tokens[0]
        elif token not in tokens:
            raise CandleImportError(f"{path}: token {token!r} is not in the file; it has {tokens}")
        native = next((tf for tf, m in TIMEFRAME_MINUTES.items() if m == source.step_minutes), None)
        if native is None:
            raise CandleImportError(
                f"{path}: prices every {source.step_minutes} min, which is no supported timeframe; "
                "fix: sample the prices on one of " + ", ".join(TIMEFRAME_MINUTES)
            )
        if timeframe is not None and timeframe != native:
            raise CandleImportError(
                f"{path}: holds {native} prices but timeframe={timeframe!r} was asked; "
                f"fix: import with timeframe={native!r} (and resample_to={timeframe!r} if coarser)"
            )
        frame = source.fetch(Market(source.exchange, f"{token}/{source.quote}", native))
    except (PriceFileError, CandleValidationError) as exc:
        raise CandleImportError(f"{path}: {exc}") from exc
    return frame, native


# ---------------------------------------------------------------------------------------------- import


@dataclass
class ImportedFile:
    """What was read from one file, before rejection and repair."""

    path: str
    format: FileFormat
    rows: int
    first: datetime | None
    last: datetime | None
    timeframe: str
    time_unit: str | None = None

    def describe(self) -> str:
        unit = f", {self.time_unit} timestamps" if self.time_unit else ""
        span = f", {_fmt(self.first)} .. {_fmt(self.last)}" if self.first else ""
        return f"{Path(self.path).name} ({self.format} {self.timeframe}{unit}): {self.rows} row(s){span}"


@dataclass
class ImportResult:
    """Imported candles and the account of how they were made: read, rejected, repaired, filled.

    `rejected` counts dropped rows per reason (unreadable_timestamp, missing_value, non_positive_price,
    negative_volume, off_grid) with one example-bearing line each in `rejected_notes`; `repaired` is
    validation's count per repair (sorted, exact_duplicates_dropped, high_widened, low_widened);
    `filled_gaps` lists the gaps the policy filled with flat zero-volume candles; `gaps` the ones left.
    """

    candles: pl.DataFrame
    timeframe: str
    source_timeframe: str
    files: list[ImportedFile]
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_notes: list[str] = field(default_factory=list)
    repaired: dict[str, int] = field(default_factory=dict)
    filled_gaps: list[Gap] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    validation: ValidationReport | None = None

    @property
    def rows_read(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def filled_candles(self) -> int:
        return sum(n for _, _, n in self.filled_gaps)

    def report(self) -> str:
        """The human-readable account, for the CLI and logs."""
        c = self.candles
        span = f" from {_fmt(c['timestamp'][0])} to {_fmt(c['timestamp'][-1])}" if c.height else ""
        resampled = f" (resampled from {self.source_timeframe})" if self.source_timeframe != self.timeframe else ""
        lines = [f"imported {c.height} {self.timeframe} candle(s){resampled}{span} from {len(self.files)} file(s)"]
        lines.append(f"read {self.rows_read} row(s):")
        lines += [f"  - {f.describe()}" for f in self.files]
        if self.rejected:
            lines.append(f"rejected {self.rows_rejected} row(s):")
            lines += [f"  - {note}" for note in self.rejected_notes]
        else:
            lines.append("rejected: nothing")
        if self.repaired:
            lines.append("repaired:")
            lines += [f"  - {key}: {n}" for key, n in self.repaired.items()]
        else:
            lines.append("repaired: nothing")
        if self.filled_gaps:
            lines.append(
                f"filled {len(self.filled_gaps)} gap(s) ({self.filled_candles} flat zero-volume candle(s)): "
                + "; ".join(format_gap(g) for g in self.filled_gaps[:10])
                + (" ..." if len(self.filled_gaps) > 10 else "")
            )
        if self.gaps:
            lines.append(
                f"left {len(self.gaps)} gap(s) missing: "
                + "; ".join(format_gap(g) for g in self.gaps[:10])
                + (" ..." if len(self.gaps) > 10 else "")
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def as_metadata(self) -> dict[str, Any]:
        """JSON-safe summary, for asset metadata."""

        def gaps(gs: list[Gap]) -> list[list[Any]]:
            return [[s.isoformat(), e.isoformat(), n] for s, e, n in gs[:20]]

        return {
            "timeframe": self.timeframe,
            "source_timeframe": self.source_timeframe,
            "rows": self.candles.height,
            "files": [
                {"path": f.path, "format": f.format, "rows": f.rows, "timeframe": f.timeframe, "time_unit": f.time_unit}
                for f in self.files
            ],
            "rows_read": self.rows_read,
            "rejected": dict(self.rejected),
            "rejected_notes": list(self.rejected_notes),
            "repaired": dict(self.repaired),
            "filled_gaps": gaps(self.filled_gaps),
            "filled_candles": self.filled_candles,
            "gaps": gaps(self.gaps),
        }


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%MZ") if value is not None else "-"


def _expand(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files to import: the given ones, with a directory standing for its candle-looking files."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file() and not f.name.startswith(".") and _suffix(f) in (*_TEXT_SUFFIXES, *_PARQUET_SUFFIXES)
            )
            if not found:
                raise CandleImportError(f"{p}: directory has no .csv, .csv.gz, .zip or .parquet files")
            out += found
        elif not p.exists():
            raise CandleImportError(f"{p}: file does not exist")
        else:
            out.append(p)
    if not out:
        raise CandleImportError("no files given to import")
    return out


def _examples(ts: pl.Series) -> str:
    values = [v for v in ts.head(_EXAMPLES).to_list() if v is not None]
    return ", ".join(_fmt(v) for v in values) if values else "time unreadable"


def _reject(frame: pl.DataFrame, timeframe: str) -> tuple[pl.DataFrame, dict[str, int], list[str]]:
    """Drop the rows validation would refuse and no repair can save, counting each by its first reason."""
    step, offset = timeframe_ms(timeframe), grid_offset_ms(timeframe)
    values = CANDLE_COLUMNS[1:]
    finite = pl.all_horizontal([pl.col(c).is_not_null() & pl.col(c).is_finite() for c in values])
    rules: list[tuple[str, pl.Expr, str]] = [
        (
            "unreadable_timestamp",
            pl.col("timestamp").is_null(),
            "with an unreadable or missing timestamp (or one finer than a millisecond)",
        ),
        ("missing_value", ~finite, "with a missing, non-numeric, NaN or infinite price/volume"),
        ("non_positive_price", pl.min_horizontal(*PRICE_COLUMNS) <= 0, "with a non-positive price"),
        ("negative_volume", pl.col("volume") < 0, "with negative volume"),
        (
            "off_grid",
            (pl.col("timestamp").dt.epoch("ms") - offset) % step != 0,
            f"with a timestamp off the {timeframe} grid (not a candle open time)",
        ),
    ]
    counts: dict[str, int] = {}
    notes: list[str] = []
    for key, bad, desc in rules:
        mask = frame.select(bad.fill_null(False).alias("m"))["m"]
        n = int(mask.sum())
        if n:
            counts[key] = n
            notes.append(f"{n} row(s) {desc} (e.g. {_examples(frame.filter(mask)['timestamp'])})")
            frame = frame.filter(~mask)
    return frame, counts, notes


def _check_conflicts(frame: pl.DataFrame, files: list[Path]) -> None:
    """Fail on timestamps that carry different candles: only a person can say which one is right."""
    dup = frame.filter(pl.col("timestamp").is_duplicated())
    if dup.height == 0:
        return
    distinct = dup.unique(subset=list(CANDLE_COLUMNS), keep="first", maintain_order=True)
    conflicting = distinct.filter(pl.col("timestamp").is_duplicated())
    if conflicting.height == 0:
        return
    examples = []
    for (ts,), rows in conflicting.group_by(["timestamp"], maintain_order=True):
        names = sorted({files[i].name for i in rows["_src"].to_list()})
        examples.append(f"{_fmt(ts)} in {', '.join(names)}")  # type: ignore[arg-type]
        if len(examples) == _EXAMPLES:
            break
    n = conflicting["timestamp"].n_unique()
    raise CandleImportError(
        f"{n} timestamp(s) carry different candles (e.g. {'; '.join(examples)}); fix: the inputs disagree - "
        "drop the overlapping file or rows you do not trust and import again"
    )


def import_candles(
    paths: str | Path | Sequence[str | Path],
    *,
    timeframe: str | None = None,
    token: str | None = None,
    repair: bool = True,
    gap_policy: GapPolicy | None = None,
    resample_to: str | None = None,
    timestamp_col: str | None = None,
    columns: Mapping[str, str] | None = None,
    time_unit: TimeUnit | None = None,
) -> ImportResult:
    """Import candles of one market from offline files of any supported format, mixed freely.

    Each file's format is detected from its contents (`detect_format`) and its timeframe from
    `timeframe`, the Binance file name, close_time, the long file's step or the spacing; all files must
    agree. With `repair=True` unusable rows are dropped and counted (`ImportResult.rejected`) and
    harmless problems repaired (`repaired`); with `repair=False` any problem raises
    CandleValidationError. `gap_policy` (default: no filling, gaps fail) then decides about missing
    candles, and `resample_to` aggregates to a coarser timeframe. `token` picks one market from a long
    price file or a file with a token/symbol column. Raises CandleImportError (unknown format,
    unreadable file, mixed timeframes or symbols, conflicting duplicates), GapError.
    """
    policy = gap_policy if gap_policy is not None else GapPolicy()
    if timeframe is not None:
        timeframe_minutes(timeframe)
    if resample_to is not None:
        timeframe_minutes(resample_to)
    files = _expand(paths)
    frames: list[pl.DataFrame] = []
    read: list[ImportedFile] = []
    symbols: dict[str, list[str]] = {}
    for i, path in enumerate(files):
        fmt = detect_format(path)
        unit: str | None = None
        hint: str | None = None
        if fmt == "binance":
            frame, unit, hint = _read_binance(path)
            symbol, named = binance_file_info(path)
            if symbol is not None:
                symbols.setdefault(symbol, []).append(path.name)
            if named is not None:
                if hint is not None and hint != named:
                    raise CandleImportError(
                        f"{path}: the name says {named} but close_time - open_time says {hint}; fix: rename the file"
                    )
                hint = named
        elif fmt == "long":
            frame, hint = _read_long(path, token, timeframe)
        else:
            frame, unit = _read_candle_file(path, timestamp_col, columns, time_unit, token)
        present = frame["timestamp"].drop_nulls()
        spaced: str | None = None
        if present.n_unique() >= 2:
            try:
                spaced = infer_timeframe(present)
            except ValueError as exc:
                if hint is None and timeframe is None:
                    raise CandleImportError(f"{path}: {exc}") from None
        file_tf = hint or spaced
        if timeframe is not None and file_tf is not None and file_tf != timeframe:
            coarser = timeframe_minutes(timeframe) > timeframe_minutes(file_tf)
            fix = (
                f"import with timeframe={file_tf!r}, resample_to={timeframe!r}"
                if coarser
                else f"import with timeframe={file_tf!r}"
            )
            raise CandleImportError(
                f"{path}: holds {file_tf} candles but timeframe={timeframe!r} was asked; fix: {fix}"
            )
        file_tf = file_tf or timeframe
        if file_tf is None:
            raise CandleImportError(f"{path}: cannot tell the timeframe of a single candle; fix: pass timeframe=")
        read.append(
            ImportedFile(
                path=str(path),
                format=fmt,
                rows=frame.height,
                first=present.min() if present.len() else None,  # type: ignore[arg-type]
                last=present.max() if present.len() else None,  # type: ignore[arg-type]
                timeframe=file_tf,
                time_unit=unit,
            )
        )
        frames.append(frame.with_columns(pl.lit(i, dtype=pl.Int32).alias("_src")))

    tfs = {f.timeframe for f in read}
    if len(tfs) > 1:
        listing = "; ".join(f"{Path(f.path).name}: {f.timeframe}" for f in read)
        raise CandleImportError(
            f"the files hold different timeframes ({listing}); fix: import each timeframe separately "
            "(resample_to= aggregates one import to a coarser timeframe)"
        )
    if len(symbols) > 1:
        listing = "; ".join(f"{s}: {', '.join(names)}" for s, names in symbols.items())
        raise CandleImportError(f"the files hold different symbols ({listing}); fix: import one market at a time")
    tf = tfs.pop()
    combined = pl.concat(frames, how="vertical_relaxed")

    rejected: dict[str, int] = {}
    notes: list[str] = []
    if repair:
        combined, rejected, notes = _reject(combined, tf)
        _check_conflicts(combined, files)
    if combined.height == 0:
        raise CandleImportError(
            f"no usable candles in {len(files)} file(s)" + (f": {'; '.join(notes)}" if notes else "")
        )
    candles, first_report = validate_candles(combined.drop("_src"), tf, repair=repair)
    candles, filled, left = apply_gap_policy(candles, tf, policy)
    candles, report = validate_candles(candles, tf)
    out_tf = tf
    if resample_to is not None and resample_to != tf:
        candles = resample_candles(candles, resample_to, source_timeframe=tf)
        if candles.height == 0:
            raise CandleImportError(
                f"no complete {resample_to} candle in the imported {tf} data ({report.rows} rows); import a longer span"
            )
        candles, report = validate_candles(candles, resample_to)
        out_tf = resample_to
    return ImportResult(
        candles=candles,
        timeframe=out_tf,
        source_timeframe=tf,
        files=read,
        rejected=rejected,
        rejected_notes=notes,
        repaired=dict(first_report.repaired),
        filled_gaps=filled,
        gaps=left,
        validation=report,
    )


__all__ = [
    "BINANCE_KLINE_COLUMNS",
    "COLUMN_ALIASES",
    "CandleImportError",
    "ImportResult",
    "ImportedFile",
    "binance_file_info",
    "detect_format",
    "epoch_unit",
    "import_candles",
    "read_binance_klines",
    "read_candle_file",
]
