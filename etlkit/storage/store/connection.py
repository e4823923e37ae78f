"""The store's connection: opening the SQLite file, migrating it, locking and transactions.

Threads share a store (one lock around its connection); processes share the file (WAL mode, and
every write is one `BEGIN IMMEDIATE` transaction). `StoreConnection` is the base of every part of
`RunStore`: the parts read with `_guard` and write with `_transaction`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Final, Self

from etlkit.errors import StoreError
from etlkit.storage.store import schema
from etlkit.storage.store.records import _RUNS, RunRecord, _record

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 10_000


class StoreConnection:
    """One SQLite connection to the run store's file, shared by threads under a lock.

    Raises StoreError when the file cannot be opened, or was written by a newer etlkit.
    """

    SCHEMA_VERSION: ClassVar[int] = len(schema.MIGRATIONS)

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
                    schema.MIGRATIONS[version](conn)
                if current < target:  # PRAGMA takes no parameters; target is our own int
                    conn.execute(f"PRAGMA user_version = {target:d}")
                    logger.info("run store %s migrated from v%d to v%d", self.path, current, target)
        if current > target:
            raise StoreError(
                f"The run store at {self.path} has schema version {current}, but this etlkit"
                f" knows versions up to {target}: a newer etlkit wrote it."
                ' Upgrade etlkit: pip install -U "etlkit-framework".'
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
