"""Backfill over a range of logical dates: order, reprocess modes, concurrency, resuming."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etlkit.errors import ConfigError, SchedulerError
from etlkit.model.discovery import load_pipeline
from etlkit.model.pipeline import PipelineDefinition
from etlkit.runs.notifications import WebhookNotifier
from etlkit.scheduling import BackfillSummary, FakeClock, Reprocess, backfill
from etlkit.storage.store import RunState, RunStore
from tests.etlkit.scheduling_rig import T0, FakeWorker, project_settings, write_pipeline
from tests.webhook_server import WebhookServer


@dataclass
class Workers:
    """A launcher whose workers end after `polls` polls, each run ending as `outcome` says."""

    store: RunStore
    clock: FakeClock
    polls: int = 1
    outcome: dict[int, RunState] = field(default_factory=dict)  # by day of the logical date
    interrupt_at: int | None = None  # raise KeyboardInterrupt on this launch (1-based)
    launched: list[str] = field(default_factory=list)
    live: dict[str, FakeWorker] = field(default_factory=dict)
    most_at_once: int = 0

    def __call__(self, run_id: str) -> FakeWorker:
        if self.interrupt_at == len(self.launched) + 1:
            raise KeyboardInterrupt
        self.store.start_run(run_id, pid=os.getpid(), at=self.clock.now())
        self.launched.append(run_id)
        worker = _Ending(os.getpid(), workers=self, run_id=run_id, ends_after_polls=self.polls)
        self.live[run_id] = worker
        self.most_at_once = max(
            self.most_at_once, sum(w.returncode is None for w in self.live.values())
        )
        return worker


@dataclass
class _Ending(FakeWorker):
    workers: Workers | None = None
    run_id: str = ""

    def poll(self) -> int | None:
        ended_before = self.returncode is not None
        code = super().poll()
        if code is not None and not ended_before and self.workers is not None:
            record = self.workers.store.get_run(self.run_id)
            state = self.workers.outcome.get(record.logical_date.day, "success")
            self.workers.store.finish_run(self.run_id, state)
            self.returncode = 0 if state == "success" else 1
            return self.returncode
        return code


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    write_pipeline(tmp_path, "daily", schedule="@daily", start_date="2025-06-01")
    return tmp_path


@pytest.fixture
def store(project: Path) -> Iterator[RunStore]:
    with RunStore(project_settings(project).paths.store) as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def daily(project: Path) -> type[PipelineDefinition]:
    return load_pipeline("daily", project / "pipelines")


def run(
    project: Path,
    store: RunStore,
    workers: Workers,
    *,
    reprocess: Reprocess = "missing",
    max_active: int = 1,
    reverse: bool = False,
    start: str = "2025-03-01",
    end: str = "2025-03-04",
) -> BackfillSummary:
    return backfill(
        daily(project),
        start=start,
        end=end,
        store=store,
        settings=project_settings(project),
        project_dir=project,
        reprocess=reprocess,
        max_active=max_active,
        reverse=reverse,
        clock=workers.clock,
        launch=workers,
    )


def launched_days(store: RunStore, workers: Workers) -> list[int]:
    return [store.get_run(run_id).logical_date.day for run_id in workers.launched]


def test_backfill_runs_one_run_per_interval_oldest_first(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    workers = Workers(store, clock)
    summary = run(project, store, workers)
    assert launched_days(store, workers) == [1, 2, 3, 4]  # start_date (June) does not limit it
    assert summary.logical_dates == tuple(datetime(2025, 3, d, tzinfo=UTC) for d in (1, 2, 3, 4))
    assert summary.count("success") == 4
    assert summary.ok
    records = [store.get_run(r) for r in workers.launched]
    assert {r.trigger for r in records} == {"backfill"}
    assert [
        (r.data_interval_end - r.logical_date).days for r in records if r.data_interval_end
    ] == [
        1,
        1,
        1,
        1,
    ]


def test_backfill_in_reverse_runs_newest_first(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    workers = Workers(store, clock)
    run(project, store, workers, reverse=True)
    assert launched_days(store, workers) == [4, 3, 2, 1]


def test_backfill_runs_at_most_max_active_at_once(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    workers = Workers(store, clock, polls=3)
    summary = run(project, store, workers, max_active=2, end="2025-03-06")
    assert summary.count("success") == 6
    assert workers.most_at_once == 2


def test_missing_leaves_runs_with_an_outcome_alone(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    first = Workers(store, clock, outcome={2: "failed"})
    assert not run(project, store, first).ok

    again = Workers(store, clock)
    summary = run(project, store, again, end="2025-03-05")

    assert launched_days(store, again) == [5]
    assert len(summary.kept) == 4
    assert summary.states == {again.launched[0]: "success"}


def test_failed_reruns_failed_runs_under_their_id_resuming(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    first = Workers(store, clock, outcome={2: "failed", 3: "cancelled"})
    run(project, store, first)
    failed_ids = first.launched[1:3]

    again = Workers(store, clock)
    summary = run(project, store, again, reprocess="failed")

    assert again.launched == failed_ids
    assert summary.states == dict.fromkeys(failed_ids, "success")
    for run_id in failed_ids:
        assert store.get_run(run_id).attempt == 2
        [event] = [e for e in store.events(run_id) if e.kind == "requeued"]
        assert event.payload == {"reason": "backfill --reprocess failed", "resume": True}


def test_all_reruns_everything_from_scratch(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    run(project, store, Workers(store, clock))
    again = Workers(store, clock)
    summary = run(project, store, again, reprocess="all")
    assert summary.count("success") == 4
    assert launched_days(store, again) == [1, 2, 3, 4]
    [event] = [e for e in store.events(again.launched[0]) if e.kind == "requeued"]
    assert event.payload["resume"] is False


def test_an_interrupted_backfill_resumes_where_it_stopped(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    first = Workers(store, clock, polls=5, interrupt_at=3)
    summary = run(project, store, first, max_active=3)
    assert summary.interrupted
    assert not summary.ok
    assert sorted(summary.states.values()) == ["interrupted", "interrupted", "queued", "queued"]

    again = Workers(store, clock)
    resumed = run(project, store, again, max_active=3)

    assert sorted(launched_days(store, again)) == [1, 2, 3, 4]
    assert resumed.ok
    assert resumed.count("success") == 4


def test_a_run_already_running_elsewhere_is_not_launched_again(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    record = store.create_run(
        run_id="r-elsewhere",
        pipeline="daily",
        logical_date=datetime(2025, 3, 2, tzinfo=UTC),
        params={},
        trigger="schedule",
        staging_root="/s",
    )
    store.claim_run(record.run_id)
    workers = Workers(store, clock)
    summary = run(project, store, workers)
    assert summary.elsewhere == ("r-elsewhere",)
    assert launched_days(store, workers) == [1, 3, 4]


def test_backfill_needs_a_schedule_and_a_sane_range(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    write_pipeline(project, "adhoc")
    workers = Workers(store, clock)
    with pytest.raises(SchedulerError, match="'adhoc' has no schedule"):
        backfill(
            load_pipeline("adhoc", project / "pipelines"),
            start="2025-03-01",
            end="2025-03-02",
            store=store,
            settings=project_settings(project),
            project_dir=project,
            launch=workers,
        )
    with pytest.raises(ConfigError, match="end 2025-02-01 is before its start"):
        run(project, store, workers, end="2025-02-01")
    with pytest.raises(ConfigError, match="max_active must be >= 1"):
        run(project, store, workers, max_active=0)
    with pytest.raises(ConfigError, match="Backfill start 'x' is not a date"):
        run(project, store, workers, start="x")


SENSING = """
import pyarrow as pa
import etlkit as ek
from etlkit.model.sensors import FileSensor
from etlkit.testing import MemorySource


class Daily(ek.Pipeline):
    schedule = "@daily"
    on_failure = ["hook"]
    ready = FileSensor({flags!r} + "/{{ds}}", poke_interval=60, timeout={timeout})
    numbers = MemorySource(pa.table({{"x": [1, 2, 3]}}))
"""


def sensing(project: Path, *, timeout: int = 3600) -> Path:
    flags = project / "flags"
    flags.mkdir()
    text = SENSING.format(flags=str(flags), timeout=timeout)
    (project / "pipelines" / "daily.py").write_text(text)
    return flags


def test_a_run_waiting_for_its_sensor_holds_no_worker_slot(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    flags = sensing(project)
    for day in (2, 3, 4):
        (flags / f"2025-03-0{day}").write_text("")
    workers = Workers(store, clock)

    def launch(run_id: str) -> FakeWorker:
        worker = workers(run_id)
        if len(workers.launched) == 2:  # day 1's file arrives while others run
            (flags / "2025-03-01").write_text("")
        return worker

    summary = backfill(
        daily(project),
        start="2025-03-01",
        end="2025-03-04",
        store=store,
        settings=project_settings(project),
        project_dir=project,
        clock=clock,
        launch=launch,
    )

    assert launched_days(store, workers) == [2, 3, 4, 1]
    assert summary.count("success") == 4


def test_a_sensor_timeout_in_a_backfill_notifies_on_failure_once(
    project: Path, store: RunStore, clock: FakeClock
) -> None:
    flags = sensing(project, timeout=120)
    (flags / "2025-03-02").write_text("")
    workers = Workers(store, clock)

    with WebhookServer.start() as hook:
        summary = backfill(
            daily(project),
            start="2025-03-01",
            end="2025-03-02",
            store=store,
            settings=project_settings(project),
            project_dir=project,
            clock=clock,
            launch=workers,
            notifiers={"hook": WebhookNotifier(hook.url("/hooks/secret"))},
        )

    assert launched_days(store, workers) == [2]
    assert (summary.count("failed"), summary.count("success")) == (1, 1)
    [request] = hook.requests
    payload = request.json["etlkit"]
    assert (payload["event"], payload["logical_date"]) == ("failure", "2025-03-01T00:00:00+00:00")
    assert payload["error"].startswith("sensor 'ready' timed out after 120 s")
