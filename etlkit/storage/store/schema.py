"""The store's SQLite schema and its migrations, one per version.

The schema version is `PRAGMA user_version`; `MIGRATIONS` upgrades older files in order (see
`StoreConnection._migrate`), and a file from a newer etlkit is refused. `_SCHEMA_V1` is the
schema; `_SCHEMA_V2` adds what the scheduler needs: each run's data interval, paused pipelines,
pool slot leases and scheduler heartbeats; `_SCHEMA_V3` adds each run's timezone (the one its
logical date is read in) and owner: the host, pid and process start time of the process running
it, so any command can tell a run whose process was killed from a live one; `_SCHEMA_V4` adds
which executor ran each run and the partitions a distributed executor ran of each node, with the
worker that ran each.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

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


_SCHEMA_V4: Final = (
    # What ran the run's nodes: `local`, or `dask` and its cluster (NULL: local, as runs
    # recorded before it).
    "ALTER TABLE runs ADD COLUMN executor TEXT",
    # The partitions of a node attempt that a distributed executor ran, and where: the last
    # report of each partition (`partition_attempt` says which try of it that was).
    """CREATE TABLE node_partitions (
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        node TEXT NOT NULL, attempt INTEGER NOT NULL, partition TEXT NOT NULL,
        worker TEXT NOT NULL, rows INTEGER NOT NULL, partition_attempt TEXT NOT NULL,
        seconds REAL NOT NULL,
        PRIMARY KEY (run_id, node, attempt, partition))""",
)


def _migrate_4(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V4:
        conn.execute(statement)


# MIGRATIONS[i] takes a file from version i to i + 1. Append; never edit a released one.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_1,
    _migrate_2,
    _migrate_3,
    _migrate_4,
]
