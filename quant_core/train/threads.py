"""How many search batches are scored at once, on threads of one process.

XLA:CPU runs a vmapped scan (the fee engine, the strategy backtester) on one core: the per-step kernels are too
small for its intra-op parallelism. Batches are independent, so scoring several at once on threads (JAX releases
the GIL while a compiled call runs) uses the other cores: measured on 2 cores, one backtest call of 4,096
combinations 2.23 s, two calls of 2,048 on two threads 1.24 s. Whole batches go to threads, never parts of one,
so every candidate is scored in the same padded batch whatever the thread count: results are bit-identical.
Peak memory is that of `search_threads()` batches in flight.

QUANT_SEARCH_THREADS sets the count (a positive integer); the default is the CPUs this process may use on the
CPU backend, and 1 on an accelerator (one device already runs a batch with all its cores).
"""

from __future__ import annotations

import os

from quant_core.cpus import usable_cpus

THREADS_ENV = "QUANT_SEARCH_THREADS"


def configured_threads() -> int | None:
    """QUANT_SEARCH_THREADS as a positive integer, None when unset; a ValueError naming it otherwise (the code
    location checks it at load, so a bad value is reported before any run)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r} is not a positive integer: set it to the number of search batches "
                         f"to score at once (e.g. {THREADS_ENV}=2), or unset it for one per CPU")
    return value


def search_threads() -> int:
    """Batches a grid or random search scores at once."""
    value = configured_threads()
    if value is not None:
        return value
    import jax

    if jax.default_backend() != "cpu":
        return 1
    return usable_cpus()
