"""Results as JSON for people and files: NaN and infinities become null, numpy values plain Python.

(The store is stricter: `quant_core.store.records.strict_json` refuses non-finite numbers, naming the field,
because a stored configuration must never hold an undefined number silently.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_safe(obj: Any) -> Any:
    """Nested dicts/lists/numbers with NaN and infinities as None and numpy scalars as Python ones."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
