"""Commands that keep a project tidy: `gc` (old runs' staging, sinks' leftovers), `connections`
(list, test) and `state` (show or reset incremental cursors).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from etlkit.cli.project import open_store, pipelines_dir, settings_for
from etlkit.cli.tables import print_table
from etlkit.errors import ConfigError, EtlkitError

if TYPE_CHECKING:
    from etlkit.model.pipeline import PipelineDefinition
    from etlkit.storage.store import RunStore


def cmd_connections(args: argparse.Namespace) -> int:
    """`etlkit connections list|test`: named connections, masked; test reaches one."""
    from etlkit.settings import connections

    known = connections.active_connections()
    if args.action == "list":
        rows = connections.list_rows(known)
        if not rows:
            print("no connections defined (ETLKIT_CONN_<NAME>=uri or [connections] in etlkit.toml)")
            return 0
        print_table(("name", "kind", "uri", "source"), rows)
        return 0
    if not args.name:
        raise ConfigError("etlkit connections test needs a connection NAME")
    conn = connections.resolve(args.name, connections=known)
    ok, message = connections.test_connection(conn, timeout=args.timeout)
    print(f"{conn.name}: {'ok' if ok else 'FAILED'}: {message}")
    return 0 if ok else 5


def cmd_connectors(args: argparse.Namespace) -> int:
    """`etlkit connectors`: the connectors installed packages declare (`etlkit.connectors`)."""
    from etlkit.model.connector_lookup import installed_connectors

    rows = [(c.name, c.role, c.target, c.summary) for c in installed_connectors()]
    if not rows:
        print("no connectors installed (packages declare them as etlkit.connectors entry points)")
        return 0
    print_table(("name", "role", "class", "about"), rows)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    """`etlkit state show|reset`: a pipeline's incremental cursors."""
    settings = settings_for(args)
    with open_store(settings) as store:
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


def _age(text: str) -> timedelta:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ConfigError(f"--older-than {text!r} is not an age like 30d, 12h or 90m")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


def cmd_gc(args: argparse.Namespace) -> int:
    """`etlkit gc`: delete old runs' staged data and the leftovers of failed runs' sinks."""
    from etlkit.storage.staging import Staging

    if args.keep_last is None and args.older_than is None:
        raise ConfigError("etlkit gc needs --keep-last N and/or --older-than AGE")
    settings = settings_for(args)
    staging = Staging(settings.paths.staging_root)
    cutoff = datetime.now(UTC) - _age(args.older_than) if args.older_than else None
    deleted = 0
    with open_store(settings) as store:
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
    from etlkit.runs.resuming import discard_sink_leftovers

    dead = store.runs(args.pipeline, limit=_GC_SCAN, states=("failed", "cancelled", "interrupted"))
    pipelines: dict[str, type[PipelineDefinition] | None] = {}
    for record in dead:
        if record.pipeline not in pipelines:
            try:
                pipelines[record.pipeline] = load_pipeline(record.pipeline, pipelines_dir(args))
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
