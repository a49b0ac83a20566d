"""Small builders shared by tests (imported as `helpers`; tests/ is on sys.path via conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from quant_core.data.panel import PricePanel

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """../shared/data beside the repo; tests that need it skip (or fail in CI) when it is absent."""
    if not SHARED_DATA.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing in CI: the shared folder must sit beside the repo")
        pytest.skip(f"{SHARED_DATA} not present (the shared folder beside the repo)")
    return SHARED_DATA


def random_walk_panel(
    n_steps: int, tokens=("AAA", "BBB", "CCC"), step_minutes: int = 1440, seed: int = 0, start="2024-01-01",
    sigma: float = 0.03,
) -> PricePanel:
    """Independent Gaussian log-price walks (`sigma` per step), one price level per token."""
    rng = np.random.default_rng(seed)
    logp = np.cumsum(rng.normal(0, sigma, size=(n_steps, len(tokens))), axis=0) + np.log(
        np.linspace(1, 100, len(tokens))
    )
    ts = np.datetime64(start, "ms") + np.arange(n_steps) * np.timedelta64(step_minutes, "m")
    return PricePanel(timestamps=ts, tokens=tuple(tokens), prices=np.exp(logp), step_minutes=step_minutes, metadata={})
