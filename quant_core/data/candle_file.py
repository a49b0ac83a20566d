"""Named-column candle files: CSV (optionally .gz/.zip) or Parquet with timestamp/open/high/low/close/volume.

Column names come in every spelling; this module maps them onto the candle columns by alias or
explicit override, picks one market from a token/symbol column, and reads times and numbers.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from quant_core.data.import_files import (
    _PARQUET_SUFFIXES,
    LINE_COLUMN,
    CandleImportError,
    _read_text_bytes,
    _suffix,
)
from quant_core.data.import_values import TimeUnit, _as_schema, _numbers, _times
from quant_core.data.schema import CANDLE_COLUMNS

# Accepted spellings per candle column, in order of preference (matched case-insensitively).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "time", "date", "open_time", "datetime", "ts", "opentime"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "price"),
    "volume": ("volume", "vol", "v"),
}


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
    max_unpacked_bytes: int | None = None,
) -> pl.DataFrame:
    """Candles from a CSV (optionally .gz/.zip) or Parquet file with named columns.

    Columns are found by common aliases (COLUMN_ALIASES, case-insensitive) or named explicitly with
    `timestamp_col` / `columns={'close': 'last_price', ...}`. Times may be ISO strings (no offset =
    UTC), datetimes, dates, or epoch s/ms/us/ns numbers (unit from magnitude unless `time_unit`). A
    file with a `token`/`symbol` column holding several markets needs `token=` to pick one.
    Returns CANDLE_SCHEMA columns, unvalidated; unreadable times or numbers are null (import rejects them).
    A compressed file may unpack to at most `max_unpacked_bytes` (default import_files.MAX_UNPACKED_BYTES).
    """
    frame, _ = _read_candle_file(Path(path), timestamp_col, columns, time_unit, token, max_unpacked_bytes)
    return frame.drop(LINE_COLUMN)


def _read_candle_file(
    path: Path,
    timestamp_col: str | None,
    columns: Mapping[str, str] | None,
    time_unit: TimeUnit | None,
    token: str | None,
    max_unpacked_bytes: int | None = None,
) -> tuple[pl.DataFrame, TimeUnit | None]:
    """(candles with their LINE_COLUMN, the epoch unit of the time column if numeric)."""
    where = str(path)
    parquet = _suffix(path) in _PARQUET_SUFFIXES
    try:
        if parquet:
            if not path.exists():
                raise CandleImportError(f"{path}: file does not exist")
            raw = pl.read_parquet(path, glob=False)  # a name may hold [ ] * ?
        else:
            raw = pl.read_csv(io.BytesIO(_read_text_bytes(path, max_unpacked_bytes)), infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise CandleImportError(f"{where}: cannot read the file: {exc}") from exc
    overrides = dict(columns or {})
    if timestamp_col is not None:
        overrides["timestamp"] = timestamp_col
    unknown = set(overrides) - set(COLUMN_ALIASES)
    if unknown:
        raise CandleImportError(f"columns= keys must be among {list(COLUMN_ALIASES)}, got {sorted(unknown)}")
    mapping = _resolve_columns(raw.columns, overrides, where)
    # Numbered before a token filter drops rows; a CSV's line 1 is its header.
    lines = pl.int_range(pl.len(), dtype=pl.Int64) + (1 if parquet else 2)
    raw = raw.with_columns(lines.alias(LINE_COLUMN))

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
    return _as_schema(frame).with_columns(raw[LINE_COLUMN]), unit
