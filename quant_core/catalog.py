"""Everything a run spec can tune, for people: every pool rule, hook and CEX strategy with its parameters.

Read from the same schemas the code runs on (`quant_core.params.Param` in the rules, hooks and strategies),
so `quant list` cannot drift from what training does.
"""

from __future__ import annotations

from quant_core.params import Param
from quant_core.sim.hooks import HOOKS
from quant_core.sim.registry import available_rules, get_rule
from quant_core.strategies import available_strategies, get_strategy

KINDS = ("rules", "hooks", "strategies")


def param_row(p: Param, tokens: bool = True) -> dict:
    """One parameter as plain data: where it starts, its range and kind, its unit and meaning (`tokens`:
    whether it may hold one value per token, as a pool's parameters may)."""
    if p.kind == "choice":
        values = "one of " + ", ".join(f"{c:g}" for c in p.choices)
    else:
        values = f"{p.low:g} .. {p.high:g}{' (log)' if p.log_scale else ''}{' (whole)' if p.kind == 'int' else ''}"
    flags = (("per token", tokens and not p.scalar), ("not trained by gradient descent", not p.trainable),
             (f"only with {p.only_if}", p.only_if is not None), ("range binds values", p.hard_limits))
    notes = [n for n, on in flags if on]
    return {"name": p.name, "default": p.starts_from, "range": values, "unit": p.unit,
            "trains_as": p.transform.name, "notes": ", ".join(notes), "description": p.description,
            "aliases": list(p.aliases)}


def catalog() -> dict[str, list[dict]]:
    """{"rules": [...], "hooks": [...], "strategies": [...]}, each entry {name, description, parameters}."""
    return {
        "rules": [{"name": n, "description": get_rule(n).description,
                   "parameters": [param_row(p) for p in get_rule(n).params]} for n in available_rules()],
        "hooks": [{"name": f"{h.name}__", "description": h.description, "parameters": [param_row(p) for p in h.params]}
                  for h in HOOKS.values()],
        "strategies": [{"name": n, "description": get_strategy(n).description,
                        "parameters": [param_row(p, tokens=False) for p in get_strategy(n).params]}
                       for n in available_strategies()],
    }


def format_catalog(entries: dict[str, list[dict]]) -> str:
    """Plain text: a heading per kind, each entry with its parameters one per line."""
    out = []
    for kind, items in entries.items():
        out.append(f"{kind.upper()}")
        for e in items:
            out.append(f"  {e['name']}: {e['description']}")
            for p in e["parameters"]:
                unit = f" {p['unit']}" if p["unit"] else ""
                notes = f"; {p['notes']}" if p["notes"] else ""
                out.append(f"      {p['name']:<24} default {p['default']:<24} {p['range']}{unit}{notes}")
                out.append(f"      {'':<24} {p['description']}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
