"""The live table shows a running source's percentage and ETA when it knows its input size."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from etlkit.cli.progress import _table, clock_text, progress_text
from etlkit.engine.execution import NodeStats, RunResult


@pytest.mark.parametrize(
    ("done", "expected", "seconds", "text"),
    [
        (0, 100, 0.0, "0%"),
        (25, 100, 10.0, "25% eta 0:30"),
        (1, 10_000, 1.0, "0% eta 2:46:39"),
        (99, 100, 99.0, "99% eta 0:01"),
        (100, 100, 5.0, "99%"),  # the estimate fell short: not done until the node is
        (250, 100, 5.0, "99%"),
        (10, None, 1.0, ""),
        (10, 0, 1.0, ""),
    ],
)
def test_progress_text_gives_the_share_done_and_the_time_left_at_the_rate_so_far(
    done: int, expected: int | None, seconds: float, text: str
) -> None:
    assert progress_text(done, expected, seconds) == text


def test_clock_text_shows_minutes_and_hours() -> None:
    assert [clock_text(s) for s in (7, 750, 3723)] == ["0:07", "12:30", "1:02:03"]


def render(result: RunResult, *, live: bool) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=160, color_system=None).print(_table(result, "t", live=live))
    return buffer.getvalue()


def run_with(*nodes: NodeStats) -> RunResult:
    return RunResult("p", "r", "running", {n.name: n for n in nodes}, started=0.0)


def test_live_table_shows_a_running_sources_percentage_and_eta() -> None:
    # a node's time is its finished - started when set: a fixed minute, whatever the clock
    billing = NodeStats("billing", "source", "running", rows_in=50, expected_rows=200)
    billing.started, billing.finished = 100.0, 160.0
    done = NodeStats("patients", "source", "done", rows_in=10, expected_rows=10)
    done.started, done.finished = 100.0, 101.0
    text = render(run_with(billing, done), live=True)
    header = next(line for line in text.splitlines() if line.lstrip().startswith("node"))
    assert header.split()[:4] == ["node", "kind", "state", "progress"]
    billing_line = next(line for line in text.splitlines() if "billing" in line)
    assert "25% eta 3:00" in billing_line
    patients_line = next(line for line in text.splitlines() if "patients" in line)
    assert "%" not in patients_line


def test_live_table_has_no_progress_column_without_estimates_nor_in_the_summary() -> None:
    billing = NodeStats("billing", "source", "running", rows_in=50)
    billing.started, billing.finished = 100.0, 160.0
    assert "progress" not in render(run_with(billing), live=True)
    billing.expected_rows = 200
    assert "progress" not in render(run_with(billing), live=False)
