"""The SQLite run store: runs, node runs, events, state, uniqueness, concurrency, migrations."""

from __future__ import annotations

import dataclasses
import os
import pickle
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from etlkit.errors import StoreError
from etlkit.storage.store import NodeUpdate, RunExistsError, RunRecord, RunStore, schema

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def new_run(
    store: RunStore,
    run_id: str,
    *,
    pipeline: str = "report",
    logical_date: datetime = T0,
    trigger: str = "manual",
    at: datetime = T0,
) -> RunRecord:
    return store.create_run(
        run_id=run_id,
        pipeline=pipeline,
        logical_date=logical_date,
        params={"region": "eu"},
        trigger=trigger,
        staging_root="/staging",
        at=at,
    )


def raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


# -- opening -----------------------------------------------------------------------------------


def test_opening_creates_parent_dirs_and_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deep" / "runs.db"
    with RunStore(path):
        pass
    assert path.is_file()
    assert raw(path, "PRAGMA user_version") == [(RunStore.SCHEMA_VERSION,)]
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    tables = {row[0] for row in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "node_runs", "events", "state"} <= tables


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.db") as first:
        new_run(first, "r1")
    with RunStore(tmp_path / "runs.db") as second:
        assert second.get_run("r1").pipeline == "report"


def test_a_closed_store_says_so_and_closing_twice_is_harmless(tmp_path: Path) -> None:
    opened = RunStore(tmp_path / "runs.db")
    opened.close()
    opened.close()
    with pytest.raises(StoreError, match="is closed"):
        opened.runs()


# -- the run lifecycle -------------------------------------------------------------------------


def test_create_start_heartbeat_finish_round_trip(store: RunStore) -> None:
    created = new_run(store, "r1", trigger="schedule")
    assert created == RunRecord(
        run_id="r1",
        pipeline="report",
        logical_date=T0,
        params={"region": "eu"},
        trigger="schedule",
        state="queued",
        created_at=T0,
        started_at=None,
        finished_at=None,
        error=None,
        staging_root="/staging",
        heartbeat_at=None,
        pid=None,
        attempt=1,
    )
    assert created.duration is None

    store.start_run("r1", pid=4242, at=t(1))
    running = store.get_run("r1")
    assert (running.state, running.started_at, running.heartbeat_at, running.pid) == (
        "running",
        t(1),
        t(1),
        4242,
    )

    store.heartbeat("r1", at=t(2))
    assert store.get_run("r1").heartbeat_at == t(2)

    store.finish_run("r1", "failed", error="node 'monthly' failed", at=t(3.5))
    done = store.get_run("r1")
    assert (done.state, done.finished_at, done.error) == ("failed", t(3.5), "node 'monthly' failed")
    assert done.duration == 150.0


def test_datetimes_are_stored_as_sortable_utc_text(tmp_path: Path) -> None:
    berlin = T0.astimezone(timezone(timedelta(hours=1)))
    with RunStore(tmp_path / "runs.db") as opened:
        new_run(opened, "r1", logical_date=berlin, at=T0)
        assert opened.get_run("r1").logical_date == T0
        assert opened.get_run("r1").logical_date.tzinfo == UTC
    row = raw(tmp_path / "runs.db", "SELECT logical_date, created_at FROM runs")
    assert row == [("2025-03-01T02:00:00.000000+00:00", "2025-03-01T02:00:00.000000+00:00")]


def test_naive_datetimes_are_refused(store: RunStore) -> None:
    with pytest.raises(StoreError, match="timezone-aware"):
        new_run(store, "r1", logical_date=datetime(2025, 3, 1))


def test_writes_to_an_unknown_run_name_it(store: RunStore) -> None:
    with pytest.raises(StoreError, match="No run 'nope'"):
        store.heartbeat("nope", at=T0)
    with pytest.raises(StoreError, match="No run 'nope'"):
        store.finish_run("nope", "success", at=T0)
    with pytest.raises(StoreError, match="No run 'nope'"):
        store.record_node("nope", "a", kind="source", attempt=1, state="done")
    with pytest.raises(StoreError, match="No run 'nope'"):
        store.add_event("nope", "run_started", at=T0)


def test_unknown_and_non_final_states_are_refused(store: RunStore) -> None:
    new_run(store, "r1")
    with pytest.raises(StoreError, match="final run state 'running'; expected 'success'"):
        store.finish_run("r1", "running", at=T0)
    with pytest.raises(StoreError, match="Unknown node state 'ok'"):
        store.record_node("r1", "a", kind="source", attempt=1, state="ok")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="Unknown run state 'done'"):
        store.runs(states=["done"])  # type: ignore[list-item]


def test_a_finished_run_cannot_start_again(store: RunStore) -> None:
    new_run(store, "r1")
    store.start_run("r1", at=t(1))
    store.finish_run("r1", "success", at=t(2))
    with pytest.raises(StoreError, match=r"cannot start: it is already success.*etlkit retry r1"):
        store.start_run("r1", at=t(3))


def test_retry_run_keeps_the_id_and_bumps_the_attempt(store: RunStore) -> None:
    new_run(store, "r1")
    store.start_run("r1", pid=1, at=t(1))
    store.finish_run("r1", "interrupted", error="killed", at=t(2))

    retried = store.retry_run("r1", pid=2, at=t(10))

    assert (retried.run_id, retried.attempt, retried.state, retried.pid) == ("r1", 2, "running", 2)
    assert (retried.started_at, retried.heartbeat_at) == (t(10), t(10))
    assert (retried.finished_at, retried.error) == (None, None)
    assert store.get_run("r1") == retried


def test_only_failed_cancelled_or_interrupted_runs_can_be_retried(store: RunStore) -> None:
    new_run(store, "r1")
    with pytest.raises(StoreError, match="Run r1 is queued; only 'failed', 'cancelled' or"):
        store.retry_run("r1")
    store.finish_run("r1", "success", at=t(1))
    with pytest.raises(StoreError, match="Run r1 is success"):
        store.retry_run("r1")


# -- one run per pipeline and logical date -----------------------------------------------------


def test_a_second_scheduled_run_for_a_date_raises_run_exists(store: RunStore) -> None:
    new_run(store, "r1", trigger="schedule")
    with pytest.raises(RunExistsError, match=r"already has a scheduled run .* run r1") as caught:
        new_run(store, "r2", trigger="backfill")
    assert caught.value.existing_run_id == "r1"
    assert caught.value.pipeline == "report"
    assert [run.run_id for run in store.runs()] == ["r1"]


def test_manual_runs_may_repeat_a_date_and_other_dates_or_pipelines_are_free(
    store: RunStore,
) -> None:
    new_run(store, "r1", trigger="schedule")
    new_run(store, "r2", trigger="manual")
    new_run(store, "r3", trigger="manual")
    new_run(store, "r4", trigger="schedule", logical_date=t(60))
    new_run(store, "r5", trigger="schedule", pipeline="other")
    assert len(store.runs()) == 5


def test_a_duplicate_run_id_raises_run_exists(store: RunStore) -> None:
    new_run(store, "r1")
    with pytest.raises(RunExistsError, match="Run id 'r1' already exists") as caught:
        new_run(store, "r1", pipeline="other")
    assert caught.value.existing_run_id == "r1"


def test_run_exists_error_pickles_with_its_attributes(store: RunStore) -> None:
    new_run(store, "r1", trigger="schedule")
    with pytest.raises(RunExistsError) as caught:
        new_run(store, "r2", trigger="schedule")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(copy, RunExistsError)
    assert isinstance(copy, StoreError)
    assert (copy.existing_run_id, copy.pipeline, str(copy)) == (
        "r1",
        "report",
        str(caught.value),
    )


def test_two_stores_on_one_file_enforce_one_scheduled_run_per_date(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.db") as first, RunStore(tmp_path / "runs.db") as second:
        new_run(first, "r1", trigger="schedule")
        with pytest.raises(RunExistsError) as caught:
            new_run(second, "r2", trigger="schedule")
        assert caught.value.existing_run_id == "r1"


def test_racing_schedulers_create_exactly_one_run(tmp_path: Path) -> None:
    stores = [RunStore(tmp_path / "runs.db") for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    created: list[str] = []
    existing: list[str] = []

    def schedule(index: int) -> None:
        barrier.wait()
        try:
            created.append(new_run(stores[index], f"r{index}", trigger="schedule").run_id)
        except RunExistsError as exc:
            existing.append(exc.existing_run_id)

    try:
        threads = [threading.Thread(target=schedule, args=(i,)) for i in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for opened in stores:
            opened.close()
    assert len(created) == 1
    assert existing == created * 7


# -- node runs ---------------------------------------------------------------------------------


def test_record_node_upserts_by_attempt(store: RunStore) -> None:
    new_run(store, "r1")
    store.record_node("r1", "billing", kind="source", attempt=1, state="running", started_at=t(1))
    store.record_node(
        "r1",
        "billing",
        kind="source",
        attempt=1,
        state="done",
        finished_at=t(2),
        rows_out=10,
        bytes_staged=2048,
        chunks=2,
    )
    [record] = store.node_runs("r1")
    assert dataclasses.astuple(record) == (
        "r1",
        "billing",
        "source",
        1,
        "done",
        t(1),
        t(2),
        0,
        10,
        0,
        2048,
        2,
        None,
    )


def test_node_runs_show_the_latest_attempt_in_first_recorded_order(store: RunStore) -> None:
    new_run(store, "r1")
    store.record_node("r1", "billing", kind="source", attempt=1, state="failed", error="timeout")
    store.record_node("r1", "monthly", kind="transform", attempt=1, state="pending")
    store.record_node("r1", "billing", kind="source", attempt=2, state="done", rows_out=5)

    latest = store.node_runs("r1")
    assert [(n.node, n.attempt, n.state) for n in latest] == [
        ("billing", 2, "done"),
        ("monthly", 1, "pending"),
    ]
    every = store.node_runs("r1", latest_attempt_only=False)
    assert [(n.node, n.attempt, n.error) for n in every] == [
        ("billing", 1, "timeout"),
        ("billing", 2, None),
        ("monthly", 1, None),
    ]


def test_concurrent_threads_sharing_one_store_all_land(store: RunStore) -> None:
    new_run(store, "r1")

    def work(worker: int) -> None:
        for attempt in range(1, 51):
            store.record_node("r1", f"n{worker}", kind="source", attempt=attempt, state="done")
            store.add_event("r1", "node_progress", node=f"n{worker}", at=T0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.node_runs("r1", latest_attempt_only=False)) == 400
    assert {(n.node, n.attempt) for n in store.node_runs("r1")} == {(f"n{i}", 50) for i in range(8)}
    assert len(store.events("r1")) == 400


def test_concurrent_writers_with_their_own_connections_all_land(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.db") as main:
        new_run(main, "r1")
        stores = [RunStore(tmp_path / "runs.db") for _ in range(8)]

        def work(worker: int) -> None:
            for attempt in range(1, 51):
                stores[worker].record_node(
                    "r1", f"n{worker}", kind="source", attempt=attempt, state="done"
                )

        try:
            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for opened in stores:
                opened.close()
        assert len(main.node_runs("r1", latest_attempt_only=False)) == 400


# -- events ------------------------------------------------------------------------------------


def test_events_come_back_in_order_with_their_payload(store: RunStore) -> None:
    new_run(store, "r1")
    store.add_event("r1", "run_started", at=t(1))
    store.add_event("r1", "node_finished", node="billing", payload={"rows": 3, "at": T0}, at=t(2))
    first, second = store.events("r1")
    assert (first.run_id, first.node, first.kind, first.at, first.payload) == (
        "r1",
        "",
        "run_started",
        t(1),
        {},
    )
    assert (second.node, second.kind, second.at) == ("billing", "node_finished", t(2))
    assert second.payload == {"rows": 3, "at": "2025-03-01T02:00:00+00:00"}
    assert first.id < second.id


# -- listing and finding runs ------------------------------------------------------------------


def test_runs_are_newest_first_with_limit_and_filters(store: RunStore) -> None:
    new_run(store, "a1", at=t(1))
    new_run(store, "b1", pipeline="other", at=t(2))
    new_run(store, "a3", at=t(3))
    new_run(store, "a2", at=t(3))  # same created_at: run_id breaks the tie
    store.finish_run("a1", "success", at=t(4))

    assert [r.run_id for r in store.runs()] == ["a3", "a2", "b1", "a1"]
    assert [r.run_id for r in store.runs(limit=2)] == ["a3", "a2"]
    assert [r.run_id for r in store.runs("report")] == ["a3", "a2", "a1"]
    assert [r.run_id for r in store.runs("report", states=["success"])] == ["a1"]
    assert store.runs(states=[]) == []
    assert store.latest_run("report") == store.get_run("a3")
    assert store.latest_run("report", states=["success", "failed"]) == store.get_run("a1")
    assert store.latest_run("missing") is None
    assert store.pipelines() == ["other", "report"]


def test_active_runs_are_queued_or_running_oldest_first(store: RunStore) -> None:
    new_run(store, "r1", at=t(1))
    new_run(store, "r2", at=t(2))
    new_run(store, "r3", pipeline="other", at=t(3))
    new_run(store, "r4", at=t(4))
    store.start_run("r2", at=t(5))
    store.finish_run("r4", "cancelled", at=t(5))
    assert [r.run_id for r in store.active_runs()] == ["r1", "r2", "r3"]
    assert [r.run_id for r in store.active_runs("report")] == ["r1", "r2"]


def test_stale_runs_are_running_with_an_old_heartbeat(store: RunStore) -> None:
    for run_id in ("fresh", "stale", "done", "queued"):
        new_run(store, run_id)
    for run_id in ("fresh", "stale", "done"):
        store.start_run(run_id, at=t(0))
    store.heartbeat("fresh", at=t(10))
    store.finish_run("done", "success", at=t(1))
    assert [r.run_id for r in store.stale_runs(t(5))] == ["stale"]
    assert [r.run_id for r in store.stale_runs(t(11))] == ["fresh", "stale"]


def test_get_run_accepts_a_unique_prefix(store: RunStore) -> None:
    new_run(store, "20250301T020000Z-7f3a2c")
    new_run(store, "20250301T020000Z-7f9999")
    new_run(store, "20250401T020000Z-000000")
    assert store.get_run("20250301T020000Z-7f3").run_id == "20250301T020000Z-7f3a2c"
    assert store.get_run("202504").run_id == "20250401T020000Z-000000"


def test_an_exact_id_wins_over_longer_ids_it_prefixes(store: RunStore) -> None:
    new_run(store, "r1")
    new_run(store, "r10")
    assert store.get_run("r1").run_id == "r1"
    assert store.get_run("r10").run_id == "r10"


def test_get_run_names_every_match_of_an_ambiguous_prefix(store: RunStore) -> None:
    new_run(store, "20250301T020000Z-7f3a2c")
    new_run(store, "20250301T020000Z-7f9999")
    with pytest.raises(
        StoreError,
        match=r"prefix '20250301T020000Z-7f' is ambiguous: it matches "
        r"'20250301T020000Z-7f3a2c', '20250301T020000Z-7f9999'\. Give more characters",
    ):
        store.get_run("20250301T020000Z-7f")


def test_get_run_suggests_a_close_run_id(store: RunStore) -> None:
    new_run(store, "20250301T020000Z-7f3a2c")
    with pytest.raises(
        StoreError,
        match=r"No run '20250301T020000Z-7f3a2d'.*Did you mean '20250301T020000Z-7f3a2c'",
    ):
        store.get_run("20250301T020000Z-7f3a2d")
    with pytest.raises(StoreError, match=r"No run 'zzz'.*`etlkit runs` lists recent runs"):
        store.get_run("zzz")
    with pytest.raises(StoreError, match="No run ''"):
        store.get_run("")


def test_records_are_frozen(store: RunStore) -> None:
    run = new_run(store, "r1")
    store.record_node("r1", "a", kind="source", attempt=1, state="done")
    store.add_event("r1", "run_started", at=T0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.state = "failed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.node_runs("r1")[0].rows_out = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.events("r1")[0].kind = "x"  # type: ignore[misc]


# -- gc and state ------------------------------------------------------------------------------


def test_delete_runs_cascades_to_node_runs_and_events(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with RunStore(path) as opened:
        for run_id in ("r1", "r2"):
            new_run(opened, run_id)
            opened.record_node(run_id, "a", kind="source", attempt=1, state="done")
            opened.add_event(run_id, "run_started", at=T0)
        assert opened.delete_runs(["r1", "missing"]) == 1
        assert opened.delete_runs([]) == 0
        assert [r.run_id for r in opened.runs()] == ["r2"]
    assert raw(path, "SELECT DISTINCT run_id FROM node_runs") == [("r2",)]
    assert raw(path, "SELECT DISTINCT run_id FROM events") == [("r2",)]


def test_state_get_set_delete(store: RunStore) -> None:
    assert store.get_state("report", "cursor") is None
    store.set_state("report", "cursor", "2025-03-01", at=T0)
    store.set_state("report", "cursor", "2025-04-01", at=t(1))
    store.set_state("report", "etag", "abc", at=T0)
    store.set_state("other", "cursor", "1", at=T0)
    assert store.get_state("report", "cursor") == "2025-04-01"
    assert store.states("report") == {"cursor": "2025-04-01", "etag": "abc"}

    assert store.delete_state("report", "etag") == 1
    assert store.delete_state("report", "etag") == 0
    assert store.states("report") == {"cursor": "2025-04-01"}
    assert store.delete_state("report") == 1
    assert store.states("report") == {}
    assert store.states("other") == {"cursor": "1"}


# -- migrations --------------------------------------------------------------------------------


def _add_runs_note(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT 'migrated'")


def _broken(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE half_done (x INTEGER)")
    conn.execute("this is not sql")


def test_an_older_file_is_migrated_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    current = RunStore.SCHEMA_VERSION
    with RunStore(path) as older:
        new_run(older, "r1")
    assert raw(path, "PRAGMA user_version") == [(current,)]

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _add_runs_note])
    monkeypatch.setattr(RunStore, "SCHEMA_VERSION", current + 1)
    with RunStore(path) as newer:
        assert newer.get_run("r1").pipeline == "report"
    assert raw(path, "PRAGMA user_version") == [(current + 1,)]
    assert raw(path, "SELECT run_id, note FROM runs") == [("r1", "migrated")]


def test_a_failed_migration_leaves_the_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    with RunStore(path):
        pass
    current = RunStore.SCHEMA_VERSION
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _broken])
    monkeypatch.setattr(RunStore, "SCHEMA_VERSION", current + 1)
    with pytest.raises(StoreError, match="syntax error"):
        RunStore(path)
    assert raw(path, "PRAGMA user_version") == [(current,)]
    assert raw(path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []


def test_a_file_from_a_newer_etlkit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match=r"schema version 99.*Upgrade etlkit"):
        RunStore(path)


OPENER = """
import os, sys
from datetime import UTC, datetime
from etlkit.storage.store import RunStore

with RunStore(sys.argv[1]) as store:
    for i in range(10):
        run_id = f"r{sys.argv[2]}-{i}"
        store.create_run(run_id=run_id, pipeline="p", logical_date=datetime(2025, 1, 1, tzinfo=UTC),
                         params={}, trigger="manual", staging_root="x")
        store.start_run(run_id, pid=os.getpid())
        store.finish_run(run_id, "success")
"""


@pytest.mark.slow
def test_processes_creating_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Two `etlkit run`s starting together on a new store once failed with 'database is
    locked' (switching to WAL is not covered by SQLite's busy timeout)."""
    import subprocess
    import sys

    for attempt in range(3):
        path = tmp_path / f"store{attempt}.sqlite"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(path), str(k)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(4)
        ]
        errors = [p.communicate()[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
        with RunStore(path) as store:
            assert len(store.runs(limit=100)) == 40


def test_record_nodes_writes_several_attempts_in_one_call(store: RunStore) -> None:
    new_run(store, "r1")

    store.record_nodes(
        "r1",
        [
            NodeUpdate("billing", "source", 1, "done", started_at=t(1), rows_out=5),
            NodeUpdate("monthly", "transform", 1, "running", started_at=t(2)),
        ],
    )

    assert [(r.node, r.state, r.rows_out) for r in store.node_runs("r1")] == [
        ("billing", "done", 5),
        ("monthly", "running", 0),
    ]


def test_record_nodes_refuses_an_unknown_state_and_writes_nothing(store: RunStore) -> None:
    new_run(store, "r1")
    good = NodeUpdate("a", "source", 1, "done")
    bad = NodeUpdate("b", "source", 1, "ok")  # type: ignore[arg-type]

    with pytest.raises(StoreError):
        store.record_nodes("r1", [good, bad])

    assert store.node_runs("r1") == []


# -- dead owners: runs whose process is gone -------------------------------------------------


def set_owner(path: Path, run_id: str, owner: str) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE runs SET owner = ? WHERE run_id = ?", (owner, run_id))


def test_a_run_whose_process_is_gone_is_failed_with_the_reason_once(
    store: RunStore, dead_pid: int
) -> None:
    new_run(store, "r1")
    store.start_run("r1", pid=dead_pid, at=t(1))
    new_run(store, "r2", logical_date=t(60))
    store.start_run("r2", pid=os.getpid(), at=t(1))

    [failed] = store.fail_dead_runs(at=t(2))

    assert (failed.run_id, failed.state, failed.finished_at) == ("r1", "failed", t(2))
    assert f"its process {dead_pid} on {socket.gethostname()} is gone" in (failed.error or "")
    assert "`etlkit retry r1` resumes it" in (failed.error or "")
    assert store.get_run("r2").state == "running"  # alive: left alone
    assert store.fail_dead_runs(at=t(3)) == []  # noticed once


def test_a_run_whose_pid_now_belongs_to_another_process_is_failed(store: RunStore) -> None:
    new_run(store, "r1")
    store.start_run("r1", pid=os.getpid())
    owner = store.get_run("r1").owner or ""
    host, pid, start = owner.split("|")
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    set_owner(store.path, "r1", f"{host}|{pid}|{int(start) - 1}")  # the pid's earlier process

    [failed] = store.fail_dead_runs()

    assert "that pid now belongs to another process" in (failed.error or "")


def test_runs_of_other_hosts_or_without_a_process_are_left_to_the_heartbeat(
    store: RunStore, dead_pid: int
) -> None:
    new_run(store, "r1")
    store.start_run("r1", pid=dead_pid)
    set_owner(store.path, "r1", f"elsewhere.example|{dead_pid}|123")
    new_run(store, "r2", logical_date=t(60), trigger="schedule")
    assert store.claim_run("r2")  # claimed by a scheduler: its worker has not started yet

    assert store.fail_dead_runs() == []


def test_an_exclusive_run_is_refused_while_a_run_for_its_date_is_active(
    store: RunStore, dead_pid: int
) -> None:
    new_run(store, "r1")
    store.start_run("r1", pid=os.getpid())

    with pytest.raises(
        RunExistsError, match=r"already has an active run .* run r1 \(running"
    ) as exc:
        store.create_run(
            run_id="r2",
            pipeline="report",
            logical_date=T0,
            params={},
            trigger="manual",
            staging_root="/staging",
            exclusive=True,
        )
    assert exc.value.existing_run_id == "r1"
    new_run(store, "r3")  # not exclusive: `etlkit run --force`
    store.finish_run("r3", "success")

    store.start_run("r1", pid=dead_pid)  # its process was killed meanwhile
    store.create_run(
        run_id="r4",
        pipeline="report",
        logical_date=T0,
        params={},
        trigger="manual",
        staging_root="/staging",
        exclusive=True,
    )
    assert store.get_run("r1").state == "failed"
