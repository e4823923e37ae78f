"""What the scheduler keeps in the store: planned runs, claims and requeues, paused pipelines,
and the heartbeats of scheduler processes.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Collection
from datetime import UTC, datetime

from etlkit.errors import StoreError
from etlkit.storage.store.connection import StoreConnection
from etlkit.storage.store.owners import pid_alive
from etlkit.storage.store.records import (
    _RUNS,
    RunRecord,
    SchedulerRecord,
    _check,
    _columns,
    _now,
    _opt_ts,
    _record,
    _ts,
)
from etlkit.storage.store.vocabulary import FINAL_STATES, RUN_STATES, RunState

logger = logging.getLogger(__name__)


class SchedulingState(StoreConnection):
    """The scheduler's state in the store (see `RunStore`)."""

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
