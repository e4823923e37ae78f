"""Showing a run to a person: a live rich table in a terminal, one-line events elsewhere.

Both are run listeners (`etlkit.engine.execution.Listener`); the CLI picks one by whether its output
is a terminal. Both end with the same summary table: rows in and out and time per node (a sink's
rows out are the rows it wrote, a SQL node's rows in those its inputs staged), then where each sink
wrote and how many invalid rows validation kept out.
"""

from __future__ import annotations

import threading
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from etlkit.engine.execution import Event, NodeStats, RunResult


def _rate(stats: NodeStats) -> str:
    seconds = stats.seconds
    rows = max(stats.rows_out, stats.rows_in)
    return f"{rows / seconds:,.0f}" if seconds > 0 and rows else "-"


def summary_rows(result: RunResult) -> list[tuple[str, ...]]:
    """One row of text cells per node: node, kind, state, rows in, rows out, seconds, rows/s,
    chunks (the order of `HEADERS`: what matters most comes first in a narrow terminal)."""
    return [
        (
            stats.name,
            stats.kind,
            stats.state,
            f"{stats.rows_in:,}",
            f"{stats.rows_out:,}",
            f"{stats.seconds:.2f}",
            _rate(stats),
            f"{max(stats.chunks_out, stats.chunks_in):,}",
        )
        for stats in result.nodes.values()
    ]


HEADERS = ("node", "kind", "state", "rows in", "rows out", "seconds", "rows/s", "chunks")


def output_lines(result: RunResult) -> list[str]:
    """Where the run's data went: each sink's rows and target, and the invalid rows that
    validation kept out of a node's output (dropped, or quarantined into `<node>_rejects`)."""
    lines = [
        f"{stats.name} wrote {stats.write.rows:,} rows to {stats.write.uri}"
        for stats in result.nodes.values()
        if stats.write is not None
    ]
    lines += [
        f"{stats.name} left out {stats.invalid_rows:,} invalid rows "
        f"(`etlkit show {result.run_id}` says whether dropped or quarantined)"
        for stats in result.nodes.values()
        if stats.invalid_rows and stats.state in ("done", "reused")
    ]
    return lines


def clock_text(seconds: float) -> str:
    """A time left as a clock: `0:07`, `12:30`, `1:02:03`."""
    minutes, secs = divmod(max(round(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(done: int, expected: int | None, seconds: float) -> str:
    """A running source's share of the rows it expects, and the time left at its rate so far:
    `42% eta 0:13`. Empty when the total is unknown. An estimate may fall short, so the share
    stops at 99% (and the ETA is dropped) until the node finishes."""
    if not expected or expected <= 0:
        return ""
    if done >= expected:
        return "99%"
    percent = f"{100 * done // expected}%"
    if done <= 0 or seconds <= 0:
        return percent
    return f"{percent} eta {clock_text(seconds * (expected - done) / done)}"


def _progress(stats: NodeStats) -> str:
    if stats.state != "running":
        return ""
    return progress_text(stats.rows_in, stats.expected_rows, stats.seconds)


_STYLES = {
    "done": "green",
    "reused": "cyan",
    "running": "yellow",
    "failed": "bold red",
    "cancelled": "magenta",
    "pending": "dim",
}


def _table(result: RunResult, title: str, *, live: bool = False) -> Table:
    """The nodes' table; `live` adds the running sources' progress (`progress_text`) when
    any of them knows how many rows to expect."""
    from rich import box
    from rich.table import Table

    rows = summary_rows(result)
    progress = [_progress(stats) for stats in result.nodes.values()] if live else []
    if any(progress):
        rows = [(*row[:3], cell, *row[3:]) for row, cell in zip(rows, progress, strict=True)]
    headers = (*HEADERS[:3], "progress", *HEADERS[3:]) if any(progress) else HEADERS
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for index, header in enumerate(headers):
        # cells never wrap or shrink below their content: the kind column goes first
        widest = max([len(header), *(len(row[index]) for row in rows)])
        table.add_column(
            header,
            justify="left" if header in ("node", "kind", "state") else "right",
            no_wrap=True,
            min_width=widest if header != "kind" else None,
        )
    for row in rows:
        style = _STYLES.get(row[2], "")
        table.add_row(*row[:2], f"[{style}]{row[2]}[/]" if style else row[2], *row[3:])
    return table


def _title(result: RunResult) -> str:
    return f"{result.pipeline} · run {result.run_id} · {result.state} · {result.seconds:.1f}s"


class LiveProgress:
    """A rich live table of every node's state, rows, chunks and rate, refreshed 8 times/s;
    a running source that knows its input size (`Source.estimate`) shows how far it is and
    the time left."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.result: RunResult | None = None
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind == "run_started":
            from rich.live import Live

            self.result = event.result
            self.live = Live(
                get_renderable=lambda: _table(event.result, _title(event.result), live=True),
                console=self.console,
                refresh_per_second=8,
                transient=True,
            )
            self.live.start()
        elif event.kind == "run_finished" and self.live is not None:
            with self.lock:
                self.live.stop()
                self.live = None
            self.console.print(_table(event.result, _title(event.result)))
            for line in output_lines(event.result):
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)


class PlainProgress:
    """One line per node lifecycle event, then a plain summary table (for logs and CI)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()

    def _line(self, text: str) -> None:
        with self.lock:
            self.stream.write(f"[{time.perf_counter() - self.t0:7.2f}s] {text}\n")
            self.stream.flush()

    def __call__(self, event: Event) -> None:
        result = event.result
        if event.kind == "run_started":
            self._line(f"run {result.run_id} of {result.pipeline} started")
        elif event.kind == "node_started":
            self._line(f"node {event.node} started")
        elif event.kind == "node_finished":
            stats = result.nodes[event.node]
            if stats.state in ("done", "reused"):
                self._line(
                    f"node {event.node} {stats.state}: {stats.rows_in:,} rows in, "
                    f"{stats.rows_out:,} rows out, {stats.seconds:.2f}s"
                )
            elif stats.state == "failed":
                self._line(f"node {event.node} failed")
            else:
                self._line(f"node {event.node} {stats.state}")
        elif event.kind == "run_finished":
            self._line(f"run {result.run_id} {result.state} in {result.seconds:.2f}s")
            widths = [
                max(len(h), *(len(r[i]) for r in summary_rows(result)))
                for i, h in enumerate(HEADERS)
            ]
            lines = [
                "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)),
                *(
                    "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                    for row in summary_rows(result)
                ),
                *output_lines(result),
            ]
            with self.lock:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
