"""Pipeline state: incremental-load cursors and other values kept per pipeline and key."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from etlkit.storage.store.connection import StoreConnection
from etlkit.storage.store.records import _now, _ts


class PipelineState(StoreConnection):
    """Per-pipeline key/value state (see `RunStore`)."""

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
