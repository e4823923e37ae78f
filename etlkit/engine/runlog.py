"""Each run's log, kept as JSON lines: `<logs_dir>/<pipeline>/<run_id>.jsonl`.

While a run executes, `capture` routes every log record of that run to its file: records logged
with `extra={"run_id": ...}`, and records logged from the run's node threads (user code
included), which `bind` (or `tagged`, around a node's code) tags with the run and node. A
task of the run in another process (a Dask worker) `collect`s its records as lines, bounded,
which travel back with its answer; `replay` appends them to the run's log where it is captured.

Nothing here is process-wide: the tag and the captured run's file are context variables, set in
the context a run executes in (its caller's, copied into each node's thread), so two runs in one
process each route their own records.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quoted
from pathlib import Path
from typing import Any, Final

#: The pipeline, run and node that records logged in this context belong to.
_bound: ContextVar[tuple[str, str, str] | None] = ContextVar("etlkit_log_bound", default=None)


def bind(pipeline: str, run_id: str, node: str) -> None:
    """Tag log records from the calling context with a run and node (call at a worker's start)."""
    _bound.set((pipeline, run_id, node))


def unbind() -> None:
    """Stop tagging log records from the calling context."""
    _bound.set(None)


@contextmanager
def tagged(pipeline: str, run_id: str, node: str) -> Iterator[None]:
    """Tag records logged in the block with a run and node, and the tag before again after
    it: nodes chained as generators in one thread are each tagged while their code runs."""
    token = _bound.set((pipeline, run_id, node))
    try:
        yield
    finally:
        _bound.reset(token)


class _RunFilter(logging.Filter):
    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        context = _bound.get()
        if not hasattr(record, "run_id") and context is not None:
            record.pipeline, record.run_id, record.node = context
        return getattr(record, "run_id", None) == self.run_id


def _line(at: float, level: str, logger: str, node: str, message: str) -> dict[str, Any]:
    return {
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        "level": level,
        "logger": logger,
        "node": node,
        "message": message,
    }


def _info_line(at: float, logger: str, node: str, message: str) -> str:
    """`json.dumps(_line(at, "INFO", ...))`, the same text, at half the cost: two lines per
    node are written this way, and the encoder `json.dumps` sets up per call was most of it."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat()
    return (
        f'{{"at": "{stamp}", "level": "INFO", "logger": {_quoted(logger)}, '
        f'"node": {_quoted(node)}, "message": {_quoted(message)}}}'
    )


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = _line(
            record.created,
            record.levelname,
            record.name,
            getattr(record, "node", ""),
            record.getMessage(),
        )
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class _RunLogHandler(logging.FileHandler):
    """Appends records to the run's file, flushing warnings and errors at once and other
    records at most every `_FLUSH_SECONDS` (and at the end): one flush per record cost more
    than a trivial node itself. A killed process loses at most that much of its INFO lines."""

    def __init__(self, path: Path, *, encoding: str) -> None:
        super().__init__(path, encoding=encoding)
        self._flushed = 0.0
        self.run_id = ""
        self.level_before: int | None = None  # the package's level to restore (see capture)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._append(self.format(record), urgent=record.levelno >= logging.WARNING)
        except Exception:  # logging never raises into the code that logs
            self.handleError(record)

    def _append(self, line: str, *, urgent: bool) -> None:
        if self.stream is None:
            self.stream = self._open()
        self.stream.write(line + self.terminator)
        now = time.monotonic()
        if urgent or now - self._flushed > _FLUSH_SECONDS:
            self.stream.flush()
            self._flushed = now

    def append(self, logger: str, node: str, message: str) -> None:
        """Append an INFO line without a log record (see `note`)."""
        self.append_line(_info_line(time.time(), logger, node, message), urgent=False)

    def append_line(self, line: str, *, urgent: bool) -> None:
        """Append a line made elsewhere (`note`, `replay`)."""
        with self.lock:  # type: ignore[union-attr]  # a Handler's lock, made by its __init__
            try:
                self._append(line, urgent=urgent)
            except Exception:  # like logging: a log that cannot be written fails nothing
                self.handleError(logging.makeLogRecord({"msg": line}))


#: Orders captures ending at once, so that the last one restores the package's level.
_LEVEL_LOCK: Final = threading.Lock()

#: The handler of the run captured in this context (see `capture` and `note`).
_captured: ContextVar[_RunLogHandler | None] = ContextVar("etlkit_run_log", default=None)


#: How stale a run's log file may be, for records below WARNING.
_FLUSH_SECONDS = 0.5


def log_path(logs_dir: str, pipeline: str, run_id: str) -> Path:
    """Where a run's log is kept."""
    return Path(logs_dir) / pipeline / f"{run_id}.jsonl"


@contextmanager
def capture(
    logs_dir: str, pipeline: str, run_id: str, *, filters: Sequence[logging.Filter] = ()
) -> Iterator[Path]:
    """Append the run's INFO-and-above records to its JSON-lines log while the block runs.

    `filters` run after the run filter (the secrets' masking, say).
    """
    path = log_path(logs_dir, pipeline, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _RunLogHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(_JsonLines())
    handler.addFilter(_RunFilter(run_id))
    for extra in filters:
        handler.addFilter(extra)
    root = logging.getLogger()
    package = logging.getLogger("etlkit")
    with _LEVEL_LOCK:
        if package.getEffectiveLevel() > logging.INFO:
            handler.level_before = package.level
            package.setLevel(logging.INFO)  # the file keeps INFO when the console shows less
        root.addHandler(handler)
    handler.run_id = run_id
    token = _captured.set(handler)
    try:
        yield path
    finally:
        _captured.reset(token)
        with _LEVEL_LOCK:
            root.removeHandler(handler)
            _restore_level(root, package, handler.level_before)
        handler.close()


def _restore_level(root: logging.Logger, package: logging.Logger, level: int | None) -> None:
    """Give `package` back the level a capture lowered, when no other run is still capturing;
    while one is, it restores the level when it ends (its lines need INFO until then)."""
    if level is None:
        return
    for other in root.handlers:
        if isinstance(other, _RunLogHandler | _Collector):
            if other.level_before is None:
                other.level_before = level
            return
    package.setLevel(level)


def note(run_id: str, node: str, message: str, *, logger: logging.Logger) -> None:
    """A node's lifecycle line ("started", "done: ..."): into the run's log if it is captured,
    and to `logger` at DEBUG.

    Not an INFO record, because a log record and its handlers cost as much as the rest of a
    trivial node's orchestration; the run's log, read by `etlkit logs`, has it
    all the same, and the console shows the nodes' progress from the run's events.
    """
    handler = _captured.get()
    if handler is not None and handler.run_id == run_id:
        handler.append(logger.name, node, message)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s", message, extra={"run_id": run_id, "node": node})


class _Collector(logging.Handler):
    """Keeps the records of a run logged in one context (`collect`) as lines, while their
    text stays under `limit` characters; counts the ones past it."""

    def __init__(self, run_id: str, limit: int) -> None:
        super().__init__(logging.INFO)
        self.addFilter(lambda _: _collecting.get() is self)  # this task's thread, not another's
        self.addFilter(_RunFilter(run_id))
        self.formatter = _JsonLines()
        self.limit = limit
        self.lines: list[dict[str, Any]] = []
        self.size = 0
        self.cut = 0
        self.cut_node = ""  # the node of the first record cut, for the line saying so
        self.level_before: int | None = None  # the package's level to restore (see capture)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = _line(
                record.created,
                record.levelname,
                record.name,
                getattr(record, "node", ""),
                record.getMessage(),
            )
            if record.exc_info and self.formatter is not None:
                line["exception"] = self.formatter.formatException(record.exc_info)
            size = sum(len(str(value)) for value in line.values())
            if self.cut or self.size + size > self.limit:
                self.cut += 1
                self.cut_node = self.cut_node or line["node"]
                return
            self.size += size
            self.lines.append(line)
        except Exception:  # logging never raises into the code that logs
            self.handleError(record)

    def collected(self) -> list[dict[str, Any]]:
        """The lines kept, and one saying how many were cut, if any were."""
        if not self.cut:
            return list(self.lines)
        said = (
            f"{self.cut} more log records of this task were cut: a task sends back at most "
            f"{self.limit} characters of its log"
        )
        return [*self.lines, _line(time.time(), "WARNING", __name__, self.cut_node, said)]


#: The collector of the task running in this context (see `collect`).
_collecting: ContextVar[_Collector | None] = ContextVar("etlkit_log_collector", default=None)


@contextmanager
def collect(run_id: str, *, limit: int) -> Iterator[_Collector]:
    """Keep the run's INFO-and-above records logged in this context while the block runs, as
    `capture` would write them, up to `limit` characters of text (a task on a Dask worker:
    its lines travel back with its answer, and `replay` writes them into the run's log)."""
    collector = _Collector(run_id, limit)
    token = _collecting.set(collector)
    root = logging.getLogger()
    package = logging.getLogger("etlkit")
    with _LEVEL_LOCK:
        if package.getEffectiveLevel() > logging.INFO:
            collector.level_before = package.level
            package.setLevel(logging.INFO)  # as a captured run's file keeps INFO
        root.addHandler(collector)
    try:
        yield collector
    finally:
        _collecting.reset(token)
        with _LEVEL_LOCK:
            root.removeHandler(collector)
            _restore_level(root, package, collector.level_before)


def replay(run_id: str, lines: Iterable[Mapping[str, Any]], **where: str) -> None:
    """Append lines `collect` kept elsewhere to the run's log, if it is captured in this
    context; `where`: facts added to each line (the worker, the partition)."""
    handler = _captured.get()
    if handler is None or handler.run_id != run_id:
        return
    for line in lines:
        urgent = str(line.get("level", "")) not in ("DEBUG", "INFO")
        handler.append_line(json.dumps({**line, **where}, default=str), urgent=urgent)


@dataclass(frozen=True)
class LogLine:
    """One record of a run's log."""

    at: str
    level: str
    logger: str
    node: str
    message: str
    exception: str | None = None

    def format(self) -> str:
        """The record as one line of text (plus the exception, if any)."""
        node = f" [{self.node}]" if self.node else ""
        text = f"{self.at} {self.level:<7}{node} {self.message}"
        return f"{text}\n{self.exception}" if self.exception else text


def read_log(logs_dir: str, pipeline: str, run_id: str, node: str | None = None) -> list[LogLine]:
    """A run's log records, optionally only one node's; [] when the run logged nothing."""
    path = log_path(logs_dir, pipeline, run_id)
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        data = json.loads(raw)
        line = LogLine(
            **{k: data.get(k) or "" for k in ("at", "level", "logger", "node")},
            message=data.get("message", ""),
            exception=data.get("exception"),
        )
        if node is None or line.node == node:
            lines.append(line)
    return lines
