"""The store's records (runs, node runs and their partitions, events, slot leases, schedulers)
and their rows.

Records are frozen dataclasses whose fields are named after the columns they are read from
(`_columns`, `_record`). Datetimes are timezone-aware UTC in Python and ISO-8601 text in the file
(`_ts`), so they sort as text. The helpers here are shared by the store's modules only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etlkit.errors import StoreError
from etlkit.storage.store.vocabulary import RUN_STATES, NodeState, RunState

_R = TypeVar("_R")


@dataclass(frozen=True)
class RunRecord:
    """One run of one pipeline, as recorded in the store."""

    run_id: str
    pipeline: str
    logical_date: datetime
    params: Mapping[str, str]
    trigger: str
    state: RunState
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    staging_root: str
    heartbeat_at: datetime | None
    pid: int | None
    attempt: int
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    timezone: str | None = None
    owner: str | None = None
    executor: str | None = None  # what ran its nodes (`local`, `dask ...`); None: not recorded

    @property
    def zone(self) -> tzinfo:
        """The timezone the run's logical date is read in (UTC when unknown or not IANA)."""
        return _zone(self.timezone)

    @property
    def local_logical_date(self) -> datetime:
        """The logical date in the run's timezone: what `ctx.ds` shows its nodes."""
        return self.logical_date.astimezone(self.zone)

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, or None until the run has both."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class PartitionRecord:
    """One partition of a node attempt that a distributed executor ran: where, and what it did.
    `partition_attempt` is the executor's name for the try of it that this is."""

    partition: str
    worker: str
    rows: int
    partition_attempt: str
    seconds: float


@dataclass(frozen=True)
class NodeUpdate:
    """What `RunStore.record_nodes` writes about one node attempt (see `record_node`)."""

    node: str
    kind: str
    attempt: int
    state: NodeState
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows_in: int = 0
    rows_out: int = 0
    invalid_rows: int = 0
    bytes_staged: int = 0
    chunks: int = 0
    error: str | None = None
    partitions: tuple[PartitionRecord, ...] = ()  # a distributed executor's, as reported so far


@dataclass(frozen=True)
class NodeRunRecord:
    """One attempt of one node within a run."""

    run_id: str
    node: str
    kind: str
    attempt: int
    state: NodeState
    started_at: datetime | None
    finished_at: datetime | None
    rows_in: int
    rows_out: int
    invalid_rows: int
    bytes_staged: int
    chunks: int
    error: str | None


@dataclass(frozen=True)
class EventRecord:
    """A structured fact about a run (`node` is '' for run-level events)."""

    id: int
    run_id: str
    node: str
    kind: str
    at: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class SlotLease:
    """One slot of a named pool held by one node of one run, in process `pid` on `host`."""

    pool: str
    run_id: str
    node: str
    pid: int
    host: str
    acquired_at: datetime


@dataclass(frozen=True)
class SchedulerRecord:
    """A scheduler process working on this store, as of its last heartbeat."""

    scheduler_id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime


def _columns(record: type[Any], alias: str = "") -> str:
    return ", ".join(alias + field.name for field in fields(record))


_RUNS: Final = f"SELECT {_columns(RunRecord)} FROM runs"
_NODES: Final = _columns(NodeRunRecord)


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise StoreError(f"The run store needs timezone-aware datetimes; got naive {moment}.")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _zone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _opt_ts(moment: datetime | None) -> str | None:
    return None if moment is None else _ts(moment)


def _record(record: type[_R], row: sqlite3.Row) -> _R:
    """A record from a row whose columns are named after its fields (see `_columns`)."""
    values: dict[str, Any] = dict(zip(row.keys(), row, strict=True))
    for name, value in values.items():
        if name in ("params", "payload"):
            values[name] = json.loads(value)
        elif value is not None and (name.endswith("_at") or name in _DATETIME_COLUMNS):
            values[name] = datetime.fromisoformat(value).astimezone(UTC)
    return record(**values)


_DATETIME_COLUMNS: Final = frozenset(
    {"at", "logical_date", "data_interval_start", "data_interval_end"}
)


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise StoreError(f"Unknown {what} {value!r}; expected {_words(allowed)}.")


def _words(values: Collection[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else "".join(quoted)


def _filters(pipeline: str | None, states: Collection[str] | None) -> tuple[str, tuple[str, ...]]:
    clauses: list[str] = []
    args: list[str] = []
    if pipeline is not None:
        clauses.append("pipeline = ?")
        args.append(pipeline)
    if states is not None:
        for state in states:
            _check(state, RUN_STATES, "run state")
        clauses.append(f"state IN ({', '.join('?' * len(states))})")
        args.extend(states)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)
