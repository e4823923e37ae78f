"""Worker processes: launching one per run, noticing how each ended, and finding vanished ones.

Each run executes in `python -m etlkit.runs.worker --project DIR --run-id ID`, so a run that crashes
or eats all memory takes down only its own process. A worker starts in its own session: Ctrl-C in
the scheduler's terminal does not reach it, and it outlives a scheduler that is killed (it records
its own end). A run whose process vanished, with nobody left to record its end, is found by its
stale heartbeat (`sweep_stale`). `SubprocessLauncher` starts a worker cold (a fresh interpreter);
the scheduler and backfill start theirs warm where they can (`etlkit.scheduling.warmstart`).
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal, Protocol

from etlkit.scheduling.clock import Clock
from etlkit.storage.store import RunRecord, RunState, RunStore, owner_gone, pid_alive

logger = logging.getLogger(__name__)

#: Attempts after which `on_stale = "retry"` gives up on a run whose process keeps vanishing.
MAX_STALE_ATTEMPTS: Final = 3
#: Seconds a terminated worker gets to stop before it is killed.
TERMINATE_GRACE: Final = 10.0

OnStale = Literal["fail", "retry"]
_RUNNING: Final[tuple[RunState]] = ("running",)


class Handle(Protocol):
    """A launched worker: `subprocess.Popen` is one; tests pass fakes."""

    @property
    def pid(self) -> int:
        """The process id."""
        ...

    def poll(self) -> int | None:
        """The exit code once the process ended (negative: killed by that signal), else None."""
        ...

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM)."""
        ...

    def kill(self) -> None:
        """Stop the process now (SIGKILL)."""
        ...


#: Starts the worker of a run (already claimed in the store) and returns its handle.
Launcher = Callable[[str], Handle]


class SubprocessLauncher:
    """Launches `python -m etlkit.runs.worker` for a run, in the project directory, in its own
    session.

    The worker inherits this process's stdout and stderr (its log lines name the run).
    """

    def __init__(
        self,
        project_dir: Path,
        *,
        config_file: Path | None = None,
        pipelines_dir: Path | None = None,
        python: str = sys.executable,
        log_level: str = "INFO",
        env: Mapping[str, str] | None = None,
        worker_flags: Sequence[str] = (),
    ) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.worker_flags = list(worker_flags)  # settings flags passed on (`--executor dask`)
        self.config_file = config_file
        self.pipelines_dir = pipelines_dir
        self.python = python
        self.log_level = log_level
        self.env = dict(env) if env is not None else None

    def command(self, run_id: str) -> list[str]:
        """The worker's command line for `run_id`."""
        cmd = [self.python, "-m", "etlkit.runs.worker", "--project", str(self.project_dir)]
        cmd += ["--run-id", run_id, "--log-level", self.log_level]
        if self.config_file is not None:
            cmd += ["--config", str(Path(self.config_file).resolve())]
        if self.pipelines_dir is not None:
            cmd += ["--pipelines", str(Path(self.pipelines_dir).resolve())]
        return cmd + self.worker_flags

    def __call__(self, run_id: str) -> Handle:
        """Start the worker; raises OSError when it cannot be started."""
        return subprocess.Popen(
            self.command(run_id),
            cwd=self.project_dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def exit_error(returncode: int) -> str:
    """Why a worker ended without recording its run's end, from its exit code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"worker killed by signal {name}{hint}"
    return f"worker exited with code {returncode} without recording the run's end"


@dataclass
class Child:
    """A worker this process launched."""

    run_id: str
    pipeline: str
    attempt: int
    handle: Handle
    launched_at: datetime


class Children:
    """The workers this process launched: launching, reaping, terminating.

    `launch` expects a run already claimed (`RunStore.claim_run`). When a worker ends and its
    run is still running in the store, the worker died without a word: the run is failed with
    the reason (`worker killed by signal SIGKILL (out of memory?)`).
    """

    def __init__(self, store: RunStore, launcher: Launcher, clock: Clock) -> None:
        self.store = store
        self.launcher = launcher
        self.clock = clock
        self._children: dict[str, Child] = {}

    def __len__(self) -> int:
        return len(self._children)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._children

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._children.values()))

    def launch(self, record: RunRecord) -> bool:
        """Start the worker of a claimed run; if that fails, the run fails. True if started."""
        try:
            handle = self.launcher(record.run_id)
        except KeyboardInterrupt:  # before the worker started: the run goes back to the queue
            self.store.unclaim_run(record.run_id)
            raise
        except OSError as exc:
            logger.error(
                "run %s of %s: cannot start its worker: %s", record.run_id, record.pipeline, exc
            )
            self.store.finish_active_run(
                record.run_id,
                "failed",
                error=f"cannot start the worker process: {exc}",
                attempt=record.attempt,
                at=self.clock.now(),
            )
            return False
        self._children[record.run_id] = Child(
            record.run_id, record.pipeline, record.attempt, handle, self.clock.now()
        )
        logger.info(
            "run %s of %s launched (pid %d, logical date %s)",
            record.run_id,
            record.pipeline,
            handle.pid,
            record.logical_date.isoformat(),
        )
        return True

    def wait(self, seconds: float) -> None:
        """Sleep `seconds` on the clock, or less when every worker can say it ended: a handle
        with `watch()` (a warm worker's) names a descriptor that turns readable at its end."""
        watched: list[int] = []
        for child in self:
            fd: int | None = getattr(child.handle, "watch", lambda: None)()
            if fd is None:
                self.clock.sleep(seconds)
                return
            watched.append(fd)
        if not watched:
            self.clock.sleep(seconds)
            return
        select.select(watched, [], [], seconds)

    def reap(self) -> list[Child]:
        """Collect the workers that ended; fail the runs they left running. Returns them."""
        ended = []
        for child in list(self._children.values()):
            returncode = child.handle.poll()
            if returncode is None:
                continue
            del self._children[child.run_id]
            ended.append(child)
            self.store.release_run_slots(child.run_id)
            error = exit_error(returncode)
            if self.store.finish_active_run(
                child.run_id, "failed", error=error, attempt=child.attempt, at=self.clock.now()
            ):  # the worker ended without recording the run's end
                logger.error("run %s of %s failed: %s", child.run_id, child.pipeline, error)
            else:
                logger.info(
                    "run %s of %s: worker %d exited with code %d",
                    child.run_id,
                    child.pipeline,
                    child.handle.pid,
                    returncode,
                )
        return ended

    def terminate_all(self, *, reason: str, grace: float = TERMINATE_GRACE) -> list[Child]:
        """Terminate every worker (SIGTERM, then SIGKILL after `grace` s); runs -> interrupted."""
        children = list(self._children.values())
        for child in children:
            logger.warning(
                "run %s of %s: terminating its worker (%s)", child.run_id, child.pipeline, reason
            )
            _quietly(child.handle.terminate)
        waited = 0.0
        while waited < grace and any(c.handle.poll() is None for c in children):
            self.clock.sleep(0.1)
            waited += 0.1
        for child in children:
            if child.handle.poll() is None:
                _quietly(child.handle.kill)
            self.store.finish_active_run(
                child.run_id,
                "interrupted",
                error=f"run terminated: {reason}",
                attempt=child.attempt,
                at=self.clock.now(),
            )
            self.store.release_run_slots(child.run_id)
            self._children.pop(child.run_id, None)
        return children


def _quietly(action: Callable[[], None]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        action()


def sweep_stale(
    store: RunStore,
    *,
    now: datetime,
    stale_after: float,
    on_stale: OnStale,
    own: Collection[str] = (),
    among: Collection[str] | None = None,
) -> list[RunRecord]:
    """Fail (or, with `on_stale="retry"`, requeue) running runs whose process vanished.

    A run is taken for vanished when its last heartbeat is older than `stale_after` seconds and
    its process is not alive on this host (or its pid now names another process, see
    `RunStore.fail_dead_runs`); runs in `own` (workers this process watches) are left
    to `Children.reap`; with `among`, only those runs are looked at. With "retry" a run is
    queued again (resuming what it committed) up to `MAX_STALE_ATTEMPTS` attempts. Returns the
    runs handled.
    """
    handled = []
    for record in store.stale_runs(now - timedelta(seconds=stale_after)):
        # a pid alive again after a kill may be another process's: the owner's start time tells
        alive = pid_alive(record.pid) and owner_gone(record.owner) is None
        if record.run_id in own or alive:
            continue
        if among is not None and record.run_id not in among:
            continue
        last = record.heartbeat_at or record.started_at or record.created_at
        error = (
            f"process vanished: no heartbeat since {last:%Y-%m-%d %H:%M:%S} UTC and its process"
            f" ({record.pid or 'not started'}) is gone (scheduler killed or machine restarted?)"
        )
        retry = on_stale == "retry" and record.attempt < MAX_STALE_ATTEMPTS
        if retry and store.requeue_run(
            record.run_id,
            from_states=_RUNNING,
            reason=error,
            resume=True,
            attempt=record.attempt,
            at=now,
        ):
            logger.warning("run %s of %s: %s; queued again", record.run_id, record.pipeline, error)
            handled.append(record)
            continue
        if on_stale == "retry" and not retry:
            error += f"; gave up after {record.attempt} attempts"
        if store.finish_active_run(
            record.run_id, "failed", error=error, attempt=record.attempt, at=now
        ):
            logger.error("run %s of %s failed: %s", record.run_id, record.pipeline, error)
            store.release_run_slots(record.run_id)
            handled.append(record)
    return handled
