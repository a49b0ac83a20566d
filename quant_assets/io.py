"""Candle Parquet files through Dagster's UPathIOManager: one file per (market, day) partition.

`<base_dir>/market_data/ohlcv/<date>/<exchange.BASE-QUOTE.timeframe>.parquet` on any fsspec/UPath
location (a local directory by default, `s3://...`, `gs://...`, `memory://` in tests). Two additions
to the base class: a ranged run (a single-run backfill) outputs {partition key: frame} and every frame
is written to its own partition file; and a local write goes to a temporary file that replaces the
old one only once complete, so a failed write never leaves a truncated partition.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import dagster as dg
import polars as pl
from upath import UPath

from quant_core.paths import quant_home


class CandleIOManager(dg.UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pl.DataFrame, path: UPath) -> None:
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a polars DataFrame, got {type(obj)}")
        if path.protocol in ("", "file", "local"):
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            obj.write_parquet(tmp.path)
            os.replace(tmp.path, path.path)
        else:
            with path.open("wb") as f:
                obj.write_parquet(f)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pl.DataFrame:
        with path.open("rb") as f:
            return pl.read_parquet(f)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not (context.has_asset_partitions and len(context.asset_partition_keys) > 1):
            super().handle_output(context, obj)
            return
        if not isinstance(obj, dict):
            raise TypeError(f"{context.asset_key.to_user_string()}: a run over {len(context.asset_partition_keys)} "
                            "partitions must output {partition key: DataFrame}")
        paths = self._get_paths_for_partitions(context)
        missing = sorted(set(paths) - set(obj))
        if missing:
            raise ValueError(f"no frame for partitions {missing[:5]}{'...' if len(missing) > 5 else ''}")
        for key, path in paths.items():
            self.make_directory(path.parent)
            self.dump_to_path(context, obj[key], path)
        context.add_output_metadata({"partitions_written": len(paths),
                                     "base_path": dg.MetadataValue.path(str(self._base_path))})


class CandleIOManagerFactory(dg.ConfigurableIOManagerFactory):
    """base_dir: a local directory or any fsspec URL (default $QUANT_HOME/ohlcv); storage_options go to
    fsspec (credentials for object stores belong in the environment, as fsspec reads them)."""

    base_dir: str | None = None
    storage_options: dict[str, Any] = {}

    def create_io_manager(self, context) -> CandleIOManager:
        base = self.base_dir or str(quant_home() / "ohlcv")
        return CandleIOManager(base_path=UPath(base, **self.storage_options))
