"""Offline imports: Binance kline zips (ms and µs, with and without header), generic CSV/Parquet with
aliases, long price files, and every rejection/repair rule as `import_candles` reports it."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from quant_core.data.gaps import GapError, GapPolicy
from quant_core.data.importers import (
    BINANCE_KLINE_COLUMNS,
    CandleImportError,
    binance_file_info,
    detect_format,
    epoch_unit,
    import_candles,
    read_binance_klines,
    read_candle_file,
)
from quant_core.data.price_file import PriceFileSource
from quant_core.data.schema import CANDLE_SCHEMA, Market, timeframe_ms
from quant_core.data.synthetic import synthetic_candles
from quant_core.data.validation import CandleValidationError, validate_candles


def candles(n: int = 48, tf: str = "1h", seed: int = 2, start: str = "2024-01-01") -> pl.DataFrame:
    return synthetic_candles(n, tf, seed=seed, start=start)


def kline_rows(df: pl.DataFrame, tf: str, unit: str) -> list[str]:
    """The 12 Binance columns per candle, open/close time in `unit` ('ms' or 'us')."""
    per = 1 if unit == "ms" else 1000
    step = timeframe_ms(tf) * per
    rows = []
    for (_ts, o, h, low, c, v), ot in zip(df.iter_rows(), df["timestamp"].dt.epoch("ms").to_list(), strict=True):
        t = ot * per
        rows.append(f"{t},{o!r},{h!r},{low!r},{c!r},{v!r},{t + step - 1},{v * c!r},123,{v / 2!r},{v * c / 2!r},0")
    return rows


def write_klines(
    path: Path, df: pl.DataFrame, tf: str = "1h", unit: str = "ms", header: bool = False, zipped: bool = True
) -> Path:
    lines = kline_rows(df, tf, unit)
    if header:
        lines.insert(0, ",".join(BINANCE_KLINE_COLUMNS))
    text = "\n".join(lines) + "\n"
    if zipped:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(path.name.removesuffix(".zip") + ".csv", text)
    else:
        path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------- Binance


@pytest.mark.parametrize("unit", ["ms", "us"])
@pytest.mark.parametrize("header", [False, True])
def test_binance_zip_ms_and_us(tmp_path: Path, unit: str, header: bool) -> None:
    src = candles()
    path = write_klines(tmp_path / "BTCUSDT-1h-2024-01.zip", src, unit=unit, header=header)
    assert detect_format(path) == "binance"
    frame = read_binance_klines(path)
    assert frame.schema == pl.Schema(CANDLE_SCHEMA)
    assert frame.equals(src)  # µs open times become the same ms UTC open times

    result = import_candles(path)
    assert result.candles.equals(src)
    assert result.timeframe == "1h"
    assert result.files[0].format == "binance" and result.files[0].time_unit == unit
    assert result.rejected == {} and result.repaired == {}
    text = result.report()
    assert "48 row(s)" in text and f"{unit} timestamps" in text and "2024-01-01T00:00Z" in text


def test_binance_bare_csv_and_mixed_units_across_files(tmp_path: Path) -> None:
    jan, feb = candles(24, start="2024-12-31"), candles(24, start="2025-01-01", seed=3)
    old = write_klines(tmp_path / "ETHUSDT-1h-2024-12-31.csv", jan, unit="ms", zipped=False)
    new = write_klines(tmp_path / "ETHUSDT-1h-2025-01-01.zip", feb, unit="us", header=True)
    result = import_candles([new, old])
    assert result.candles.height == 48
    assert [f.time_unit for f in result.files] == ["us", "ms"]
    assert result.repaired == {"sorted": 1}  # files given out of order: sorting repairs it, and says so


def test_binance_timeframe_from_close_time_and_spacing(tmp_path: Path) -> None:
    src = candles(10, "15m")
    path = write_klines(tmp_path / "download.zip", src, tf="15m")
    assert binance_file_info(path) == (None, None)
    assert import_candles(path).timeframe == "15m"
    single = write_klines(tmp_path / "one.zip", src.head(1), tf="15m")
    assert import_candles(single).timeframe == "15m"  # one row: close_time - open_time still tells


def test_binance_name_checks(tmp_path: Path) -> None:
    assert binance_file_info("BTCUSDT-1m-2024-01.zip") == ("BTCUSDT", "1m")
    with pytest.raises(CandleImportError, match="'1mo' is not a supported timeframe"):
        binance_file_info("BTCUSDT-1mo-2024.zip")
    with pytest.raises(CandleImportError, match="'3m' is not a supported timeframe"):
        binance_file_info("BTCUSDT-3m-2024-01.zip")
    src = candles(5)
    wrong = write_klines(tmp_path / "BTCUSDT-4h-2024-01.zip", src)  # really 1h klines
    with pytest.raises(CandleImportError, match="name says 4h but close_time - open_time says 1h"):
        import_candles(wrong)
    a = write_klines(tmp_path / "BTCUSDT-1h-2024-01.zip", src)
    b = write_klines(tmp_path / "ETHUSDT-1h-2024-01.zip", candles(5, seed=9))
    with pytest.raises(CandleImportError, match="different symbols"):
        import_candles([a, b])


def test_epoch_unit() -> None:
    assert epoch_unit(pl.Series([1_704_067_200])) == "s"
    assert epoch_unit(pl.Series([1_704_067_200_000])) == "ms"
    assert epoch_unit(pl.Series([1_704_067_200_000_000])) == "us"
    assert epoch_unit(pl.Series([1_704_067_200_000_000_000])) == "ns"
    with pytest.raises(CandleImportError, match="mix epoch units"):
        epoch_unit(pl.Series([1_704_067_200_000, 1_704_067_200_000_000]))


# ---------------------------------------------------------------------------------------------- generic


def _iso(df: pl.DataFrame) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in df["timestamp"].to_list()]


@pytest.mark.parametrize(
    "time_name, time_values",
    [
        ("Time", _iso),
        ("date", lambda df: [t.strftime("%Y-%m-%d %H:%M") for t in df["timestamp"].to_list()]),
        ("timestamp", lambda df: (df["timestamp"].dt.epoch("s")).to_list()),
        ("open_time", lambda df: (df["timestamp"].dt.epoch("ms")).to_list()),
        ("DateTime", lambda df: (df["timestamp"].dt.epoch("us")).to_list()),
    ],
)
def test_generic_csv_with_aliases(tmp_path: Path, time_name: str, time_values) -> None:
    src = candles(30)
    raw = pl.DataFrame(
        {
            time_name: time_values(src),
            "O": src["open"],
            "High": src["high"],
            "l": src["low"],
            "PRICE": src["close"],
            "Vol": src["volume"],
        }
    )
    path = tmp_path / "candles.csv"
    raw.write_csv(path)
    assert detect_format(path) == "candles"
    frame = read_candle_file(path)
    assert frame.schema == pl.Schema(CANDLE_SCHEMA)
    assert frame["timestamp"].equals(src["timestamp"])
    result = import_candles(path)
    assert result.timeframe == "1h" and result.candles["timestamp"].equals(src["timestamp"])
    assert (result.candles["close"] - src["close"]).abs().max() < 1e-9


def test_generic_parquet_datetimes_and_explicit_columns(tmp_path: Path) -> None:
    src = candles(20, "1d")
    naive = src.with_columns(pl.col("timestamp").dt.replace_time_zone(None).dt.cast_time_unit("us"))
    path = tmp_path / "daily[v2].parquet"  # brackets are part of the name, not a glob
    naive.rename({"timestamp": "datetime", "volume": "v"}).write_parquet(path)
    assert import_candles(path).candles.equals(src)

    odd = tmp_path / "odd.parquet"
    src.rename({"timestamp": "when", "close": "last"}).write_parquet(odd)
    frame = read_candle_file(odd, timestamp_col="when", columns={"close": "last"})
    assert frame.equals(src)


def test_generic_token_column(tmp_path: Path) -> None:
    a, b = candles(5), candles(5, seed=7)
    both = pl.concat([a.with_columns(symbol=pl.lit("BTC")), b.with_columns(symbol=pl.lit("ETH"))])
    path = tmp_path / "two.parquet"
    both.write_parquet(path)
    with pytest.raises(CandleImportError, match="holds 2 markets"):
        import_candles(path)
    assert import_candles(path, token="ETH").candles.equals(b)


def test_missing_column_names_aliases(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,open,high,low,volume\n2024-01-01,1,2,0.5,10\n")
    with pytest.raises(CandleImportError, match=r"missing the close column.*close: one of close, c, price"):
        import_candles(path, timeframe="1d")
    with pytest.raises(CandleImportError, match="'last' \\(given for close\\) is not in the file"):
        read_candle_file(path, columns={"close": "last"})


# ---------------------------------------------------------------------------------------------- long


def test_long_price_file_goes_through_price_file_source(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(
        "date,token,price_usd\n"
        + "".join(f"2024-01-0{d},BTC,{40000 + 100 * d}\n2024-01-0{d},ETH,{2000 + d}\n" for d in range(1, 8))
    )
    assert detect_format(path) == "long"
    with pytest.raises(CandleImportError, match="pass token="):
        import_candles(path)
    result = import_candles(path, token="ETH")
    expected = PriceFileSource(path).fetch(Market("shipped", "ETH/USD", "1d"))
    assert result.candles.equals(expected)
    assert result.files[0].format == "long" and result.timeframe == "1d"
    with pytest.raises(CandleImportError, match="holds 1d prices but timeframe='1h'"):
        import_candles(path, token="ETH", timeframe="1h")


# ---------------------------------------------------------------------------------------------- rules


def test_every_rule_is_rejected_or_repaired_and_reported(tmp_path: Path) -> None:
    src = candles(24)
    rows = [list(r) for r in src.iter_rows()]
    rows[7][2] = min(rows[7][1], rows[7][4]) * 0.99  # high below open/close -> widened
    rows[9][3] = max(rows[9][1], rows[9][4]) * 1.01  # low above open/close -> widened
    iso = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in src["timestamp"].to_list()]
    lines = [",".join([iso[i], *(repr(v) for v in r[1:])]) for i, r in enumerate(rows)]
    lines[4], lines[5] = lines[5], lines[4]  # unsorted
    lines.append(lines[3])  # exact duplicate
    good = lines[10].split(",")
    bad = {
        "non_positive": [good[0], "0.0", *good[2:]],
        "negative_volume": [*good[:5], "-1.0"],
        "nan": [*good[:4], "nan", good[5]],
        "empty": [*good[:4], "", good[5]],
        "off_grid": ["2024-01-01T05:30:00Z", *good[1:]],
        "unreadable_time": ["yesterday", *good[1:]],
    }
    lines += [",".join(v) for v in bad.values()]
    path = tmp_path / "messy.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(lines) + "\n")

    result = import_candles(path)
    assert result.rejected == {
        "unreadable_timestamp": 1,
        "missing_value": 2,
        "non_positive_price": 1,
        "negative_volume": 1,
        "off_grid": 1,
    }
    assert result.repaired["high_widened"] == 1 and result.repaired["low_widened"] == 1
    assert result.repaired["exact_duplicates_dropped"] == 1 and result.repaired["sorted"] >= 1
    assert result.rows_read == 24 + 1 + 6 and result.rows_rejected == 6
    expected = src.with_columns(
        pl.max_horizontal("high", "open", "close").alias("high"),
        pl.min_horizontal("low", "open", "close").alias("low"),
    )
    expected = expected.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.max_horizontal("open", "close")).otherwise("high").alias("high"),
        pl.when(pl.int_range(pl.len()) == 9).then(pl.min_horizontal("open", "close")).otherwise("low").alias("low"),
    )
    assert result.candles.equals(expected)
    validate_candles(result.candles, "1h")  # what comes out is valid as it is
    text = result.report()
    assert "rejected 6 row(s)" in text
    assert "off the 1h grid (not a candle open time): messy.csv line 31 (2024-01-01T05:30Z)" in text
    assert "non-positive price: messy.csv line 27 (2024-01-01T10:00Z): open=0.0" in text
    assert "messy.csv line 30 (2024-01-01T10:00Z): close=(missing or not a number)" in text
    assert "high_widened: 1" in text and "exact_duplicates_dropped: 1" in text
    assert result.as_metadata()["rejected"]["missing_value"] == 2

    with pytest.raises(CandleValidationError) as err:
        import_candles(path, repair=False)
    joined = "\n".join(err.value.problems)
    for phrase in ("null/NaN/inf", "non-positive", "negative volume", "off the 1h grid", "exact duplicate"):
        assert phrase in joined


def test_conflicting_duplicates_name_the_files(tmp_path: Path) -> None:
    src = candles(10)
    a = tmp_path / "a.parquet"
    b = tmp_path / "b.parquet"
    src.write_parquet(a)
    src.with_columns(pl.col("volume") + 1).tail(3).write_parquet(b)
    with pytest.raises(CandleImportError, match=r"3 timestamp\(s\) carry different candles.*in a.parquet, b.parquet"):
        import_candles([a, b])


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(CandleImportError, match="does not exist"):
        import_candles(tmp_path / "nope.csv")
    xlsx = tmp_path / "prices.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(CandleImportError, match="unknown file format '.xlsx'"):
        import_candles(xlsx)
    broken = tmp_path / "BTCUSDT-1h-2024-01.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(CandleImportError, match="cannot read the file"):
        import_candles(broken)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(CandleImportError, match="no .csv"):
        import_candles(empty_dir)

    hourly, daily = tmp_path / "h.parquet", tmp_path / "d.parquet"
    candles(5, "1h").write_parquet(hourly)
    candles(5, "1d").write_parquet(daily)
    with pytest.raises(CandleImportError, match=r"different timeframes \(h.parquet: 1h; d.parquet: 1d\)"):
        import_candles([hourly, daily])
    with pytest.raises(CandleImportError, match="holds 1h candles but timeframe='1d'.*resample_to='1d'"):
        import_candles(hourly, timeframe="1d")
    one = tmp_path / "one.csv"
    one.write_text("date,open,high,low,close,volume\n2024-01-01,1,1,1,1,0\n")
    with pytest.raises(CandleImportError, match="pass timeframe="):
        import_candles(one)
    assert import_candles(one, timeframe="1d").candles.height == 1


def test_directory_and_resample(tmp_path: Path) -> None:
    src = candles(48)
    write_klines(tmp_path / "BTCUSDT-1h-2024-01-01.zip", src.head(24))
    write_klines(tmp_path / "BTCUSDT-1h-2024-01-02.zip", src.tail(24))
    result = import_candles(tmp_path, resample_to="4h")
    assert result.timeframe == "4h" and result.source_timeframe == "1h" and result.candles.height == 12
    assert "resampled from 1h" in result.report()


# ---------------------------------------------------------------------------------------------- gaps


def test_gap_policy_in_import(tmp_path: Path) -> None:
    src = candles(24)
    holey = src.filter(~pl.col("timestamp").dt.hour().is_in([5, 6, 12]))
    path = tmp_path / "holey.parquet"
    holey.write_parquet(path)
    with pytest.raises(GapError, match=r"2 gap\(s\).*max_fill_candles=0.*at least 2") as err:
        import_candles(path)
    assert [n for _, _, n in err.value.gaps] == [2, 1]
    with pytest.raises(GapError, match=r"1 gap\(s\).*2024-01-01T05:00Z..2024-01-01T07:00Z \(2 candles\)"):
        import_candles(path, gap_policy=GapPolicy(max_fill_candles=1))

    result = import_candles(path, gap_policy=GapPolicy(max_fill_candles=2))
    assert result.candles["timestamp"].equals(src["timestamp"])
    assert [(s.hour, e.hour, n) for s, e, n in result.filled_gaps] == [(5, 7, 2), (12, 13, 1)]
    filled = result.candles.filter(pl.col("timestamp").dt.hour().is_in([5, 6, 12]))
    prev_close = src.filter(pl.col("timestamp").dt.hour().is_in([4, 4, 11]))["close"].to_list()
    assert filled["open"].to_list() == [prev_close[0], prev_close[0], prev_close[1]]
    assert (filled["high"] == filled["low"]).all() and (filled["volume"] == 0).all()
    assert "filled 2 gap(s) (3 flat zero-volume candle(s))" in result.report()

    kept = import_candles(path, gap_policy=GapPolicy(max_fill_candles=1, on_larger="keep"))
    assert kept.candles.height == 22 and len(kept.filled_gaps) == 1 and kept.gaps[0][2] == 2
    assert "left 1 gap(s) missing" in kept.report()
    assert kept.validation is not None and kept.validation.missing_candles == 2
    assert datetime(2024, 1, 1, 5, tzinfo=UTC) == kept.gaps[0][0]


# ---------------------------------------------------------------------------------------------- command line


def test_quant_data_import_command(tmp_path: Path) -> None:
    """The installed `quant` executable: a ms ZIP and a µs ZIP (old and new Binance files) with a gap
    between them, filled by --max-fill and reported; a gap too long for it fails naming the setting."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "quant"
    src = candles(72)
    jan = write_klines(tmp_path / "BTCUSDT-1h-2024-01-01.zip", src.head(30), unit="ms")
    feb = write_klines(tmp_path / "BTCUSDT-1h-2024-01-02.zip", src.slice(32), unit="us")
    out = tmp_path / "btc.parquet"
    run = subprocess.run([str(exe), "data", "import", str(jan), str(feb), "--out", str(out), "--max-fill", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "filled 1 gap" in run.stdout and "wrote 72 1h candles" in run.stdout
    frame = pl.read_parquet(out)
    assert frame.height == 72 and frame["timestamp"].is_sorted()
    bad = subprocess.run([str(exe), "data", "import", str(jan), str(feb), "--out", str(tmp_path / "x.parquet")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "max_fill_candles" in bad.stderr
    assert not (tmp_path / "x.parquet").exists()
