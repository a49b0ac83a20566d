"""Opening offline candle files: reading their bytes (.csv, .csv.gz, single-CSV .zip) and telling their format.

Every reader of offline files needs the same two things first - the file's text, whatever it is
wrapped in, and which layout it holds - and the same error type to say what is wrong with it. Archives
come from downloads, so they are read defensively: a damaged one is named with its member and the fix,
and what one may unpack to is capped (MAX_UNPACKED_BYTES) by counting the stream, not by trusting headers.
"""

from __future__ import annotations

import gzip
import lzma
import zipfile
import zlib
from pathlib import Path
from typing import IO, Literal

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


MAX_UNPACKED_BYTES = 512 * 2**20
"""Default cap on what one compressed file (.zip member, .csv.gz) may inflate to: far above any Binance
monthly kline file (a month of 1m candles is ~7 MB of CSV, of 1s candles ~300 MB) and far below what a
2 MB archive of zeros inflates to. Raise it per import with `max_unpacked_bytes=` / `--max-unpacked-mb`."""

LINE_COLUMN = "_line"
"""Readers add it to their frames: each candle's line in the text file (its row in a Parquet file), so a bad
row is named where a person can find it. The public readers drop it."""

_CHUNK = 2**20
# What a damaged deflate/bzip2/lzma stream or a wrong CRC raises inside zipfile/gzip (zlib.error is not an OSError).
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, lzma.LZMAError)
_REDOWNLOAD = ("fix: download it again (for a Binance file, check the copy against the .CHECKSUM file published "
               "beside it)")


def _size(n: int) -> str:
    """'512 MiB', '16 KiB', '100 bytes': a cap as people read it."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def _too_big(path: Path, member: str | None, cap: int) -> CandleImportError:
    inside = f" member {member!r}" if member else ""
    return CandleImportError(
        f"{path}:{inside} unpacks to more than {_size(cap)}, the cap on a compressed file's unpacked size (a "
        "decompression bomb, or not a candle file); fix: if the file is genuine, raise the cap - "
        "`quant data import --max-unpacked-mb N` or import_candles(max_unpacked_bytes=...)"
    )


def _read_capped(stream: IO[bytes], path: Path, member: str | None, cap: int) -> bytes:
    """All of `stream`, read in chunks and abandoned as soon as it passes `cap` bytes, so a bomb costs at most
    the cap in memory and time, whatever its headers declare."""
    chunks: list[bytes] = []
    total = 0
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > cap:
            raise _too_big(path, member, cap)
        chunks.append(chunk)
    return b"".join(chunks)


def _read_zip_member(path: Path, cap: int) -> bytes:
    """The one CSV inside a ZIP (Binance ships one per archive), capped and with damage named."""
    try:
        zf = zipfile.ZipFile(path)
    except OSError as exc:
        raise CandleImportError(f"{path}: cannot read the file: {exc}") from exc
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CandleImportError(
            f"{path}: cannot read the file: not a ZIP archive, or a damaged or cut-off one ({exc}); {_REDOWNLOAD}"
        ) from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX")]
        csvs = [m for m in members if m.filename.lower().endswith(".csv")] or members
        if len(csvs) != 1:
            raise CandleImportError(
                f"{path}: expected exactly one CSV inside the zip, found {len(csvs)} "
                f"({[m.filename for m in csvs[:5]]}); fix: unzip it and import the CSV files individually"
            )
        info = csvs[0]
        if info.file_size > cap:  # declared: a quick refusal; the streamed count below does not rely on it
            raise _too_big(path, info.filename, cap)
        try:
            with zf.open(info) as stream:
                return _read_capped(stream, path, info.filename, cap)
        except _DAMAGE as exc:
            raise CandleImportError(
                f"{path}: the archive is damaged - member {info.filename!r} does not unpack ({exc}); {_REDOWNLOAD}"
            ) from None
        except (NotImplementedError, RuntimeError) as exc:  # unsupported compression method, encrypted member
            raise CandleImportError(
                f"{path}: member {info.filename!r} cannot be unpacked here ({exc}); fix: unzip it with an archive "
                "tool and import the CSV"
            ) from None


def _read_text_bytes(path: Path, max_unpacked_bytes: int | None = None) -> bytes:
    """The CSV bytes of a .csv, .csv.gz or single-CSV .zip file (Binance ships one CSV per zip).

    A compressed file may unpack to at most `max_unpacked_bytes` (default MAX_UNPACKED_BYTES); a damaged
    archive is named with its member and the fix, not left to surface as a zlib traceback.
    """
    cap = MAX_UNPACKED_BYTES if max_unpacked_bytes is None else max_unpacked_bytes
    if cap < 1:
        raise ValueError(f"max_unpacked_bytes must be a positive number of bytes, got {max_unpacked_bytes!r}")
    if not path.exists():
        raise CandleImportError(f"{path}: file does not exist")
    suffix = _suffix(path)
    if suffix == ".zip":
        data = _read_zip_member(path, cap)
    elif suffix == ".csv.gz":
        try:
            file = path.open("rb")
        except OSError as exc:
            raise CandleImportError(f"{path}: cannot read the file: {exc}") from exc
        try:
            with file, gzip.GzipFile(fileobj=file, mode="rb") as stream:
                data = _read_capped(stream, path, None, cap)
        except _DAMAGE as exc:
            raise CandleImportError(f"{path}: the gzip file is damaged or cut off ({exc}); {_REDOWNLOAD}") from None
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
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


def detect_format(path: str | Path, *, max_unpacked_bytes: int | None = None) -> FileFormat:
    """Which reader a file needs, from its contents rather than its name (names lie, headers do not).

    Headerless numeric rows or an `open_time`+`close_time` header -> "binance"; a `token` + `price_usd`
    layout -> "long"; any other header -> "candles" (named columns). `max_unpacked_bytes` caps what a
    compressed file may unpack to (default MAX_UNPACKED_BYTES).
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
    fields = _first_line(_read_text_bytes(path, max_unpacked_bytes))
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
