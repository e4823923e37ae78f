"""Plain-text tables and the time and duration cells in them, as the commands print them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def time_text(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def duration_text(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else "-"
