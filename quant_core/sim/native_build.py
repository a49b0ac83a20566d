"""Building, caching and registering the simulator's C++ kernels (XLA FFI handlers), shared by every kernel module.

Why one place: each kernel (the fee loop, g3m_fee_native; the zero-fee growth, g3m_growth_native) is compiled on
first use with the system C++ compiler ($CXX, else c++ or g++) against jaxlib's FFI headers, into a cache directory
keyed by the source's text, the compiler, the flags and jax's version ($QUANT_NATIVE_DIR, else
~/.cache/quant-retrain/native), and registered with XLA once per process. Without a compiler, or when the build
fails, the caller's XLA path runs instead (one warning naming what runs). Each kernel has its own 0/1 switch.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jax

DIR_ENV = "QUANT_NATIVE_DIR"


# each kernel's switch: env -> (what 1, the default, runs; what 0 runs)
SWITCHES = {"QUANT_NATIVE_FEES": ("the compiled fee loop on the CPU", "always the XLA scan"),
            "QUANT_NATIVE_GROWTH": ("the compiled zero-fee growth on the CPU", "always the XLA version")}


def switch(env: str) -> bool:
    """A kernel's switch: unset or 1 (the kernel where it applies), 0 (always the XLA path); anything else refused."""
    raw = os.environ.get(env, "").strip()
    if raw not in ("", "0", "1"):
        on, off = SWITCHES[env]
        raise ValueError(f"{env}={raw!r}: set it to 1 ({on}, the default) or 0 ({off}), or unset it")
    return raw != "0"


def check_switches() -> None:
    """Refuse a bad value of any kernel's switch up front (simulate and train call this): a run that never reaches
    the kernel would otherwise accept it silently."""
    for env in SWITCHES:
        switch(env)


def cache_dir() -> Path:
    env = os.environ.get(DIR_ENV)
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quant-retrain" \
        / "native"


def build(source: Path, flags: Sequence[str], targets: dict[str, str], registered: list, log: logging.Logger,
          fallback: str) -> ctypes.CDLL | None:
    """Build (once per source, compiler, flags and jax) and load `source`, and register its handlers
    ({XLA target name: exported symbol}) unless `registered` already holds a library (XLA keeps the first handler
    under a name for the process). None, after one warning ending in `fallback` (what runs instead), when no
    C++ compiler is found, the cache directory is not writable, or the build fails."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        log.warning("no C++ compiler (c++, g++ or $CXX) found: %s", fallback)
        return None
    key = hashlib.sha256(source.read_bytes() + " ".join([cxx, *flags, jax.__version__]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)  # built aside, then renamed: processes race
        except OSError as exc:
            log.warning("cannot build %s in %s (%s; set %s to a writable directory): %s", source.name, target.parent,
                        exc, DIR_ENV, fallback)
            return None
        os.close(fd)
        cmd = [cxx, *flags, f"-I{jax.ffi.include_dir()}", "-o", tmp, str(source)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as exc:
            done = subprocess.CompletedProcess(cmd, 1, "", str(exc))
        if done.returncode:
            os.unlink(tmp)
            log.warning("compiling %s failed (%s): %s; %s", source.name, " ".join(cmd), done.stderr.strip()[-2000:],
                        fallback)
            return None
        os.replace(tmp, target)
    lib = ctypes.cdll.LoadLibrary(str(target))
    if not registered:
        for name, symbol in targets.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        registered.append(lib)
    return lib
