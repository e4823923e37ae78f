"""Run history, retry after a crash, concurrent runs and retention, through the `etlkit` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from etlkit.storage.staging import Staging
from etlkit.storage.store import RunStore

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

KILLABLE = '''
import threading
from pathlib import Path

import polars as pl
import pyarrow as pa

import etlkit as ek
from connectors.files import ParquetSink
from etlkit.testing import MemorySource


class Hang(ek.Transform[None, None]):
    """Blocks forever on its 6th chunk while the flag file exists (to be killed there)."""

    def process(self, batch, ctx):
        if ctx.params["flag"] == "raise" and batch["x"][0] >= 50:
            raise ValueError("x is too large")
        if Path(ctx.params["flag"]).exists() and batch["x"][0] >= 50:
            print("HANGING", flush=True)
            threading.Event().wait()
        return batch.with_columns(y=pl.col("x") * 2)


class Killable(ek.Pipeline):
    params = {"flag": "no-such-file", "out": "out"}
    numbers = MemorySource(pa.table({"x": list(range(100))}), chunk_rows=10)
    doubled = Hang(numbers)
    total = ek.Sql("select sum(y) as total, count(*) as n from {doubled}")
    report = ParquetSink("{out}/report.parquet", total)
'''


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    return {**base, "PYTHONPATH": str(REPO)}


def etlkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etlkit", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "killable.py").write_text(KILLABLE)
    return tmp_path


def started_run_id(line: str) -> str:
    # "[   0.00s] run 20250101T000000Z-abcdef of killable started"
    return line.split(" run ", 1)[1].split()[0]


def test_sigkill_mid_node_leaves_nothing_committed_and_retry_completes(project: Path) -> None:
    flag = project / "hang.flag"
    flag.write_text("")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etlkit",
            "run",
            "killable",
            "--progress",
            "plain",
            "--param",
            f"flag={flag}",
            "--param",
            "out=out",
        ],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = ""
    for line in proc.stdout:
        if " of killable started" in line:
            run_id = started_run_id(line)
        if "HANGING" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert run_id

    staging = Staging(str(project / ".etlkit" / "staging"))
    assert staging.manifest("killable", run_id, "doubled") is None
    assert staging.manifest("killable", run_id, "total") is None
    assert not (project / "out" / "report.parquet").exists()
    visible = [p.name for p in (project / "out").glob("*") if not p.name.startswith(".")]
    assert visible == []  # at most the sink's hidden temporary file, never a report
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        assert store.get_run(run_id).state == "running"  # the process died without a word

    flag.unlink()
    retried = etlkit("retry", run_id[:12], "--progress", "plain", cwd=project)

    assert retried.returncode == 0, retried.stderr
    assert f"run {run_id} success" in retried.stdout
    clean = etlkit("run", "killable", "--param", "out=clean", cwd=project)
    assert clean.returncode == 0, clean.stderr
    resumed = pl.read_parquet(project / "out" / "report.parquet")
    assert resumed.equals(pl.read_parquet(project / "clean" / "report.parquet"))
    assert resumed.to_dicts() == [{"total": 9900, "n": 100}]
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        record = store.get_run(run_id)
        assert (record.state, record.attempt) == ("success", 2)
        kinds = [e.kind for e in store.events(run_id)]
        assert "retry" in kinds


def start_hanging_run(project: Path, flag: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start `etlkit run killable` in a child process; return it once it hangs, with its run id."""
    flag.write_text("")
    args = ("--progress", "plain", *args)
    proc = subprocess.Popen(
        [sys.executable, "-m", "etlkit", "run", "killable", "--param", f"flag={flag}", *args],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = ""
    for line in proc.stdout:
        if " of killable started" in line:
            run_id = started_run_id(line)
        if "HANGING" in line:
            break
    assert run_id
    return proc, run_id


def test_one_active_manual_run_per_date_and_a_killed_one_is_failed_by_the_next_command(
    project: Path,
) -> None:
    proc, run_id = start_hanging_run(project, project / "hang.flag", "--date", "2025-01-01")
    try:
        second = etlkit("run", "killable", "--date", "2025-01-01", cwd=project)
        assert second.returncode == 6, second.stderr
        assert "already has an active run for logical date 2025-01-01" in second.stderr
        assert f"run {run_id} (running, process {proc.pid})" in second.stderr
        assert "--force" in second.stderr
        other_day = etlkit(
            "run", "killable", "--date", "2025-01-02", "--progress", "none", cwd=project
        )
        assert other_day.returncode == 0, other_day.stderr
        forced = etlkit(
            "run",
            "killable",
            "--date",
            "2025-01-01",
            "--force",
            "--param",
            "out=forced",
            cwd=project,
        )
        assert forced.returncode == 0, forced.stderr
        runs = etlkit("runs", cwd=project)
        line = next(x for x in runs.stdout.splitlines() if x.startswith(run_id))
        assert line.split()[2:5] == ["2025-01-01", "manual", "running"]  # alive: left alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    staging = Staging(str(project / ".etlkit" / "staging"))
    assert run_id in staging.runs("killable")

    runs = etlkit("runs", cwd=project)

    assert runs.returncode == 0, runs.stderr
    line = next(x for x in runs.stdout.splitlines() if x.startswith(run_id))
    assert line.split()[4] == "failed"
    show = etlkit("show", run_id, cwd=project)
    assert f"its process {proc.pid} on" in show.stdout
    assert "is gone: it was killed, or its machine restarted" in show.stdout
    assert f"`etlkit retry {run_id}` resumes it" in show.stdout
    again = etlkit("run", "killable", "--date", "2025-01-01", "--progress", "none", cwd=project)
    assert again.returncode == 0, again.stderr
    gc = etlkit("gc", "killable", "--keep-last", "1", cwd=project)
    assert gc.returncode == 0, gc.stderr
    assert f"deleted killable/{run_id}" in gc.stdout


def test_runs_show_and_logs_report_a_failed_run(project: Path) -> None:
    failing = etlkit("run", "killable", "--param", "flag=raise", cwd=project)
    assert failing.returncode != 0

    runs = etlkit("runs", cwd=project)
    assert runs.returncode == 0, runs.stderr
    header, line = runs.stdout.splitlines()[:2]
    assert header.split()[:3] == ["run", "id", "pipeline"]
    run_id, pipeline, _date, trigger, state = line.split()[:5]
    assert (pipeline, trigger, state) == ("killable", "manual", "failed")

    show = etlkit("show", run_id, cwd=project)
    assert show.returncode == 0, show.stderr
    assert f"run        {run_id}" in show.stdout
    assert "state      failed (attempt 1)" in show.stdout
    doubled = next(x for x in show.stdout.splitlines() if x.startswith("doubled "))
    assert doubled.split()[:5] == ["doubled", "transform", "failed", "60", "50"]
    assert "doubled: Node 'doubled' in pipeline 'killable'" in show.stdout
    assert "failed on chunk 6: ValueError: x is too large" in show.stdout

    logs = etlkit("logs", run_id, "doubled", cwd=project)
    assert logs.returncode == 0, logs.stderr
    assert "[doubled] node doubled started" in logs.stdout
    assert "[doubled] node doubled failed" in logs.stdout
    assert "[numbers]" not in logs.stdout

    unknown = etlkit("show", "nosuchrun", cwd=project)
    assert unknown.returncode == 6
    assert "No run 'nosuchrun'" in unknown.stderr


def test_two_runs_of_one_pipeline_at_once_never_touch_each_others_files(project: Path) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "etlkit",
                "run",
                "killable",
                "--progress",
                "none",
                "--param",
                f"out=out{i}",
                "--date",  # one active run per date: two at once need two dates
                f"2025-01-0{i + 1}",
            ],
            cwd=project,
            env=env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err

    staging = Staging(str(project / ".etlkit" / "staging"))
    runs = staging.runs("killable")
    assert len(runs) == 2
    for run_id in runs:
        for node in ("numbers", "doubled", "total"):
            manifest = staging.manifest("killable", run_id, node)
            assert manifest is not None
            assert manifest.run_id == run_id
    for i in range(2):
        assert pl.read_parquet(project / f"out{i}" / "report.parquet").to_dicts() == [
            {"total": 9900, "n": 100}
        ]


def test_gc_keeps_the_newest_runs_and_never_an_active_one(project: Path) -> None:
    for _ in range(3):
        assert etlkit("run", "killable", "--progress", "none", cwd=project).returncode == 0
    staging = Staging(str(project / ".etlkit" / "staging"))
    oldest, middle, newest = staging.runs("killable")
    active = "20000101T000000Z-aaaaaa"  # an old run still running (a scheduler's child, say)
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        store.create_run(
            run_id=active,
            pipeline="killable",
            logical_date=datetime(2000, 1, 1, tzinfo=UTC),
            params={},
            trigger="manual",
            staging_root=staging.root_url,
        )
        store.start_run(active, pid=os.getpid())
    writer = staging.writer("killable", active, "numbers")
    writer.append(pa.record_batch({"x": [1]}))
    writer.commit()

    dry = etlkit("gc", "--keep-last", "1", "--dry-run", cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert f"would delete killable/{middle}" in dry.stdout
    assert active not in dry.stdout
    assert staging.runs("killable") == [active, oldest, middle, newest]

    young = etlkit("gc", "--older-than", "30d", cwd=project)
    assert "0 run(s) deleted" in young.stdout

    gc = etlkit("gc", "killable", "--keep-last", "1", cwd=project)
    assert gc.returncode == 0, gc.stderr
    assert staging.runs("killable") == [active, newest]
    assert staging.manifest("killable", active, "numbers") is not None

    bad = etlkit("gc", "--older-than", "soon", cwd=project)
    assert bad.returncode == 2
    assert "is not an age like 30d" in bad.stderr
