"""Fixtures of the exchange tests: the local exchange server at the tests' clock, and no credentials from the
environment (a developer's real keys must never reach the local server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from exchange_server import OFF_GRID_NOW, FakeExchangeServer, running_server


@pytest.fixture
def server() -> Iterator[FakeExchangeServer]:
    with running_server(OFF_GRID_NOW) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BINANCE", "KRAKEN"):
        for suffix in ("API_KEY", "SECRET", "PASSWORD", "UID"):
            monkeypatch.delenv(f"QUANT_{name}_{suffix}", raising=False)
