"""The scheduler's commands through `etlkit`: status, pause/unpause, trigger, backfill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etlkit.storage.store import RunStore
from tests.integration.cli import REPO, etlkit
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.integration

DAILY = '''
import pyarrow as pa
import etlkit as ek
from connectors.files import ParquetSink
from etlkit.testing import MemorySource


class Daily(ek.Pipeline):
    """A daily pipeline for scheduler tests."""

    schedule = "@daily"
    start_date = "2025-01-01"
    numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
    out = ParquetSink("out/{ds}.parquet", numbers)
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "daily.py").write_text(DAILY)
    return tmp_path


def test_status_pause_unpause_trigger_and_backfill(project: Path) -> None:
    status = etlkit("status", cwd=project)
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.startswith("daily"))
    assert "@daily" in line
    assert "active" in line

    assert "daily paused" in etlkit("pause", "daily", cwd=project).stdout
    assert "paused" in next(
        x for x in etlkit("status", cwd=project).stdout.splitlines() if x.startswith("daily")
    )
    assert "daily unpaused" in etlkit("unpause", "daily", cwd=project).stdout

    backfill = etlkit(
        "backfill", "daily", "--start", "2025-01-01", "--end", "2025-01-03", cwd=project
    )
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert "3 interval(s); 3 success" in backfill.stdout
    assert sorted(p.name for p in (project / "out").iterdir()) == [
        "2025-01-01.parquet",
        "2025-01-02.parquet",
        "2025-01-03.parquet",
    ]

    again = etlkit("backfill", "daily", "--start", "2025-01-01", "--end", "2025-01-03", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "nothing run; 3 kept" in again.stdout  # resumable: succeeded runs are not redone

    triggered = etlkit("trigger", "daily", "--date", "2025-02-01", cwd=project)
    assert triggered.returncode == 0, triggered.stderr
    assert "queued run" in triggered.stdout
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        runs = store.runs("daily", limit=10)
    assert sorted(r.trigger for r in runs) == ["backfill", "backfill", "backfill", "triggered"]
    assert {r.state for r in runs if r.trigger == "backfill"} == {"success"}

    unknown = etlkit("pause", "dialy", cwd=project)
    assert unknown.returncode == 3
    assert "Did you mean 'daily'?" in unknown.stderr


BERLIN = '''
import pyarrow as pa
import etlkit as ek
from connectors.files import ParquetSink
from etlkit.testing import MemorySource


class Berlin(ek.Pipeline):
    """A daily pipeline on Berlin's calendar."""

    schedule = "@daily"
    timezone = "Europe/Berlin"
    numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
    out = ParquetSink("out/{ds}.parquet", numbers)
'''


def test_backfill_and_runs_read_dates_in_the_pipelines_timezone(project: Path) -> None:
    (project / "pipelines" / "berlin.py").write_text(BERLIN)

    backfill = etlkit(
        "backfill", "berlin", "--start", "2026-03-27", "--end", "2026-03-31", cwd=project
    )

    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert "5 interval(s); 5 success" in backfill.stdout
    days = [f"2026-03-{day}" for day in range(27, 32)]
    assert sorted(p.name for p in (project / "out").iterdir()) == [f"{d}.parquet" for d in days]
    runs = etlkit("runs", "berlin", cwd=project)
    assert runs.returncode == 0, runs.stderr
    assert sorted(line.split()[2] for line in runs.stdout.splitlines()[1:]) == days
    status = etlkit("status", cwd=project)
    line = next(x for x in status.stdout.splitlines() if x.startswith("berlin"))
    assert line.endswith("success 2026-03-31")


def test_scheduler_prints_a_start_line_forgets_killed_schedulers_and_exits_130_on_ctrl_c(
    project: Path,
) -> None:
    assert etlkit("pause", "daily", cwd=project).returncode == 0  # no run to wait for
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    killed_pid = int(finished.stdout)  # a process that is gone, as a killed scheduler's
    store_path = project / ".etlkit" / "etlkit.sqlite"
    with RunStore(store_path) as store:
        store.scheduler_heartbeat("killed-1", pid=killed_pid, started_at=datetime.now(UTC))

    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "etlkit", "scheduler"],
        cwd=project,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with RunStore(store_path) as store:
            ids = wait_for(
                lambda: (
                    [s.scheduler_id for s in store.schedulers()] != ["killed-1"]
                    and [s.scheduler_id for s in store.schedulers()]
                ),
                what="the scheduler's first heartbeat",
                timeout=60,
            )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(ids) == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"scheduler {ids[0]} started: pipelines in "), out + err
    assert "Ctrl-C stops it" in lines[0]
    assert lines[-1] == "scheduler stopped (interrupted)"
    assert proc.returncode == 130, err
    with RunStore(store_path) as store:
        assert store.schedulers() == []
