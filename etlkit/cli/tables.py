"""Plain-text tables and the time and duration cells in them, as the commands print them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print `rows` under `headers`, each column as wide as its widest cell."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def time_text(moment: datetime | None) -> str:
    """A moment in local time to the second, or `-`."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def duration_text(value: float | None) -> str:
    """Seconds to one decimal place, or `-`."""
    return f"{value:.1f}s" if value is not None else "-"
