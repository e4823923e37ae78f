"""The scheduler as a process: runs on schedule, survives SIGKILL, recovers the run it lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etlkit.storage.store import RunRecord, RunStore
from tests.integration.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TICKER = '''\
import datetime
import threading
from pathlib import Path

import pyarrow as pa

import etlkit as ek
from etlkit.testing import MemorySource


class Mark(ek.Task):
    """Writes out/<run_id>.done; while the flag file exists, writes .hanging and blocks forever."""

    def run(self, ctx):
        out = Path(ctx.params["out"])
        if Path(ctx.params["flag"]).exists():
            (out / f"{{ctx.run_id}}.hanging").write_text(ctx.ds)
            threading.Event().wait()
        (out / f"{{ctx.run_id}}.done").write_text(ctx.data_interval_start.isoformat())


class Ticker(ek.Pipeline):
    schedule = datetime.timedelta(seconds=2)
    start_date = "{start}"
    catchup = False
    params = {{"flag": "{flag}", "out": "{out}"}}
    numbers = MemorySource(pa.table({{"x": [1, 2, 3]}}))
    mark = Mark(after=[numbers])
'''

CONFIG = """\
[paths]
state_dir = "state"

[scheduler]
poll_seconds = 0.2
heartbeat_seconds = 0.3
stale_after_seconds = 2.0
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "out").mkdir()
    start = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
    source = TICKER.format(start=start, flag=tmp_path / "hang.flag", out=tmp_path / "out")
    (tmp_path / "pipelines" / "ticker.py").write_text(source)
    (tmp_path / "etlkit.toml").write_text(CONFIG)
    return tmp_path


class SchedulerProcess:
    """`etlkit scheduler` in the project, its output in a file."""

    def __init__(self, project: Path, name: str) -> None:
        self.log = project / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "etlkit", "--log-level", "info", "scheduler"],
                cwd=project,
                env={**env, "PYTHONPATH": str(REPO)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def store(project: Path) -> Iterator[RunStore]:
    (project / "state").mkdir()
    with RunStore(project / "state" / "etlkit.sqlite") as opened:
        yield opened


def runs(store: RunStore) -> list[RunRecord]:
    return store.runs("ticker", limit=1000)


def test_scheduler_runs_on_schedule_and_recovers_from_sigkill(
    project: Path, store: RunStore
) -> None:
    first = SchedulerProcess(project, "first")
    killed: list[int] = []
    try:
        ok = wait_for(
            lambda: [r for r in runs(store) if r.state == "success"],
            what="a scheduled run to succeed",
            timeout=20,
            context=first.output,
        )
        assert ok[0].trigger == "schedule"
        assert ok[0].data_interval_end == ok[0].logical_date + timedelta(seconds=2)
        done = (project / "out" / f"{ok[0].run_id}.done").read_text()
        assert datetime.fromisoformat(done) == ok[0].logical_date

        (project / "hang.flag").write_text("")
        [hanging] = wait_for(
            lambda: sorted((project / "out").glob("*.hanging")),
            what="a run to block mid-way",
            timeout=20,
            context=first.output,
        )
        blocked = hanging.name.removesuffix(".hanging")

        # its worker's heartbeats keep it running well past stale_after_seconds
        def beating() -> RunRecord | None:
            record = store.get_run(blocked)
            assert record.state == "running", first.output()
            started, beat = record.started_at, record.heartbeat_at
            assert started is not None
            assert beat is not None
            return record if beat - started > timedelta(seconds=2.5) else None

        alive = wait_for(beating, what="heartbeats", timeout=15, context=first.output)
        assert alive.pid is not None

        # the machine goes down: the scheduler and the worker die without a word
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        os.kill(alive.pid, signal.SIGKILL)
        killed.append(alive.pid)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
    assert store.get_run(blocked).state == "running"  # nobody recorded its end
    (project / "hang.flag").unlink()
    restarted_at = datetime.now(UTC)

    second = SchedulerProcess(project, "second")
    try:
        lost = wait_for(
            lambda: r if (r := store.get_run(blocked)).state != "running" else None,
            what="the lost run to be noticed",
            timeout=20,
            context=second.output,
        )
        assert lost.state == "failed"
        assert (lost.error or "").startswith("process vanished"), lost.error
        wait_for(
            lambda: [
                r for r in runs(store) if r.state == "success" and r.created_at > restarted_at
            ],
            what="a run planned after the restart to succeed",
            timeout=20,
            context=second.output,
        )
        assert second.stop() == 0, second.output()  # SIGTERM: graceful
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
            second.proc.wait()

    scheduled = [r for r in runs(store) if r.trigger == "schedule"]
    per_date = Counter(r.logical_date for r in scheduled)
    assert max(per_date.values()) == 1  # never twice for one logical date
    assert len(scheduled) >= 3
    assert all(r.state != "running" or r.pid not in killed for r in scheduled)


def test_a_first_signal_waits_for_running_runs_and_a_second_interrupts_them(
    project: Path, store: RunStore
) -> None:
    (project / "hang.flag").write_text("")
    scheduler = SchedulerProcess(project, "scheduler")
    try:
        [hanging] = wait_for(
            lambda: sorted((project / "out").glob("*.hanging")),
            what="a run to block mid-way",
            timeout=20,
            context=scheduler.output,
        )
        blocked = hanging.name.removesuffix(".hanging")
        scheduler.proc.send_signal(signal.SIGTERM)
        wait_for(
            lambda: "scheduler stopping" in scheduler.output(),
            what="the scheduler to stop launching",
            timeout=10,
            context=scheduler.output,
        )
        assert scheduler.proc.poll() is None  # it waits for the running run
        assert store.get_run(blocked).state == "running"

        scheduler.proc.send_signal(signal.SIGTERM)
        assert scheduler.proc.wait(timeout=30) == 0, scheduler.output()
    finally:
        if scheduler.proc.poll() is None:
            scheduler.proc.kill()
            scheduler.proc.wait()
    record = store.get_run(blocked)
    assert record.state == "interrupted", record.error
    assert not [r for r in runs(store) if r.state == "running"]
