"""Turning results into Dagster metadata users can read in the UI.

Numbers: the UI prints a float metadata value with all its digits (1.23456789123) and a Markdown table
cell as written, so values are rounded to 4 significant digits here, large ones to whole units with
thousands separators, NaN shown as n/a. Wide tables: the UI renders Markdown under 1,000 characters inline
in the asset page's metadata column, which clips a table's right-hand columns; longer Markdown opens in a
dialog as wide as the window that scrolls, so the walk-forward folds table comes with its legend.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from quant_core.paths import quant_home

INLINE_MARKDOWN_LIMIT = 1000  # Dagster 1.13's UI: Markdown metadata at least this long opens in a dialog


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """Dagster has no image metadata type: embed the PNG as a data URI in Markdown."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def plot_metadata(png: bytes, alt: str, *path_parts: str) -> dict[str, dg.MetadataValue]:
    """The plot inline (Markdown) and as a PNG file under $QUANT_HOME/reports/ for download."""
    path = quant_home().joinpath("reports", *path_parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return {"plot": png_markdown(png, alt), "plot_file": dg.MetadataValue.path(str(path))}


def _rounded(v: float) -> float:
    """4 significant digits below 1,000, whole units from there (a pool value, a trade count as float)."""
    if not math.isfinite(v) or v == 0:
        return 0.0 if v == 0 else v
    return float(round(v)) if abs(v) >= 1000 else round(v, 3 - math.floor(math.log10(abs(v))))


def fmt_number(v: Any) -> str:
    """A table cell: floats as `_rounded` without exponent or trailing zeros (tiny ones in e-notation),
    NaN as n/a; anything else as str()."""
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v) or v == 0:
        return "0" if v == 0 else str(v)
    if abs(v) < 1e-4:
        return f"{v:.3g}"
    r = _rounded(v)
    if abs(r) >= 1000:
        return f"{r:,.0f}"
    decimals = max(0, 3 - math.floor(math.log10(abs(r))))
    return f"{r:.{decimals}f}".rstrip("0").rstrip(".")


def number(v: float) -> dg.MetadataValue:
    """A float metadata value at `_rounded` precision: read in the UI, still plotted on its Plots tab."""
    return dg.MetadataValue.float(_rounded(float(v)))


def percent(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.2f}%"


def markdown_table(rows: Sequence[Mapping[str, object]]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("(none)")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt_number(r.get(c)) for c in cols) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _window(start, end) -> str:
    """`2024-01-01 → 03-31`: the end's year only when it differs from the start's."""
    return f"{start:%Y-%m-%d} → {end:%m-%d}" if start.year == end.year else f"{start:%Y-%m-%d} → {end:%Y-%m-%d}"


def folds_markdown(report: Any, benchmark: str, trades: bool) -> dg.MetadataValue:
    """The walk-forward folds, one row each, with the legend saying what every column is (and which, at
    INLINE_MARKDOWN_LIMIT characters or more, makes the UI open the table whole in a dialog)."""
    rows = []
    for f in report.folds:
        fold = f.fold
        rows.append({
            "fold": fold.index, "train": _window(fold.train_start, fold.train_end),
            "test": _window(fold.test_start, fold.test_end),
            **({"IS trades": f.in_sample["n_trades"]} if trades else {}),
            "IS Sharpe": float(f.in_sample["daily_log_sharpe"]),
            **({"OOS trades": f.out_of_sample["n_trades"]} if trades else {}),
            "OOS Sharpe": float(f.out_of_sample["daily_log_sharpe"]),
            "OOS return": percent(float(f.out_of_sample["returns"])),
            f"{benchmark} return": percent(float(f.oos_benchmark["returns"])),
            "efficiency": float(f.walk_forward_efficiency),
        })
    first = report.folds[0].fold if report.folds else None
    shape = (f" Each trains on {(first.train_end - first.train_start).days} days and is tested on the "
             f"{(first.test_end - first.test_start).days} days that follow"
             + (f" a {(first.test_start - first.train_end).days}-day gap" if first.test_start > first.train_end
                else "") + "." if first else "")
    legend = [
        f"**{len(rows)} walk-forward folds.**{shape} Windows are UTC days, start → end (end excluded).",
        "",
        markdown_table(rows).value,
        "",
        "- **fold**: the fold's number, as on the walk-forward plot.",
        "- **IS**: in-sample, the fold's training window, on which its parameters were trained.",
        "- **OOS**: out-of-sample, the fold's test window, never seen in training.",
        "- **Sharpe**: the annualised Sharpe ratio of daily log returns.",
        "- **OOS return**: the total return over the test window.",
        f"- **{benchmark} return**: the benchmark's total return over the same days.",
        "- **efficiency**: OOS Sharpe / IS Sharpe, Pardo's walk-forward efficiency; n/a where the IS Sharpe is "
        "not positive.",
        *(["- **trades**: trades closed in the window."] if trades else []),
        "",
        "Reading it: OOS Sharpe close to the IS Sharpe (efficiency near 1) in every fold suggests parameters "
        "that generalise; a high IS Sharpe with a low or negative OOS one suggests they were fitted to noise.",
    ]
    return dg.MetadataValue.md("\n".join(legend))
