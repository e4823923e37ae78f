"""The `etlkit` command: parse arguments, resolve settings, call the API, map errors to exit codes.

Heavy libraries (polars, pyarrow, duckdb, pandera) are imported only by the commands that need
them, so `etlkit --help` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from etlkit.errors import (
    AirflowImportError,
    ConfigError,
    ConnectorError,
    DataValidationError,
    EtlkitError,
    NodeError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    QueryError,
    RunCancelledError,
    StagingError,
    StoreError,
    quoted,
)

if TYPE_CHECKING:
    from etlkit.engine.execution import Listener
    from etlkit.model.pipeline import PipelineDefinition
    from etlkit.scheduling import Scheduler
    from etlkit.settings.config import Settings
    from etlkit.storage.store import EventRecord, NodeRunRecord, RunRecord, RunStore

#: Exit codes by error class (the first matching class in this order wins).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, 2),
    (PipelineNotFoundError, 3),
    (PipelineDefinitionError, 3),
    (AirflowImportError, 3),
    (DataValidationError, 4),
    (ConnectorError, 5),
    (NodeError, 1),
    (RunCancelledError, 130),
    (StoreError, 6),
    (QueryError, 7),
    (EtlkitError, 1),
)


def exit_code(exc: BaseException) -> int:
    """The exit code for an error (1 for anything unexpected).

    A `NodeError` wrapping an etlkit error (a connector's, say) exits with the wrapped one's code.
    """
    if isinstance(exc, NodeError) and isinstance(exc.__cause__, EtlkitError):
        exc = exc.__cause__
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run_id", "node", "pipeline"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        return json.dumps(data)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is logged, not when it was created:
    a stream swapped since (a test's captured output, say) may be closed by then."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr


class _ReportedOnce(logging.Filter):
    """Keeps etlkit's ERROR records about a run off the console while `run` or `retry` waits
    for it: the command prints the run's error itself, and the run's log keeps the records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno >= logging.ERROR
            and record.name.startswith("etlkit.")
            and hasattr(record, "run_id")
        )


def _report_errors_once() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Stderr):
            handler.addFilter(_ReportedOnce())


def _configure_logging(level: str, fmt: str) -> None:
    handler = _Stderr()
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level.upper())  # per-run log files take INFO whatever the console shows
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {pair!r} is not key=value")
        params[key.strip()] = value
    return params


def _project(args: argparse.Namespace) -> Path:
    return Path(args.project).resolve()


def _settings(
    args: argparse.Namespace,
    pipeline: type[PipelineDefinition] | None = None,
    cli: dict[str, object] | None = None,
) -> Settings:
    from etlkit.settings.config import load_settings

    return load_settings(
        _project(args),
        config_file=Path(args.config) if args.config else None,
        pipeline=pipeline.settings_overrides() if pipeline else None,
        pipeline_name=pipeline.__name__ if pipeline else "",
        cli=cli,
    )


def _pipelines_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "pipelines", None):
        return Path(args.pipelines)
    return Path(_settings(args).paths.pipelines_dir)


def _load(args: argparse.Namespace) -> type[PipelineDefinition]:
    from etlkit.model.discovery import load_pipeline

    return load_pipeline(args.pipeline, _pipelines_dir(args))


# -- commands ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from etlkit.runs import pipeline as runs

    cls = _load(args)
    cli: dict[str, object] = {}
    if args.chunk_rows is not None:
        cli["run.chunk_rows"] = args.chunk_rows
    if args.no_validate:
        cli["run.validate"] = False
    settings = _settings(args, cls, cli)
    listeners = _listeners(args.progress)
    logical, interval = _manual_dates(cls, args.date)
    _report_errors_once()
    with _store(settings) as store:
        result = runs.run(
            cls,
            date=logical,
            params=_parse_params(args.param),
            settings=settings,
            listeners=listeners,
            store=store,
            notifiers=_notifiers(args),
            pools=_pools(args),
            data_interval=interval,
            force=args.force,
        )
    try:
        result.raise_for_error()
    except NodeError as exc:
        node = cls.graph().nodes.get(exc.node)
        if exit_code(exc) == 5 and node is not None and node.kind == "source":
            _hint_demo_data(_project(args), exc)
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


def _notifiers(args: argparse.Namespace) -> dict[str, Any]:
    from etlkit.runs.notifications import load_notifiers

    config = Path(args.config) if args.config else None
    return dict(load_notifiers(_project(args), config_file=config))


def _pools(args: argparse.Namespace) -> dict[str, int]:
    from etlkit.settings.pools import load_pools

    return load_pools(_project(args), Path(args.config) if args.config else None)


def _store(settings: Settings) -> RunStore:
    from etlkit.storage.store import RunStore

    return RunStore(settings.paths.store)


#: Commands that read the run store: each first fails the runs whose process was killed.
_STORE_COMMANDS = frozenset(
    {"run", "retry", "runs", "show", "logs", "gc", "status", "trigger", "backfill"}
)


def _fail_dead_runs(args: argparse.Namespace) -> None:
    """Fail the runs whose process is gone (`RunStore.fail_dead_runs`), so that the command
    shows, counts and collects them as failed, and tell their pipelines' `on_failure`."""
    settings = _settings(args)
    with _store(settings) as store:
        failed = store.fail_dead_runs()
        if not failed:
            return
        from etlkit.model.discovery import load_pipeline  # only now: they load polars and pyarrow
        from etlkit.runs.recording import notify_failure

        for record in failed:
            try:
                cls = load_pipeline(record.pipeline, _pipelines_dir(args))
                notify_failure(
                    cls,
                    record.run_id,
                    store=store,
                    settings=cls.layered(settings),
                    notifiers=_notifiers(args),
                )
            except EtlkitError as exc:  # the run is failed; only its notification is lost
                logging.getLogger(__name__).warning(
                    "run %s failed (its process is gone), but its on_failure could not be"
                    " called: %s",
                    record.run_id,
                    exc,
                )


def _get_run(store: RunStore, run_id: str) -> RunRecord:
    """The run named on the command line: an id, a unique prefix, or `latest` (the newest)."""
    if run_id == "latest":
        newest = store.runs(limit=1)
        if not newest:
            raise StoreError(f"No runs yet in the run store at {store.path}: nothing is 'latest'.")
        return newest[0]
    return store.get_run(run_id)


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else "-"


def cmd_retry(args: argparse.Namespace) -> int:
    from etlkit.model.discovery import load_pipeline
    from etlkit.runs import pipeline as runs

    settings = _settings(args)
    with _store(settings) as store:
        record = _get_run(store, args.run_id)
        cls = load_pipeline(record.pipeline, _pipelines_dir(args))
        _report_errors_once()
        result = runs.retry(
            cls,
            record.run_id,
            store=store,
            settings=_settings(args, cls),
            listeners=_listeners(args.progress),
            pools=_pools(args),
            notifiers=_notifiers(args),
        )
    result.raise_for_error()
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    with _store(_settings(args)) as store:
        records = store.runs(args.pipeline, limit=args.limit)
    rows = [
        (
            r.run_id,
            r.pipeline,
            f"{r.local_logical_date:%Y-%m-%d}",
            r.trigger,
            r.state,
            _when(r.started_at),
            _seconds(r.duration),
            str(r.attempt),
        )
        for r in records
    ]
    if not rows:
        print("no runs yet")
        return 0
    _print_table(
        ("run id", "pipeline", "date", "trigger", "state", "started", "duration", "attempt"), rows
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _store(_settings(args)) as store:
        record = _get_run(store, args.run_id)
        nodes = store.node_runs(record.run_id)
        events = store.events(record.run_id)
    params = ", ".join(f"{k}={v}" for k, v in sorted(record.params.items())) or "-"
    print(f"run        {record.run_id}")
    print(f"pipeline   {record.pipeline}")
    date = f"{record.local_logical_date:%Y-%m-%d}"
    print(f"date       {date}   params {params}   trigger {record.trigger}")
    print(f"state      {record.state} (attempt {record.attempt})")
    print(f"started    {_when(record.started_at)}   duration {_seconds(record.duration)}")
    print(f"staging    {record.staging_root}")
    if record.error:
        print(f"error      {record.error}")
    print()
    rows = []
    for n in nodes:
        seconds = (
            (n.finished_at - n.started_at).total_seconds()
            if n.started_at and n.finished_at
            else None
        )
        rows.append(
            (
                n.node,
                n.kind,
                n.state,
                f"{n.rows_in:,}",
                f"{n.rows_out:,}",
                f"{n.invalid_rows:,}",
                f"{n.bytes_staged:,}",
                _seconds(seconds),
            )
        )
    _print_table(
        ("node", "kind", "state", "rows in", "rows out", "invalid", "bytes staged", "time"), rows
    )
    outputs = _show_outputs(record, nodes, events)
    if outputs:
        print()
        for line in outputs:
            print(line)
    for n in nodes:
        if n.error:
            print(f"\n{n.node}: {n.error}")
    if args.gantt:
        _print_gantt(nodes, args.width)
    return 0


def _show_outputs(
    record: RunRecord, nodes: Sequence[NodeRunRecord], events: Sequence[EventRecord]
) -> list[str]:
    """Where a run's sinks wrote, and what validation did with the invalid rows it found."""
    from etlkit.runs.recording import SINK_WROTE
    from etlkit.storage.staging import Staging

    lines = [
        f"{e.node} wrote {e.payload['rows']:,} rows to {e.payload['uri']}"
        for e in events
        if e.kind == SINK_WROTE
    ]
    staging = Staging(record.staging_root)
    for n in nodes:
        if not n.invalid_rows or n.state not in ("done", "reused"):
            continue
        manifest = staging.manifest(record.pipeline, record.run_id, n.node)
        policy = manifest.extra.get("policy") if manifest is not None else None
        if policy == "quarantine":
            what = (
                f'quarantined (etlkit query "select * from {n.node}_rejects" --run {record.run_id})'
            )
        else:
            what = "dropped" if policy == "drop" else "left out"
        lines.append(f"{n.node}: {n.invalid_rows:,} invalid rows {what}")
    return lines


def _print_gantt(nodes: Sequence[NodeRunRecord], width: int | None) -> None:
    import shutil

    from etlkit.cli.pictures import render_gantt

    columns = width or shutil.get_terminal_size().columns  # COLUMNS, else the terminal's
    print()
    print(render_gantt(nodes, now=datetime.now(UTC), width=columns, colour=sys.stdout.isatty()))


def cmd_logs(args: argparse.Namespace) -> int:
    from etlkit.engine.runlog import read_log

    settings = _settings(args)
    with _store(settings) as store:
        record = _get_run(store, args.run_id)
    lines = read_log(settings.paths.logs_dir, record.pipeline, record.run_id, args.node)
    for line in lines:
        print(line.format())
    if not lines:
        print(
            f"no log lines for run {record.run_id}" + (f", node {args.node}" if args.node else "")
        )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from etlkit.storage import querying
    from etlkit.storage.staging import Staging, check_path_part

    settings = _settings(args)
    pipeline, run = args.pipeline, args.run
    root = settings.paths.staging_root
    if run != "latest" and pipeline is None:
        with _store(settings) as store:
            record = store.get_run(run)
        pipeline, run, root = record.pipeline, record.run_id, record.staging_root
    staging = Staging(root)
    if pipeline is None:
        found = staging.pipelines()
        if len(found) != 1:
            raise ConfigError(
                f"Name the pipeline with --pipeline; staged pipelines: {quoted(found)}"
            )
        pipeline = found[0]
    try:
        check_path_part("--pipeline", pipeline)
    except StagingError as exc:  # a bad argument, not a staging failure
        raise ConfigError(str(exc)) from exc
    interactive = args.shell or args.sql is None
    if interactive:
        run = querying.resolve_run(staging, pipeline, run)
    con = querying.connect(
        staging,
        pipeline,
        run,
        threads=settings.duckdb.threads or None,
        memory_limit=settings.duckdb.memory_limit,
        temp_directory=settings.duckdb.temp_directory,
    )
    try:
        if interactive:
            print(f"Views over run {run} of pipeline '{pipeline}' ({staging.root_url}).")
            querying.shell(con)
            return 0
        table = querying.query_connection(con, args.sql)
    finally:
        con.close()
    if args.format == "table" and args.limit and table.num_rows > args.limit:
        print(f"(first {args.limit} of {table.num_rows} rows; use --limit 0 for all)")
        table = table.slice(0, args.limit)
    text = querying.write_result(table, args.format, args.output)
    if text is not None:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_connections(args: argparse.Namespace) -> int:
    from etlkit.settings import connections

    known = connections.active_connections()
    if args.action == "list":
        rows = connections.list_rows(known)
        if not rows:
            print("no connections defined (ETLKIT_CONN_<NAME>=uri or [connections] in etlkit.toml)")
            return 0
        _print_table(("name", "kind", "uri", "source"), rows)
        return 0
    if not args.name:
        raise ConfigError("etlkit connections test needs a connection NAME")
    conn = connections.resolve(args.name, connections=known)
    ok, message = connections.test_connection(conn, timeout=args.timeout)
    print(f"{conn.name}: {'ok' if ok else 'FAILED'}: {message}")
    return 0 if ok else 5


def cmd_state(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        if args.action == "show":
            states = store.states(args.pipeline)
            if not states:
                print(f"no state stored for pipeline '{args.pipeline}'")
            for name, value in sorted(states.items()):
                print(f"{name} = {value}")
            return 0
        removed = store.delete_state(args.pipeline, f"cursor.{args.node}" if args.node else None)
        what = f"node '{args.node}'" if args.node else "every node"
        print(f"reset {removed} value(s) of pipeline '{args.pipeline}' ({what})")
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from etlkit.scheduling import serve

    settings = _settings(args)
    stopped_by = serve(
        _project(args),
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


def cmd_trigger(args: argparse.Namespace) -> int:
    from etlkit.scheduling import trigger

    cls = _load(args)
    settings = _settings(args, cls)
    with _store(settings) as store:
        record = trigger(
            cls, store=store, settings=settings, date=args.date, params=_parse_params(args.param)
        )
    print(
        f"queued run {record.run_id} of {record.pipeline} for"
        f" {record.local_logical_date:%Y-%m-%d}; "
        "the scheduler starts it on its next round (`etlkit scheduler`)"
    )
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from etlkit.scheduling import pause, unpause

    cls = _load(args)
    with _store(_settings(args)) as store:
        changed = pause(store, cls.name) if args.command == "pause" else unpause(store, cls.name)
    state = "paused" if args.command == "pause" else "unpaused"
    print(f"{cls.name} {state}" + ("" if changed else f" (it was already {state})"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from etlkit.scheduling import status

    settings = _settings(args)
    with _store(settings) as store:
        rows = status(store, _pipelines_dir(args))
    now = datetime.now(UTC)
    table = []
    for row in rows:
        last = row.last_run
        due = _when(row.next_due)
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
    _print_table(("pipeline", "schedule", "state", "next due", "running", "last run"), table)
    for row in rows:
        if row.error:
            print(f"\n{row.name}: {row.error}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from etlkit.scheduling import backfill

    cls = _load(args)
    settings = _settings(args, cls)
    with _store(settings) as store:
        summary = backfill(
            cls,
            start=args.start,  # naive dates are read in the pipeline's timezone
            end=args.end,
            store=store,
            settings=settings,
            project_dir=_project(args),
            config_file=Path(args.config) if args.config else None,
            pipelines_dir=_pipelines_dir(args),
            reprocess=args.reprocess,
            max_active=args.max_active,
            reverse=args.reverse,
            notifiers=_notifiers(args),
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


def _age(text: str) -> timedelta:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ConfigError(f"--older-than {text!r} is not an age like 30d, 12h or 90m")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


def cmd_gc(args: argparse.Namespace) -> int:
    from etlkit.storage.staging import Staging

    if args.keep_last is None and args.older_than is None:
        raise ConfigError("etlkit gc needs --keep-last N and/or --older-than AGE")
    settings = _settings(args)
    staging = Staging(settings.paths.staging_root)
    cutoff = datetime.now(UTC) - _age(args.older_than) if args.older_than else None
    deleted = 0
    with _store(settings) as store:
        active = {r.run_id for r in store.active_runs()}
        if not args.dry_run:
            _gc_sink_leftovers(args, store)
        for pipeline in [args.pipeline] if args.pipeline else staging.pipelines():
            runs = staging.runs(pipeline)
            keep = set(runs[-args.keep_last :]) if args.keep_last else set()
            for run_id in runs:
                if run_id in keep or run_id in active:
                    continue
                if cutoff is not None and _run_time(run_id) > cutoff:
                    continue
                if args.dry_run:
                    print(f"would delete {pipeline}/{run_id}")
                else:
                    staging.delete_run(pipeline, run_id)
                    print(f"deleted {pipeline}/{run_id}")
                deleted += 1
    print(f"{deleted} run(s) {'to delete' if args.dry_run else 'deleted'}")
    return 0


#: How many failed, cancelled or interrupted runs `gc` looks at for sink leftovers, newest first.
_GC_SCAN: Final = 100_000


def _gc_sink_leftovers(args: argparse.Namespace, store: RunStore) -> None:
    """Remove the temporary files the sinks of failed, cancelled or interrupted runs left."""
    from etlkit.model.discovery import load_pipeline
    from etlkit.runs.recording import discard_sink_leftovers

    dead = store.runs(args.pipeline, limit=_GC_SCAN, states=("failed", "cancelled", "interrupted"))
    pipelines: dict[str, type[PipelineDefinition] | None] = {}
    for record in dead:
        if record.pipeline not in pipelines:
            try:
                pipelines[record.pipeline] = load_pipeline(record.pipeline, _pipelines_dir(args))
            except EtlkitError as exc:
                pipelines[record.pipeline] = None
                print(f"skipped the sinks of pipeline {record.pipeline!r}: {exc}")
        cls = pipelines[record.pipeline]
        if cls is None:
            continue
        try:
            removed = discard_sink_leftovers(cls, record)
        except EtlkitError as exc:  # one run's sinks (a changed template, say) stop no other
            print(f"skipped the sinks of run {record.run_id}: {exc}")
            continue
        for leftover in removed:
            print(f"removed {leftover} (left by run {record.run_id})")


def _run_time(run_id: str) -> datetime:
    try:
        return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # not an etlkit run id: never old enough


def cmd_list(args: argparse.Namespace) -> int:
    from etlkit.model.discovery import discover

    directory = _pipelines_dir(args)
    if not directory.is_dir():
        raise ConfigError(f"Pipelines folder {directory} does not exist")
    rows: list[tuple[str, ...]] = []
    errors: list[str] = []
    for found in discover(directory):
        if found.error is not None:
            errors.append(f"{found.path}: ERROR {found.error}")
            continue
        for cls in found.pipelines:
            doc = (cls.__doc__ or "").strip().splitlines()
            rows.append(
                (cls.name, _schedule_text(cls.schedule), str(found.path), doc[0] if doc else "")
            )
    if rows:
        _print_table(("pipeline", "schedule", "file", "description"), rows)
    elif not errors:
        print(f"no pipelines in {directory}")
    for error in errors:
        print(error)
    return 1 if errors else 0


def _schedule_text(schedule: str | timedelta | None) -> str:
    if isinstance(schedule, timedelta):
        from etlkit.scheduling.schedules import interval_text

        return interval_text(schedule)
    return schedule or "manual"


def cmd_graph(args: argparse.Namespace) -> int:
    from etlkit.cli import pictures

    graph = _load(args).graph()
    if args.format in ("svg", "png"):
        output = Path(args.output or f"{graph.pipeline}.{args.format}")
        pictures.render_image(pictures.render_dot(graph), args.format, output)
        print(f"wrote {output}")
        return 0
    render = {
        "text": pictures.render_graph_text,
        "mermaid": pictures.render_mermaid,
        "dot": pictures.render_dot,
    }[args.format]
    text = render(graph) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from etlkit.ui.server import require

    require()  # before anything else: without the `ui` extra, say what to install
    from etlkit.ui.app import UiConfig
    from etlkit.ui.server import serve

    settings = _settings(args)
    token = args.token or os.environ.get("ETLKIT_UI_TOKEN") or None
    config = UiConfig(
        project_dir=_project(args),
        settings=settings,
        pipelines_dir=_pipelines_dir(args).resolve(),
        config_file=Path(args.config).resolve() if args.config else None,
        token=token,
        loopback=_loopback(args.host),
    )

    def announce(url: str) -> None:
        print(f"etlkit ui: open {url}  (Ctrl-C stops it)", flush=True)

    serve(config, args.host, args.port, announce=announce)
    return 0


def _loopback(host: str) -> bool:
    from etlkit.ui.server import is_loopback

    return is_loopback(host)


def cmd_validate(args: argparse.Namespace) -> int:
    from etlkit.model.discovery import discover

    directory = _pipelines_dir(args)
    if not directory.is_dir():
        raise ConfigError(f"Pipelines folder {directory} does not exist")
    pools = _pools(args)
    problems = 0
    checked = 0
    for found in discover(directory):
        if found.error is not None:
            problems += 1
            print(f"FAIL {found.path}: {found.error}")
            continue
        for cls in found.pipelines:
            checked += 1
            try:
                graph = cls.graph()
            except PipelineDefinitionError as exc:
                problems += 1
                print(f"FAIL {found.path}: {exc}")
                continue
            unknown = graph.pool_problems(pools)
            if unknown:
                problems += 1
                print(f"FAIL {found.path}: pipeline '{cls.name}': {' '.join(unknown)}")
            else:
                print(f"ok   {cls.name} ({len(graph.order)} nodes)")
    print(f"{checked} pipeline(s) checked, {problems} problem(s)")
    return 3 if problems else 0


#: `import-airflow` mapped the DAG, with items to review (listed in its report).
EXIT_REVIEW = 8


def cmd_import_airflow(args: argparse.Namespace) -> int:
    from etlkit.airflow_import import import_dag

    project = _project(args)
    result = import_dag(
        Path(args.dag_file),
        out_dir=Path(args.out) if args.out else project / "pipelines",
        project_dir=project,
        name=args.name,
        check=args.check,
        force=args.force,
    )
    print(result.report)
    if not args.check:
        print(f"wrote {result.pipeline_path} and {result.report_path}")
    for name in result.notifiers:
        verb = "would add" if args.check else "added"
        print(f"{verb} the stub [notifiers.{name}] to {project / 'etlkit.toml'}: complete it")
    return EXIT_REVIEW if result.findings else 0


# -- parser --------------------------------------------------------------------------------------


#: The distribution that installs the `etlkit` package (`etlkit` on PyPI is another project).
DISTRIBUTION = "etlkit-framework"

_EXAMPLES = """examples:
  python -m data.generate --rows 100000 --out data/demo
                                                   generate the demo's sample data
  etlkit run monthly_report --date 2025-03-01      run a pipeline for a logical date
  etlkit run monthly_report --param data_dir=/mnt/exports
  etlkit runs                                      recent runs and their states
  etlkit show latest                               the newest run's nodes, rows and outputs
  etlkit query "select * from report limit 5"      SQL over the latest run's staged outputs
  etlkit scheduler                                 run scheduled pipelines until Ctrl-C

`etlkit COMMAND --help` describes a command. Exit codes: 0 ok, 1 a node failed, 2 bad
configuration or arguments, 3 pipeline not found or invalid, 4 validation failed, 5 a connector
could not read or write, 6 unknown run, 7 query failed, 130 interrupted.
"""


class _Version(argparse.Action):
    """`--version`: reads the installed distribution's version only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version(DISTRIBUTION)
        except PackageNotFoundError:
            text = f"unknown ({DISTRIBUTION} is not installed; running from a source tree)"
        print(f"etlkit {text}")
        parser.exit()


_PARAM_HELP = "set a param the pipeline declares in `params` (repeatable: --param a=1 --param b=2)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `etlkit` command."""
    parser = argparse.ArgumentParser(
        prog="etlkit",
        description="Run, inspect and check etlkit pipelines.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print etlkit's version and exit")
    parser.add_argument("--project", default=os.curdir, help="project directory (default: .)")
    parser.add_argument("--config", help="settings file (default: <project>/etlkit.toml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning, error")
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline once")
    run.add_argument("pipeline", help="a file (pipelines/x.py), module path or pipeline name")
    run.add_argument(
        "--date", help="logical date YYYY-MM-DD (default: today, in the pipeline's timezone)"
    )
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help=_PARAM_HELP)
    run.add_argument("--chunk-rows", type=int, help="rows per chunk")
    run.add_argument("--no-validate", action="store_true", help="skip schema validation")
    run.add_argument(
        "--force",
        action="store_true",
        help="run even while another run of the pipeline for this date is active",
    )
    run.add_argument(
        "--progress",
        choices=["auto", "live", "plain", "none"],
        default="auto",
        help="live table in a terminal, plain lines otherwise (default: auto)",
    )
    run.add_argument("--pipelines", help="pipelines folder (default: setting paths.pipelines_dir)")
    run.set_defaults(func=cmd_run)

    listing = sub.add_parser("list", help="list the pipelines found in the pipelines folder")
    listing.add_argument("--pipelines", help="pipelines folder")
    listing.set_defaults(func=cmd_list)

    graph = sub.add_parser("graph", help="show a pipeline's graph")
    graph.add_argument("pipeline")
    graph.add_argument(
        "--format",
        choices=["text", "mermaid", "dot", "svg", "png"],
        default="text",
        help="text (default), mermaid, dot; svg and png need Graphviz",
    )
    graph.add_argument("--output", help="write to this file (svg/png default: <pipeline>.<fmt>)")
    graph.add_argument("--pipelines", help="pipelines folder")
    graph.set_defaults(func=cmd_graph)

    retry = sub.add_parser("retry", help="resume a failed run: rerun only what did not commit")
    retry.add_argument("run_id", help="run id, a unique prefix, or 'latest'")
    retry.add_argument("--pipelines", help="pipelines folder")
    retry.add_argument("--progress", choices=["auto", "live", "plain", "none"], default="auto")
    retry.set_defaults(func=cmd_retry)

    runs = sub.add_parser("runs", help="recent runs, their states and durations")
    runs.add_argument("pipeline", nargs="?", help="only this pipeline's runs")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="a run's nodes: rows, timings, validation counts, errors")
    show.add_argument("run_id", help="run id, a unique prefix, or 'latest'")
    show.add_argument("--gantt", action="store_true", help="also draw the node timeline")
    show.add_argument("--width", type=int, help="timeline width (default: the terminal's)")
    show.set_defaults(func=cmd_show)

    logs = sub.add_parser("logs", help="a run's log (JSON lines kept per run)")
    logs.add_argument("run_id", help="run id, a unique prefix, or 'latest'")
    logs.add_argument("node", nargs="?", help="only this node's lines")
    logs.set_defaults(func=cmd_logs)

    gc = sub.add_parser("gc", help="delete old runs' staged data (never a running run's)")
    gc.add_argument("pipeline", nargs="?", help="only this pipeline (default: all)")
    gc.add_argument("--keep-last", type=int, metavar="N", help="keep the newest N runs")
    gc.add_argument("--older-than", metavar="AGE", help="delete runs older than AGE (30d, 12h)")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    gc.set_defaults(func=cmd_gc)

    query = sub.add_parser("query", help="SQL over staged outputs in DuckDB (views per node)")
    query.add_argument("sql", nargs="?", help="SQL; omit (or --shell) for an interactive prompt")
    query.add_argument("--pipeline", help="pipeline (default: the only one staged)")
    query.add_argument("--run", default="latest", help="run id, unique prefix or 'latest'")
    query.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    query.add_argument("--output", help="write the result to this file")
    query.add_argument("--limit", type=int, default=100, help="rows shown as a table (0: all)")
    query.add_argument("--shell", action="store_true", help="interactive prompt over the views")
    query.set_defaults(func=cmd_query)

    scheduler = sub.add_parser("scheduler", help="run pipelines on their schedules until stopped")
    scheduler.add_argument("--pipelines", help="pipelines folder")
    scheduler.set_defaults(func=cmd_scheduler)

    trigger = sub.add_parser("trigger", help="queue a run for the scheduler to start")
    trigger.add_argument("pipeline")
    trigger.add_argument("--date", help="logical date (default: today)")
    trigger.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help=_PARAM_HELP
    )
    trigger.add_argument("--pipelines", help="pipelines folder")
    trigger.set_defaults(func=cmd_trigger)

    for name, text in (("pause", "stop scheduling a pipeline"), ("unpause", "schedule it again")):
        toggle = sub.add_parser(name, help=text)
        toggle.add_argument("pipeline")
        toggle.add_argument("--pipelines", help="pipelines folder")
        toggle.set_defaults(func=cmd_pause)

    status = sub.add_parser("status", help="per pipeline: next due time, running runs, last run")
    status.add_argument("--pipelines", help="pipelines folder")
    status.set_defaults(func=cmd_status)

    backfill = sub.add_parser("backfill", help="run every interval of a date range")
    backfill.add_argument("pipeline")
    backfill.add_argument("--start", required=True, help="first logical date (YYYY-MM-DD)")
    backfill.add_argument("--end", required=True, help="last logical date (YYYY-MM-DD)")
    backfill.add_argument(
        "--reprocess",
        choices=["missing", "failed", "all"],
        default="missing",
        help="missing: only dates without a finished run (default; failed runs stay failed); "
        "failed: also rerun failed and cancelled ones; all: rerun everything",
    )
    backfill.add_argument("--max-active", type=int, default=1, help="runs at once")
    backfill.add_argument("--reverse", action="store_true", help="newest dates first")
    backfill.add_argument("--pipelines", help="pipelines folder")
    backfill.set_defaults(func=cmd_backfill)

    conns = sub.add_parser("connections", help="named connections: list them, test one")
    conns.add_argument("action", choices=["list", "test"])
    conns.add_argument("name", nargs="?", help="the connection to test")
    conns.add_argument("--timeout", type=float, default=5.0)
    conns.set_defaults(func=cmd_connections)

    state = sub.add_parser("state", help="incremental cursors of a pipeline: show or reset")
    state.add_argument("action", choices=["show", "reset"])
    state.add_argument("pipeline")
    state.add_argument("node", nargs="?", help="reset only this node's cursor")
    state.set_defaults(func=cmd_state)

    ui = sub.add_parser("ui", help="the web UI: pipelines, runs, staged data, live progress")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    ui.add_argument("--port", type=int, default=8765, help="port (0: a free one; default 8765)")
    ui.add_argument(
        "--token",
        help="required from every request (default: $ETLKIT_UI_TOKEN); needed off loopback",
    )
    ui.add_argument("--pipelines", help="pipelines folder")
    ui.set_defaults(func=cmd_ui)

    validate = sub.add_parser("validate", help="load every pipeline and report every problem")
    validate.add_argument("--pipelines", help="pipelines folder")
    validate.set_defaults(func=cmd_validate)

    airflow = sub.add_parser("import-airflow", help="turn an Airflow DAG file into a pipeline")
    airflow.add_argument("dag_file", help="the DAG file (parsed, never run)")
    airflow.add_argument("--out", help="folder of the pipeline file (default: <project>/pipelines)")
    airflow.add_argument("--name", help="the pipeline's name (default: the DAG id)")
    airflow.add_argument("--check", action="store_true", help="parse and report only")
    airflow.add_argument("--force", action="store_true", help="replace an existing file")
    airflow.set_defaults(func=cmd_import_airflow)
    return parser


def _activate_connections(args: argparse.Namespace) -> None:
    """Load the named connections once, make them resolvable, mask their secrets in logs."""
    from etlkit.settings import connections

    loaded = connections.load_connections(
        _project(args), config_file=Path(args.config) if args.config else None
    )
    connections.activate(loaded)
    masking = connections.install_log_masking(loaded)
    for handler in logging.getLogger().handlers:
        handler.addFilter(masking)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `etlkit` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.log_format)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        if getattr(args, "connections", True):
            _activate_connections(args)
        if args.command in _STORE_COMMANDS:
            _fail_dead_runs(args)
        return func(args)
    except EtlkitError as exc:
        from etlkit.settings.connections import active_connections, mask

        if args.debug:
            traceback.print_exception(exc)
        known = active_connections()
        print(f"error: {mask(str(exc), known)}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"hint: {mask(str(note), known)}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
