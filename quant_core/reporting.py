"""Plain-text tables of stored configurations and the live timeline (the demo and `quant configs ...`).

Why here and not in the CLI: the demo prints the same tables, and the CLI module stays short."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Breakers whose value and limit are fractions, shown as percentages.
PERCENT_BREAKERS = ("max_daily_loss", "max_adverse_selection")


def format_table(rows: list[dict], empty: str = "(no configurations stored)") -> str:
    if not rows:
        return empty
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    sep = "  ".join("-" * widths[c] for c in cols)
    body = ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join([line, sep, *body])


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.2f}%"


def configuration_rows(configs, stages: Mapping[int, Any] | None = None,
                       live_ids: Iterable[int] | None = None) -> list[dict]:
    """One row per version. `stages` (id -> current stage, from the events) and `live_ids` (versions live now)
    come from the timeline; without them the stage written with the version is shown ("stage at write")
    and "live" is omitted."""
    def value(v) -> str:
        """Pools: {token: value}; CEX strategies: one number."""
        if isinstance(v, dict):
            return ",".join(f"{t}:{x:.4g}" for t, x in v.items())
        return f"{v:.4g}"

    live = set(live_ids) if live_ids is not None else None
    rows = []
    for c in configs:
        params = "; ".join(f"{name}={value(v)}" for name, v in c.parameters.items())
        row = {
            "id": c.id,
            "universe": c.universe_key,
            "strategy": c.strategy,
        }
        if stages is None:
            row["stage at write"] = str(c.lifecycle_stage)
        else:
            row["stage now"] = str(stages.get(c.id, c.lifecycle_stage))
        if live is not None:
            row["live"] = "yes" if c.id in live else "no"
        rows.append(
            row | {
                "IS sharpe": _num(c.metrics.get("in_sample", {}).get("daily_log_sharpe")),
                "OOS sharpe": _num(c.metrics.get("walk_forward", {}).get("oos_sharpe")),
                "n": c.sample_size,  # pools: out-of-sample days; CEX strategies: out-of-sample trades
                "window": f"{c.train_start:%Y-%m-%d}..{c.train_end:%Y-%m-%d} | ..{c.test_end:%Y-%m-%d}",
                "parameters": params,
            }
        )
    return rows


def format_breaker(name: str, reading: Mapping[str, Any]) -> str:
    """`max_daily_loss 0.4%/2%`: today's reading vs its limit ("-" not readable yet; "!" tripped)."""
    if reading.get("action") == "live_only":
        return f"{name} live only"
    value, limit = reading.get("value"), reading.get("limit")
    if name in PERCENT_BREAKERS:
        shown = "-" if value is None else f"{value * 100:.1f}%"
        lim = "?" if limit is None else f"{limit * 100:g}%"
    else:
        shown = "-" if value is None else f"{value:.3g}"
        lim = "?" if limit is None else f"{limit:g}"
    return f"{name} {shown}/{lim}" + ("!" if reading.get("tripped") else "")


def breaker_order(names: Iterable[str]) -> list[str]:
    """The names in BREAKERS' order (unknown ones last): a JSON column may not keep the written key order."""
    from quant_core.live.breakers import BREAKERS

    rank = {n: i for i, n in enumerate(BREAKERS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def live_rows(statuses: list[dict]) -> list[dict]:
    """One row per universe from LiveStatus dicts; dashes where nothing is live."""
    rows = []
    for s in statuses:
        on = s["configuration_id"] is not None
        dash = "-"
        rows.append({
            "universe": s["universe"],
            "config": s["configuration_id"] if on else "none",
            "stage": s["stage"] or dash,
            "live since": s["live_since"] or dash,
            "days": s["forward_days"] if on else dash,
            "trades": s["forward_trades"] if on else dash,
            "return": _pct(s["forward_return"]) if on else dash,
            "benchmark": _pct(s["forward_benchmark_return"]) if on else dash,
            "sharpe": _num(s["forward_sharpe"], ".2f") if on else dash,
            "max dd": _pct(s["max_drawdown"]) if on else dash,
            "paused": ("yes" if s["paused"] else "no") if on else dash,
            "breakers": ", ".join(format_breaker(n, s["breakers"][n]) for n in breaker_order(s["breakers"]))
            or dash,
        })
    return rows


def format_live(statuses: list[dict]) -> str:
    """The live table, then why each universe is (or is not) live."""
    if not statuses:
        return "(no versions stored)"
    notes = [f"{s['universe']}: live since {s['live_since']}: {s['why']}" if s["configuration_id"] is not None
             else f"{s['universe']}: {s['why']}" for s in statuses if s["why"]]
    return "\n".join([format_table(live_rows(statuses)), "", *notes])


def format_history(h: dict) -> str:
    """A universe's versions, its events in order and its live periods, as three tables."""
    versions = [{"id": v["id"], "revision": v["revision"], "available": v["available"], "stage now": v["stage"],
                 "forward days": v["forward_days"], "forward return": _pct(v.get("forward_return"))}
                for v in h["versions"]]
    events = [{"day": e["day"] or "-", "configuration": e["configuration_id"], "kind": e["kind"],
               "stage": f"{e['from_stage'] or '-'} -> {e['to_stage']}" if e["to_stage"] else "",
               "reason": e["reason"]} for e in h["events"]]
    periods = [{"configuration": p["configuration_id"], "since": p["since"], "until": p["until"] or "live now",
                "reason": p["reason"], "ended because": p["ended_because"] or ""} for p in h["live_periods"]]
    return "\n".join([
        f"universe {h['universe']}", "", "versions", format_table(versions, "(none)"),
        "", "events", format_table(events, "(none)"),
        "", "live periods", format_table(periods, "(never live)"),
    ])
