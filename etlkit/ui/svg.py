"""Pictures drawn on the server as inline SVG: the DAG, the Gantt of node times, bar charts.

Drawn in Python (no JavaScript library, nothing fetched): the page stays readable without
scripts, and the layout is tested like any other function. Every text goes through
`markupsafe.escape`; the result is `Markup`, safe to put in a Jinja template as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from markupsafe import Markup, escape

#: Fill colour of a node or run by state (the same palette as the grid squares in ui.css).
STATE_COLOURS: Final[Mapping[str, str]] = {
    "success": "#2e9d4e",
    "done": "#2e9d4e",
    "reused": "#7bbf8e",
    "running": "#2f7fd8",
    "queued": "#9aa7b8",
    "pending": "#c9d1dc",
    "failed": "#d64541",
    "cancelled": "#e39b2d",
    "interrupted": "#e39b2d",
    "skipped": "#b7a6d9",
}
_NODE_W: Final = 150
_NODE_H: Final = 34
_GAP_X: Final = 70
_GAP_Y: Final = 18


def colour(state: str) -> str:
    """The colour of a state (grey for one not known)."""
    return STATE_COLOURS.get(state, "#c9d1dc")


@dataclass(frozen=True)
class Placed:
    """A node's box in the drawing: its layer (column) and slot (row) and pixel position."""

    name: str
    layer: int
    slot: int
    x: int
    y: int


def layout(order: Sequence[str], inputs: Mapping[str, Sequence[str]]) -> dict[str, Placed]:
    """A layered left-to-right layout: a node's column is its longest path from a source.

    Within a column nodes keep the topological `order` after a barycentre pass (the mean row
    of their inputs), which untangles most edges of real pipelines in one sweep.
    """
    layer: dict[str, int] = {}
    for name in order:
        layer[name] = 1 + max((layer[i] for i in inputs.get(name, ()) if i in layer), default=-1)
    columns: dict[int, list[str]] = {}
    for name in order:
        columns.setdefault(layer[name], []).append(name)
    slot: dict[str, int] = {}
    for index in sorted(columns):
        names = columns[index]
        if index > 0:
            names.sort(key=lambda n: _barycentre(n, inputs, slot))
        for position, name in enumerate(names):
            slot[name] = position
    return {
        name: Placed(
            name,
            layer[name],
            slot[name],
            10 + layer[name] * (_NODE_W + _GAP_X),
            10 + slot[name] * (_NODE_H + _GAP_Y),
        )
        for name in order
    }


def _barycentre(name: str, inputs: Mapping[str, Sequence[str]], slot: Mapping[str, int]) -> float:
    rows = [slot[i] for i in inputs.get(name, ()) if i in slot]
    return sum(rows) / len(rows) if rows else float("inf")


def _label(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def dag(
    order: Sequence[str],
    inputs: Mapping[str, Sequence[str]],
    states: Mapping[str, str],
    rows: Mapping[str, int],
    *,
    link: str | None = None,
) -> Markup:
    """The DAG as SVG: boxes coloured by `states`, each edge labelled with the rows its input
    node put out (`rows`). With `link` (a URL prefix), a box links to `link + node`."""
    placed = layout(order, inputs)
    width = max((p.x for p in placed.values()), default=0) + _NODE_W + 20
    height = max((p.y for p in placed.values()), default=0) + _NODE_H + 20
    parts = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="pipeline graph">'
    ]
    for name in order:
        target = placed[name]
        for source_name in inputs.get(name, ()):
            source = placed.get(source_name)
            if source is None:
                continue
            x1, y1 = source.x + _NODE_W, source.y + _NODE_H // 2
            x2, y2 = target.x, target.y + _NODE_H // 2
            middle = (x1 + x2) // 2
            parts.append(
                f'<path class="edge" d="M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"'
                ' fill="none" stroke="#8795a8"/>'
            )
            shown = f"{rows[source_name]:,}" if source_name in rows else ""
            parts.append(  # empty until the input node runs: live updates fill it in
                f'<text class="edge-rows" data-from="{escape(source_name)}" x="{middle}"'
                f' y="{(y1 + y2) // 2 - 3}" text-anchor="middle">{shown}</text>'
            )
    for name in order:
        box = placed[name]
        state = states.get(name, "pending")
        inner = (
            f'<rect x="{box.x}" y="{box.y}" width="{_NODE_W}" height="{_NODE_H}" rx="6"'
            f' fill="{colour(state)}"/><text x="{box.x + 8}" y="{box.y + 21}">'
            f"{escape(_label(name))}</text><title>{escape(name)}: {escape(state)}</title>"
        )
        if link is not None:
            inner = f'<a href="{escape(link + name)}">{inner}</a>'
        parts.append(f'<g class="node" data-node="{escape(name)}">{inner}</g>')
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Bar:
    """One bar of a Gantt: a node's start and end (None while it runs)."""

    name: str
    state: str
    start: datetime
    end: datetime | None


def gantt(bars: Sequence[Bar], now: datetime, *, width: int = 720) -> Markup:
    """The node timeline as SVG: one row per node, from its start to its end (or `now` while it
    runs, so a refreshed page shows it growing), on one time axis."""
    if not bars:
        return Markup('<p class="muted">No node has started yet.</p>')
    origin = min(b.start for b in bars)
    last = max((b.end or now) for b in bars)
    span = max((last - origin).total_seconds(), 0.001)
    label_w, row_h = 160, 18
    scale = (width - label_w - 10) / span
    height = row_h * len(bars) + 24
    parts = [
        f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{width}"'
        f' height="{height}" role="img" aria-label="node timeline">'
    ]
    for index, bar in enumerate(bars):
        y = 4 + index * row_h
        x = label_w + (bar.start - origin).total_seconds() * scale
        seconds = ((bar.end or now) - bar.start).total_seconds()
        w = max(seconds * scale, 2)
        parts.append(
            f'<text x="4" y="{y + 12}">{escape(_label(bar.name))}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 4}"'
            f' fill="{colour(bar.state)}"><title>{escape(bar.name)}: {seconds:.2f}s'
            f" ({escape(bar.state)})</title></rect>"
        )
    parts.append(
        f'<text x="{label_w}" y="{height - 4}">0s</text>'
        f'<text x="{width - 10}" y="{height - 4}" text-anchor="end">{span:.2f}s</text></svg>'
    )
    return Markup("".join(parts))


def bars(points: Sequence[tuple[str, int]], *, width: int = 720, height: int = 160) -> Markup:
    """A bar chart of (label, value) pairs, oldest first: row counts of one node over runs."""
    if not points:
        return Markup('<p class="muted">No runs to compare.</p>')
    top = max(max(v for _, v in points), 1)
    step = min((width - 20) / len(points), 40)
    parts = [
        f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" width="{width}"'
        f' height="{height + 20}" role="img" aria-label="rows per run">'
    ]
    for index, (label, value) in enumerate(points):
        h = value / top * (height - 10)
        x = 10 + index * step
        parts.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{max(step - 2, 1):.1f}"'
            f' height="{h:.1f}" fill="#2f7fd8"><title>{escape(label)}: {value:,} rows'
            "</title></rect>"
        )
    parts.append(
        f'<text x="10" y="{height + 15}">{escape(points[0][0])}</text>'
        f'<text x="{width - 10}" y="{height + 15}" text-anchor="end">'
        f"{escape(points[-1][0])}</text></svg>"
    )
    return Markup("".join(parts))
