"""Progress display: a live rich table in a terminal, plain lines otherwise, and a summary."""

from __future__ import annotations

import io

import pyarrow as pa
from rich.console import Console

import etlkit as ek
from etlkit.cli.progress import LiveProgress, PlainProgress, summary_rows
from etlkit.testing import MemorySink, MemorySource


class Small(ek.Pipeline):
    numbers = MemorySource(pa.table({"x": list(range(10))}), chunk_rows=3)
    out = MemorySink(numbers)


def test_plain_progress_prints_one_line_per_node_event_and_a_summary(
    settings: ek.Settings,
) -> None:
    stream = io.StringIO()

    result = Small.run(settings=settings, listeners=[PlainProgress(stream)])

    text = stream.getvalue()
    assert result.state == "success"
    assert f"run {result.run_id} of small started" in text
    assert "node numbers started" in text
    assert "node numbers done: 10 rows in, 10 rows out" in text
    assert f"run {result.run_id} success" in text
    header = next(line for line in text.splitlines() if line.startswith("node "))
    assert header.split() == [
        "node",
        "kind",
        "state",
        "rows",
        "in",
        "rows",
        "out",
        "seconds",
        "rows/s",
        "chunks",
    ]
    assert text.count("\n") < 20  # no line per chunk


def test_live_progress_draws_a_table_and_leaves_the_summary(settings: ek.Settings) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)

    result = Small.run(settings=settings, listeners=[LiveProgress(console)])

    text = buffer.getvalue()
    assert result.state == "success"
    assert "small · run" in text
    assert "numbers" in text
    assert "rows/s" in text
    assert "done" in text


def test_summary_rows_report_rows_chunks_and_state(settings: ek.Settings) -> None:
    result = Small.run(settings=settings)

    rows = {row[0]: row for row in summary_rows(result)}

    assert rows["numbers"][1:5] == ("source", "done", "10", "10")
    assert rows["numbers"][7] == "4"  # chunks
    assert rows["out"][1:5] == ("sink", "done", "10", "10")  # rows out: the rows it wrote
