"""Commands that look without changing anything: `runs`, `show`, `logs` (the run store and run
logs) and `list`, `graph`, `validate` (the pipelines folder).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from etlkit.cli.project import (
    freeze_imports,
    get_run,
    load_named_pipeline,
    open_store,
    pipelines_dir,
    pools_for,
    settings_for,
)
from etlkit.cli.tables import duration_text, print_table, time_text
from etlkit.errors import ConfigError, PipelineDefinitionError

if TYPE_CHECKING:
    from etlkit.storage.store import EventRecord, NodeRunRecord, PartitionRecord, RunRecord


def cmd_runs(args: argparse.Namespace) -> int:
    """`etlkit runs`: recent runs, their states and durations."""
    with open_store(settings_for(args)) as store:
        records = store.runs(args.pipeline, limit=args.limit)
    rows = [
        (
            r.run_id,
            r.pipeline,
            f"{r.local_logical_date:%Y-%m-%d}",
            r.trigger,
            r.state,
            time_text(r.started_at),
            duration_text(r.duration),
            str(r.attempt),
        )
        for r in records
    ]
    if not rows:
        print("no runs yet")
        return 0
    print_table(
        ("run id", "pipeline", "date", "trigger", "state", "started", "duration", "attempt"), rows
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """`etlkit show`: a run, its nodes and outputs (and a Gantt chart with `--gantt`)."""
    with open_store(settings_for(args)) as store:
        record = get_run(store, args.run_id)
        nodes = store.node_runs(record.run_id)
        events = store.events(record.run_id)
        partitions = store.node_partitions(record.run_id)
    params = ", ".join(f"{k}={v}" for k, v in sorted(record.params.items())) or "-"
    print(f"run        {record.run_id}")
    print(f"pipeline   {record.pipeline}")
    date = f"{record.local_logical_date:%Y-%m-%d}"
    print(f"date       {date}   params {params}   trigger {record.trigger}")
    print(f"state      {record.state} (attempt {record.attempt})")
    print(f"started    {time_text(record.started_at)}   duration {duration_text(record.duration)}")
    print(f"staging    {record.staging_root}")
    if record.executor not in (None, "local"):  # a local run shows nothing extra
        print(f"executor   {record.executor}")
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
                duration_text(seconds),
            )
        )
    print_table(
        ("node", "kind", "state", "rows in", "rows out", "invalid", "bytes staged", "time"), rows
    )
    if partitions:
        print()
        _print_partitions(partitions, None if args.partitions else PARTITIONS_SHOWN)
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


#: Partitions `etlkit show` lists per node without `--partitions` (a run may have thousands).
PARTITIONS_SHOWN: Final = 20


def _print_partitions(
    partitions: Mapping[str, Sequence[PartitionRecord]], limit: int | None
) -> None:
    """Which worker ran which partition of each node a distributed executor split: the first
    `limit` of each node (None: all), and how many more there are on how many workers."""
    rows = []
    for node, found in partitions.items():
        shown = found if limit is None else found[:limit]
        rows += [
            (
                node,
                p.partition,
                p.worker,
                f"{p.rows:,}",
                _short(p.partition_attempt),
                duration_text(p.seconds),
            )
            for p in shown
        ]
        if len(found) > len(shown):
            rest = found[len(shown) :]
            workers = len({p.worker for p in rest})
            what = f"{len(rest):,} more on {workers} worker{'s' if workers > 1 else ''}"
            rows.append((node, f"... {what} (--partitions lists all)", "", "", "", ""))
    print_table(("node", "partition", "worker", "rows", "attempt", "time"), rows)


def _short(attempt: str) -> str:
    """A partition attempt's token as `show` prints it: the first 8 characters of a writer's
    random token (its parts are under `<node>.parts/<partition>/<token>`), like a short hash."""
    return attempt[:8]


def _show_outputs(
    record: RunRecord, nodes: Sequence[NodeRunRecord], events: Sequence[EventRecord]
) -> list[str]:
    """Where a run's sinks wrote, and what validation did with the invalid rows it found."""
    from etlkit.runs.recorder import SINK_WROTE
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
    """`etlkit logs`: a run's log lines, or one node's."""
    from etlkit.engine.runlog import read_log

    settings = settings_for(args)
    with open_store(settings) as store:
        record = get_run(store, args.run_id)
    lines = read_log(settings.paths.logs_dir, record.pipeline, record.run_id, args.node)
    for line in lines:
        print(line.format())
    if not lines:
        print(
            f"no log lines for run {record.run_id}" + (f", node {args.node}" if args.node else "")
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """`etlkit list`: the pipelines of the pipelines folder (exit 1 if one fails to load)."""
    from etlkit.model.discovery import discover

    directory = pipelines_dir(args)
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
        print_table(("pipeline", "schedule", "file", "description"), rows)
    elif not errors:
        print(f"no pipelines in {directory}")
    for error in errors:
        print(error)
    freeze_imports(args)
    return 1 if errors else 0


def _schedule_text(schedule: str | timedelta | None) -> str:
    if isinstance(schedule, timedelta):
        from etlkit.scheduling.schedules import interval_text

        return interval_text(schedule)
    return schedule or "manual"


def cmd_graph(args: argparse.Namespace) -> int:
    """`etlkit graph`: a pipeline's graph as text, Mermaid, DOT, SVG or PNG."""
    from etlkit.cli import pictures

    graph = load_named_pipeline(args).graph()
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


def cmd_validate(args: argparse.Namespace) -> int:
    """`etlkit validate`: load and check every pipeline (exit 3 on any problem)."""
    from etlkit.model.discovery import discover

    directory = pipelines_dir(args)
    if not directory.is_dir():
        raise ConfigError(f"Pipelines folder {directory} does not exist")
    pools = pools_for(args)
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
    freeze_imports(args)
    return 3 if problems else 0
