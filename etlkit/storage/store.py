"""The run history store: runs, node runs, events and pipeline state in one SQLite file.

Threads share a `RunStore` (one lock around its connection); processes share the file (WAL mode,
and every write is one `BEGIN IMMEDIATE` transaction). Datetimes are timezone-aware UTC in Python
and ISO-8601 text (`2025-03-01T02:00:00.000000+00:00`) in the file, so they sort as text. The
schema version is `PRAGMA user_version`; `_MIGRATIONS` upgrades older files in order, and a file
from a newer etlkit is refused. `_SCHEMA_V1` below is the schema; `_SCHEMA_V2` adds what the
scheduler needs: each run's data interval, paused pipelines, pool slot leases and scheduler
heartbeats; `_SCHEMA_V3` adds each run's timezone (the one its logical date is read in) and
owner: the host, pid and process start time of the process running it, so any command can tell
a run whose process was killed from a live one (`fail_dead_runs`), scheduler or not.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etlkit.errors import RunExistsError as RunExistsError
from etlkit.errors import StoreError

logger = logging.getLogger(__name__)

_R = TypeVar("_R")

#: The one vocabulary of run and node states: the store records them, the engine reports them
#: (a run in the engine is never "queued" or "interrupted"; those are the store's and scheduler's).
RunState = Literal["queued", "running", "success", "failed", "cancelled", "interrupted", "skipped"]
NodeState = Literal["pending", "running", "done", "failed", "cancelled", "reused", "skipped"]

RUN_STATES: Final[tuple[str, ...]] = get_args(RunState)
NODE_STATES: Final[tuple[str, ...]] = get_args(NodeState)
ACTIVE_STATES: Final[tuple[RunState, ...]] = ("queued", "running")
FINAL_STATES: Final[tuple[RunState, ...]] = (
    "success",
    "failed",
    "cancelled",
    "interrupted",
    "skipped",  # a sensor timed out with soft_fail: the run had nothing to do
)
RETRYABLE_STATES: Final[tuple[RunState, ...]] = ("failed", "cancelled", "interrupted")
BUSY_TIMEOUT_MS: Final = 10_000


def new_run_id(now: datetime | None = None) -> str:
    """A unique, sortable, path-safe run id from its creation time: `20250301T020000Z-7f3a2c`.

    The one run-id function: manual runs, scheduled runs and backfills all take theirs here.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"


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

_SCHEMA_V1: Final = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, logical_date TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}', trigger TEXT NOT NULL, state TEXT NOT NULL,
        created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, error TEXT,
        staging_root TEXT NOT NULL, heartbeat_at TEXT, pid INTEGER,
        attempt INTEGER NOT NULL DEFAULT 1)""",
    "CREATE INDEX runs_pipeline_created ON runs (pipeline, created_at)",
    "CREATE INDEX runs_state ON runs (state)",
    # The scheduler's guarantee: one scheduled or backfilled run per pipeline and logical date.
    """CREATE UNIQUE INDEX runs_one_per_logical_date ON runs (pipeline, logical_date)
        WHERE trigger IN ('schedule', 'backfill')""",
    """CREATE TABLE node_runs (
        seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        node TEXT NOT NULL, kind TEXT NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL,
        started_at TEXT, finished_at TEXT, rows_in INTEGER NOT NULL DEFAULT 0,
        rows_out INTEGER NOT NULL DEFAULT 0, invalid_rows INTEGER NOT NULL DEFAULT 0,
        bytes_staged INTEGER NOT NULL DEFAULT 0, chunks INTEGER NOT NULL DEFAULT 0, error TEXT,
        UNIQUE (run_id, node, attempt))""",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        node TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL, at TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}')""",
    "CREATE INDEX events_run ON events (run_id, id)",
    # Incremental-load cursors and scheduler state, per pipeline.
    """CREATE TABLE state (
        pipeline TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        updated_at TEXT NOT NULL, PRIMARY KEY (pipeline, key))""",
)


def _migrate_1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)


_SCHEMA_V2: Final = (
    # The data interval [start, end) a scheduled run covers (NULL for runs without one).
    "ALTER TABLE runs ADD COLUMN data_interval_start TEXT",
    "ALTER TABLE runs ADD COLUMN data_interval_end TEXT",
    "CREATE TABLE paused_pipelines (pipeline TEXT PRIMARY KEY, paused_at TEXT NOT NULL)",
    # Slots of named pools held by running nodes, across processes (see `acquire_slot`).
    """CREATE TABLE pool_slots (
        pool TEXT NOT NULL, run_id TEXT NOT NULL, node TEXT NOT NULL, pid INTEGER NOT NULL,
        host TEXT NOT NULL, acquired_at TEXT NOT NULL, PRIMARY KEY (pool, run_id, node))""",
    """CREATE TABLE schedulers (
        scheduler_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
        started_at TEXT NOT NULL, heartbeat_at TEXT NOT NULL)""",
)


def _migrate_2(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V2:
        conn.execute(statement)


_SCHEMA_V3: Final = (
    # The IANA timezone of the run's logical date (NULL: UTC, as runs recorded before it).
    "ALTER TABLE runs ADD COLUMN timezone TEXT",
    # `host|pid|start`: the process running the run (see `owner_of`); NULL when none is known.
    "ALTER TABLE runs ADD COLUMN owner TEXT",
)


def _migrate_3(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V3:
        conn.execute(statement)


# _MIGRATIONS[i] takes a file from version i to i + 1. Append; never edit a released one.
_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_1, _migrate_2, _migrate_3]


class RunStore:
    """The run history in one SQLite file; safe to share between threads and processes.

    Every method raises StoreError when the file cannot be opened, read or written.

    Example:
        ```python
        with RunStore(state_dir / "runs.db") as store:
            store.create_run(run_id=rid, pipeline="monthly_report", logical_date=ds,
                             params={}, trigger="schedule", staging_root="data/staging")
            store.start_run(rid, pid=os.getpid())
            store.finish_run(rid, "success")
        ```
    """

    SCHEMA_VERSION: ClassVar[int] = len(_MIGRATIONS)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"Cannot open the run store at {self.path}: {exc}") from exc
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        """Switch to WAL and migrate, retrying while another process creates the same file.

        Changing the journal mode of a file another connection is setting up can fail at once
        with "database is locked" (SQLite's busy timeout does not cover it): two `etlkit run`s
        starting together on a new store would otherwise race.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.01
        while True:
            try:
                with self._guard():
                    self._conn.execute("PRAGMA journal_mode = WAL")
                    # WAL with NORMAL sync stays consistent on a crash; it may lose the last
                    # commits on power loss, which the heartbeat and resume machinery tolerate.
                    self._conn.execute("PRAGMA synchronous = NORMAL")
                    self._conn.execute("PRAGMA foreign_keys = ON")
                self._migrate()
                return
            except StoreError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def close(self) -> None:
        """Close the connection; later calls raise StoreError. Closing twice is harmless."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs ------------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        run_id: str,
        pipeline: str,
        logical_date: datetime,
        params: Mapping[str, str],
        trigger: str,
        staging_root: str,
        state: RunState = "queued",
        at: datetime | None = None,
        data_interval_start: datetime | None = None,
        data_interval_end: datetime | None = None,
        timezone: str | None = None,
        exclusive: bool = False,
    ) -> RunRecord:
        """Record a new run (attempt 1) and return it; a scheduled run has a data interval.

        `timezone` is the IANA zone the logical date is read in. With `exclusive`, the run is
        refused while another run of the pipeline for the same logical date is queued or
        running (one whose process is gone is failed first, see `fail_dead_runs`).

        Raises:
            RunExistsError: the run id is taken; `trigger` is 'schedule' or 'backfill' and the
                pipeline already has such a run for `logical_date`; or `exclusive` and a run for
                that date is active.
        """
        _check(state, RUN_STATES, "run state")
        now = at or _now()
        values: list[str | None] = [run_id, pipeline, _ts(logical_date), trigger, state]
        values += [json.dumps(dict(params), sort_keys=True), _ts(now), staging_root]
        values += [_opt_ts(data_interval_start), _opt_ts(data_interval_end), timezone]
        with self._transaction() as conn:
            if exclusive:
                self._refuse_active(conn, pipeline, logical_date, timezone, now)
            try:
                conn.execute(
                    "INSERT INTO runs (run_id, pipeline, logical_date, trigger, state, params,"
                    " created_at, staging_root, data_interval_start, data_interval_end, timezone)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
            except sqlite3.IntegrityError as exc:
                raise self._run_exists(conn, run_id, pipeline, logical_date) from exc
            return self._fetch(conn, run_id)

    def start_run(self, run_id: str, *, pid: int | None = None, at: datetime | None = None) -> None:
        """Mark a queued (or running) run as running, with its start and first heartbeat."""
        now = _ts(at or _now())
        with self._transaction() as conn:
            current = self._state_of(conn, run_id)
            if current not in ACTIVE_STATES:
                raise StoreError(
                    f"Run {run_id} cannot start: it is already {current}."
                    f" Use `etlkit retry {run_id}` to run it again."
                )
            conn.execute(
                "UPDATE runs SET state = 'running', started_at = ?, heartbeat_at = ?,"
                " pid = COALESCE(?, pid), owner = COALESCE(?, owner) WHERE run_id = ?",
                (now, now, pid, owner_of(pid), run_id),
            )

    def heartbeat(self, run_id: str, at: datetime | None = None) -> None:
        """Record that the process running `run_id` is alive (see `stale_runs`)."""
        sql = "UPDATE runs SET heartbeat_at = ? WHERE run_id = ?"
        self._update_run(run_id, sql, (_ts(at or _now()), run_id))

    def finish_run(
        self, run_id: str, state: RunState, *, error: str | None = None, at: datetime | None = None
    ) -> None:
        """Record a run's final state: 'success', 'failed', 'cancelled' or 'interrupted'."""
        _check(state, FINAL_STATES, "final run state")
        sql = "UPDATE runs SET state = ?, finished_at = ?, error = ? WHERE run_id = ?"
        self._update_run(run_id, sql, (state, _ts(at or _now()), error, run_id))

    def retry_run(
        self, run_id: str, *, pid: int | None = None, at: datetime | None = None
    ) -> RunRecord:
        """Run a failed, cancelled or interrupted run again: same id, attempt + 1, running."""
        now = _ts(at or _now())
        with self._transaction() as conn:
            current = self._state_of(conn, run_id)
            if current not in RETRYABLE_STATES:
                raise StoreError(
                    f"Run {run_id} is {current}; only {_words(RETRYABLE_STATES)} runs can be"
                    " retried."
                )
            conn.execute(
                "UPDATE runs SET state = 'running', attempt = attempt + 1, started_at = ?,"
                " heartbeat_at = ?, finished_at = NULL, error = NULL, pid = ?, owner = ?"
                " WHERE run_id = ?",
                (now, now, pid, owner_of(pid), run_id),
            )
            return self._fetch(conn, run_id)

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id, or with a unique prefix of it (like git).

        Raises:
            StoreError: no run matches (with a did-you-mean), or the prefix is ambiguous.
        """
        with self._guard() as conn:
            # Ids that start with run_id sort in [run_id, run_id + U+10FFFF): an index range.
            sql = "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? ORDER BY run_id LIMIT 6"
            found = [str(r[0]) for r in conn.execute(sql, (run_id, run_id + "\U0010ffff"))]
            if found and (found[0] == run_id or len(found) == 1) and run_id:
                return self._fetch(conn, found[0])
            sql = "SELECT run_id FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 1000"
            recent = [str(r[0]) for r in conn.execute(sql)]
        if len(found) > 1 and run_id:
            more = " and more" if len(found) > 5 else ""
            raise StoreError(
                f"Run id prefix {run_id!r} is ambiguous: it matches"
                f" {', '.join(map(repr, found[:5]))}{more}. Give more characters."
            )
        close = difflib.get_close_matches(run_id, recent, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else " `etlkit runs` lists recent runs."
        raise StoreError(f"No run {run_id!r} in the run store at {self.path}.{hint}")

    def latest_run(
        self, pipeline: str, *, states: Collection[RunState] | None = None
    ) -> RunRecord | None:
        """The newest run of `pipeline`, optionally only among `states`; None if there is none."""
        found = self.runs(pipeline, limit=1, states=states)
        return found[0] if found else None

    def last_run(
        self, pipeline: str, *, states: Collection[RunState] | None = None
    ) -> RunRecord | None:
        """`pipeline`'s run with the latest logical date (optionally among `states`): of
        several for that date, the newest. Catchup runs share their creation time, so only the
        logical date says which one is last."""
        where, args = _filters(pipeline, states)
        order = " ORDER BY logical_date DESC, created_at DESC, run_id DESC LIMIT 1"
        found = self._runs(_RUNS + where + order, args)
        return found[0] if found else None

    def runs(
        self,
        pipeline: str | None = None,
        *,
        limit: int = 20,
        states: Collection[RunState] | None = None,
    ) -> list[RunRecord]:
        """Up to `limit` runs, newest first (created_at, then run_id, descending)."""
        where, args = _filters(pipeline, states)
        order = " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        return self._runs(_RUNS + where + order, (*args, limit))

    def runs_before(self, pipeline: str, *, before: str | None, limit: int) -> list[RunRecord]:
        """A page of `pipeline`'s runs, newest first: up to `limit` runs created before run
        `before` (an exact id), or the newest ones when it is None. Walks the
        (pipeline, created_at) index, so a page costs the same on the last page of a year of
        hourly runs as on the first."""
        if before is None:
            return self.runs(pipeline, limit=limit)
        sql = (
            _RUNS + " WHERE pipeline = ? AND (created_at, run_id) <"
            " (SELECT created_at, run_id FROM runs WHERE run_id = ?)"
            " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        )
        return self._runs(sql, (pipeline, before, limit))

    def node_states(self, run_ids: Collection[str]) -> dict[str, dict[str, NodeState]]:
        """Each run's nodes and the state of their latest attempt, in one query (a grid of
        runs by nodes); runs without node runs are left out."""
        found: dict[str, dict[str, NodeState]] = {}
        if not run_ids:
            return found
        sql = (
            "SELECT run_id, node, state FROM node_runs"
            f" WHERE run_id IN ({', '.join('?' * len(run_ids))}) ORDER BY run_id, seq, attempt"
        )
        with self._guard() as conn:
            for row in conn.execute(sql, tuple(run_ids)):
                found.setdefault(str(row[0]), {})[str(row[1])] = row[2]
        return found

    def node_runs_since(self, run_id: str, since: datetime) -> list[NodeRunRecord]:
        """A run's node attempts that started or finished after `since`, attempts in order:
        what changed since a reader last looked (node runs are written when a node starts and
        when it ends)."""
        moment = _ts(since)
        sql = (
            f"SELECT {_NODES} FROM node_runs WHERE run_id = ?"
            " AND (started_at > ? OR finished_at > ?) ORDER BY attempt, seq"
        )
        with self._guard() as conn:
            rows = conn.execute(sql, (run_id, moment, moment))
            return [_record(NodeRunRecord, row) for row in rows]

    def fingerprint(self) -> str:
        """A short text that changes whenever a run is added, starts or ends, or a pipeline is
        paused or unpaused: a page polls it to refresh only when something happened."""
        sql = (
            "SELECT (SELECT COUNT(*) || '|' || IFNULL(MAX(created_at), '') || '|'"
            " || IFNULL(MAX(started_at), '') || '|' || IFNULL(MAX(finished_at), '') FROM runs)"
            " || '|' || (SELECT COUNT(*) || IFNULL(MAX(paused_at), '') FROM paused_pipelines)"
        )
        with self._guard() as conn:
            return str(conn.execute(sql).fetchone()[0])

    def active_runs(self, pipeline: str | None = None) -> list[RunRecord]:
        """Queued and running runs, oldest first (the order a queue drains in)."""
        where, args = _filters(pipeline, ACTIVE_STATES)
        return self._runs(_RUNS + where + " ORDER BY created_at, run_id", args)

    def stale_runs(self, older_than: datetime) -> list[RunRecord]:
        """Running runs whose last heartbeat (or start, if none) is before `older_than`."""
        return self._runs(
            _RUNS + " WHERE state = 'running' AND COALESCE(heartbeat_at, started_at, created_at)"
            " < ? ORDER BY created_at, run_id",
            (_ts(older_than),),
        )

    def fail_dead_runs(self, *, at: datetime | None = None) -> list[RunRecord]:
        """Fail the running runs whose process on this host is gone; return them as failed.

        A run's owner (see `owner_of`) is gone when no process has its pid, or the process
        with that pid started at another time (the pid was reused). Runs owned by another
        host, or with no known owner (claimed by a scheduler, its worker not started yet), are
        left to the scheduler's heartbeat check. Two processes noticing the same dead run fail
        it once.
        """
        with self._transaction() as conn:
            return self._fail_dead(conn, None, at or _now())

    def pipelines(self) -> list[str]:
        """Names of the pipelines with at least one recorded run, sorted."""
        with self._guard() as conn:
            return [
                str(r[0]) for r in conn.execute("SELECT DISTINCT pipeline FROM runs ORDER BY 1")
            ]

    def delete_runs(self, run_ids: Collection[str]) -> int:
        """Delete runs by exact id, with their node runs and events; returns how many went."""
        with self._transaction() as conn:
            cursor = conn.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in run_ids])
            return max(cursor.rowcount, 0)

    # -- nodes and events ------------------------------------------------------------------------

    def record_node(
        self,
        run_id: str,
        node: str,
        *,
        kind: str,
        attempt: int,
        state: NodeState,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        rows_in: int = 0,
        rows_out: int = 0,
        invalid_rows: int = 0,
        bytes_staged: int = 0,
        chunks: int = 0,
        error: str | None = None,
    ) -> None:
        """Insert or update the record of one node attempt, keyed by (run_id, node, attempt).

        An update replaces every value, except that None keeps an earlier start or finish time.
        """
        self.record_nodes(
            run_id,
            [
                NodeUpdate(
                    node,
                    kind,
                    attempt,
                    state,
                    started_at,
                    finished_at,
                    rows_in,
                    rows_out,
                    invalid_rows,
                    bytes_staged,
                    chunks,
                    error,
                )
            ],
        )

    def record_nodes(self, run_id: str, updates: Sequence[NodeUpdate]) -> None:
        """`record_node` for several node attempts of one run, in one transaction."""
        for update in updates:
            _check(update.state, NODE_STATES, "node state")
        rows = [
            (
                run_id,
                u.node,
                u.kind,
                u.attempt,
                u.state,
                _opt_ts(u.started_at),
                _opt_ts(u.finished_at),
                u.rows_in,
                u.rows_out,
                u.invalid_rows,
                u.bytes_staged,
                u.chunks,
                u.error,
            )
            for u in updates
        ]
        with self._transaction() as conn:
            self._state_of(conn, run_id)
            conn.executemany(
                f"INSERT INTO node_runs ({_NODES}) VALUES ({', '.join('?' * 13)})"
                " ON CONFLICT (run_id, node, attempt) DO UPDATE SET kind = excluded.kind,"
                " state = excluded.state,"
                " started_at = COALESCE(excluded.started_at, node_runs.started_at),"
                " finished_at = COALESCE(excluded.finished_at, node_runs.finished_at),"
                " rows_in = excluded.rows_in, rows_out = excluded.rows_out,"
                " invalid_rows = excluded.invalid_rows, bytes_staged = excluded.bytes_staged,"
                " chunks = excluded.chunks, error = excluded.error",
                rows,
            )

    def node_runs(self, run_id: str, *, latest_attempt_only: bool = True) -> list[NodeRunRecord]:
        """A run's node attempts, nodes in the order first recorded, attempts in order."""
        same_node = "WHERE o.run_id = n.run_id AND o.node = n.node"
        latest = f" AND n.attempt = (SELECT MAX(attempt) FROM node_runs o {same_node})"
        sql = (
            f"SELECT {_columns(NodeRunRecord, 'n.')} FROM node_runs n WHERE n.run_id = ?"
            + (latest if latest_attempt_only else "")
            + f" ORDER BY (SELECT MIN(seq) FROM node_runs o {same_node}), n.attempt"
        )
        with self._guard() as conn:
            return [_record(NodeRunRecord, row) for row in conn.execute(sql, (run_id,))]

    def add_event(
        self,
        run_id: str,
        kind: str,
        *,
        node: str = "",
        payload: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append an event; payload datetimes are stored as ISO text, other non-JSON as str()."""
        text = json.dumps(dict(payload or {}), sort_keys=True, default=_json_default)
        with self._transaction() as conn:
            self._state_of(conn, run_id)
            conn.execute(
                "INSERT INTO events (run_id, node, kind, at, payload) VALUES (?, ?, ?, ?, ?)",
                (run_id, node, kind, _ts(at or _now()), text),
            )

    def claim_notification(
        self, run_id: str, event: str, *, attempt: int, at: datetime | None = None
    ) -> bool:
        """Record that attempt `attempt` of `run_id` is notified of `event` ('failure', ...).

        Returns:
            True for the first caller, who then notifies; False if it was claimed before, so
            a failure decided (or noticed) by several processes is notified once.
        """
        payload = json.dumps({"attempt": attempt, "event": event}, sort_keys=True)
        with self._transaction() as conn:
            self._state_of(conn, run_id)
            seen = conn.execute(
                "SELECT 1 FROM events WHERE run_id = ? AND kind = 'notified' AND payload = ?",
                (run_id, payload),
            ).fetchone()
            if seen is not None:
                return False
            conn.execute(
                "INSERT INTO events (run_id, node, kind, at, payload)"
                " VALUES (?, '', 'notified', ?, ?)",
                (run_id, _ts(at or _now()), payload),
            )
            return True

    def events(self, run_id: str) -> list[EventRecord]:
        """A run's events in the order they were added."""
        sql = f"SELECT {_columns(EventRecord)} FROM events WHERE run_id = ? ORDER BY id"
        with self._guard() as conn:
            return [_record(EventRecord, row) for row in conn.execute(sql, (run_id,))]

    # -- state: incremental-load cursors and other per-pipeline values ---------------------------

    def get_state(self, pipeline: str, key: str) -> str | None:
        """The value stored under (pipeline, key), or None."""
        sql = "SELECT value FROM state WHERE pipeline = ? AND key = ?"
        with self._guard() as conn:
            row = conn.execute(sql, (pipeline, key)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, pipeline: str, key: str, value: str, *, at: datetime | None = None) -> None:
        """Store `value` under (pipeline, key), replacing any earlier value."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO state (pipeline, key, value, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (pipeline, key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (pipeline, key, value, _ts(at or _now())),
            )

    def set_states(
        self, pipeline: str, values: Mapping[str, str], *, at: datetime | None = None
    ) -> None:
        """Store several values of `pipeline` in one transaction: all of them, or none."""
        when = _ts(at or _now())
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO state (pipeline, key, value, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (pipeline, key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                [(pipeline, key, value, when) for key, value in values.items()],
            )

    def delete_state(self, pipeline: str, key: str | None = None) -> int:
        """Delete one key, or every key of `pipeline` when `key` is None; returns how many."""
        with self._transaction() as conn:
            if key is None:
                return conn.execute("DELETE FROM state WHERE pipeline = ?", (pipeline,)).rowcount
            sql = "DELETE FROM state WHERE pipeline = ? AND key = ?"
            return conn.execute(sql, (pipeline, key)).rowcount

    def states(self, pipeline: str) -> dict[str, str]:
        """Every key and value stored for `pipeline`, sorted by key."""
        sql = "SELECT key, value FROM state WHERE pipeline = ? ORDER BY key"
        with self._guard() as conn:
            return {str(r[0]): str(r[1]) for r in conn.execute(sql, (pipeline,))}

    # -- scheduling: planned runs, claims, requeues --------------------------------------------

    def scheduled_runs(
        self, pipeline: str, *, start: datetime, end: datetime
    ) -> dict[datetime, RunRecord]:
        """`pipeline`'s scheduled and backfilled runs with a logical date in [start, end]."""
        sql = (
            _RUNS + " WHERE pipeline = ? AND trigger IN ('schedule', 'backfill')"
            " AND logical_date >= ? AND logical_date <= ?"
        )
        found = self._runs(sql, (pipeline, _ts(start), _ts(end)))
        return {record.logical_date: record for record in found}

    def last_logical_date(
        self, pipeline: str, *, triggers: Collection[str] = ("schedule",)
    ) -> datetime | None:
        """The latest logical date among `pipeline`'s runs with one of `triggers`, or None."""
        sql = (
            f"SELECT MAX(logical_date) FROM runs WHERE pipeline = ?"
            f" AND trigger IN ({', '.join('?' * len(triggers))})"
        )
        with self._guard() as conn:
            row = conn.execute(sql, (pipeline, *triggers)).fetchone()
        return None if row[0] is None else datetime.fromisoformat(row[0]).astimezone(UTC)

    def claim_run(
        self,
        run_id: str,
        *,
        pipeline_limit: int | None = None,
        global_limit: int | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Mark a queued run as running before its process starts, if the limits allow it.

        One transaction checks that the run is still queued and that fewer than
        `pipeline_limit` runs of its pipeline (and fewer than `global_limit` runs in all) are
        running, then claims it: of two schedulers sharing the store, one wins. The process
        launched for it then calls `start_run` with its pid.

        Returns:
            True if this caller claimed the run; False if it is no longer queued or a limit
            is reached (it stays queued).
        """
        now = _ts(at or _now())
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT pipeline, state FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"No run {run_id!r} in the run store at {self.path}.")
            if row[1] != "queued":
                return False
            count = "SELECT COUNT(*) FROM runs WHERE state = 'running'"
            if pipeline_limit is not None:
                running = conn.execute(count + " AND pipeline = ?", (row[0],)).fetchone()[0]
                if running >= pipeline_limit:
                    return False
            if global_limit is not None and conn.execute(count).fetchone()[0] >= global_limit:
                return False
            conn.execute(
                "UPDATE runs SET state = 'running', started_at = ?, heartbeat_at = ?, pid = NULL,"
                " owner = NULL WHERE run_id = ?",
                (now, now, run_id),
            )
            return True

    def unclaim_run(self, run_id: str) -> bool:
        """Put a claimed run whose process never started (no pid yet) back in the queue.

        Returns:
            True if the run is queued again; False if its process started (or it ended).
        """
        sql = (
            "UPDATE runs SET state = 'queued', started_at = NULL, heartbeat_at = NULL"
            " WHERE run_id = ? AND state = 'running' AND pid IS NULL"
        )
        with self._transaction() as conn:
            return conn.execute(sql, (run_id,)).rowcount == 1

    def finish_active_run(
        self,
        run_id: str,
        state: RunState,
        *,
        error: str | None = None,
        attempt: int | None = None,
        at: datetime | None = None,
    ) -> bool:
        """`finish_run`, but only while the run is queued or running (at `attempt`, if given).

        Returns:
            True if this call finished the run; False if it had already ended (or moved on to
            another attempt), so that two processes noticing the same dead run record it once.
        """
        _check(state, FINAL_STATES, "final run state")
        sql = (
            "UPDATE runs SET state = ?, finished_at = ?, error = ? WHERE run_id = ?"
            " AND state IN ('queued', 'running') AND (? IS NULL OR attempt = ?)"
        )
        with self._transaction() as conn:
            self._state_of(conn, run_id)
            args = (state, _ts(at or _now()), error, run_id, attempt, attempt)
            return conn.execute(sql, args).rowcount == 1

    def requeue_run(
        self,
        run_id: str,
        *,
        from_states: Collection[RunState],
        reason: str,
        resume: bool,
        attempt: int | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Queue a run again under its id (attempt + 1) if it is in `from_states` (at `attempt`).

        Its start, end, heartbeat, error and pid are cleared, and a `requeued` event records
        `reason` and `resume`: whether the next attempt reuses what the last one committed
        (`python -m etlkit.runs.worker` reads it) or recomputes everything.

        Returns:
            True if the run was queued again.
        """
        for state in from_states:
            _check(state, RUN_STATES, "run state")
        now = _ts(at or _now())
        sql = (
            "UPDATE runs SET state = 'queued', attempt = attempt + 1, started_at = NULL,"
            " finished_at = NULL, heartbeat_at = NULL, error = NULL, pid = NULL, owner = NULL"
            f" WHERE run_id = ? AND state IN ({', '.join('?' * len(from_states))})"
            " AND (? IS NULL OR attempt = ?)"
        )
        payload = json.dumps({"reason": reason, "resume": resume}, sort_keys=True)
        with self._transaction() as conn:
            self._state_of(conn, run_id)
            if conn.execute(sql, (run_id, *from_states, attempt, attempt)).rowcount == 0:
                return False
            conn.execute(
                "INSERT INTO events (run_id, node, kind, at, payload)"
                " VALUES (?, '', 'requeued', ?, ?)",
                (run_id, now, payload),
            )
            return True

    # -- scheduling: paused pipelines and scheduler heartbeats -----------------------------------

    def pause_pipeline(self, pipeline: str, *, at: datetime | None = None) -> bool:
        """Stop the scheduler from planning and launching `pipeline`'s runs; False if it was."""
        sql = "INSERT OR IGNORE INTO paused_pipelines (pipeline, paused_at) VALUES (?, ?)"
        with self._transaction() as conn:
            return conn.execute(sql, (pipeline, _ts(at or _now()))).rowcount == 1

    def unpause_pipeline(self, pipeline: str) -> bool:
        """Let the scheduler run `pipeline` again; False if it was not paused."""
        with self._transaction() as conn:
            sql = "DELETE FROM paused_pipelines WHERE pipeline = ?"
            return conn.execute(sql, (pipeline,)).rowcount == 1

    def paused_pipelines(self) -> dict[str, datetime]:
        """Paused pipelines and since when."""
        with self._guard() as conn:
            rows = conn.execute("SELECT pipeline, paused_at FROM paused_pipelines ORDER BY 1")
            return {str(r[0]): datetime.fromisoformat(r[1]).astimezone(UTC) for r in rows}

    def scheduler_heartbeat(
        self, scheduler_id: str, *, pid: int, started_at: datetime, at: datetime | None = None
    ) -> None:
        """Record that scheduler `scheduler_id` (process `pid` on this host) is alive."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO schedulers (scheduler_id, host, pid, started_at, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (scheduler_id) DO UPDATE SET"
                " heartbeat_at = excluded.heartbeat_at",
                (scheduler_id, socket.gethostname(), pid, _ts(started_at), _ts(at or _now())),
            )

    def remove_scheduler(self, scheduler_id: str) -> None:
        """Forget a scheduler that stopped."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM schedulers WHERE scheduler_id = ?", (scheduler_id,))

    def forget_dead_schedulers(self) -> list[str]:
        """Forget this host's schedulers whose process is gone: a killed scheduler never
        removes its own row. Returns the ids forgotten."""
        host = socket.gethostname()
        with self._transaction() as conn:
            rows = conn.execute("SELECT scheduler_id, pid FROM schedulers WHERE host = ?", (host,))
            dead = [str(row[0]) for row in rows.fetchall() if not pid_alive(int(row[1]))]
            for scheduler_id in dead:
                conn.execute("DELETE FROM schedulers WHERE scheduler_id = ?", (scheduler_id,))
        for scheduler_id in dead:
            logger.info("forgot scheduler %s: its process is gone", scheduler_id)
        return dead

    def schedulers(self, *, since: datetime | None = None) -> list[SchedulerRecord]:
        """Schedulers whose last heartbeat is at or after `since` (all if None), oldest first."""
        sql = f"SELECT {_columns(SchedulerRecord)} FROM schedulers WHERE heartbeat_at >= ?"
        with self._guard() as conn:
            rows = conn.execute(sql + " ORDER BY started_at", (_opt_ts(since) or "",))
            return [_record(SchedulerRecord, row) for row in rows]

    # -- pools: slots leased by running nodes across processes -----------------------------------

    def acquire_slot(
        self, pool: str, slots: int, run_id: str, node: str, pid: int, *, at: datetime | None = None
    ) -> bool:
        """Take one of the `slots` slots of `pool` for `node` of `run_id`, held by process `pid`.

        One transaction first reclaims the pool's leases held by processes of this host that
        are gone, then counts the rest. Acquiring a slot this node already holds succeeds.

        Returns:
            True if the node holds a slot now; False if all slots are taken (try again later).

        Raises:
            StoreError: `slots` is below 1.
        """
        if slots < 1:
            raise StoreError(f"Pool '{pool}' has {slots} slots; a pool needs at least 1.")
        host = socket.gethostname()
        with self._transaction() as conn:
            leases = conn.execute(
                "SELECT run_id, node, pid FROM pool_slots WHERE pool = ? AND host = ?",
                (pool, host),
            ).fetchall()
            for lease in leases:
                if not pid_alive(int(lease[2])):
                    logger.info(
                        "pool %s: reclaimed the slot of node %s (run %s): process %d is gone",
                        pool,
                        lease[1],
                        lease[0],
                        lease[2],
                    )
                    conn.execute(
                        "DELETE FROM pool_slots WHERE pool = ? AND run_id = ? AND node = ?",
                        (pool, lease[0], lease[1]),
                    )
            held = conn.execute(
                "SELECT 1 FROM pool_slots WHERE pool = ? AND run_id = ? AND node = ?",
                (pool, run_id, node),
            ).fetchone()
            if held is not None:
                return True
            taken = conn.execute("SELECT COUNT(*) FROM pool_slots WHERE pool = ?", (pool,))
            if int(taken.fetchone()[0]) >= slots:
                return False
            conn.execute(
                "INSERT INTO pool_slots (pool, run_id, node, pid, host, acquired_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (pool, run_id, node, pid, host, _ts(at or _now())),
            )
            return True

    def release_slot(self, pool: str, run_id: str, node: str) -> bool:
        """Give back the slot `node` of `run_id` holds in `pool`; False if it held none."""
        sql = "DELETE FROM pool_slots WHERE pool = ? AND run_id = ? AND node = ?"
        with self._transaction() as conn:
            return conn.execute(sql, (pool, run_id, node)).rowcount == 1

    def release_run_slots(self, run_id: str) -> int:
        """Give back every slot the nodes of `run_id` hold (its process ended); returns how many."""
        with self._transaction() as conn:
            return conn.execute("DELETE FROM pool_slots WHERE run_id = ?", (run_id,)).rowcount

    def slot_leases(self, pool: str | None = None) -> list[SlotLease]:
        """Slots held now, in `pool` or in every pool, oldest first."""
        sql = f"SELECT {_columns(SlotLease)} FROM pool_slots WHERE ? IS NULL OR pool = ?"
        with self._guard() as conn:
            rows = conn.execute(sql + " ORDER BY acquired_at, pool, run_id, node", (pool, pool))
            return [_record(SlotLease, row) for row in rows]

    # -- internals -------------------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock; turn sqlite3 errors into StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError(f"The run store at {self.path} is closed.")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                hint = " (another process held its write lock too long)" if locked else ""
                raise StoreError(f"Run store at {self.path} failed{hint}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes SQLite's write lock up front, so it never deadlocks."""
        with self._guard() as conn:
            conn.execute("BEGIN IMMEDIATE")
            with conn:  # commits, or rolls back on any exception
                yield conn

    def _migrate(self) -> None:
        """Bring the file up to SCHEMA_VERSION; an up-to-date file is not write-locked at all."""
        target = self.SCHEMA_VERSION
        with self._guard() as conn:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if current < target:
            with self._transaction() as conn:  # re-read: another process may have migrated
                current = int(conn.execute("PRAGMA user_version").fetchone()[0])
                for version in range(current, target):
                    _MIGRATIONS[version](conn)
                if current < target:  # PRAGMA takes no parameters; target is our own int
                    conn.execute(f"PRAGMA user_version = {target:d}")
                    logger.info("run store %s migrated from v%d to v%d", self.path, current, target)
        if current > target:
            raise StoreError(
                f"The run store at {self.path} has schema version {current}, but this etlkit"
                f" knows versions up to {target}: a newer etlkit wrote it."
                ' Upgrade etlkit: pip install -U "etlkit-framework".'
            )

    def _fail_dead(
        self, conn: sqlite3.Connection, pipeline: str | None, now: datetime
    ) -> list[RunRecord]:
        sql = (
            _RUNS + " WHERE state = 'running' AND owner IS NOT NULL AND (? IS NULL OR pipeline = ?)"
        )
        failed = []
        for row in conn.execute(sql + " ORDER BY created_at, run_id", (pipeline, pipeline)):
            record = _record(RunRecord, row)
            gone = owner_gone(record.owner)
            if gone is None:
                continue
            error = (
                f"{gone}: it was killed, or its machine restarted, before recording the run's"
                f" end. `etlkit retry {record.run_id}` resumes it."
            )
            conn.execute(
                "UPDATE runs SET state = 'failed', finished_at = ?, error = ? WHERE run_id = ?"
                " AND state = 'running' AND attempt = ?",
                (_ts(now), error, record.run_id, record.attempt),
            )
            conn.execute("DELETE FROM pool_slots WHERE run_id = ?", (record.run_id,))
            logger.warning("run %s of %s failed: %s", record.run_id, record.pipeline, error)
            failed.append(self._fetch(conn, record.run_id))
        return failed

    def _refuse_active(
        self,
        conn: sqlite3.Connection,
        pipeline: str,
        logical_date: datetime,
        timezone: str | None,
        now: datetime,
    ) -> None:
        """Raise RunExistsError if a run of `pipeline` for `logical_date` is active."""
        self._fail_dead(conn, pipeline, now)
        row = conn.execute(
            _RUNS + " WHERE pipeline = ? AND logical_date = ? AND state IN ('queued', 'running')"
            " ORDER BY created_at, run_id LIMIT 1",
            (pipeline, _ts(logical_date)),
        ).fetchone()
        if row is None:
            return
        active = _record(RunRecord, row)
        date = logical_date.astimezone(_zone(timezone))
        process = f", process {active.pid}" if active.pid is not None else ""
        raise RunExistsError(
            f"Pipeline '{pipeline}' already has an active run for logical date"
            f" {date.isoformat()}: run {active.run_id} ({active.state}{process}), so a second"
            " one would stage and load the same date at the same time. Wait for it to end"
            f" (`etlkit show {active.run_id}`), stop it, or start another run anyway with"
            " `etlkit run --force`.",
            existing_run_id=active.run_id,
            pipeline=pipeline,
        )

    def _fetch(self, conn: sqlite3.Connection, run_id: str) -> RunRecord:
        return _record(RunRecord, conn.execute(_RUNS + " WHERE run_id = ?", (run_id,)).fetchone())

    def _runs(self, sql: str, args: tuple[object, ...]) -> list[RunRecord]:
        with self._guard() as conn:
            return [_record(RunRecord, row) for row in conn.execute(sql, args)]

    def _state_of(self, conn: sqlite3.Connection, run_id: str) -> str:
        row = conn.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"No run {run_id!r} in the run store at {self.path}.")
        return str(row[0])

    def _update_run(self, run_id: str, sql: str, args: tuple[object, ...]) -> None:
        with self._transaction() as conn:
            if conn.execute(sql, args).rowcount == 0:
                raise StoreError(f"No run {run_id!r} in the run store at {self.path}.")

    def _run_exists(
        self, conn: sqlite3.Connection, run_id: str, pipeline: str, logical_date: datetime
    ) -> RunExistsError:
        row = conn.execute("SELECT pipeline FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None:
            return RunExistsError(
                f"Run id {run_id!r} already exists (pipeline '{row[0]}'); run ids must be unique.",
                existing_run_id=run_id,
                pipeline=str(row[0]),
            )
        other = conn.execute(
            "SELECT run_id, state FROM runs WHERE pipeline = ? AND logical_date = ?"
            " AND trigger IN ('schedule', 'backfill')",
            (pipeline, _ts(logical_date)),
        ).fetchone()
        existing, state = (str(other[0]), str(other[1])) if other else ("?", "unknown")
        return RunExistsError(
            f"Pipeline '{pipeline}' already has a scheduled run for logical date"
            f" {_ts(logical_date)}: run {existing} ({state}). Use `etlkit retry {existing}`"
            " to run it again, or trigger a manual run.",
            existing_run_id=existing,
            pipeline=pipeline,
        )


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


def process_start(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot, or None where unknown.

    Together with the pid it names one process: a pid reused after a kill has another start.
    Read from `/proc/<pid>/stat` (field 22; fields 3 on follow the command's closing ')').
    """
    try:
        text = Path(f"/proc/{pid:d}/stat").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def owner_of(pid: int | None) -> str | None:
    """`host|pid|start` naming process `pid` of this host (None for no pid)."""
    if pid is None:
        return None
    return f"{socket.gethostname()}|{pid:d}|{process_start(pid) or ''}"


def owner_gone(owner: str | None) -> str | None:
    """Why the owner process is gone (None: alive, on another host, or unknown)."""
    host, _, rest = (owner or "").partition("|")
    pid_text, _, start = rest.partition("|")
    if not pid_text.isdigit() or host != socket.gethostname():
        return None
    pid = int(pid_text)
    if not pid_alive(pid):
        return f"its process {pid} on {host} is gone"
    now_start = process_start(pid)
    if start and now_start is not None and now_start != start:
        return f"its process {pid} on {host} is gone (that pid now belongs to another process)"
    return None


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists on this host (it may belong to someone else)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
