"""Opening offline candle files: reading their bytes (.csv, .csv.gz, single-CSV .zip) and telling their format.

Every reader of offline files needs the same two things first - the file's text, whatever it is
wrapped in, and which layout it holds - and the same error type to say what is wrong with it.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path
from typing import Literal

import polars as pl

FileFormat = Literal["binance", "candles", "long"]

_TEXT_SUFFIXES = (".csv", ".csv.gz", ".zip", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")


class CandleImportError(ValueError):
    """An input file or batch that cannot be imported as it is; the message names the file and the fix."""


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
            names = [c.lower() for c in pl.scan_parquet(path, glob=False).collect_schema()]  # no globbing of [ ]
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
