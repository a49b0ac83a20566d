"""A zero-fee G3M pool's per-minute log growth on the CPU as compiled C++ (`g3m_growth_loop.cc`), an FFI custom call.

Why: on a year of minutes the XLA version (g3m.g3m_minute_log_growth's own) spends most of its time in glibc's
scalar float64 log and in XLA's cumulative-sum pyramid; the loop computes the ratio logs as a vectorised polynomial
(more accurate than libm's log of the rounded ratio: see the source's header) and the sum as one running total,
with a single set's minutes split over threads. Measured figures: README, "Speed".

How it is called: `jax.ffi.ffi_call` inside `lax.platform_dependent` (the CPU lowering only; a GPU keeps XLA's),
under vmap with every set in one call (the kernel broadcasts the set dimensions, so shared prices are not copied).
Derivatives: a custom JVP whose tangent is the XLA version's (the same function, so the same derivative). The
library is built on first use (quant_core.sim.native_build); without a compiler the XLA version runs (one warning).
QUANT_NATIVE_GROWTH=0 keeps the XLA version (comparisons, debugging).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp

from quant_core.sim.native_build import build, switch

SOURCE = Path(__file__).with_name("g3m_growth_loop.cc")
# IEEE arithmetic (no FMA contraction: the AVX-512, AVX2 and baseline clones give the same bits); the vectoriser on
# (the point of the kernel); no trapping math, without which GCC will not if-convert the log's selects
FLAGS = ("-std=c++17", "-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
         "-pthread")
NATIVE_ENV = "QUANT_NATIVE_GROWTH"
TARGET = "quant_g3m_minute_log_growth"
MAX_TOKENS = 8  # MAX_N in the source
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_library: list = []  # [ctypes.CDLL or None] once loaded (None: no compiler; XLA's version runs)
_registered: list = []


def enabled() -> bool:
    """QUANT_NATIVE_GROWTH: unset or 1 (the compiled growth on the CPU), 0 (always XLA's); anything else refused."""
    return switch(NATIVE_ENV)


def library() -> ctypes.CDLL | None:
    """The loaded kernel, compiled on the first call of the process."""
    with _lock:
        if not _library:
            _library.append(build(SOURCE, FLAGS, {TARGET: "G3mMinuteLogGrowth"}, _registered, _log,
                                  "zero-fee G3M passes run XLA's log and cumulative sum (slower)"))
        return _library[0]


def _kernel(prices: jax.Array, weights: jax.Array) -> jax.Array:
    """log(V_t / V_0) [..., T] from the compiled loop; vmap passes unbatched inputs with a leading 1 (expand_dims),
    which the kernel broadcasts, so shared prices are not copied per set."""
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(weights.shape[:-1], jnp.float64), vmap_method="expand_dims")
    return call(prices, weights)  # the kernel splits its work over XLA's own intra-op threads


@cache
def _with_kernel(xla: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`xla` (prices, weights -> growth) with the kernel as its CPU lowering; its derivative stays `xla`'s."""

    def primal(prices, weights):
        return jax.lax.platform_dependent(prices, weights, cpu=_kernel, default=xla)

    growth = jax.custom_jvp(primal)

    @growth.defjvp
    def _jvp(primals, tangents):
        return primal(*primals), jax.jvp(xla, primals, tangents)[1]

    return growth


def minute_log_growth(prices: jax.Array, weights: jax.Array,
                      xla: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """log(V_t / V_0) [T] for float64 prices and weights [T, n]: the compiled kernel where it applies (CPU lowering,
    float64, at most MAX_TOKENS tokens, enabled and built), else `xla(prices, weights)`."""
    if prices.shape != weights.shape or prices.ndim != 2:
        raise ValueError(f"g3m_minute_log_growth: prices and weights must both be [T, n]; got {prices.shape} and "
                         f"{weights.shape} (vmap over parameter sets rather than passing them stacked)")
    applies = (prices.dtype == jnp.float64 and weights.dtype == jnp.float64 and prices.shape[-1] <= MAX_TOKENS
               and enabled() and library() is not None)
    return _with_kernel(xla)(prices, weights) if applies else xla(prices, weights)
