"""`python -m etlkit.runs.worker`, run in-process: executing, refusing and resuming recorded
runs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etlkit.runs.worker import main
from etlkit.settings.config import Settings, load_settings
from etlkit.storage.store import RunStore

NOTED = """\
import json
from pathlib import Path

import pyarrow as pa

import etlkit as ek
from etlkit.testing import MemorySource


class Note(ek.Task):
    def run(self, ctx):
        if Path(ctx.params["fail"]).exists():
            raise RuntimeError("asked to fail")
        Path(ctx.params["out"]).write_text(json.dumps({
            "ds": ctx.ds,
            "logical_date": ctx.logical_date.isoformat(),
            "start": ctx.data_interval_start.isoformat(),
            "end": ctx.data_interval_end.isoformat(),
        }))


class Noted(ek.Pipeline):
    schedule = "0 6 * * *"
    timezone = "Europe/Berlin"
    params = {"out": "note.json", "fail": "fail.flag"}
    numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
    note = Note(after=[numbers])
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "noted.py").write_text(NOTED)
    (tmp_path / "etlkit.toml").write_text('[paths]\nstate_dir = "state"\n')
    return tmp_path


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project, env={})


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with RunStore(settings.paths.store) as opened:
        yield opened


def recorded(store: RunStore, settings: Settings, project: Path, *, pipeline: str = "noted") -> str:
    """A claimed scheduled run for 2025-03-10 06:00 Berlin (05:00 UTC)."""
    record = store.create_run(
        run_id="20250311T050000Z-abcdef",
        pipeline=pipeline,
        logical_date=datetime(2025, 3, 10, 5, tzinfo=UTC),
        params={"out": str(project / "note.json"), "fail": str(project / "fail.flag")},
        trigger="schedule",
        staging_root=settings.paths.staging_root,
        data_interval_start=datetime(2025, 3, 10, 5, tzinfo=UTC),
        data_interval_end=datetime(2025, 3, 11, 5, tzinfo=UTC),
    )
    assert store.claim_run(record.run_id)
    return record.run_id


def work(project: Path, run_id: str) -> int:
    return main(["--project", str(project), "--run-id", run_id, "--log-level", "WARNING"])


def test_the_worker_runs_a_claimed_run_with_its_interval_in_the_pipeline_timezone(
    project: Path, settings: Settings, store: RunStore
) -> None:
    run_id = recorded(store, settings, project)

    assert work(project, run_id) == 0

    assert json.loads((project / "note.json").read_text()) == {
        "ds": "2025-03-10",
        "logical_date": "2025-03-10T06:00:00+01:00",
        "start": "2025-03-10T06:00:00+01:00",
        "end": "2025-03-11T06:00:00+01:00",
    }
    record = store.get_run(run_id)
    assert (record.state, record.pid, record.attempt) == ("success", os.getpid(), 1)


def test_the_worker_resumes_a_run_queued_again_to_resume(
    project: Path, settings: Settings, store: RunStore
) -> None:
    run_id = recorded(store, settings, project)
    (project / "fail.flag").write_text("")
    assert work(project, run_id) == 1
    assert store.get_run(run_id).state == "failed"

    (project / "fail.flag").unlink()
    store.requeue_run(run_id, from_states=["failed"], reason="test", resume=True)
    assert work(project, run_id) == 0

    record = store.get_run(run_id)
    assert (record.state, record.attempt) == ("success", 2)
    [retry] = [e for e in store.events(run_id) if e.kind == "retry"]
    assert retry.payload["reused"] == ["numbers"]


def test_the_worker_refuses_a_finished_run(
    project: Path, settings: Settings, store: RunStore
) -> None:
    run_id = recorded(store, settings, project)
    store.finish_run(run_id, "success")
    assert work(project, run_id) == 2


def test_the_worker_refuses_a_run_another_live_process_runs(
    project: Path, settings: Settings, store: RunStore
) -> None:
    run_id = recorded(store, settings, project)
    store.start_run(run_id, pid=os.getppid())
    assert work(project, run_id) == 2
    assert store.get_run(run_id).pid == os.getppid()


def test_the_worker_records_a_pipeline_that_does_not_load(
    project: Path, settings: Settings, store: RunStore
) -> None:
    run_id = recorded(store, settings, project, pipeline="ghost")
    assert work(project, run_id) == 1
    record = store.get_run(run_id)
    assert record.state == "failed"
    assert "No pipeline named 'ghost'" in (record.error or "")
