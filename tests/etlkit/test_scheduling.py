"""The scheduler loop, driven by a FakeClock and a fake launcher: no processes, no sleeping."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etlkit.errors import ConfigError
from etlkit.model.pipeline import PipelineDefinition
from etlkit.runs.notifications import WebhookNotifier
from etlkit.scheduling import FakeClock, TickReport, load_pools, pause, status, trigger, unpause
from etlkit.scheduling.processes import exit_error
from etlkit.storage.store import RunRecord, RunStore
from tests.etlkit.scheduling_rig import (
    T0,
    Rig,
    project_settings,
    write_pipeline,
)
from tests.webhook_server import WebhookServer

REPO = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    return tmp_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def rig(project: Path, clock: FakeClock) -> Iterator[Rig]:
    built = Rig.build(project, clock, pid=os.getpid())
    yield built
    built.store.close()


def scheduled(store: RunStore, pipeline: str = "daily") -> list[RunRecord]:
    """The pipeline's scheduled runs, oldest logical date first."""
    found = [r for r in store.runs(pipeline, limit=1000) if r.trigger == "schedule"]
    return sorted(found, key=lambda r: r.logical_date)


def days(records: list[RunRecord]) -> list[int]:
    return [r.logical_date.day for r in records]


def pipeline_class(rig: Rig, name: str) -> type[PipelineDefinition]:
    rig.scheduler.catalog.refresh()
    entry = rig.scheduler.catalog.get(name)
    assert entry is not None, rig.scheduler.catalog.errors
    return entry.pipeline


# -- planning --------------------------------------------------------------------------------------


def test_a_due_run_is_recorded_with_its_interval_then_launched(rig: Rig) -> None:
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    assert rig.scheduler.tick().planned == ()  # the first interval has not ended
    rig.clock.set(T0 + DAY + timedelta(seconds=1))

    report = rig.scheduler.tick()

    [record] = scheduled(rig.store)
    assert report.planned == report.launched == (record.run_id,)
    assert (record.trigger, record.state, record.pid) == ("schedule", "running", os.getpid())
    assert (record.logical_date, record.data_interval_start, record.data_interval_end) == (
        T0,
        T0,
        T0 + DAY,
    )
    assert record.created_at == T0 + DAY + timedelta(seconds=1)
    assert rig.launcher.launched == [record.run_id]
    assert rig.scheduler.tick().planned == ()


def test_catchup_plans_every_interval_missed_during_three_days_down(
    project: Path, clock: FakeClock
) -> None:
    write_pipeline(project, "daily", schedule="@daily", start_date="2025-03-01", catchup=True)
    first = Rig.build(project, clock, pid=os.getpid(), max_active_runs=10)
    clock.set(T0 + DAY)
    first.scheduler.tick()
    first.launcher.finish(first.launcher.launched[0])
    first.store.close()  # the scheduler is down for three days

    clock.advance(days=3)
    second = Rig.build(project, clock, pid=os.getpid())
    report = second.scheduler.tick()

    assert len(report.planned) == 3
    assert days(scheduled(second.store)) == [1, 2, 3, 4]
    second.store.close()


def test_without_catchup_only_the_latest_missed_interval_runs(
    project: Path, clock: FakeClock
) -> None:
    write_pipeline(project, "daily", schedule="@daily", start_date="2025-03-01")
    first = Rig.build(project, clock, pid=os.getpid())
    clock.set(T0 + DAY)
    first.scheduler.tick()
    first.store.close()

    clock.advance(days=3)
    second = Rig.build(project, clock, pid=os.getpid())
    report = second.scheduler.tick()

    assert len(report.planned) == 1
    assert days(scheduled(second.store)) == [1, 4]
    second.store.close()


def test_a_restarted_scheduler_plans_nothing_twice(project: Path, clock: FakeClock) -> None:
    write_pipeline(project, "daily", schedule="@daily", start_date="2025-02-20", catchup=True)
    clock.set(T0 + DAY)
    first = Rig.build(project, clock, pid=os.getpid(), max_active_runs=100)
    assert len(first.scheduler.tick().planned) == 10
    first.store.close()
    second = Rig.build(project, clock, pid=os.getpid())
    assert second.scheduler.tick().planned == ()
    assert len(scheduled(second.store)) == 10
    second.store.close()


def test_two_schedulers_on_one_store_plan_and_launch_every_interval_exactly_once(
    project: Path, clock: FakeClock
) -> None:
    write_pipeline(project, "hourly", schedule="@hourly", start_date="2025-03-01", catchup=True)
    write_pipeline(project, "quarter", schedule="*/15 * * * *", start_date="2025-03-01")
    one = Rig.build(project, clock, pid=os.getpid())
    two = Rig.build(project, clock, pid=os.getpid())
    for step in range(40):
        clock.advance(minutes=7)
        for rig in (one, two) if step % 2 else (two, one):
            rig.scheduler.tick()
            for run_id, worker in rig.launcher.workers.items():
                if worker.returncode is None:
                    rig.launcher.finish(run_id)
    for pipeline, expected in (("hourly", 4), ("quarter", 18)):
        dates = [r.logical_date for r in scheduled(one.store, pipeline)]
        assert len(dates) == len(set(dates)) >= expected
        boundaries = sorted(dates)
        steps = {b - a for a, b in itertools.pairwise(boundaries)}
        assert steps <= {timedelta(minutes=15), timedelta(hours=1)}
    launches = Counter(one.launcher.launched + two.launcher.launched)
    assert max(launches.values()) == 1
    assert set(launches) == {r.run_id for r in one.store.runs(limit=1000)}
    one.store.close()
    two.store.close()


def test_a_triggered_run_is_launched_on_the_next_tick(rig: Rig) -> None:
    write_pipeline(rig.project, "adhoc", params={"region": "eu"})
    settings = project_settings(rig.project)
    record = trigger(
        pipeline_class(rig, "adhoc"),
        store=rig.store,
        settings=settings,
        date="2025-02-14",
        params={"region": "us"},
        clock=rig.clock,
    )
    assert (record.trigger, record.state, record.params) == (
        "triggered",
        "queued",
        {"region": "us"},
    )
    assert record.logical_date == datetime(2025, 2, 14, tzinfo=UTC)
    assert rig.scheduler.tick().launched == (record.run_id,)


def test_a_triggered_run_of_a_scheduled_pipeline_covers_the_interval_of_its_date(
    rig: Rig,
) -> None:
    write_pipeline(rig.project, "berlin", schedule="0 6 * * *", timezone="Europe/Berlin")
    pipeline = pipeline_class(rig, "berlin")
    record = trigger(
        pipeline, store=rig.store, settings=project_settings(rig.project), date="2025-03-10T12:00"
    )
    assert record.logical_date == datetime(2025, 3, 10, 11, tzinfo=UTC)  # noon in Berlin
    assert (record.data_interval_start, record.data_interval_end) == (
        datetime(2025, 3, 10, 5, tzinfo=UTC),
        datetime(2025, 3, 11, 5, tzinfo=UTC),
    )
    with pytest.raises(ConfigError, match="has no param 'region'"):
        trigger(
            pipeline,
            store=rig.store,
            settings=project_settings(rig.project),
            params={"region": "x"},
        )


# -- concurrency -----------------------------------------------------------------------------------


def test_max_active_runs_queues_the_other_runs_oldest_first(rig: Rig) -> None:
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01", catchup=True)
    rig.clock.set(T0 + 3 * DAY)
    report = rig.scheduler.tick()
    assert len(report.planned) == 3
    records = scheduled(rig.store)
    assert [r.state for r in records] == ["running", "queued", "queued"]

    assert rig.scheduler.tick().launched == ()
    rig.launcher.finish(records[0].run_id)
    assert rig.scheduler.tick().launched == (records[1].run_id,)


def test_scheduler_max_active_runs_bounds_all_pipelines_together(
    project: Path, clock: FakeClock
) -> None:
    for name in ("first", "second"):
        write_pipeline(project, name, schedule="@daily", start_date="2025-03-01", max_active_runs=5)
    rig = Rig.build(project, clock, pid=os.getpid(), max_active_runs=1)
    clock.set(T0 + DAY)
    report = rig.scheduler.tick()
    assert (len(report.planned), len(report.launched)) == (2, 1)
    rig.launcher.finish(report.launched[0])
    assert len(rig.scheduler.tick().launched) == 1
    rig.store.close()


# -- workers that end badly and runs whose process vanished ----------------------------------------


def test_a_worker_killed_by_sigkill_fails_its_run_with_the_reason(rig: Rig) -> None:
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().launched
    rig.launcher.crash(run_id, -signal.SIGKILL)

    assert rig.scheduler.tick().ended == (run_id,)

    record = rig.store.get_run(run_id)
    assert (record.state, record.error) == (
        "failed",
        "worker killed by signal SIGKILL (out of memory?)",
    )


def test_exit_errors_name_the_signal_or_code() -> None:
    assert exit_error(-signal.SIGTERM) == "worker killed by signal SIGTERM"
    assert exit_error(3) == "worker exited with code 3 without recording the run's end"


def test_a_worker_that_recorded_its_failure_keeps_its_error(rig: Rig) -> None:
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().launched
    rig.store.finish_run(run_id, "failed", error="Node 'numbers' failed")
    rig.launcher.workers[run_id].returncode = 1
    rig.scheduler.tick()
    assert rig.store.get_run(run_id).error == "Node 'numbers' failed"


def stale_run(store: RunStore, *, pid: int, at: datetime) -> str:
    record = store.create_run(
        run_id="20250301T000000Z-aaaaaa",
        pipeline="daily",
        logical_date=T0 - DAY,
        params={},
        trigger="schedule",
        staging_root="/s",
        at=at,
    )
    store.claim_run(record.run_id, at=at)
    store.start_run(record.run_id, pid=pid, at=at)
    return record.run_id


def test_a_run_whose_process_vanished_fails_once_its_heartbeat_is_stale(
    rig: Rig, dead_pid: int
) -> None:
    run_id = stale_run(rig.store, pid=dead_pid, at=T0)
    rig.clock.set(T0 + timedelta(seconds=59))
    assert rig.scheduler.tick().stale == ()
    rig.clock.set(T0 + timedelta(seconds=61))  # stale_after_seconds defaults to 60

    assert rig.scheduler.tick().stale == (run_id,)

    record = rig.store.get_run(run_id)
    assert record.state == "failed"
    assert record.error is not None
    assert record.error.startswith("process vanished: no heartbeat since 2025-03-01 00:00:00 UTC")


def test_a_stale_run_whose_pid_now_names_another_process_fails(rig: Rig) -> None:
    run_id = stale_run(rig.store, pid=os.getpid(), at=T0)
    host, pid, start = (rig.store.get_run(run_id).owner or "").split("|")
    with closing(sqlite3.connect(rig.store.path)) as conn, conn:  # the pid's earlier process
        owner = f"{host}|{pid}|{int(start) - 1}"
        conn.execute("UPDATE runs SET owner = ? WHERE run_id = ?", (owner, run_id))
    rig.clock.set(T0 + timedelta(seconds=61))

    assert rig.scheduler.tick().stale == (run_id,)

    assert rig.store.get_run(run_id).state == "failed"


def test_a_stale_run_whose_process_lives_is_left_alone(rig: Rig) -> None:
    run_id = stale_run(rig.store, pid=os.getpid(), at=T0)
    rig.clock.set(T0 + DAY)
    assert rig.scheduler.tick().stale == ()
    assert rig.store.get_run(run_id).state == "running"


def test_on_stale_retry_queues_the_run_again_and_relaunches_it_resuming(
    project: Path, clock: FakeClock, dead_pid: int
) -> None:
    write_pipeline(project, "daily")
    rig = Rig.build(project, clock, pid=os.getpid(), on_stale="retry")
    run_id = stale_run(rig.store, pid=dead_pid, at=T0)
    clock.set(T0 + timedelta(minutes=5))

    report = rig.scheduler.tick()

    assert report.stale == (run_id,)
    assert report.launched == (run_id,)
    record = rig.store.get_run(run_id)
    assert (record.state, record.attempt) == ("running", 2)
    [requeued] = [e for e in rig.store.events(run_id) if e.kind == "requeued"]
    assert requeued.payload["resume"] is True
    rig.store.close()


# -- sensors ---------------------------------------------------------------------------------------


def sensing_pipeline(project: Path, **sensor: object) -> Path:
    flag = project / "flag"
    options = ", ".join(f"{k}={v!r}" for k, v in sensor.items())
    write_pipeline(
        project,
        "daily",
        schedule="@daily",
        start_date="2025-03-01",
        extra=f"ready = Flag({str(flag)!r}, {options})",
    )
    return flag


def test_a_due_run_waits_for_its_sensor_without_a_worker(rig: Rig) -> None:
    flag = sensing_pipeline(rig.project, poke_interval=60, timeout=3600)
    rig.clock.set(T0 + DAY)
    report = rig.scheduler.tick()
    [run_id] = report.planned
    assert (report.waiting, report.launched) == ((run_id,), ())
    assert rig.store.get_run(run_id).state == "queued"

    rig.clock.advance(seconds=30)
    rig.scheduler.tick()  # not poked again before poke_interval
    rig.clock.advance(seconds=30)
    rig.scheduler.tick()
    assert Path(f"{flag}.pokes").read_text().splitlines() == ["2025-03-01", "2025-03-01"]

    flag.write_text("")
    rig.clock.advance(seconds=60)
    assert rig.scheduler.tick().launched == (run_id,)
    kinds = [e.kind for e in rig.store.events(run_id)]
    assert kinds == ["sensor_waiting", "sensors_passed"]


def test_a_run_whose_sensors_passed_waits_for_a_slot_without_poking_again(
    project: Path, clock: FakeClock
) -> None:
    flag = sensing_pipeline(project, poke_interval=60, timeout=3600)
    flag.write_text("")
    rig = Rig.build(project, clock, pid=os.getpid(), max_active_runs=1)
    stale_run(rig.store, pid=os.getpid(), at=T0)  # a live run holds the only slot
    clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().planned
    for _ in range(3):
        clock.advance(seconds=120)
        assert rig.scheduler.tick().launched == ()
    assert Path(f"{flag}.pokes").read_text().splitlines() == ["2025-03-01"]
    assert [e.kind for e in rig.store.events(run_id)] == ["sensor_waiting", "sensors_passed"]
    rig.store.close()


def test_a_sensor_timeout_fails_the_run_saying_what_it_waited_for(rig: Rig) -> None:
    flag = sensing_pipeline(rig.project, poke_interval=60, timeout=300)
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().planned
    for _ in range(5):
        rig.clock.advance(seconds=60)
        rig.scheduler.tick()
    record = rig.store.get_run(run_id)
    assert record.state == "failed"
    assert record.error is not None
    assert record.error.startswith(
        f"sensor 'ready' timed out after 300 s waiting for flag {flag} for 2025-03-01"
    )
    assert rig.launcher.launched == []


def test_a_sensor_times_out_on_time_even_between_pokes(rig: Rig) -> None:
    sensing_pipeline(rig.project, poke_interval=3600, timeout=90)
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().planned
    rig.clock.advance(seconds=90)
    rig.scheduler.tick()
    assert rig.store.get_run(run_id).state == "failed"


def test_a_soft_fail_sensor_timeout_skips_the_run(rig: Rig) -> None:
    sensing_pipeline(rig.project, poke_interval=60, timeout=120, soft_fail=True)
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().planned
    rig.clock.advance(seconds=120)
    rig.scheduler.tick()
    record = rig.store.get_run(run_id)
    assert record.state == "skipped"
    assert "soft_fail" in (record.error or "")
    assert rig.launcher.launched == []


def test_a_sensor_timeout_survives_a_scheduler_restart(project: Path, clock: FakeClock) -> None:
    sensing_pipeline(project, poke_interval=60, timeout=300)
    clock.set(T0 + DAY)
    first = Rig.build(project, clock, pid=os.getpid())
    [run_id] = first.scheduler.tick().planned
    first.store.close()
    clock.advance(seconds=300)
    second = Rig.build(project, clock, pid=os.getpid())
    second.scheduler.tick()
    assert second.store.get_run(run_id).state == "failed"
    second.store.close()


def test_a_sensor_that_raises_fails_the_run_at_once(rig: Rig) -> None:
    flag = sensing_pipeline(rig.project, poke_interval=60, timeout=3600)
    Path(f"{flag}.raise").write_text("")
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().planned
    record = rig.store.get_run(run_id)
    assert (record.state, record.error) == (
        "failed",
        "sensor 'ready' failed: RuntimeError: cannot look",
    )


# -- pause, unpause, status ------------------------------------------------------------------------


def test_a_paused_pipeline_is_not_planned_and_its_triggered_runs_wait(rig: Rig) -> None:
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    assert pause(rig.store, "daily", clock=rig.clock)
    assert not pause(rig.store, "daily")
    rig.scheduler.tick()
    triggered = trigger(
        pipeline_class(rig, "daily"),
        store=rig.store,
        settings=project_settings(rig.project),
        clock=rig.clock,
    )
    rig.clock.set(T0 + 3 * DAY)
    assert rig.scheduler.tick() == TickReport()  # nothing at all
    assert rig.store.get_run(triggered.run_id).state == "queued"

    assert unpause(rig.store, "daily")
    report = rig.scheduler.tick()

    assert days(scheduled(rig.store)) == [3]  # no catchup: the latest interval only
    assert report.launched == (triggered.run_id,)  # the oldest queued run goes first


def test_status_reports_schedule_pause_next_due_running_and_last_run(rig: Rig) -> None:
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    write_pipeline(rig.project, "adhoc")
    (rig.project / "pipelines" / "broken.py").write_text("raise RuntimeError('oops')\n")
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().launched
    pause(rig.store, "adhoc")

    found = {s.name: s for s in status(rig.store, rig.project / "pipelines", clock=rig.clock)}

    daily = found["daily"]
    assert (daily.schedule, daily.timezone, daily.paused, daily.running) == (
        "@daily",
        "UTC",
        False,
        (run_id,),
    )
    assert (daily.next_logical_date, daily.next_due) == (T0 + DAY, T0 + 2 * DAY)
    assert daily.last_run is None
    assert (found["adhoc"].schedule, found["adhoc"].paused) == (None, True)
    assert "RuntimeError: oops" in (found["broken"].error or "")

    rig.launcher.finish(run_id, "failed", returncode=1)
    found = {s.name: s for s in status(rig.store, rig.project / "pipelines", clock=rig.clock)}
    assert found["daily"].last_run is not None
    assert found["daily"].last_run.state == "failed"


# -- pipelines that appear, change or break --------------------------------------------------------


def test_a_pipeline_added_later_is_scheduled_without_a_restart(rig: Rig) -> None:
    rig.clock.set(T0 + DAY)
    assert rig.scheduler.tick().planned == ()
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    assert len(rig.scheduler.tick().planned) == 1


def test_a_broken_edit_keeps_the_last_good_version(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    write_pipeline(rig.project, "other", schedule="@daily", start_date="2025-03-01")
    rig.scheduler.tick()
    path.write_text(path.read_text() + "\nthis is not python\n")
    rig.clock.set(T0 + DAY)
    with caplog.at_level(logging.ERROR, logger="etlkit.scheduling"):
        report = rig.scheduler.tick()
    assert len(report.planned) == 2  # both pipelines still run
    assert "failed to import, keeping its last good version" in caplog.text
    assert "daily.py" in caplog.text


def test_a_file_that_never_imported_is_skipped_and_the_others_run(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    (rig.project / "pipelines" / "broken.py").write_text("import no_such_module\n")
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    write_pipeline(rig.project, "bad_zone", schedule="@daily", timezone="Mars/Olympus")
    rig.clock.set(T0 + DAY)
    with caplog.at_level(logging.ERROR, logger="etlkit.scheduling"):
        report = rig.scheduler.tick()
        rig.scheduler.tick()
    assert len(report.planned) == 1
    assert caplog.text.count("broken.py failed to import, skipping it") == 1  # once per change
    assert "not an IANA timezone" in caplog.text


# -- stopping --------------------------------------------------------------------------------------


def test_serve_stops_launching_and_waits_for_running_workers(
    project: Path, clock: FakeClock
) -> None:
    write_pipeline(project, "daily", schedule="@daily", start_date="2025-03-01")
    rig = Rig.build(project, clock, pid=os.getpid(), poll_seconds=1)
    rig.launcher.ends_after_polls = 3
    clock.set(T0 + DAY - timedelta(seconds=2))
    launch = rig.scheduler.children.launcher

    def launch_then_stop(run_id: str) -> object:
        worker = launch(run_id)
        rig.scheduler.stop()  # as SIGINT would
        return worker

    rig.scheduler.children.launcher = launch_then_stop  # type: ignore[assignment]  # spy
    rig.scheduler.serve()

    [run_id] = rig.launcher.launched
    assert rig.launcher.workers[run_id].returncode == 0  # waited until it ended
    assert rig.store.schedulers() == []
    rig.store.close()


def test_a_second_stop_terminates_workers_and_marks_their_runs_interrupted(
    project: Path, clock: FakeClock
) -> None:
    write_pipeline(project, "daily", schedule="@daily", start_date="2025-03-01")
    rig = Rig.build(project, clock, pid=os.getpid(), poll_seconds=1)
    clock.set(T0 + DAY)
    launch = rig.scheduler.children.launcher

    def launch_then_stop_twice(run_id: str) -> object:
        worker = launch(run_id)
        rig.scheduler.stop()
        rig.scheduler.stop()
        return worker

    rig.scheduler.children.launcher = launch_then_stop_twice  # type: ignore[assignment]  # spy
    rig.scheduler.serve()

    [run_id] = rig.launcher.launched
    record = rig.store.get_run(run_id)
    assert record.state == "interrupted"
    assert record.error == "run terminated: the scheduler was stopped by a second signal"
    assert rig.launcher.workers[run_id].returncode == -signal.SIGTERM
    rig.store.close()


# -- pools and layering ----------------------------------------------------------------------------


def test_pool_sizes_come_from_pools_and_connections(project: Path) -> None:
    (project / "etlkit.toml").write_text(
        "[pools]\nwarehouse = 4\ncrm = 3\n\n"
        "[connections.crm]\npool_slots = 2\n\n[connections.lake]\npool_slots = 1\n"
    )
    assert load_pools(project) == {"crm": 3, "lake": 1, "warehouse": 4}
    assert load_pools(project / "nowhere") == {}


def test_a_bad_pool_size_names_the_key(project: Path) -> None:
    (project / "etlkit.toml").write_text("[pools]\nwarehouse = 0\n")
    with pytest.raises(ConfigError, match=r"pools.warehouse = 0 in .*etlkit.toml must be"):
        load_pools(project)


def test_status_last_run_is_the_finished_run_with_the_latest_logical_date(rig: Rig) -> None:
    write_pipeline(rig.project, "daily", schedule="@daily", start_date="2025-03-01")
    # catchup runs planned in one round share their creation time; their ids sort at random
    for run_id, day in (("z-oldest", 1), ("a-newest", 3), ("m-middle", 2)):
        rig.store.create_run(
            run_id=run_id,
            pipeline="daily",
            logical_date=T0 + (day - 1) * DAY,
            params={},
            trigger="schedule",
            staging_root="/staging",
            at=T0 + 4 * DAY,
        )
        rig.store.finish_run(run_id, "success", at=T0 + 4 * DAY)

    found = {s.name: s for s in status(rig.store, rig.project / "pipelines", clock=rig.clock)}

    last = found["daily"].last_run
    assert last is not None
    assert (last.run_id, last.logical_date) == ("a-newest", T0 + 2 * DAY)


# -- notifying the failures the scheduler decides --------------------------------------------------


@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    with WebhookServer.start() as server:
        yield server


def notified(rig: Rig, hook: WebhookServer) -> None:
    rig.scheduler.notifiers = {"hook": WebhookNotifier(hook.url("/hooks/T0/B0/secret"))}


def test_a_sensor_timeout_in_the_scheduler_notifies_on_failure_once(
    rig: Rig, hook: WebhookServer
) -> None:
    flag = rig.project / "flag"
    write_pipeline(
        rig.project,
        "daily",
        schedule="@daily",
        start_date="2025-03-01",
        on_failure=["hook"],
        extra=f"ready = Flag({str(flag)!r}, poke_interval=60, timeout=120)",
    )
    notified(rig, hook)
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().planned

    for _ in range(4):
        rig.clock.advance(seconds=60)
        rig.scheduler.tick()

    [request] = hook.requests
    payload = request.json["etlkit"]
    assert (payload["event"], payload["run_id"], payload["state"]) == ("failure", run_id, "failed")
    assert payload["node"] == "ready"
    assert payload["error"].startswith("sensor 'ready' timed out after 120 s")
    assert payload["finished_at"] == (T0 + DAY + timedelta(seconds=120)).isoformat()


def test_a_killed_worker_notifies_on_failure_once_with_its_times(
    rig: Rig, hook: WebhookServer
) -> None:
    write_pipeline(
        rig.project, "daily", schedule="@daily", start_date="2025-03-01", on_failure=["hook"]
    )
    notified(rig, hook)
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().launched
    rig.clock.advance(seconds=90)
    rig.launcher.crash(run_id, -signal.SIGKILL)

    rig.scheduler.tick()
    rig.scheduler.tick()

    [request] = hook.requests
    payload = request.json["etlkit"]
    assert (payload["event"], payload["run_id"], payload["attempt"]) == ("failure", run_id, 1)
    assert payload["error"] == "worker killed by signal SIGKILL (out of memory?)"
    assert payload["started_at"] == (T0 + DAY).isoformat()
    assert payload["finished_at"] == (T0 + DAY + timedelta(seconds=90)).isoformat()
    assert "duration: 90.0s" in request.json["text"]


def test_a_failure_its_worker_notified_is_not_notified_again_by_the_scheduler(
    rig: Rig, hook: WebhookServer
) -> None:
    write_pipeline(
        rig.project, "daily", schedule="@daily", start_date="2025-03-01", on_failure=["hook"]
    )
    notified(rig, hook)
    rig.clock.set(T0 + DAY)
    [run_id] = rig.scheduler.tick().launched
    rig.launcher.finish(run_id, "failed", returncode=1)
    assert rig.store.claim_notification(run_id, "failure", attempt=1)  # as the worker does

    rig.scheduler.tick()

    assert hook.requests == []
