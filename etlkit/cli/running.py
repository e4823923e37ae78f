"""Commands that start runs: `run`, `retry` (here, waiting for them) and `trigger`, `backfill`
(through the scheduling package).

`run` and `retry` show live progress (`progress`) and raise the run's error for `main` to map
to an exit code.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from etlkit.cli.console import report_errors_once
from etlkit.cli.exit_codes import exit_code
from etlkit.cli.project import (
    executor_options,
    freeze_imports,
    get_run,
    load_named_pipeline,
    notifiers_for,
    open_store,
    parse_params,
    pipelines_dir,
    pools_for,
    project_dir,
    settings_for,
)
from etlkit.errors import NodeError

if TYPE_CHECKING:
    from etlkit.engine.execution import Listener
    from etlkit.model.pipeline import PipelineDefinition


def cmd_run(args: argparse.Namespace) -> int:
    """`etlkit run`: run a pipeline once and wait for it."""
    from etlkit.runs import pipeline as runs

    cls = load_named_pipeline(args)
    cli: dict[str, object] = {}
    if args.chunk_rows is not None:
        cli["run.chunk_rows"] = args.chunk_rows
    if args.no_validate:
        cli["run.validate"] = False
    settings = settings_for(args, cls, cli | executor_options(args))
    listeners = _listeners(args.progress)
    logical, interval = _manual_dates(cls, args.date)
    report_errors_once()
    with open_store(settings) as store:
        freeze_imports(args)
        result = runs.run(
            cls,
            date=logical,
            params=parse_params(args.param),
            settings=settings,
            listeners=listeners,
            store=store,
            notifiers=notifiers_for(args),
            pools=pools_for(args),
            data_interval=interval,
            force=args.force,
        )
    try:
        result.raise_for_error()
    except NodeError as exc:
        node = cls.graph().nodes.get(exc.node)
        if exit_code(exc) == 5 and node is not None and node.kind == "source":
            _hint_demo_data(project_dir(args), exc)
        raise
    return 0


def _manual_dates(
    cls: type[PipelineDefinition], date: str | None
) -> tuple[datetime, tuple[datetime, datetime] | None]:
    """A manual run's logical date in the pipeline's timezone, and for a scheduled pipeline
    the schedule's interval containing it (as `etlkit trigger` and backfills have)."""
    from etlkit.model.pipeline import parse_logical_date

    logical = parse_logical_date(date, cls.timezone)
    if cls.schedule is None:  # a manual pipeline: the scheduler's modules stay unloaded
        return logical, None
    from etlkit.scheduling.control import data_interval

    interval = data_interval(cls, logical)
    if interval is None:
        return logical, None
    zone = logical.tzinfo
    return logical, (interval.start.astimezone(zone), interval.end.astimezone(zone))


def _hint_demo_data(project: Path, exc: NodeError) -> None:
    """On a fresh clone the shipped pipelines' input does not exist yet: say how to make it."""
    if (project / "data" / "generate.py").is_file() and not (project / "data" / "demo").exists():
        exc.add_note(
            "no sample data yet? Generate it with `python -m data.generate --rows 1000000 "
            "--out data/demo` (as scripts/demo does), or point the pipeline's params at your data."
        )


def _listeners(mode: str) -> list[Listener]:
    from etlkit.cli.progress import LiveProgress, PlainProgress

    if mode == "auto":
        mode = "live" if sys.stdout.isatty() else "plain"
    if mode == "live":
        from rich.console import Console

        return [LiveProgress(Console())]
    if mode == "plain":
        return [PlainProgress(sys.stdout)]
    return []


def cmd_retry(args: argparse.Namespace) -> int:
    """`etlkit retry`: rerun what a failed run did not commit, and wait for it."""
    from etlkit.model.discovery import load_pipeline
    from etlkit.runs import pipeline as runs

    settings = settings_for(args)
    with open_store(settings) as store:
        record = get_run(store, args.run_id)
        cls = load_pipeline(record.pipeline, pipelines_dir(args))
        report_errors_once()
        freeze_imports(args)
        result = runs.retry(
            cls,
            record.run_id,
            store=store,
            settings=settings_for(args, cls, executor_options(args)),
            listeners=_listeners(args.progress),
            pools=pools_for(args),
            notifiers=notifiers_for(args),
        )
    result.raise_for_error()
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    """`etlkit trigger`: queue a run for the scheduler to start."""
    from etlkit.scheduling import trigger

    cls = load_named_pipeline(args)
    settings = settings_for(args, cls)
    with open_store(settings) as store:
        record = trigger(
            cls, store=store, settings=settings, date=args.date, params=parse_params(args.param)
        )
    print(
        f"queued run {record.run_id} of {record.pipeline} for"
        f" {record.local_logical_date:%Y-%m-%d}; "
        "the scheduler starts it on its next round (`etlkit scheduler`)"
    )
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """`etlkit backfill`: run every interval of a date range."""
    from etlkit.scheduling import backfill

    cls = load_named_pipeline(args)
    settings = settings_for(args, cls, executor_options(args))
    with open_store(settings) as store:
        summary = backfill(
            cls,
            start=args.start,  # naive dates are read in the pipeline's timezone
            end=args.end,
            store=store,
            settings=settings,
            project_dir=project_dir(args),
            config_file=Path(args.config) if args.config else None,
            pipelines_dir=pipelines_dir(args),
            reprocess=args.reprocess,
            max_active=args.max_active,
            reverse=args.reverse,
            notifiers=notifiers_for(args),
        )
    counts = ", ".join(
        f"{summary.count(state)} {state}"
        for state in ("success", "failed", "skipped", "cancelled", "interrupted")
        if summary.count(state)
    )
    print(
        f"backfill of {summary.pipeline}: {len(summary.logical_dates)} interval(s); "
        f"{counts or 'nothing run'}; {len(summary.kept)} kept, "
        f"{len(summary.elsewhere)} running elsewhere"
    )
    if summary.interrupted:
        print("interrupted: run the same command again to resume")
        return 130
    return 0 if summary.ok else 1
