"""The run store's v2 additions: data intervals, claims, requeues, pauses, pool slot leases."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etlkit.errors import StoreError
from etlkit.storage.store import FINAL_STATES, RunRecord, RunStore, schema

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def queued(
    store: RunStore, run_id: str, *, pipeline: str = "report", trigger: str = "schedule"
) -> RunRecord:
    return store.create_run(
        run_id=run_id,
        pipeline=pipeline,
        logical_date=t(int(run_id[-1]) * 60 if run_id[-1].isdigit() else 0),
        params={},
        trigger=trigger,
        staging_root="/staging",
        at=T0,
    )


# -- migration -------------------------------------------------------------------------------------


def test_a_v1_file_is_migrated_to_v2_keeping_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with closing(sqlite3.connect(path)) as conn:
        schema._migrate_1(conn)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO runs (run_id, pipeline, logical_date, trigger, state, created_at,"
            " staging_root) VALUES ('r1', 'report', ?, 'manual', 'success', ?, '/s')",
            (T0.isoformat(), T0.isoformat()),
        )
        conn.commit()
    with RunStore(path) as migrated:
        record = migrated.get_run("r1")
        assert (record.state, record.data_interval_start, record.data_interval_end) == (
            "success",
            None,
            None,
        )
        assert migrated.paused_pipelines() == {}
        assert migrated.slot_leases() == []
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (RunStore.SCHEMA_VERSION,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"paused_pipelines", "pool_slots", "schedulers"} <= tables


# -- runs: intervals, skipped, claims, requeues ----------------------------------------------------


def test_a_run_keeps_its_data_interval(store: RunStore) -> None:
    store.create_run(
        run_id="r1",
        pipeline="report",
        logical_date=T0,
        params={},
        trigger="schedule",
        staging_root="/s",
        data_interval_start=T0,
        data_interval_end=t(60 * 24),
    )
    record = store.get_run("r1")
    assert (record.data_interval_start, record.data_interval_end) == (T0, t(60 * 24))


def test_skipped_is_a_final_run_state(store: RunStore) -> None:
    assert "skipped" in FINAL_STATES
    queued(store, "r1")
    store.finish_run("r1", "skipped", error="sensor timed out (soft_fail)")
    assert store.get_run("r1").state == "skipped"
    assert [r.run_id for r in store.runs(states=["skipped"])] == ["r1"]


def test_a_queued_run_is_claimed_once(store: RunStore, tmp_path: Path) -> None:
    queued(store, "r1")
    with RunStore(tmp_path / "runs.db") as other:
        assert store.claim_run("r1", at=t(1))
        assert not other.claim_run("r1", at=t(1))
    record = store.get_run("r1")
    assert (record.state, record.started_at, record.heartbeat_at, record.pid) == (
        "running",
        t(1),
        t(1),
        None,
    )
    store.start_run("r1", pid=4242)  # the worker then records its pid
    assert store.get_run("r1").pid == 4242


def test_a_claim_whose_worker_never_started_goes_back_to_the_queue(store: RunStore) -> None:
    queued(store, "r1")
    store.claim_run("r1")
    assert store.unclaim_run("r1")
    assert store.get_run("r1").state == "queued"
    store.claim_run("r1")
    store.start_run("r1", pid=4242)
    assert not store.unclaim_run("r1")  # its worker started: it is the worker's now


def test_claims_respect_the_pipeline_and_global_limits(store: RunStore) -> None:
    for run_id in ("a1", "a2", "b1"):
        queued(store, run_id, pipeline=run_id[0])
    assert store.claim_run("a1", pipeline_limit=1, global_limit=2)
    assert not store.claim_run("a2", pipeline_limit=1, global_limit=2)
    assert store.claim_run("b1", pipeline_limit=1, global_limit=2)
    store.finish_run("a1", "success")
    assert not store.claim_run("a2", pipeline_limit=2, global_limit=1)  # b1 still runs
    assert store.claim_run("a2", pipeline_limit=1, global_limit=2)


def test_claiming_an_unknown_run_is_an_error(store: RunStore) -> None:
    with pytest.raises(StoreError, match="No run 'nope'"):
        store.claim_run("nope")


def test_finish_active_run_finishes_only_a_live_run_at_its_attempt(store: RunStore) -> None:
    queued(store, "r1")
    assert not store.finish_active_run("r1", "failed", attempt=2)
    assert store.finish_active_run("r1", "failed", error="worker killed", attempt=1, at=t(5))
    assert not store.finish_active_run("r1", "interrupted")  # recorded once
    record = store.get_run("r1")
    assert (record.state, record.error, record.finished_at) == ("failed", "worker killed", t(5))


def test_a_requeued_run_gets_a_new_attempt_and_says_why(store: RunStore) -> None:
    queued(store, "r1")
    store.claim_run("r1")
    store.start_run("r1", pid=4242)
    store.finish_run("r1", "failed", error="boom")
    assert not store.requeue_run("r1", from_states=["success"], reason="x", resume=True)
    assert store.requeue_run("r1", from_states=["failed"], reason="backfill", resume=False, at=t(9))
    record = store.get_run("r1")
    assert (record.state, record.attempt, record.error, record.pid, record.started_at) == (
        "queued",
        2,
        None,
        None,
        None,
    )
    [event] = [e for e in store.events("r1") if e.kind == "requeued"]
    assert (event.payload, event.at) == ({"reason": "backfill", "resume": False}, t(9))
    assert not store.requeue_run(
        "r1", from_states=["queued"], reason="x", resume=True, attempt=1
    )  # the attempt moved on


def test_scheduled_runs_and_the_last_logical_date(store: RunStore) -> None:
    queued(store, "s1")
    queued(store, "s3")
    queued(store, "m2", trigger="manual")
    queued(store, "b2", trigger="backfill")
    found = store.scheduled_runs("report", start=t(0), end=t(24 * 60))
    assert sorted(r.run_id for r in found.values()) == ["b2", "s1", "s3"]
    assert store.last_logical_date("report") == t(180)
    assert store.last_logical_date("report", triggers=("backfill",)) == t(120)
    assert store.last_logical_date("other") is None


# -- pauses and scheduler heartbeats ---------------------------------------------------------------


def test_pausing_is_persisted_and_idempotent(store: RunStore, tmp_path: Path) -> None:
    assert store.pause_pipeline("report", at=T0)
    assert not store.pause_pipeline("report")
    with RunStore(tmp_path / "runs.db") as other:
        assert other.paused_pipelines() == {"report": T0}
        assert other.unpause_pipeline("report")
    assert not store.unpause_pipeline("report")
    assert store.paused_pipelines() == {}


def test_scheduler_heartbeats(store: RunStore) -> None:
    store.scheduler_heartbeat("s1", pid=11, started_at=T0, at=t(1))
    store.scheduler_heartbeat("s1", pid=11, started_at=T0, at=t(5))
    store.scheduler_heartbeat("s2", pid=12, started_at=t(2), at=t(2))
    assert [s.scheduler_id for s in store.schedulers(since=t(3))] == ["s1"]
    [first, _] = store.schedulers()
    assert (first.pid, first.started_at, first.heartbeat_at) == (11, T0, t(5))
    store.remove_scheduler("s1")
    assert [s.scheduler_id for s in store.schedulers()] == ["s2"]


# -- pool slots ------------------------------------------------------------------------------------


def test_a_pool_hands_out_at_most_its_slots(store: RunStore) -> None:
    me = os.getpid()
    assert store.acquire_slot("warehouse", 2, "r1", "load", me)
    assert store.acquire_slot("warehouse", 2, "r1", "load", me)  # already held: still one
    assert store.acquire_slot("warehouse", 2, "r2", "load", me)
    assert not store.acquire_slot("warehouse", 2, "r3", "load", me)
    assert store.acquire_slot("crm", 1, "r3", "load", me)  # pools are separate
    assert store.release_slot("warehouse", "r1", "load")
    assert not store.release_slot("warehouse", "r1", "load")
    assert store.acquire_slot("warehouse", 2, "r3", "load", me)
    assert sorted((s.pool, s.run_id) for s in store.slot_leases()) == [
        ("crm", "r3"),
        ("warehouse", "r2"),
        ("warehouse", "r3"),
    ]
    assert store.release_run_slots("r3") == 2
    assert [s.run_id for s in store.slot_leases("warehouse")] == ["r2"]


def test_slots_of_dead_processes_are_reclaimed(store: RunStore, dead_pid: int) -> None:
    assert store.acquire_slot("warehouse", 1, "r1", "load", dead_pid)
    assert store.acquire_slot("warehouse", 1, "r2", "load", os.getpid())
    assert [s.run_id for s in store.slot_leases("warehouse")] == ["r2"]


def test_a_pool_needs_a_slot(store: RunStore) -> None:
    with pytest.raises(StoreError, match="Pool 'warehouse' has 0 slots"):
        store.acquire_slot("warehouse", 0, "r1", "load", os.getpid())


def test_threads_with_their_own_stores_contend_for_slots(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    RunStore(path).close()
    start = threading.Barrier(8)
    won: list[str] = []

    def contend(run_id: str) -> None:
        with RunStore(path) as mine:
            start.wait()
            if mine.acquire_slot("warehouse", 3, run_id, "load", os.getpid()):
                won.append(run_id)

    threads = [threading.Thread(target=contend, args=(f"r{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 3
    with RunStore(path) as check:
        assert sorted(s.run_id for s in check.slot_leases()) == sorted(won)


CONTENDER = """
import sys
from etlkit.storage.store import RunStore
path, run_id, holder = sys.argv[1], sys.argv[2], int(sys.argv[3])
with RunStore(path) as store:
    print("won" if store.acquire_slot("warehouse", 2, run_id, "load", holder) else "lost")
"""


def test_processes_contend_for_slots_through_the_store(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    RunStore(path).close()
    holder = str(os.getpid())  # leases stay live after the contenders exit: this process holds them
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(path), f"r{i}", holder],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(5)
    ]
    outcomes = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(outcomes) == ["lost", "lost", "lost", "won", "won"]
    with RunStore(path) as check:
        assert len(check.slot_leases("warehouse")) == 2


def test_forget_dead_schedulers_removes_this_hosts_schedulers_whose_process_is_gone(
    store: RunStore,
) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    store.scheduler_heartbeat("killed", pid=int(gone.stdout), started_at=T0, at=t(1))
    store.scheduler_heartbeat("alive", pid=os.getpid(), started_at=T0, at=t(1))
    assert store.forget_dead_schedulers() == ["killed"]
    assert [s.scheduler_id for s in store.schedulers()] == ["alive"]
    assert store.forget_dead_schedulers() == []
