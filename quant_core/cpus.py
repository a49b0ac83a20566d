"""How many CPUs this process may use (its affinity mask where the OS has one): one fact for the search threads
(quant_core.train.threads) and the CPU fee loop's threads (quant_core.sim.amm.g3m_fee_native)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
