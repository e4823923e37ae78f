"""Reading runs back: by id or prefix, newest first, pages, active and stale runs, pipelines."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from datetime import datetime

from etlkit.errors import StoreError
from etlkit.storage.store.connection import StoreConnection
from etlkit.storage.store.records import _RUNS, RunRecord, _filters, _ts
from etlkit.storage.store.vocabulary import ACTIVE_STATES, RunState


class RunHistory(StoreConnection):
    """Queries over recorded runs (see `RunStore`)."""

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

    def pipelines(self) -> list[str]:
        """Names of the pipelines with at least one recorded run, sorted."""
        with self._guard() as conn:
            return [
                str(r[0]) for r in conn.execute("SELECT DISTINCT pipeline FROM runs ORDER BY 1")
            ]
