"""`main`, the `etlkit` command: parse, configure logging, load connections, fail the runs whose
process died, call the command and map its error to an exit code.

Heavy libraries (polars, pyarrow, duckdb, pandera) are imported only by the commands that need
them, so `etlkit --help` starts fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from etlkit.cli.console import configure_logging
from etlkit.cli.exit_codes import exit_code
from etlkit.cli.parser import build_parser
from etlkit.cli.project import notifiers_for, open_store, pipelines_dir, project_dir, settings_for
from etlkit.errors import EtlkitError

#: Commands that read the run store: each first fails the runs whose process was killed.
_STORE_COMMANDS = frozenset(
    {"run", "retry", "runs", "show", "logs", "gc", "status", "trigger", "backfill"}
)


def _fail_dead_runs(args: argparse.Namespace) -> None:
    """Fail the runs whose process is gone (`RunStore.fail_dead_runs`), so that the command
    shows, counts and collects them as failed, and tell their pipelines' `on_failure`."""
    settings = settings_for(args)
    with open_store(settings) as store:
        failed = store.fail_dead_runs()
        if not failed:
            return
        from etlkit.model.discovery import load_pipeline  # only now: they load polars and pyarrow
        from etlkit.runs.notifying import notify_failure

        for record in failed:
            try:
                cls = load_pipeline(record.pipeline, pipelines_dir(args))
                notify_failure(
                    cls,
                    record.run_id,
                    store=store,
                    settings=cls.layered(settings),
                    notifiers=notifiers_for(args),
                )
            except EtlkitError as exc:  # the run is failed; only its notification is lost
                logging.getLogger(__name__).warning(
                    "run %s failed (its process is gone), but its on_failure could not be"
                    " called: %s",
                    record.run_id,
                    exc,
                )


def _activate_connections(args: argparse.Namespace) -> None:
    """Load the named connections once, make them resolvable, mask their secrets in logs."""
    from etlkit.settings import connections

    loaded = connections.load_connections(
        project_dir(args), config_file=Path(args.config) if args.config else None
    )
    connections.activate(loaded)
    masking = connections.install_log_masking(loaded)
    for handler in logging.getLogger().handlers:
        handler.addFilter(masking)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `etlkit` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.owns_process = argv is None  # the `etlkit` command itself, not a call from a program
    configure_logging(args.log_level, args.log_format)
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
