"""Long price files (`date,token,price_usd`) as candles of one token, for `import_candles`.

The snapshot -> candle rules live in PriceFileSource only; this module picks the token, checks the
file's step against the asked timeframe and turns its errors into import errors.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quant_core.data.import_files import CandleImportError
from quant_core.data.price_file import PriceFileError, PriceFileSource
from quant_core.data.schema import TIMEFRAME_MINUTES, Market
from quant_core.data.validation import CandleValidationError


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
