"""Node runs: one record per attempt of one node within a run (with the partitions a distributed
executor ran of it), and queries over them."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import datetime

from etlkit.storage.store.connection import StoreConnection
from etlkit.storage.store.records import (
    _NODES,
    NodeRunRecord,
    NodeUpdate,
    PartitionRecord,
    _check,
    _columns,
    _opt_ts,
    _record,
    _ts,
)
from etlkit.storage.store.vocabulary import NODE_STATES, NodeState


class NodeRuns(StoreConnection):
    """Recording node attempts and reading them back (see `RunStore`)."""

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
            conn.executemany(
                "INSERT INTO node_partitions (run_id, node, attempt, partition, worker, rows,"
                " partition_attempt, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, node, attempt, partition) DO UPDATE SET"
                " worker = excluded.worker, rows = excluded.rows,"
                " partition_attempt = excluded.partition_attempt, seconds = excluded.seconds",
                [
                    (run_id, u.node, u.attempt, *dataclasses.astuple(p))
                    for u in updates
                    for p in u.partitions
                ],
            )

    def node_partitions(self, run_id: str) -> dict[str, list[PartitionRecord]]:
        """The partitions of each node's latest attempt, by node, in the order first reported;
        nodes a distributed executor did not split (and every node of a local run) are left out."""
        sql = (
            "SELECT node, partition, worker, rows, partition_attempt, seconds"
            " FROM node_partitions p WHERE run_id = ? AND attempt = (SELECT MAX(attempt)"
            " FROM node_runs o WHERE o.run_id = p.run_id AND o.node = p.node) ORDER BY p.rowid"
        )
        found: dict[str, list[PartitionRecord]] = {}
        with self._guard() as conn:
            for row in conn.execute(sql, (run_id,)):
                found.setdefault(str(row[0]), []).append(PartitionRecord(*tuple(row)[1:]))
        return found

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
