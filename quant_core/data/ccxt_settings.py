"""What a ccxt exchange is constructed with: credentials from the environment only, and per-exchange defaults.

Kept out of the fetch loop so the rule "secrets never live in configuration" has one home:
which constructor keys are secrets, which QUANT_<EXCHANGE>_* variable each comes from, and how user
config is merged over the defaults this package needs for spot-only ingestion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# ccxt constructor keys that hold secrets, and the environment variable suffix each is read from.
_CREDENTIAL_ENV: dict[str, str] = {"apiKey": "API_KEY", "secret": "SECRET", "password": "PASSWORD", "uid": "UID"}
_CREDENTIAL_KEYS = frozenset(_CREDENTIAL_ENV) | {"privateKey", "walletAddress", "token", "login", "twofa"}

# Only spot markets are modelled (Market refuses 'BASE/QUOTE:SETTLE'), so skip what spot ingestion never
# needs: binance's futures/margin market lists (extra hosts and requests) and its signed currency list
# (a private call as soon as keys are present). User `options` still override these.
_EXCHANGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "binance": {"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}},
}


def credential_env_var(exchange_id: str, key: str) -> str:
    """The environment variable a ccxt credential is read from, e.g. QUANT_BINANCE_API_KEY."""
    return f"QUANT_{re.sub(r'[^A-Z0-9]', '_', exchange_id.upper())}_{_CREDENTIAL_ENV[key]}"


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, merging nested dicts (as ccxt merges its own defaults with config)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def check_exchange_id(exchange_id: str) -> None:
    """ValueError for an id ccxt does not know, with the closest ids: a typo ('binanse') is caught where it is
    written (the registry, the CLI), not at the first fetch."""
    import difflib

    import ccxt

    if exchange_id not in ccxt.exchanges:
        close = difflib.get_close_matches(str(exchange_id), ccxt.exchanges, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown ccxt exchange id {exchange_id!r}{hint}; ccxt.exchanges lists the valid ids")
