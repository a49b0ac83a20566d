"""Market data: the candle schema, validation, sources, the Parquet store and the aligned price panel.

Everything that enters a simulation passes through here, so the rules about what a valid candle
is, and what a panel row means in time, live in one place.
"""

from quant_core.data.candle_store import ParquetCandleStore
from quant_core.data.gaps import GapPolicy, apply_gap_policy, resample_candles
from quant_core.data.import_report import ImportResult
from quant_core.data.importers import import_candles
from quant_core.data.panel import PricePanel, build_numeraire_panel, build_panel, panel_from_long_prices
from quant_core.data.price_file import (
    PriceFileError,
    PriceFileSource,
    infer_step_minutes,
    read_long_prices,
    shipped_prices_path,
)
from quant_core.data.schema import (
    CANDLE_COLUMNS,
    CANDLE_SCHEMA,
    TIMEFRAME_MINUTES,
    CandleSource,
    Market,
    empty_candles,
    timeframe_minutes,
)
from quant_core.data.synthetic import SyntheticSource, synthetic_candles
from quant_core.data.validation import CandleValidationError, ValidationReport, validate_candles

# The ccxt source (quant_core.data.ccxt_source) is imported where used: ccxt is slow to import.

__all__ = [
    "CANDLE_COLUMNS",
    "CANDLE_SCHEMA",
    "TIMEFRAME_MINUTES",
    "CandleSource",
    "CandleValidationError",
    "GapPolicy",
    "ImportResult",
    "Market",
    "ParquetCandleStore",
    "PriceFileError",
    "PriceFileSource",
    "PricePanel",
    "SyntheticSource",
    "ValidationReport",
    "apply_gap_policy",
    "build_numeraire_panel",
    "build_panel",
    "empty_candles",
    "import_candles",
    "infer_step_minutes",
    "panel_from_long_prices",
    "read_long_prices",
    "resample_candles",
    "shipped_prices_path",
    "synthetic_candles",
    "timeframe_minutes",
    "validate_candles",
]
