"""The G3M fee path on the CPU as a compiled C++ loop (`g3m_fee_loop.cc`), called by XLA as an FFI custom call.

Why: XLA:CPU runs the fee scan as dozens of small kernels per minute, and under vmap every set pays for every
minute's full arbitrage search even where no pair can trade. The loop keeps one set's state in registers and
skips a minute's trade search when every pair lies inside its no-trade band (README, "Speed", for the figures).
Same scope as the GPU kernel (g3m_fee_kernel.in_scope) and the same arithmetic in the same order; it equals the
scan to 1e-12 (tests/sim/test_g3m_fee_native.py).

How it is called: `jax.ffi.ffi_call` (forward passes only: a derivative keeps the scan, as `applies` decides);
XLA hands it its buffers, with no copy and no Python on the way; under vmap, custom_vmap hands every set to one
call, which splits them over threads. The library is compiled on first use (quant_core.sim.native_build: the
cache, $QUANT_NATIVE_DIR); without a compiler, or when it fails to build, the scan runs instead (one warning).
QUANT_NATIVE_FEES=0 keeps the scan (comparisons, debugging).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.cpus import usable_cpus
from quant_core.sim.amm.g3m_fee_kernel import KernelCosts, all_sets_in_one_call, in_scope, on_gpu
from quant_core.sim.amm.g3m_fee_steps import _Static
from quant_core.sim.native_build import DIR_ENV as DIR_ENV  # (named here by the tests)
from quant_core.sim.native_build import build, switch

SOURCE = Path(__file__).with_name("g3m_fee_loop.cc")
# IEEE arithmetic as the scan's (no contraction into FMAs, no fast-math); -O3 is ~10 % faster than -O2 on the loop, and
# ~10 % faster again without GCC's vectoriser (it packs the 3-token loops 2 wide, which measured slower: the packed
# multiply of the trade's flows was the loop's hottest instruction)
FLAGS = ("-std=c++17", "-O3", "-fno-tree-vectorize", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno",
         "-pthread")
NATIVE_ENV = "QUANT_NATIVE_FEES"
MAX_TOKENS = 8  # MAX_N in the source
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_library: list = []  # [ctypes.CDLL or None] once loaded (None: no compiler; the scan runs)
_registered: list = []  # the library whose handler XLA calls (kept loaded for the process)


TARGET = "quant_g3m_fee_path"


def enabled() -> bool:
    """QUANT_NATIVE_FEES: unset or 1 (the loop where it applies), 0 (always the scan); anything else refused."""
    return switch(NATIVE_ENV)


def _compile() -> ctypes.CDLL | None:
    return build(SOURCE, FLAGS, {TARGET: "G3mFeePath"}, _registered, _log,
                 "G3M fee passes run as the XLA scan (slower)")


def library() -> ctypes.CDLL | None:
    """The loaded loop, compiled on the first call of the process."""
    with _lock:
        if not _library:
            _library.append(_compile())
        return _library[0]


def applies(static: _Static, costs: KernelCosts | None) -> bool:
    """Whether a fee pass with these settings runs as the loop: the GPU kernel's scope (a positive static fee,
    tolerant invariant test, static costs, arbitrage on, no trades or mask or protocol split, no derivative),
    on the CPU, at most MAX_TOKENS tokens, enabled and compiled."""
    return (in_scope(static, costs) and not on_gpu() and static.n <= MAX_TOKENS
            and enabled() and library() is not None)


def fee_path_sets(prices: jax.Array, weights: jax.Array, initial_reserves: jax.Array, *, static: _Static,
                  costs: KernelCosts, keep: int = 1, flows: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reserves [S, K, n], fee revenue [S, K], traded value [S, K] of S sets (prices [T, n] or [S, T, n]), with
    K = (T - 1) / keep + 1 rows: the reserves at minutes 0, keep, 2 keep, ...; minute 0's fees and volume, then
    each block of `keep` minutes' sum (`data_steps`). keep 1: every minute. flows False: [S, 0] (not written)."""
    n_sets, n_steps, n = weights.shape  # keep divides n_steps - 1: g3m_reserves_with_fees checked it (so does the loop)
    rows = (n_steps - 1) // keep + 1
    flow = jax.ShapeDtypeStruct((n_sets, rows if flows else 0), jnp.float64)
    shapes = (jax.ShapeDtypeStruct((n_sets, rows, n), jnp.float64), flow, flow)
    call = jax.ffi.ffi_call(TARGET, shapes, vmap_method="broadcast_all")  # (vmapped again: leading dims, all sets)
    return call(prices, jnp.log(prices), weights, initial_reserves,  # XLA's log of the prices, as the scan takes it
                fees=np.float64(costs.fees), gas=np.float64(costs.gas), arb_fees=np.float64(costs.arb_fees),
                noise=np.float64(costs.noise), tolerance=np.float64(static.tolerance),
                weight_arb=np.int64(static.weight_arb), keep=np.int64(keep), flows=np.int64(flows),
                threads=np.int64(usable_cpus()))


def fee_path(prices: jax.Array, weights: jax.Array, initial_reserves: jax.Array, *, static: _Static,
             costs: KernelCosts, keep: int = 1, flows: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One set's reserves [K, n], fee revenue [K], traded value [K] (see fee_path_sets); under vmap, every set in
    one call."""
    sets = partial(fee_path_sets, static=static, costs=costs, keep=keep, flows=flows)
    return all_sets_in_one_call(sets)(prices, weights, initial_reserves)
