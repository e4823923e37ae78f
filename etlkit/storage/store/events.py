"""Events: structured facts about a run, appended in order, and once-only notification claims."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from etlkit.storage.store.connection import StoreConnection
from etlkit.storage.store.records import EventRecord, _columns, _json_default, _now, _record, _ts


class RunEvents(StoreConnection):
    """A run's event log (see `RunStore`)."""

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
