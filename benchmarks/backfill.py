"""Worker start: a backfill of 30 daily intervals of a one-`Task` pipeline that does nothing,
its workers started cold (a fresh interpreter each) and warm (forked from the fork server).

Run from the repository root: `python -m benchmarks.backfill [--repeat 3] [--json PATH]`.

Two figures, the modes taking turns round after round, medians reported:
- `etlkit backfill noop --start 2025-01-01 --end 2025-01-30` as a subprocess (the command's own
  start, the fork server's start when warm, and 30 runs one after the other), with
  `scheduler.worker_start` set through the environment; each round has a fresh state directory.
- the scheduler's per-run overhead: in this process, a claimed run launched by the launcher
  the scheduler uses, until its worker has recorded the run's end and exited (the warm server
  already started, as in a running scheduler), one run after another.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from benchmarks import environment
from etlkit.scheduling.processes import Handle, SubprocessLauncher
from etlkit.scheduling.warmstart import WarmHandle, WarmLauncher
from etlkit.settings.config import load_settings
from etlkit.storage.store import RunStore, new_run_id

NOOP: Final = '''
"""One `Task` that does nothing, daily."""

import etlkit as ek


class Nothing(ek.Task):
    def run(self, ctx):
        return None


class Noop(ek.Pipeline):
    schedule = "@daily"
    start_date = "2025-01-01"
    nothing = Nothing()
'''
DAYS: Final = 30
MODES: Final = ("cold", "warm")


def make_project(root: Path) -> Path:
    """A project with the `noop` pipeline under `root`."""
    project = root / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "noop.py").write_text(textwrap.dedent(NOOP))
    (project / "etlkit.toml").write_text('[paths]\nstate_dir = "state"\n')
    return project


def time_backfill(project: Path, mode: str) -> float:
    """Wall seconds of `etlkit backfill` over `DAYS` days with workers started `mode`."""
    shutil.rmtree(project / "state", ignore_errors=True)
    env = {**os.environ, "ETLKIT_SCHEDULER__WORKER_START": mode}
    end = f"2025-01-{DAYS:02d}"
    command = [sys.executable, "-m", "etlkit", "--log-level", "warning", "backfill", "noop"]
    command += ["--start", "2025-01-01", "--end", end]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"backfill ({mode}) failed: {done.stderr[-2000:]}")
    with RunStore(load_settings(project, env={}).paths.store) as store:
        states = [r.state for r in store.runs("noop", limit=DAYS * 2)]
    if states.count("success") != DAYS:
        raise RuntimeError(f"backfill ({mode}): {states}")
    return seconds


def time_launches(project: Path, mode: str, runs: int) -> list[float]:
    """Seconds from launching each of `runs` claimed runs to its worker's exit."""
    settings = load_settings(project, env={})
    cold = SubprocessLauncher(project, pipelines_dir=project / "pipelines", log_level="WARNING")
    launcher = WarmLauncher(cold) if mode == "warm" else cold
    seconds = []
    try:
        with RunStore(settings.paths.store) as store:
            if isinstance(launcher, WarmLauncher):
                _ended(launcher(_claimed(store, settings.paths.staging_root, 0)))  # its server
            for day in range(1, runs + 1):
                run_id = _claimed(store, settings.paths.staging_root, day)
                started = time.perf_counter()
                code = _ended(launcher(run_id))
                seconds.append(time.perf_counter() - started)
                if code != 0 or store.get_run(run_id).state != "success":
                    raise RuntimeError(f"run {run_id} ({mode}) ended with {code}")
    finally:
        if isinstance(launcher, WarmLauncher):
            launcher.close()
    return seconds


def _claimed(store: RunStore, staging_root: str, day: int) -> str:
    logical = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day)
    record = store.create_run(
        run_id=new_run_id(),
        pipeline="noop",
        logical_date=logical,
        params={},
        trigger="backfill",
        staging_root=staging_root,
        data_interval_start=logical,
        data_interval_end=logical + timedelta(days=1),
    )
    store.claim_run(record.run_id)
    return record.run_id


def _ended(handle: Handle) -> int:
    """The worker's exit code, waiting on its end without polling."""
    if isinstance(handle, WarmHandle):
        while (fd := handle.watch()) is not None:
            select.select([fd], [], [])
            handle.poll()
        code = handle.poll()
        assert code is not None
        return code
    assert isinstance(handle, subprocess.Popen)
    return handle.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both modes, print the tables, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds per figure (default: 3)")
    parser.add_argument("--runs", type=int, default=10, help="runs per launch figure")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="etlkit-bench-backfill-"))
    backfills: dict[str, list[float]] = {mode: [] for mode in MODES}
    launches: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        project = make_project(root)
        for _ in range(args.repeat):
            for mode in MODES:
                backfills[mode].append(time_backfill(project, mode))
                shutil.rmtree(project / "state", ignore_errors=True)
                launches[mode] += time_launches(project, mode, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{environment.describe()}\n")
    print(f"| workers | backfill of {DAYS} days, s (median of {args.repeat}) | per run, ms |")
    print("|---|--:|--:|")
    for mode in MODES:
        median = statistics.median(backfills[mode])
        print(f"| {mode} | {median:.2f} | {median / DAYS * 1e3:.0f} |")
    print(f"\n| workers | launch to exit of a no-op run, ms (median of {len(launches['warm'])}) |")
    print("|---|--:|")
    for mode in MODES:
        print(f"| {mode} | {statistics.median(launches[mode]) * 1e3:.0f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": environment.machine(),
                    "versions": environment.versions(),
                    "backfill_seconds": backfills,
                    "launch_to_exit_seconds": launches,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
