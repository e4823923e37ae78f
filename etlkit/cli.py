"""The `etlkit` command: parse arguments, resolve settings, call the API, map errors to exit codes.

Heavy libraries (polars, pyarrow, duckdb, pandera) are imported only by the commands that need
them, so `etlkit --help` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from etlkit.errors import (
    ConfigError,
    ConnectorError,
    DataValidationError,
    EtlkitError,
    NodeError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    RunCancelledError,
)

if TYPE_CHECKING:
    from etlkit.config import Settings
    from etlkit.pipeline import Pipeline

#: Exit codes by error class (the first matching class in this order wins).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, 2),
    (PipelineNotFoundError, 3),
    (PipelineDefinitionError, 3),
    (DataValidationError, 4),
    (ConnectorError, 5),
    (NodeError, 1),
    (RunCancelledError, 130),
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


def _configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
    pipeline: type[Pipeline] | None = None,
    cli: dict[str, object] | None = None,
) -> Settings:
    from etlkit.config import load_settings

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


def _load(args: argparse.Namespace) -> type[Pipeline]:
    from etlkit.pipeline import load_pipeline

    return load_pipeline(args.pipeline, _pipelines_dir(args))


# -- commands ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from etlkit.execution import Listener
    from etlkit.progress import LiveProgress, PlainProgress

    cls = _load(args)
    cli: dict[str, object] = {}
    if args.chunk_rows is not None:
        cli["run.chunk_rows"] = args.chunk_rows
    if args.no_validate:
        cli["run.validate"] = False
    settings = _settings(args, cls, cli)
    mode = args.progress
    if mode == "auto":
        mode = "live" if sys.stdout.isatty() else "plain"
    listeners: list[Listener] = []
    if mode == "live":
        from rich.console import Console

        listeners.append(LiveProgress(Console()))
    elif mode == "plain":
        listeners.append(PlainProgress(sys.stdout))
    result = cls.run(
        date=args.date,
        params=_parse_params(args.param),
        settings=settings,
        listeners=listeners,
    )
    result.raise_for_error()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from etlkit.pipeline import discover

    directory = _pipelines_dir(args)
    if not directory.is_dir():
        raise ConfigError(f"Pipelines folder {directory} does not exist")
    failed = 0
    for found in discover(directory):
        if found.error is not None:
            failed += 1
            print(f"{found.path}: ERROR {found.error}")
            continue
        for cls in found.pipelines:
            doc = (cls.__doc__ or "").strip().splitlines()
            schedule = cls.schedule or "manual"
            print(f"{cls.name:<24} {schedule:<14} {found.path}  {doc[0] if doc else ''}".rstrip())
    return 1 if failed else 0


def cmd_graph(args: argparse.Namespace) -> int:
    from etlkit.graph import render_text

    print(render_text(_load(args).graph()))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from etlkit.pipeline import discover

    directory = _pipelines_dir(args)
    if not directory.is_dir():
        raise ConfigError(f"Pipelines folder {directory} does not exist")
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
            else:
                print(f"ok   {cls.name} ({len(graph.order)} nodes)")
    print(f"{checked} pipeline(s) checked, {problems} problem(s)")
    return 3 if problems else 0


# -- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `etlkit` command."""
    parser = argparse.ArgumentParser(
        prog="etlkit",
        description="Run, inspect and check etlkit pipelines.",
    )
    parser.add_argument("--project", default=os.curdir, help="project directory (default: .)")
    parser.add_argument("--config", help="settings file (default: <project>/etlkit.toml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning, error")
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline once")
    run.add_argument("pipeline", help="a file (pipelines/x.py), module path or pipeline name")
    run.add_argument("--date", help="logical date YYYY-MM-DD (default: today, UTC)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--chunk-rows", type=int, help="rows per chunk")
    run.add_argument("--no-validate", action="store_true", help="skip schema validation")
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
    graph.add_argument("--pipelines", help="pipelines folder")
    graph.set_defaults(func=cmd_graph)

    validate = sub.add_parser("validate", help="load every pipeline and report every problem")
    validate.add_argument("--pipelines", help="pipelines folder")
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `etlkit` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.log_format)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except EtlkitError as exc:
        if args.debug:
            traceback.print_exception(exc)
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
