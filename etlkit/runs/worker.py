"""The process that executes one recorded run:
`python -m etlkit.runs.worker --project DIR --run-id ID`.

The scheduler (and a backfill) claims a queued run in the store, then starts this process for it.
The worker loads the settings and the run store, marks the run started with its pid, reports a
heartbeat every `scheduler.heartbeat_seconds` from a thread (so a scheduler can tell a live run
from one whose process vanished), loads the pipeline by name and executes the run through
`etlkit.runs.recording.run_recorded`, resuming what an earlier attempt committed when the run
was queued again to resume. `--executor` and `--scheduler-address` are the flags of the command
that started the scheduler (or backfill), passed on; every other setting the worker reads itself.

SIGTERM stops the run: it is cancelled at the next chunk boundary and recorded as `interrupted`.

Exit codes: 0 the run succeeded or was skipped, 1 it failed (or the pipeline would not load;
recorded in the store), 2 the run could not be started at all (unknown, already finished, or
running in another live process), 143 terminated by SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from etlkit.errors import EtlkitError, StoreError
from etlkit.model.discovery import load_pipeline
from etlkit.runs.executors import executor_flags
from etlkit.runs.notifications import load_notifiers
from etlkit.runs.recording import run_recorded
from etlkit.settings import connections
from etlkit.settings.config import load_settings
from etlkit.settings.pools import load_pools
from etlkit.storage.store import ACTIVE_STATES, RunRecord, RunStore, pid_alive

if TYPE_CHECKING:
    from etlkit.settings.config import Settings

logger = logging.getLogger("etlkit.runs.worker")

EXIT_TERMINATED = 143


class Heartbeat:
    """A daemon thread calling `store.heartbeat(run_id)` every `seconds` until stopped."""

    def __init__(self, store: RunStore, run_id: str, seconds: float) -> None:
        self.store = store
        self.run_id = run_id
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="etlkit-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.seconds + 5)

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.store.heartbeat(self.run_id)
            except StoreError as exc:  # a busy store: the next beat will do
                logger.warning("run %s: heartbeat not recorded: %s", self.run_id, exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Execute the run named on the command line; return the exit code (see module doc)."""
    parser = argparse.ArgumentParser(
        prog="python -m etlkit.runs.worker", description="Execute one recorded run."
    )
    parser.add_argument("--project", required=True, help="project directory")
    parser.add_argument("--run-id", required=True, help="the run to execute")
    parser.add_argument("--config", help="config file (default: <project>/etlkit.toml)")
    parser.add_argument("--pipelines", help="pipelines folder (default: paths.pipelines_dir)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--executor", choices=["local", "dask"], help="setting run.executor")
    parser.add_argument("--scheduler-address", help="setting dask.address")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker[{os.getpid()}] {args.run_id} %(name)s:"
        " %(message)s",
    )
    project = Path(args.project).resolve()
    config = Path(args.config) if args.config else None
    try:
        cli = executor_flags(args.executor, args.scheduler_address)
        settings = load_settings(project, config_file=config, cli=cli)
        loaded = connections.load_connections(project, config_file=config)
        connections.activate(loaded)
        masking = connections.install_log_masking(loaded)
        for handler in logging.getLogger().handlers:
            handler.addFilter(masking)
        extras = {
            "pools": load_pools(project, config),
            "notifiers": load_notifiers(project, config_file=config),
        }
        store = RunStore(settings.paths.store)
    except EtlkitError as exc:
        logger.error("cannot start run %s: %s", args.run_id, exc)
        return 2
    with store:
        try:
            record = _claimable(store, args.run_id)
            store.start_run(record.run_id, pid=os.getpid())
        except StoreError as exc:
            logger.error("%s", exc)
            return 2
        pipelines = Path(args.pipelines or settings.paths.pipelines_dir)
        with Heartbeat(store, record.run_id, settings.scheduler.heartbeat_seconds):
            return _execute(store, record, settings, pipelines, extras)


def _claimable(store: RunStore, run_id: str) -> RunRecord:
    record = store.get_run(run_id)
    if record.state not in ACTIVE_STATES:
        raise StoreError(
            f"Run {record.run_id} of '{record.pipeline}' is already {record.state}; "
            f"use `etlkit retry {record.run_id}` to run it again."
        )
    if record.pid is not None and record.pid != os.getpid() and pid_alive(record.pid):
        raise StoreError(
            f"Run {record.run_id} of '{record.pipeline}' is already running in process"
            f" {record.pid}."
        )
    return record


def _execute(
    store: RunStore,
    record: RunRecord,
    settings: Settings,
    pipelines: Path,
    extras: Mapping[str, Any],
) -> int:
    terminated = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        terminated.set()
        raise KeyboardInterrupt  # the executor cancels the run cleanly

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        pipeline = load_pipeline(record.pipeline, pipelines)
        result = run_recorded(
            pipeline,
            record.run_id,
            settings=pipeline.layered(settings),
            store=store,
            resume=_resume(store, record),
            pools=extras["pools"],
            notifiers=extras["notifiers"],
        )
    except KeyboardInterrupt:
        terminated.set()
        result = None
    except EtlkitError as exc:
        logger.error("run %s of %s failed: %s", record.run_id, record.pipeline, exc)
        store.finish_active_run(
            record.run_id,
            "failed",
            error=connections.mask(str(exc), connections.active_connections()),
            attempt=record.attempt,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated.is_set():
        error = "worker terminated (SIGTERM): the run was stopped"
        current = store.get_run(record.run_id).state
        if current in (*ACTIVE_STATES, "cancelled"):
            store.finish_run(record.run_id, "interrupted", error=error)
        logger.warning("run %s of %s interrupted: %s", record.run_id, record.pipeline, error)
        return EXIT_TERMINATED
    assert result is not None
    return 0 if result.state in ("success", "skipped") else 1


def _resume(store: RunStore, record: RunRecord) -> bool:
    """Whether this attempt resumes the last: a requeued run says so in its `requeued` event."""
    if record.attempt <= 1:
        return False
    for event in reversed(store.events(record.run_id)):
        if event.kind == "requeued":
            return bool(event.payload.get("resume", True))
    return True


if __name__ == "__main__":
    sys.exit(main())
