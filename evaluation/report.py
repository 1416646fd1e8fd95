"""Plain-text tables and a PNG bar chart of evaluation rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

# A file backend: the chart is written to disk, and the command also runs on machines without a display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format rows as a text table: floats with 4 decimals, or 1 in columns whose name contains "ms"."""
    cells = [[_format_cell(column, value) for column, value in zip(columns, row, strict=True)] for row in rows]
    widths = [max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths)),
             "  ".join("-" * width for width in widths)]
    for row in cells:
        first, *rest = row
        lines.append("  ".join([first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(rest, widths[1:]))]))
    return "\n".join(lines)


def _format_cell(column: str, value: Any) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.1f}" if "ms" in column else f"{value:.4f}"


def bar_chart(rows: Sequence[dict[str, Any]], metric_names: Sequence[str], path: Path, *, title: str) -> None:
    """Write a grouped bar chart: one group per metric, one bar per retriever configuration."""
    figure, axis = plt.subplots(figsize=(1.6 + 1.5 * len(metric_names), 4))
    width = 0.8 / max(len(rows), 1)
    for offset, row in enumerate(rows):
        positions = [i + (offset - (len(rows) - 1) / 2) * width for i in range(len(metric_names))]
        values = [row[name] for name in metric_names]
        bars = axis.bar(positions, values, width, label=row["retrievers"])
        axis.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    axis.set_xticks(range(len(metric_names)), metric_names)
    # Headroom above 1.0 keeps the legend row clear of the bars.
    axis.set_ylim(0, 1.2)
    axis.set_title(title)
    axis.legend(loc="upper center", ncol=max(len(rows), 1), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
