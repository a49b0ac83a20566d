"""Turning results into Dagster metadata users can read in the UI."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

import dagster as dg

from quant_core.paths import quant_home


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """Dagster has no image metadata type: embed the PNG as a data URI in Markdown."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def plot_metadata(png: bytes, alt: str, *path_parts: str) -> dict[str, dg.MetadataValue]:
    """The plot inline (Markdown) and as a PNG file under $QUANT_HOME/reports/ for download."""
    path = quant_home().joinpath("reports", *path_parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return {"plot": png_markdown(png, alt), "plot_file": dg.MetadataValue.path(str(path))}


def markdown_table(rows: Sequence[Mapping[str, object]]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("(none)")
    cols = list(rows[0])

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))
