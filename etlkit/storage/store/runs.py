"""A run's life in the store: create, start, heartbeat, finish, retry, fail when its owner is gone.

A run is unique by id; a scheduled or backfilled one also by pipeline and logical date, and with
`exclusive` a manual one too while another run for that date is active. `fail_dead_runs` fails the
runs whose process on this host is gone (see `owners`), so any command notices a killed run.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Collection, Mapping
from datetime import datetime

from etlkit.errors import RunExistsError, StoreError
from etlkit.storage.store.connection import StoreConnection
from etlkit.storage.store.owners import owner_gone, owner_of
from etlkit.storage.store.records import (
    _RUNS,
    RunRecord,
    _check,
    _now,
    _opt_ts,
    _record,
    _ts,
    _words,
    _zone,
)
from etlkit.storage.store.vocabulary import (
    ACTIVE_STATES,
    FINAL_STATES,
    RETRYABLE_STATES,
    RUN_STATES,
    RunState,
)

logger = logging.getLogger(__name__)


class RunLifecycle(StoreConnection):
    """Creating and moving runs through their states (see `RunStore`)."""

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

    def record_executor(self, run_id: str, executor: str) -> None:
        """Record what runs the run's nodes (`local`, `dask tcp://...`): its latest attempt's."""
        self._update_run(
            run_id, "UPDATE runs SET executor = ? WHERE run_id = ?", (executor, run_id)
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

    def delete_runs(self, run_ids: Collection[str]) -> int:
        """Delete runs by exact id, with their node runs and events; returns how many went."""
        with self._transaction() as conn:
            cursor = conn.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in run_ids])
            return max(cursor.rowcount, 0)

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
