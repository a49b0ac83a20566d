"""A Parquet candle store: one file per market, merged and replaced atomically (and `CandleFile`, one such file
on its own, for `quant data fetch --out`).

Each write validates the batch before touching disk, merges it with what is stored, and swaps the
file in with `os.replace`, so a reader sees the old file or the new one, never half of either, and a
bad batch never costs good data. A per-market lock file serialises writers (e.g. several time
partitions of one market materialised at once), which would otherwise lose each other's merges.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import polars as pl

from quant_core.data.schema import CANDLE_SCHEMA, Market, to_utc
from quant_core.data.validation import ValidationReport, validate_candles

try:  # POSIX advisory locks; elsewhere writers are not serialised (single-writer use only).
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_SUFFIX = ".parquet"


class ParquetCandleStore:
    """Candles on disk as `<base_dir>/<market.key>.parquet`, sorted by open time."""

    def __init__(self, base_dir: str | Path) -> None:
        self.base_dir = Path(base_dir)

    def __repr__(self) -> str:
        return f"ParquetCandleStore({str(self.base_dir)!r})"

    def path(self, market: Market) -> Path:
        """Where `market`'s candles live."""
        return self.base_dir / f"{market.key}{_SUFFIX}"

    def exists(self, market: Market) -> bool:
        """Whether any candles are stored for `market`."""
        return self.path(market).is_file()

    def markets(self) -> list[Market]:
        """Markets with a stored file, sorted by key; files not named by a market key are ignored."""
        if not self.base_dir.is_dir():
            return []
        found = []
        for p in sorted(self.base_dir.glob(f"*{_SUFFIX}")):
            try:
                found.append(Market.from_key(p.name[: -len(_SUFFIX)]))
            except ValueError:
                continue
        return found

    @contextlib.contextmanager
    def _locked(self, market: Market) -> Iterator[None]:
        """Hold the market's write lock (blocking) so read-merge-replace is not interleaved."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        fd = os.open(self.base_dir / f".{market.key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _require(self, market: Market) -> Path:
        path = self.path(market)
        if not path.is_file():
            raise FileNotFoundError(
                f"no candles stored for market {market.key} (looked for {path}); "
                "write them first, e.g. materialise the ohlcv asset for this market"
            )
        return path

    def write(self, market: Market, candles: pl.DataFrame, *, repair: bool = False) -> ValidationReport:
        """Validate `candles`, merge them into the stored file (new rows replace rows with the same
        timestamp) and replace the file atomically. Returns the batch's validation report.

        A batch that fails validation raises CandleValidationError before anything is written.
        """
        batch, report = validate_candles(candles, market.timeframe, repair=repair)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        path = self.path(market)
        with self._locked(market):
            self._replace(path, _merge(_read_file(path) if path.is_file() else None, batch))
        return report

    def _replace(self, path: Path, frame: pl.DataFrame) -> None:
        write_parquet_atomic(frame, path)

    def read(self, market: Market, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        """Stored candles of `market` with open time in [start, end) (naive times are UTC)."""
        frame = _read_file(self._require(market))
        if start is not None:
            frame = frame.filter(pl.col("timestamp") >= to_utc(start))
        if end is not None:
            frame = frame.filter(pl.col("timestamp") < to_utc(end))
        return frame


class CandleFile:
    """One market's candles in one Parquet file (what `quant data fetch --out` writes), as a store for
    `fetch_incremental`: each write merges into the file and replaces it atomically.

    `keep=False` starts from nothing, so the first write replaces whatever the file held (a new fetch is never
    merged into an unrelated file); `keep=True` continues the candles already in it."""

    def __init__(self, path: str | Path, *, keep: bool) -> None:
        self.path = Path(path)
        self._holds = keep and self.path.is_file()

    def __repr__(self) -> str:
        return f"CandleFile({str(self.path)!r})"

    def exists(self, market: Market) -> bool:
        """Whether the file holds candles of this fetch (the market is the caller's: one file, one market)."""
        return self._holds

    def read(self, market: Market, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        """The file's candles with open time in [start, end)."""
        if not self._holds:
            raise FileNotFoundError(f"{self.path} holds no candles of this fetch yet")
        frame = _read_file(self.path)
        if start is not None:
            frame = frame.filter(pl.col("timestamp") >= to_utc(start))
        if end is not None:
            frame = frame.filter(pl.col("timestamp") < to_utc(end))
        return frame

    def write(self, market: Market, candles: pl.DataFrame, *, repair: bool = False) -> ValidationReport:
        """Validate `candles`, merge them into the file (new rows replace same-timestamp ones), replace it."""
        batch, report = validate_candles(candles, market.timeframe, repair=repair)
        write_parquet_atomic(_merge(_read_file(self.path) if self._holds else None, batch), self.path)
        self._holds = True
        return report


def _merge(old: pl.DataFrame | None, batch: pl.DataFrame) -> pl.DataFrame:
    """`old` with `batch` on top: a batch row replaces the stored row with its timestamp; sorted by time."""
    if old is None:
        return batch
    keep = old.filter(~pl.col("timestamp").is_in(batch["timestamp"].implode()))
    return pl.concat([keep, batch]).sort("timestamp")


def _read_file(path: Path) -> pl.DataFrame:
    """Read through ONE open handle: reading by path may open the file twice, and a writer's
    os.replace in between would pair one version's footer with another's pages."""
    with open(path, "rb") as fh:
        frame = pl.read_parquet(fh)
    return frame.select(pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items())


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`: a failed
    write never leaves a half-written file where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            frame.write_parquet(fh, compression="zstd", statistics=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
