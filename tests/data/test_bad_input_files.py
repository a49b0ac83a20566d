"""Bad offline files, written for real: damaged ZIP/gzip archives, decompression bombs and candle files with
NaN/inf/negative/zero prices. Each fails with a message naming the file (member, row) and the fix - no
zlib traceback, no unbounded inflation, no bad price hidden behind a gap - and never replaces good data."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile
from pathlib import Path

import polars as pl
import pytest

from quant_core.cli import main
from quant_core.data import import_files
from quant_core.data.gaps import GapPolicy
from quant_core.data.importers import CandleImportError, import_candles
from quant_core.data.synthetic import synthetic_candles
from quant_core.data.validation import CandleValidationError

MIB = 2**20
MEMBER = "BTCUSDT-1h-2024-01.csv"


def kline_text(n: int = 200) -> str:
    """Headerless Binance 1h klines (12 columns, ms open times), one line per candle."""
    df = synthetic_candles(n, "1h", seed=2, start="2024-01-01")
    lines = []
    for ts, o, h, low, c, v in df.with_columns(pl.col("timestamp").dt.epoch("ms")).iter_rows():
        lines.append(f"{ts},{o!r},{h!r},{low!r},{c!r},{v!r},{ts + 3_599_999},{v * c!r},10,{v / 2!r},{v * c / 2!r},0")
    return "\n".join(lines) + "\n"


def write_zip(path: Path, text: str, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr(MEMBER, text)
    return path


def flip(path: Path, at: int, n: int = 8) -> None:
    """Invert `n` bytes of the (only) member's compressed data, starting `at` bytes into it."""
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).infolist()[0]
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(n):
        data[start + at + k] ^= 0xFF
    path.write_bytes(bytes(data))


def good_parquet(path: Path) -> bytes:
    """An existing, good output file - a failed import must leave it exactly as it is."""
    synthetic_candles(5, "1h", seed=1, start="2023-01-01").write_parquet(path)
    return path.read_bytes()


# ------------------------------------------------------------------------------------------- item 2: damage


def _damaged(tmp_path: Path, kind: str) -> Path:
    text = kline_text()
    if kind == "gz":
        path = tmp_path / "BTCUSDT-1h-2024-01.csv.gz"
        raw = bytearray(gzip.compress(text.encode()))
        for k in range(8):
            raw[20 + k] ^= 0xFF
        path.write_bytes(bytes(raw))
        return path
    path = write_zip(tmp_path / "BTCUSDT-1h-2024-01.zip", text,
                     zipfile.ZIP_STORED if kind == "crc_stored" else zipfile.ZIP_DEFLATED)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        size = zipfile.ZipFile(path).infolist()[0].compress_size
        flip(path, {"deflate": 10, "crc_deflate": size // 3, "crc_stored": size // 2}[kind])
    return path


@pytest.mark.parametrize("kind", ["deflate", "crc_deflate", "crc_stored", "truncated", "gz"])
def test_damaged_archive_names_file_member_and_fix(tmp_path, kind):
    """Flipped bytes in the deflate stream (zlib.error), a wrong CRC, a cut-off ZIP, a damaged gzip."""
    path = _damaged(tmp_path, kind)
    with pytest.raises(CandleImportError) as err:
        import_candles(path)
    msg = str(err.value)
    assert str(path) in msg and "damaged" in msg and "download it again" in msg
    if kind != "truncated" and kind != "gz":
        assert MEMBER in msg


def test_cli_reports_a_damaged_zip_without_traceback_and_keeps_the_old_output(tmp_path, capsys):
    path = _damaged(tmp_path, "deflate")
    out = tmp_path / "candles.parquet"
    before = good_parquet(out)
    assert main(["data", "import", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and MEMBER in err and "Traceback" not in err and "zlib" not in err.lower()
    assert out.read_bytes() == before


# --------------------------------------------------------------------------------------------- item 3: bombs


def write_zero_zip(path: Path, size: int, member: str = MEMBER) -> Path:
    """A ZIP whose one member is `size` zero bytes: ~1000:1, written in chunks so the test stays small."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open(member, "w") as f:
        chunk = bytes(MIB)
        for _ in range(size // MIB):
            f.write(chunk)
    return path


def write_zero_gz(path: Path, size: int) -> Path:
    with gzip.open(path, "wb", compresslevel=1) as f:
        chunk = bytes(MIB)
        for _ in range(size // MIB):
            f.write(chunk)
    return path


def _peak_during(fn) -> tuple[BaseException, int]:
    """The exception `fn` raises and the peak of Python allocations while it ran."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # the test asserts on it
        caught = exc
    else:
        caught = AssertionError("no error raised")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return caught, peak


@pytest.mark.parametrize("suffix", [".zip", ".csv.gz"])
def test_bomb_stops_at_the_cap_with_bounded_memory(tmp_path, suffix):
    """64 MiB of zeros against a 4 MiB cap: the error names the file and the cap, and memory stays near the cap
    (the old code inflated all 64 MiB, twice)."""
    path = tmp_path / f"BTCUSDT-1h-2024-01{suffix}"
    (write_zero_zip if suffix == ".zip" else write_zero_gz)(path, 64 * MIB)
    assert path.stat().st_size < MIB
    exc, peak = _peak_during(lambda: import_candles(path, max_unpacked_bytes=4 * MIB))
    assert isinstance(exc, CandleImportError), exc
    msg = str(exc)
    assert str(path) in msg and "4 MiB" in msg and "--max-unpacked-mb" in msg and "max_unpacked_bytes" in msg
    assert peak < 12 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_lying_declared_size_is_not_trusted(tmp_path):
    """The member's header says 1 KiB, the stream inflates to 64 MiB: reading stops early, memory stays small."""
    path = write_zero_zip(tmp_path / "BTCUSDT-1h-2024-01.zip", 64 * MIB)
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).infolist()[0]
    local = info.header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    central = data.index(b"PK\x01\x02")
    if struct.unpack("<I", data[local + 22 : local + 26])[0] != 0xFFFFFFFF:  # not zip64: patch both headers
        struct.pack_into("<I", data, local + 22, 1024)
    struct.pack_into("<I", data, central + 24, 1024)
    path.write_bytes(bytes(data))
    assert zipfile.ZipFile(path).infolist()[0].file_size == 1024
    exc, peak = _peak_during(lambda: import_candles(path, max_unpacked_bytes=4 * MIB))
    assert isinstance(exc, CandleImportError), exc
    assert str(path) in str(exc) and ("damaged" in str(exc) or "4 MiB" in str(exc))
    assert peak < 12 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_the_default_cap_applies_and_the_cli_flag_raises_it(tmp_path, monkeypatch, capsys):
    """Without a setting the documented default (import_files.MAX_UNPACKED_BYTES) is the cap; the CLI flag is
    honoured both ways: a cap below the member fails, a cap above it lets the genuine file through."""
    monkeypatch.setattr(import_files, "MAX_UNPACKED_BYTES", 16 * 1024)
    path = write_zip(tmp_path / "BTCUSDT-1h-2024-01.zip", kline_text(400))  # ~60 KB of CSV
    with pytest.raises(CandleImportError, match=r"16 KiB"):
        import_candles(path)
    out = tmp_path / "out.parquet"
    before = good_parquet(out)
    assert main(["data", "import", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "16 KiB" in err and "--max-unpacked-mb" in err and "Traceback" not in err
    assert out.read_bytes() == before
    assert main(["data", "import", str(path), "--out", str(out), "--max-unpacked-mb", "1"]) == 0
    assert pl.read_parquet(out).height == 400


def test_a_cap_must_be_positive(tmp_path):
    path = write_zip(tmp_path / "BTCUSDT-1h-2024-01.zip", kline_text(10))
    with pytest.raises(ValueError, match="max_unpacked_bytes"):
        import_candles(path, max_unpacked_bytes=0)


# ------------------------------------------------------------------------------------ item 5: impossible prices

HEADER = "timestamp,open,high,low,close,volume"


def candle_csv(path: Path, bad_row: int, column: str, value: str, n: int = 24) -> Path:
    """`n` hourly candles with named columns; data row `bad_row` (1-based) has `value` in `column`."""
    df = synthetic_candles(n, "1h", seed=3, start="2024-01-01")
    lines = [HEADER]
    for i, (ts, *vals) in enumerate(df.iter_rows(), start=1):
        cells = dict(zip(("open", "high", "low", "close", "volume"), (repr(v) for v in vals), strict=True))
        if i == bad_row:
            cells[column] = value
        lines.append(f"{ts:%Y-%m-%dT%H:%M:%SZ}," + ",".join(cells.values()))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "column,value,shown",
    [("close", "NaN", "close=nan"), ("high", "inf", "high=inf"), ("low", "-3.5", "low=-3.5"),
     ("open", "0", "open=0.0")],
)
def test_bad_price_names_row_value_and_column_before_the_gap(tmp_path, column, value, shown):
    path = candle_csv(tmp_path / "candles.csv", bad_row=6, column=column, value=value)
    with pytest.raises(ValueError) as err:
        import_candles(path)
    msg = str(err.value)
    # data row 6 is line 7 (the header is line 1) and opens at 05:00
    assert f"{path.name} line 7" in msg and "2024-01-01T05:00" in msg and shown in msg
    assert msg.index(shown) < msg.index("gap(s)")  # the bad value first, the gap it leaves after


def test_bad_price_in_a_binance_zip_and_a_parquet_file_names_the_row(tmp_path):
    lines = kline_text(30).splitlines()
    cells = lines[9].split(",")
    cells[4] = "nan"  # close of data row 10, line 10 (headerless)
    lines[9] = ",".join(cells)
    path = write_zip(tmp_path / "BTCUSDT-1h-2024-01.zip", "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"BTCUSDT-1h-2024-01.zip line 10 \(2024-01-01T09:00Z\): close=nan"):
        import_candles(path)

    df = synthetic_candles(12, "1h", seed=4, start="2024-01-01")
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(-1.0).otherwise(pl.col("low")).alias("low"))
    pq = tmp_path / "c.parquet"
    df.write_parquet(pq)
    with pytest.raises(ValueError, match=r"c.parquet row 4 \(2024-01-01T03:00Z\): low=-1.0"):
        import_candles(pq)


def test_dropped_rows_are_named_when_the_gap_is_kept_or_filled(tmp_path):
    path = candle_csv(tmp_path / "candles.csv", bad_row=6, column="close", value="inf")
    for policy in (GapPolicy(on_larger="keep"), GapPolicy(max_fill_candles=1)):
        result = import_candles(path, gap_policy=policy)
        assert result.rejected == {"missing_value": 1}
        assert "candles.csv line 7 (2024-01-01T05:00Z): close=inf" in result.report()


def test_strict_import_names_the_value_too(tmp_path):
    path = candle_csv(tmp_path / "candles.csv", bad_row=6, column="close", value="-2")
    with pytest.raises(CandleValidationError, match=r"2024-01-01T05:00:00Z close=-2.0"):
        import_candles(path, repair=False)


def test_cli_import_names_the_bad_row_and_keeps_the_old_output(tmp_path, capsys):
    path = candle_csv(tmp_path / "candles.csv", bad_row=6, column="close", value="NaN")
    out = tmp_path / "out.parquet"
    before = good_parquet(out)
    assert main(["data", "import", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "candles.csv line 7 (2024-01-01T05:00Z): close=nan" in err and "Traceback" not in err
    assert out.read_bytes() == before


def test_zip_reader_reads_a_good_member_exactly(tmp_path):
    """The streamed read returns the member's bytes unchanged (no truncation at chunk edges)."""
    text = kline_text(300)
    path = write_zip(tmp_path / "BTCUSDT-1h-2024-01.zip", text)
    assert import_files._read_text_bytes(path, max_unpacked_bytes=len(text)) == text.encode()
    with pytest.raises(CandleImportError, match="unpacks to more than"):
        import_files._read_text_bytes(path, max_unpacked_bytes=len(text) - 1)
    gz = tmp_path / "k.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert import_files._read_text_bytes(gz, max_unpacked_bytes=len(text)) == text.encode()
    assert io.BytesIO(import_files._read_text_bytes(gz)).read() == text.encode()
