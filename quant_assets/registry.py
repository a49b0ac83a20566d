"""The registry the definitions are built from: `registry.yaml` beside this file, or $QUANT_REGISTRY."""

from __future__ import annotations

import os
from pathlib import Path

from quant_core.universe import Registry, load_registry

REGISTRY_ENV = "QUANT_REGISTRY"
DEFAULT_REGISTRY_PATH = Path(__file__).resolve().parent / "registry.yaml"


def registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY_PATH)


def current_registry() -> Registry:
    return load_registry(registry_path())
