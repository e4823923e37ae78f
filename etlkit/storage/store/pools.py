"""Pool slots: leases of named pools' slots held by running nodes, shared across processes."""

from __future__ import annotations

import logging
import socket
from datetime import datetime

from etlkit.errors import StoreError
from etlkit.storage.store.connection import StoreConnection
from etlkit.storage.store.owners import pid_alive
from etlkit.storage.store.records import SlotLease, _columns, _now, _record, _ts

logger = logging.getLogger(__name__)


class PoolSlots(StoreConnection):
    """Slots of named pools leased by running nodes (see `RunStore`)."""

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
