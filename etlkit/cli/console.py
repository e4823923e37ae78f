"""Where the command's logging goes: stderr, as text or JSON lines.

While `run` or `retry` waits for a run, its ERROR records stay off the console: the command
prints the run's error itself (`report_errors_once`).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run_id", "node", "pipeline"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        return json.dumps(data)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is logged, not when it was created:
    a stream swapped since (a test's captured output, say) may be closed by then."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr


class _ReportedOnce(logging.Filter):
    """Keeps etlkit's ERROR records about a run off the console while `run` or `retry` waits
    for it: the command prints the run's error itself, and the run's log keeps the records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno >= logging.ERROR
            and record.name.startswith("etlkit.")
            and hasattr(record, "run_id")
        )


def report_errors_once() -> None:
    """Keep run ERROR records off the console while the command waits for the run."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Stderr):
            handler.addFilter(_ReportedOnce())


def configure_logging(level: str, fmt: str) -> None:
    """Log to stderr at `level`, as text or JSON lines (`fmt`), and nowhere else."""
    handler = _Stderr()
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level.upper())  # per-run log files take INFO whatever the console shows
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
