"""The store's record of distributed runs: which executor ran a run, and the partitions of each
node with the worker that ran each (schema v4), written by the run recorder from `NodeStats`."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from etlkit.engine.events import Event, NodeStats, PartitionStats, RunResult
from etlkit.runs.recorder import Recorder
from etlkit.storage.store import NodeUpdate, PartitionRecord, RunStore, schema

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def new_run(store: RunStore, run_id: str = "r1") -> None:
    store.create_run(
        run_id=run_id,
        pipeline="report",
        logical_date=T0,
        params={},
        trigger="manual",
        staging_root="/staging",
    )


def test_partitions_round_trip_in_the_order_first_reported(tmp_path: Path) -> None:
    a = PartitionRecord("part-00002", "tcp://127.0.0.1:4001", 10, "1", 0.5)
    b = PartitionRecord("part-00010", "tcp://127.0.0.1:4002", 7, "1", 0.25)
    with RunStore(tmp_path / "runs.db") as store:
        new_run(store)
        store.record_nodes(
            "r1",
            [
                NodeUpdate("orders", "source", 1, "running", partitions=(a,)),
                NodeUpdate("lookup", "source", 1, "done"),
            ],
        )
        moved = PartitionRecord("part-00002", "tcp://127.0.0.1:4002", 10, "2", 0.75)
        store.record_nodes("r1", [NodeUpdate("orders", "source", 1, "done", partitions=(moved, b))])
        assert store.node_partitions("r1") == {"orders": [moved, b]}
        assert store.node_partitions("other") == {}


def test_only_the_latest_attempt_of_a_node_shows_its_partitions(tmp_path: Path) -> None:
    first = PartitionRecord("p0", "tcp://w1:1", 3, "1", 0.1)
    with RunStore(tmp_path / "runs.db") as store:
        new_run(store)
        store.record_nodes("r1", [NodeUpdate("orders", "source", 1, "failed", partitions=(first,))])
        assert store.node_partitions("r1") == {"orders": [first]}
        store.record_nodes("r1", [NodeUpdate("orders", "source", 2, "done")])
        assert store.node_partitions("r1") == {}  # the second attempt ran locally


def test_the_executor_of_a_run_is_recorded(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.db") as store:
        new_run(store)
        assert store.get_run("r1").executor is None
        store.record_executor("r1", "dask tcp://10.0.0.5:8786")
        assert store.get_run("r1").executor == "dask tcp://10.0.0.5:8786"


def test_deleting_a_run_deletes_its_partitions(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with RunStore(path) as store:
        new_run(store)
        part = PartitionRecord("p0", "tcp://w1:1", 3, "1", 0.1)
        store.record_nodes("r1", [NodeUpdate("orders", "source", 1, "done", partitions=(part,))])
        assert store.delete_runs(["r1"]) == 1
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM node_partitions").fetchone() == (0,)


def test_a_version_3_store_is_upgraded_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for migrate in schema.MIGRATIONS[:3]:
            migrate(conn)
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO runs (run_id, pipeline, logical_date, trigger, state, created_at,"
            " staging_root) VALUES ('old', 'report', ?, 'manual', 'success', ?, '/staging')",
            (T0.isoformat(), T0.isoformat()),
        )
        conn.execute(
            "INSERT INTO node_runs (run_id, node, kind, attempt, state)"
            " VALUES ('old', 'orders', 'source', 1, 'done')"
        )
    with RunStore(path) as store:
        record = store.get_run("old")
        assert (record.state, record.executor) == ("success", None)
        assert [n.node for n in store.node_runs("old")] == ["orders"]
        assert store.node_partitions("old") == {}
        part = PartitionRecord("p0", "tcp://w1:1", 3, "1", 0.1)
        store.record_nodes("old", [NodeUpdate("orders", "source", 1, "done", partitions=(part,))])
        assert store.node_partitions("old") == {"orders": [part]}
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (RunStore.SCHEMA_VERSION,)


def test_the_recorder_writes_what_the_workers_reported(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.db") as store:
        new_run(store)
        store.start_run("r1")
        stats = NodeStats("orders", "source", state="done", rows_out=13)
        stats.started, stats.finished = time.perf_counter() - 1, time.perf_counter()
        stats.partitions.append(PartitionStats("orders.csv#0", "tcp://w1:1", 6, "1", 0.4))
        stats.partitions.append(PartitionStats("orders.csv#1", "tcp://w2:2", 7, "2", 0.6))
        result = RunResult("report", "r1", "running", {"orders": stats}, time.perf_counter())
        recorder = Recorder(store, "r1", attempt=1)
        recorder(Event("node_finished", result, "orders"))
        recorder.flush()
        assert store.node_partitions("r1") == {
            "orders": [
                PartitionRecord("orders.csv#0", "tcp://w1:1", 6, "1", 0.4),
                PartitionRecord("orders.csv#1", "tcp://w2:2", 7, "2", 0.6),
            ]
        }
        assert store.node_runs("r1")[0].rows_out == 13
