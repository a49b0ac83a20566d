"""The fee engine's input handling: scalars vs per-minute series, and whether a derivative is being taken.

Split from g3m_fees (which owns the scan) so each module stays small; docs/g3m-fees.md says what each input means.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import ad  # tracer classes only: which path to compile (see _differentiated)

ArrayLike = Any  # jax.Array, np.ndarray or a Python number
_DERIVATIVE_TRACERS = (ad.JVPTracer, ad.LinearizeTracer)


def _per_step(x: ArrayLike, name: str, n_steps: int, f: int) -> ArrayLike:
    """A scalar as given; a per-minute array [T] cut to the simulated minutes 0, f, 2f, ..."""
    if _static_value(x) is not None or jnp.ndim(x) == 0:
        return x
    arr = jnp.asarray(x, dtype=jnp.float64)
    if arr.shape == (1,):  # a one-element array, as the reference passes its scalars
        return arr.reshape(())
    if arr.shape != (n_steps,):
        raise ValueError(f"{name} must be a scalar or one value per minute [T] = ({n_steps},), got {arr.shape}")
    if name == "fees" and not isinstance(arr, jax.core.Tracer):
        values = np.asarray(arr)
        if not np.all((values >= 0.0) & (values < 1.0)):
            raise ValueError("fees must be in [0, 1)")
    return arr[::f]


def _differentiated(x: Any) -> bool:
    """Whether x carries a derivative being taken (a JVP or linearize tracer, possibly under vmap/jit tracers)."""
    for _ in range(16):
        if isinstance(x, _DERIVATIVE_TRACERS):
            return True
        inner = getattr(x, "val", None) if isinstance(x, jax.core.Tracer) else None
        if inner is None:
            return False
        x = inner
    return False


def _static_value(x: ArrayLike) -> float | None:
    """The value of a Python number (or NumPy scalar); None for anything that may be traced."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float, np.floating, np.integer)):
        return float(x)
    return None
