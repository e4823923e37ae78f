"""Workers started warm, forked from the fork server: their own pid, owner, session and logs;
pipelines re-imported when their files change; SIGKILL seen as from a cold worker; fallbacks."""

from __future__ import annotations

import os
import select
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etlkit.scheduling import FakeClock
from etlkit.scheduling.processes import Children, Handle, SubprocessLauncher, sweep_stale
from etlkit.scheduling.warmstart import UNKNOWN_EXIT, WarmHandle, WarmLauncher, launcher_for
from etlkit.settings.config import Settings, load_settings
from etlkit.storage.store import RunStore, pid_alive
from tests.integration.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="warm workers need fork"),
]

COMMON = 'VERSION = "{version}"\n'

STAMPED = """\
import os
import threading
from pathlib import Path

import etlkit as ek
from common import VERSION


class Stamp(ek.Task):
    \"\"\"Writes <out>/<run_id>.txt: its pid and `common`'s version; hangs while <flag> is.\"\"\"

    def run(self, ctx):
        out = Path(ctx.params["out"])
        if Path(ctx.params["flag"]).exists():
            (out / f"{ctx.run_id}.hanging").write_text(str(os.getpid()))
            threading.Event().wait()
        (out / f"{ctx.run_id}.txt").write_text(f"{os.getpid()} {VERSION}")
        print(f"stamped {ctx.run_id}")


class Stamped(ek.Pipeline):
    schedule = "@daily"
    start_date = "2025-03-01"
    params = {"out": "out", "flag": "hang.flag"}
    stamp = Stamp()
"""

CONFIG = '[paths]\nstate_dir = "state"\n\n[scheduler]\nheartbeat_seconds = 0.2\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "pipelines" / "common.py").write_text(COMMON.format(version="one"))
    (tmp_path / "pipelines" / "stamped.py").write_text(STAMPED)
    (tmp_path / "etlkit.toml").write_text(CONFIG)
    return tmp_path


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project, env={})


@pytest.fixture
def store(settings: Settings) -> Iterator[RunStore]:
    with RunStore(settings.paths.store) as opened:
        yield opened


@pytest.fixture
def launcher(project: Path) -> Iterator[WarmLauncher]:
    warm = WarmLauncher(SubprocessLauncher(project, pipelines_dir=project / "pipelines"))
    yield warm
    warm.close()


def claimed(store: RunStore, settings: Settings, day: int) -> str:
    """A claimed run of `stamped` for 2025-03-<day>, in the project of `settings`."""
    project = Path(settings.paths.state_dir).parent
    logical = datetime(2025, 3, day, tzinfo=UTC)
    record = store.create_run(
        run_id=f"202503{day:02d}T000000Z-abcdef",
        pipeline="stamped",
        logical_date=logical,
        params={"out": str(project / "out"), "flag": str(project / "hang.flag")},
        trigger="backfill",
        staging_root=settings.paths.staging_root,
        data_interval_start=logical,
        data_interval_end=logical + timedelta(days=1),
    )
    assert store.claim_run(record.run_id)
    return record.run_id


def ended(handle: Handle, timeout: float = 60.0) -> int:
    """The worker's exit code, waiting on the server's word (no polling loop)."""
    assert isinstance(handle, WarmHandle)
    while (fd := handle.watch()) is not None:
        assert select.select([fd], [], [], timeout)[0], "the worker did not end in time"
        handle.poll()
    code = handle.poll()
    assert code is not None
    return code


def test_a_warm_worker_runs_its_run_in_its_own_process_session_and_logs(
    project: Path,
    settings: Settings,
    store: RunStore,
    launcher: WarmLauncher,
    capfd: pytest.CaptureFixture[str],
) -> None:
    run_id = claimed(store, settings, 1)

    handle = launcher(run_id)

    assert isinstance(handle, WarmHandle)
    assert os.getsid(handle.pid) == handle.pid  # its own session: its group is killable alone
    assert ended(handle) == 0
    record = store.get_run(run_id)
    assert record.state == "success"
    assert record.pid == handle.pid != os.getpid()
    assert record.owner == handle.owner  # the forked child's pid and start time
    assert (project / "out" / f"{run_id}.txt").read_text() == f"{handle.pid} one"
    out, err = capfd.readouterr()
    assert f"stamped {run_id}" in out  # the launcher's stdout and stderr, as a cold worker's
    assert f"worker[{handle.pid}] {run_id}" in err


def test_a_pipeline_file_changed_between_runs_is_imported_again(
    project: Path, settings: Settings, store: RunStore, launcher: WarmLauncher
) -> None:
    first = claimed(store, settings, 1)
    assert ended(launcher(first)) == 0
    common = project / "pipelines" / "common.py"
    common.write_text(COMMON.format(version="three"))
    stat = common.stat()  # a coarse-grained clock may keep the mtime: move it on
    os.utime(common, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = claimed(store, settings, 2)

    assert ended(launcher(second)) == 0

    assert (project / "out" / f"{first}.txt").read_text().endswith(" one")
    assert (project / "out" / f"{second}.txt").read_text().endswith(" three")
    assert launcher.failures == 0


def test_a_warm_worker_killed_by_sigkill_is_reaped_and_detected_as_vanished(
    project: Path, settings: Settings, store: RunStore, launcher: WarmLauncher
) -> None:
    (project / "hang.flag").write_text("")
    clock = FakeClock(datetime.now(UTC))
    children = Children(store, launcher, clock)
    reaped_id, vanished_id = claimed(store, settings, 1), claimed(store, settings, 2)
    assert children.launch(store.get_run(reaped_id))
    vanished = launcher(vanished_id)  # launched by a scheduler that is gone
    for run_id in (reaped_id, vanished_id):
        hanging = project / "out" / f"{run_id}.hanging"
        wait_for(hanging.exists, what=f"run {run_id} to hang", timeout=60)
    [child] = list(children)

    os.killpg(child.handle.pid, signal.SIGKILL)  # its process group: as for a cold worker
    os.killpg(vanished.pid, signal.SIGKILL)

    assert ended(child.handle) == -signal.SIGKILL
    assert ended(vanished) == -signal.SIGKILL
    children.reap()
    reaped = store.get_run(reaped_id)
    assert (reaped.state, reaped.error) == (
        "failed",
        "worker killed by signal SIGKILL (out of memory?)",
    )
    later = datetime.now(UTC) + timedelta(seconds=120)
    [lost] = sweep_stale(store, now=later, stale_after=60, on_stale="fail")
    assert lost.run_id == vanished_id
    record = store.get_run(vanished_id)
    assert record.state == "failed"
    assert (record.error or "").startswith("process vanished"), record.error


def test_a_fork_server_that_died_is_replaced(
    settings: Settings, store: RunStore, launcher: WarmLauncher
) -> None:
    assert ended(launcher(claimed(store, settings, 1))) == 0
    server = launcher._server
    assert server is not None
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(server.pid), what="the server to be gone", timeout=30)

    handle = launcher(claimed(store, settings, 2))

    assert isinstance(handle, WarmHandle)
    assert ended(handle) == 0
    assert launcher.failures == 1


def test_a_worker_whose_server_died_is_watched_until_it_is_gone(
    project: Path, settings: Settings, store: RunStore, launcher: WarmLauncher
) -> None:
    (project / "hang.flag").write_text("")
    run_id = claimed(store, settings, 1)
    handle = launcher(run_id)
    wait_for((project / "out" / f"{run_id}.hanging").exists, what="the run to hang", timeout=60)
    server = launcher._server
    assert server is not None
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(server.pid), what="the server to be gone", timeout=30)

    assert handle.poll() is None  # orphaned, the worker runs on
    assert isinstance(handle, WarmHandle)
    assert handle.watch() is None  # nobody will tell its end: the caller polls
    os.killpg(handle.pid, signal.SIGKILL)
    code = wait_for(handle.poll, what="the worker's end to be noticed", timeout=30)

    assert code == UNKNOWN_EXIT
    assert store.get_run(run_id).state == "running"  # for `Children.reap` to fail it


def test_pipelines_that_start_threads_on_import_get_cold_workers(
    project: Path, settings: Settings, store: RunStore, launcher: WarmLauncher
) -> None:
    (project / "pipelines" / "threaded.py").write_text(
        "import threading\nthreading.Thread(target=threading.Event().wait, daemon=True).start()\n"
    )
    run_id = claimed(store, settings, 1)

    handle = launcher(run_id)

    assert isinstance(handle, subprocess.Popen)  # forking would copy a thread's locks
    assert handle.wait(timeout=60) == 0
    assert store.get_run(run_id).state == "success"
    assert launcher.failures == 0


def test_worker_start_chooses_the_launcher(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipelines = project / "pipelines"
    assert isinstance(launcher_for("cold", project, pipelines_dir=pipelines), SubprocessLauncher)
    assert isinstance(launcher_for("auto", project, pipelines_dir=pipelines), WarmLauncher)
    monkeypatch.setattr("etlkit.scheduling.warmstart.warm_supported", lambda: False)
    for start in ("auto", "warm"):
        cold = launcher_for(start, project, pipelines_dir=pipelines)
        assert isinstance(cold, SubprocessLauncher)
