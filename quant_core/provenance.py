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


#: The packages whose versions can move a result's numbers (recorded with every stored configuration).
NUMERICAL_PACKAGES: tuple[str, ...] = ("jax", "jaxlib", "numpy", "scipy", "optax", "optuna")
#: What an export says for a configuration stored before its environment was recorded (migration 0004).
NOT_RECORDED = "not recorded"


def numerical_environment() -> dict[str, str]:
    """The numerical stack this process computes with: the versions of NUMERICAL_PACKAGES and Python, JAX's
    default backend ("cpu", "gpu", "tpu": where jitted simulations and backtests run) and that device's kind
    (e.g. "cpu", "NVIDIA H200").

    On a GPU backend a pool's sequential per-minute scans are placed on the CPU, except a batch's fee path that
    the GPU kernel runs (quant_core.sim.simulate.run_device); the backend says which machine a result came from,
    and with the versions whether a rerun can reproduce it to the last digit."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import jax

    env: dict[str, str] = {}
    for name in NUMERICAL_PACKAGES:
        try:
            env[name] = version(name)
        except PackageNotFoundError:
            env[name] = "not installed"
    env["python"] = platform.python_version()
    env["backend"] = jax.default_backend()
    env["device"] = str(jax.devices()[0].device_kind)
    return env
