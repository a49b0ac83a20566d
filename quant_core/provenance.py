"""What code produced a result: recorded with every stored configuration."""

from __future__ import annotations

import functools
import subprocess

from quant_core import __version__
from quant_core.paths import repo_root


@functools.cache
def code_version() -> str:
    """Package version plus the git commit (and '+dirty' for uncommitted changes) when known."""
    root = repo_root()
    if root is None:
        return __version__
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    if not sha:
        return __version__
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}"
