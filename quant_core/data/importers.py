"""Offline candle sources: Binance public-data kline files, generic candle CSV/Parquet and long price files.

Offline files are where history beyond an exchange API's reach comes from, and they are messy:
headerless or not, milli- or microsecond timestamps, column names of every spelling, overlapping
downloads. `import_candles` reads any mix of them, says per file what it read, repairs what cannot
change the market's story, drops (and counts) rows that are unusable, applies an explicit gap policy
and validates the result, so what reaches the store is exactly what the report says.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import polars as pl

from quant_core.data.binance_klines import (
    BINANCE_KLINE_COLUMNS,
    _read_binance,
    binance_file_info,
    read_binance_klines,
)
from quant_core.data.candle_file import COLUMN_ALIASES, _read_candle_file, read_candle_file
from quant_core.data.gaps import GapError, GapPolicy, apply_gap_policy, infer_timeframe, resample_candles
from quant_core.data.import_files import (
    _PARQUET_SUFFIXES,
    _TEXT_SUFFIXES,
    LINE_COLUMN,
    MAX_UNPACKED_BYTES,
    CandleImportError,
    _suffix,
    detect_format,
)
from quant_core.data.import_report import ImportedFile, ImportResult, _fmt
from quant_core.data.import_values import TimeUnit, epoch_unit
from quant_core.data.long_price_import import _read_long
from quant_core.data.schema import CANDLE_COLUMNS, PRICE_COLUMNS, grid_offset_ms, timeframe_minutes, timeframe_ms
from quant_core.data.validation import validate_candles

_EXAMPLES = 3


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


def _missing(v: float | None) -> bool:
    return v is None or not math.isfinite(v)


def _rows(rows: pl.DataFrame, files: list[Path], columns: Sequence[str], bad: Callable[[float | None], bool]) -> str:
    """'a.csv line 7 (2024-01-01T05:00Z): close=nan' for the first few rows: where a person finds the row in
    their file (line of a CSV, row of a Parquet file) and, for a value problem, the bad value and its column."""
    out = []
    for r in rows.head(_EXAMPLES).iter_rows(named=True):
        file, line = files[r["_src"]], r[LINE_COLUMN]
        unit = "row" if _suffix(file) in _PARQUET_SUFFIXES else "line"
        where = file.name if line is None else f"{file.name} {unit} {line}"
        when = f" ({_fmt(r['timestamp'])})" if r["timestamp"] is not None else ""
        values = ", ".join(
            f"{c}={'(missing or not a number)' if r[c] is None else repr(r[c])}" for c in columns if bad(r[c])
        )
        out.append(f"{where}{when}" + (f": {values}" if values else ""))
    more = f" and {rows.height - _EXAMPLES} more" if rows.height > _EXAMPLES else ""
    return "; ".join(out) + more


def _reject(
    frame: pl.DataFrame, timeframe: str, files: list[Path]
) -> tuple[pl.DataFrame, dict[str, int], list[str]]:
    """Drop the rows validation would refuse and no repair can save, counting each by its first reason and
    naming a few by file, line, time and bad value (a dropped row otherwise surfaces only as a gap)."""
    step, offset = timeframe_ms(timeframe), grid_offset_ms(timeframe)
    values = CANDLE_COLUMNS[1:]
    finite = pl.all_horizontal([pl.col(c).is_not_null() & pl.col(c).is_finite() for c in values])
    no_values: tuple[str, ...] = ()
    rules: list[tuple[str, pl.Expr, str, Sequence[str], Callable[[float | None], bool]]] = [
        (
            "unreadable_timestamp",
            pl.col("timestamp").is_null(),
            "with an unreadable or missing timestamp (or one finer than a millisecond)",
            no_values,
            _missing,
        ),
        ("missing_value", ~finite, "with a missing, non-numeric, NaN or infinite price/volume", values, _missing),
        ("non_positive_price", pl.min_horizontal(*PRICE_COLUMNS) <= 0, "with a non-positive price", PRICE_COLUMNS,
         lambda v: v is not None and v <= 0),
        ("negative_volume", pl.col("volume") < 0, "with negative volume", ("volume",),
         lambda v: v is not None and v < 0),
        (
            "off_grid",
            (pl.col("timestamp").dt.epoch("ms") - offset) % step != 0,
            f"with a timestamp off the {timeframe} grid (not a candle open time)",
            no_values,
            _missing,
        ),
    ]
    counts: dict[str, int] = {}
    notes: list[str] = []
    for key, bad, desc, columns, is_bad in rules:
        mask = frame.select(bad.fill_null(False).alias("m"))["m"]
        n = int(mask.sum())
        if n:
            counts[key] = n
            notes.append(f"{n} row(s) {desc}: {_rows(frame.filter(mask), files, columns, is_bad)}")
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
    max_unpacked_bytes: int | None = None,
) -> ImportResult:
    """Import candles of one market from offline files of any supported format, mixed freely.

    Each file's format is detected from its contents (`detect_format`) and its timeframe from
    `timeframe`, the Binance file name, close_time, the long file's step or the spacing; all files must
    agree. With `repair=True` unusable rows are dropped and counted (`ImportResult.rejected`) and
    harmless problems repaired (`repaired`); with `repair=False` any problem raises
    CandleValidationError. `gap_policy` (default: no filling, gaps fail) then decides about missing
    candles, and `resample_to` aggregates to a coarser timeframe. `token` picks one market from a long
    price file or a file with a token/symbol column. A compressed file (.zip member, .csv.gz) may unpack
    to at most `max_unpacked_bytes` (default import_files.MAX_UNPACKED_BYTES, 512 MiB): reading stops
    there, so a decompression bomb costs the cap, not the bomb. Raises CandleImportError (unknown format,
    unreadable or damaged file, over the cap, mixed timeframes or symbols, conflicting duplicates), GapError
    (led by the rows dropped as unusable, whose removal is what usually leaves the gap).
    """
    if max_unpacked_bytes is not None and (isinstance(max_unpacked_bytes, bool) or max_unpacked_bytes < 1):
        raise ValueError(f"max_unpacked_bytes must be a positive number of bytes, got {max_unpacked_bytes!r}")
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
        fmt = detect_format(path, max_unpacked_bytes=max_unpacked_bytes)
        unit: str | None = None
        hint: str | None = None
        if fmt == "binance":
            frame, unit, hint = _read_binance(path, max_unpacked_bytes)
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
            # Already validated row by row (PriceFileError names them); detect_format kept it under the cap.
            frame, hint = _read_long(path, token, timeframe)
            frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(LINE_COLUMN))
        else:
            frame, unit = _read_candle_file(path, timestamp_col, columns, time_unit, token, max_unpacked_bytes)
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
        combined, rejected, notes = _reject(combined, tf, files)
        _check_conflicts(combined, files)
    if combined.height == 0:
        raise CandleImportError(
            f"no usable candles in {len(files)} file(s)" + (f": {'; '.join(notes)}" if notes else "")
        )
    candles, first_report = validate_candles(combined.drop("_src", LINE_COLUMN), tf, repair=repair)
    try:
        candles, filled, left = apply_gap_policy(candles, tf, policy)
    except GapError as exc:
        if not notes:
            raise
        raise GapError(
            f"dropped unusable row(s) before the gap check: {'; '.join(notes)}; fix: correct those rows in the "
            f"file or download it again. Without them, {exc}",
            exc.gaps,
        ) from None
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
    "MAX_UNPACKED_BYTES",
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
