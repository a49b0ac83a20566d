"""Plain-text tables of stored configurations (the demo and `quant configs list`)."""

from __future__ import annotations


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no configurations stored)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    sep = "  ".join("-" * widths[c] for c in cols)
    body = ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join([line, sep, *body])


def configuration_rows(configs) -> list[dict]:
    def sharpe(v):
        return "n/a" if v is None else f"{v:.3f}"

    def value(v) -> str:
        """Pools: {token: value}; CEX strategies: one number."""
        if isinstance(v, dict):
            return ",".join(f"{t}:{x:.4g}" for t, x in v.items())
        return f"{v:.4g}"

    rows = []
    for c in configs:
        params = "; ".join(f"{name}={value(v)}" for name, v in c.parameters.items())
        rows.append(
            {
                "id": c.id,
                "universe": c.universe_key,
                "strategy": c.strategy,
                "stage": str(c.lifecycle_stage),
                "IS sharpe": sharpe(c.metrics.get("in_sample", {}).get("daily_log_sharpe")),
                "OOS sharpe": sharpe(c.metrics.get("walk_forward", {}).get("oos_sharpe")),
                "n": c.sample_size,  # pools: out-of-sample days; CEX strategies: out-of-sample trades
                "window": f"{c.train_start:%Y-%m-%d}..{c.train_end:%Y-%m-%d} | ..{c.test_end:%Y-%m-%d}",
                "parameters": params,
            }
        )
    return rows
