"""The registry the definitions are built from: `registry.yaml` beside this file, or $QUANT_REGISTRY."""

from __future__ import annotations

import os
from pathlib import Path

from quant_core.universe import Registry, RegistryError, load_registry

REGISTRY_ENV = "QUANT_REGISTRY"
DEFAULT_REGISTRY_PATH = Path(__file__).resolve().parent / "registry.yaml"


def registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY_PATH)


def current_registry() -> Registry:
    path = registry_path()
    if os.environ.get(REGISTRY_ENV) and not path.is_file():  # e.g. a Celery worker set up without the registry
        raise RegistryError(f"{REGISTRY_ENV}={path}: no such file. Every process of the code location (code server, "
                            "daemon, run workers, Celery workers) needs the same registry: copy it there or point "
                            f"{REGISTRY_ENV} at it")
    return load_registry(path)
