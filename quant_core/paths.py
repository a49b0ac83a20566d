"""Where the embedded default keeps its state (SQLite store, candle files)."""

from __future__ import annotations

import os
from pathlib import Path

QUANT_HOME_ENV = "QUANT_HOME"


def repo_root() -> Path | None:
    """The checkout this package runs from, when installed in editable mode."""
    candidate = Path(__file__).resolve().parent.parent
    return candidate if (candidate / "pyproject.toml").exists() else None


def quant_home() -> Path:
    """State directory: $QUANT_HOME, else `.quant/` in the checkout (or the working directory)."""
    env = os.environ.get(QUANT_HOME_ENV)
    base = Path(env) if env else (repo_root() or Path.cwd()) / ".quant"
    base.mkdir(parents=True, exist_ok=True)
    return base
