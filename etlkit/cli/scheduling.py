"""Commands of the scheduler: `scheduler` (run it until stopped), `pause`, `unpause`, `status`."""

from __future__ import annotations

import argparse
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from etlkit.cli.project import (
    executor_options,
    load_named_pipeline,
    open_store,
    pipelines_dir,
    project_dir,
    settings_for,
)
from etlkit.cli.tables import print_table, time_text

if TYPE_CHECKING:
    from etlkit.scheduling import Scheduler


def cmd_scheduler(args: argparse.Namespace) -> int:
    """`etlkit scheduler`: run scheduled pipelines until stopped (130 on Ctrl-C)."""
    from etlkit.scheduling import serve

    settings = settings_for(args, None, executor_options(args))
    stopped_by = serve(
        project_dir(args),
        settings=settings,
        config_file=Path(args.config) if args.config else None,
        pipelines_dir=Path(args.pipelines) if args.pipelines else None,
        log_level=args.log_level.upper() if args.log_level != "warning" else "INFO",
        on_start=_scheduler_started,
    )
    print(f"scheduler stopped{' (interrupted)' if stopped_by == signal.SIGINT else ''}", flush=True)
    return 130 if stopped_by == signal.SIGINT else 0


def _scheduler_started(scheduler: Scheduler) -> None:
    where = f"pipelines in {scheduler.catalog.pipelines_dir}, run store {scheduler.store.path}"
    print(
        f"scheduler {scheduler.scheduler_id} started: {where}. Ctrl-C stops it after the "
        "running runs end (a second Ctrl-C terminates them).",
        flush=True,
    )


def cmd_pause(args: argparse.Namespace) -> int:
    """`etlkit pause|unpause`: stop or resume scheduling a pipeline."""
    from etlkit.scheduling import pause, unpause

    cls = load_named_pipeline(args)
    with open_store(settings_for(args)) as store:
        changed = pause(store, cls.name) if args.command == "pause" else unpause(store, cls.name)
    state = "paused" if args.command == "pause" else "unpaused"
    print(f"{cls.name} {state}" + ("" if changed else f" (it was already {state})"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """`etlkit status`: per pipeline, its next due time, running runs and last run."""
    from etlkit.scheduling import status

    settings = settings_for(args)
    with open_store(settings) as store:
        rows = status(store, pipelines_dir(args))
    now = datetime.now(UTC)
    table = []
    for row in rows:
        last = row.last_run
        due = time_text(row.next_due)
        if row.next_due is not None and row.next_due < now:
            due += " (overdue)"  # due before now: no scheduler has started it yet
        table.append(
            (
                row.name,
                row.schedule or "manual",
                "paused" if row.paused else "active",
                due if row.error is None else "ERROR",
                ", ".join(row.running) or "-",
                f"{last.state} {last.local_logical_date:%Y-%m-%d}" if last else "-",
            )
        )
    print_table(("pipeline", "schedule", "state", "next due", "running", "last run"), table)
    for row in rows:
        if row.error:
            print(f"\n{row.name}: {row.error}")
    return 0
