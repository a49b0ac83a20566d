"""The G3M fee path on the CPU as a compiled C loop (`g3m_fee_loop.c`), called from JAX.

Why: XLA:CPU runs the fee scan as dozens of small kernels per minute, and under vmap every set pays for every
minute's full arbitrage search even where no pair can trade. The loop keeps one set's state in registers and
skips a minute's trade search when every pair lies inside its no-trade band: measured on 2 cores, a year of
minutes at 0.3 % fees (benchmarks/bench_minute_year.py) and 64 sets vmapped far faster than the scan (README,
"Speed"). Same scope as the GPU kernel (g3m_fee_kernel.applies) and the same arithmetic in the same order; it
equals the scan to 1e-12 (tests/sim/test_g3m_fee_native.py).

How it is called: `jax.pure_callback` on the host (so only forward passes: a derivative keeps the scan, as
`applies` decides); under vmap, custom_vmap hands every set to one call, which splits them over threads (ctypes
releases the GIL). The library is compiled on first use with the system C compiler ($CC, else cc) into a cache
directory keyed by the source's hash ($QUANT_NATIVE_DIR, else ~/.cache/quant-retrain/native); without a compiler
or when it fails to build, the scan runs instead (one warning). QUANT_NATIVE_FEES=0 keeps the scan
(comparisons, debugging).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from quant_core.sim.amm.g3m_fee_kernel import KernelCosts
from quant_core.sim.amm.g3m_fee_steps import _Static

SOURCE = Path(__file__).with_name("g3m_fee_loop.c")
NATIVE_ENV, DIR_ENV = "QUANT_NATIVE_FEES", "QUANT_NATIVE_DIR"
MAX_TOKENS = 8  # MAX_N in the C source
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_library: list = []  # [ctypes.CDLL or None] once loaded (None: no compiler; the scan runs)


class _Costs(ctypes.Structure):
    _fields_ = [("fees", ctypes.c_double), ("gas", ctypes.c_double), ("arb_fees", ctypes.c_double),
                ("noise", ctypes.c_double), ("tolerance", ctypes.c_double), ("n", ctypes.c_int64),
                ("weight_arb", ctypes.c_int64)]


def enabled() -> bool:
    """QUANT_NATIVE_FEES: unset or 1 (the loop where it applies), 0 (always the scan); anything else refused."""
    raw = os.environ.get(NATIVE_ENV, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"{NATIVE_ENV}={raw!r}: set it to 1 (the compiled fee loop on the CPU, the default) or 0 "
                         "(always the XLA scan), or unset it")
    return raw != "0"


def _cache_dir() -> Path:
    env = os.environ.get(DIR_ENV)
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quant-retrain" \
        / "native"


def _compile() -> ctypes.CDLL | None:
    """Build (once per source hash and compiler) and load the library; None when no C compiler is found."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        _log.warning("no C compiler (cc, gcc or $CC) found: G3M fee passes run as the XLA scan (slower)")
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + cc.encode()).hexdigest()[:16]
    target = _cache_dir() / f"g3m_fee_loop-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)  # built aside, then renamed: processes race
        os.close(fd)
        cmd = [cc, "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno", "-o", tmp, str(SOURCE), "-lm"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as exc:
            done = subprocess.CompletedProcess(cmd, 1, "", str(exc))
        if done.returncode:
            os.unlink(tmp)
            _log.warning("compiling %s failed (%s): %s; G3M fee passes run as the XLA scan (slower)", SOURCE.name,
                         " ".join(cmd), done.stderr.strip()[-2000:])
            return None
        os.replace(tmp, target)
    lib = ctypes.CDLL(str(target))
    lib.g3m_fee_path.restype = ctypes.c_int
    p = ctypes.POINTER(ctypes.c_double)
    lib.g3m_fee_path.argtypes = [p, p, ctypes.c_int64, p, p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                 ctypes.POINTER(_Costs), p, p, p]
    return lib


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
    from quant_core.sim.amm import g3m_fee_kernel

    return (g3m_fee_kernel.in_scope(static, costs) and not g3m_fee_kernel.on_gpu() and static.n <= MAX_TOKENS
            and enabled() and library() is not None)


def _threads(n_sets: int) -> int:
    return max(1, min(n_sets, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))


def _host_path(prices: np.ndarray, log_prices: np.ndarray, weights: np.ndarray, initial_reserves: np.ndarray,
               static: _Static, costs: KernelCosts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The loop over S sets on the host: prices/log prices [T, n] or [S, T, n], weights [S, T, n], r0 [S, n]."""
    lib = library()
    n_sets, n_steps, n = weights.shape
    arrays = [np.ascontiguousarray(x, dtype=np.float64) for x in (prices, log_prices, weights, initial_reserves)]
    prices, log_prices, weights, initial_reserves = arrays
    stride = 0 if prices.ndim == 2 else n_steps * n
    c = _Costs(costs.fees, costs.gas, costs.arb_fees, costs.noise, static.tolerance, n, int(static.weight_arb))
    r_out = np.empty((n_sets, n_steps, n))
    f_out = np.empty((n_sets, n_steps))
    v_out = np.empty((n_sets, n_steps))
    ptr = [x.ctypes.data_as(ctypes.POINTER(ctypes.c_double)) for x in (prices, log_prices, weights,
                                                                       initial_reserves, r_out, f_out, v_out)]

    def run(bounds: tuple[int, int]) -> int:
        return lib.g3m_fee_path(ptr[0], ptr[1], stride, ptr[2], ptr[3], bounds[0], bounds[1], n_steps,
                                ctypes.byref(c), ptr[4], ptr[5], ptr[6])

    edges = np.linspace(0, n_sets, _threads(n_sets) + 1).round().astype(int)
    chunks = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    codes = [0] * len(chunks)

    def run_into(i: int) -> None:
        codes[i] = run(chunks[i])

    # plain threads rather than an executor: a pass dispatched asynchronously may run while the interpreter exits
    workers = [threading.Thread(target=run_into, args=(i,)) for i in range(1, len(chunks))]
    for w in workers:
        w.start()
    run_into(0)
    for w in workers:
        w.join()
    if any(codes):
        raise ValueError(f"g3m_fee_loop: {n} tokens is outside what it was compiled for (2..{MAX_TOKENS})")
    return r_out, f_out, v_out


def fee_path_sets(prices: jax.Array, weights: jax.Array, initial_reserves: jax.Array, *, static: _Static,
                  costs: KernelCosts) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reserves [S, T, n], fee revenue [S, T], traded value [S, T] of S sets (prices [T, n] or [S, T, n])."""
    n_sets, n_steps, n = weights.shape
    shapes = (jax.ShapeDtypeStruct((n_sets, n_steps, n), jnp.float64),
              jax.ShapeDtypeStruct((n_sets, n_steps), jnp.float64),
              jax.ShapeDtypeStruct((n_sets, n_steps), jnp.float64))
    log_prices = jnp.log(prices)  # XLA's log, as the scan takes it

    def host(p, lp, w, r0):
        return _host_path(np.asarray(p), np.asarray(lp), np.asarray(w), np.asarray(r0), static, costs)

    return jax.pure_callback(host, shapes, prices, log_prices, weights, initial_reserves, vmap_method="sequential")


def fee_path(prices: jax.Array, weights: jax.Array, initial_reserves: jax.Array, *, static: _Static,
             costs: KernelCosts) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One set's reserves [T, n], fee revenue [T], traded value [T]; under vmap, every set in one call."""

    @jax.custom_batching.custom_vmap
    def one(prices, weights, initial_reserves):
        r, f, v = fee_path_sets(prices, weights[None], initial_reserves[None], static=static, costs=costs)
        return r[0], f[0], v[0]

    @one.def_vmap
    def _batched(axis_size, in_batched, prices, weights, initial_reserves):
        _, w_b, r_b = in_batched
        weights = weights if w_b else jnp.broadcast_to(weights, (axis_size, *weights.shape))
        initial_reserves = (initial_reserves if r_b
                            else jnp.broadcast_to(initial_reserves, (axis_size, *initial_reserves.shape)))
        return fee_path_sets(prices, weights, initial_reserves, static=static, costs=costs), (True, True, True)

    return one(prices, weights, initial_reserves)
