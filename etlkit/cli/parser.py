"""The `etlkit` argument parser: global options, one subparser per command, help and examples.

Each subparser names its command function (`func`); `main` calls it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from etlkit.cli.airflow import cmd_import_airflow
from etlkit.cli.inspecting import cmd_graph, cmd_list, cmd_logs, cmd_runs, cmd_show, cmd_validate
from etlkit.cli.maintenance import cmd_connections, cmd_connectors, cmd_gc, cmd_state
from etlkit.cli.query import cmd_query
from etlkit.cli.running import cmd_backfill, cmd_retry, cmd_run, cmd_trigger
from etlkit.cli.scheduling import cmd_pause, cmd_scheduler, cmd_status
from etlkit.cli.ui import cmd_ui

if TYPE_CHECKING:
    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

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


def _add_executor_options(parser: argparse.ArgumentParser, runs: str) -> None:
    """`--executor` and `--scheduler-address`: what runs the nodes of the runs `runs` names
    (the settings `run.executor` and `dask.address`)."""
    parser.add_argument(
        "--executor",
        choices=["local", "dask"],
        help=f"what runs the nodes of {runs}: local threads, or partitions on a Dask cluster "
        "(default: setting run.executor, local)",
    )
    parser.add_argument(
        "--scheduler-address",
        metavar="ADDRESS",
        help="the Dask scheduler, tcp://HOST:8786 (implies --executor dask; default: setting "
        "dask.address, else a LocalCluster on this machine)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `etlkit` command: global options, then each command's
    subparser, in the order `etlkit --help` lists them."""
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
    for add in _COMMANDS:
        add(sub)
    return parser


def _add_run(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit run`."""
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
    _add_executor_options(run, "the run")
    run.set_defaults(func=cmd_run)


def _add_list(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit list`."""
    listing = sub.add_parser("list", help="list the pipelines found in the pipelines folder")
    listing.add_argument("--pipelines", help="pipelines folder")
    listing.set_defaults(func=cmd_list)


def _add_graph(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit graph`."""
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


def _add_retry(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit retry`."""
    retry = sub.add_parser("retry", help="resume a failed run: rerun only what did not commit")
    retry.add_argument("run_id", help="run id, a unique prefix, or 'latest'")
    retry.add_argument("--pipelines", help="pipelines folder")
    retry.add_argument("--progress", choices=["auto", "live", "plain", "none"], default="auto")
    _add_executor_options(retry, "the retried run")
    retry.set_defaults(func=cmd_retry)


def _add_runs(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit runs`."""
    runs = sub.add_parser("runs", help="recent runs, their states and durations")
    runs.add_argument("pipeline", nargs="?", help="only this pipeline's runs")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(func=cmd_runs)


def _add_show(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit show`."""
    show = sub.add_parser("show", help="a run's nodes: rows, timings, validation counts, errors")
    show.add_argument("run_id", help="run id, a unique prefix, or 'latest'")
    show.add_argument("--gantt", action="store_true", help="also draw the node timeline")
    show.add_argument("--width", type=int, help="timeline width (default: the terminal's)")
    show.add_argument(
        "--partitions",
        action="store_true",
        help="list every partition of a distributed run (default: the first 20 per node)",
    )
    show.set_defaults(func=cmd_show)


def _add_logs(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit logs`."""
    logs = sub.add_parser("logs", help="a run's log (JSON lines kept per run)")
    logs.add_argument("run_id", help="run id, a unique prefix, or 'latest'")
    logs.add_argument("node", nargs="?", help="only this node's lines")
    logs.set_defaults(func=cmd_logs)


def _add_gc(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit gc`."""
    gc = sub.add_parser("gc", help="delete old runs' staged data (never a running run's)")
    gc.add_argument("pipeline", nargs="?", help="only this pipeline (default: all)")
    gc.add_argument("--keep-last", type=int, metavar="N", help="keep the newest N runs")
    gc.add_argument("--older-than", metavar="AGE", help="delete runs older than AGE (30d, 12h)")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    gc.set_defaults(func=cmd_gc)


def _add_query(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit query`."""
    query = sub.add_parser("query", help="SQL over staged outputs in DuckDB (views per node)")
    query.add_argument("sql", nargs="?", help="SQL; omit (or --shell) for an interactive prompt")
    query.add_argument("--pipeline", help="pipeline (default: the only one staged)")
    query.add_argument("--run", default="latest", help="run id, unique prefix or 'latest'")
    query.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    query.add_argument("--output", help="write the result to this file")
    query.add_argument("--limit", type=int, default=100, help="rows shown as a table (0: all)")
    query.add_argument("--shell", action="store_true", help="interactive prompt over the views")
    query.set_defaults(func=cmd_query)


def _add_scheduler(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit scheduler`."""
    scheduler = sub.add_parser("scheduler", help="run pipelines on their schedules until stopped")
    scheduler.add_argument("--pipelines", help="pipelines folder")
    _add_executor_options(scheduler, "the runs it starts")
    scheduler.set_defaults(func=cmd_scheduler)


def _add_trigger(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit trigger`."""
    trigger = sub.add_parser("trigger", help="queue a run for the scheduler to start")
    trigger.add_argument("pipeline")
    trigger.add_argument("--date", help="logical date (default: today)")
    trigger.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help=_PARAM_HELP
    )
    trigger.add_argument("--pipelines", help="pipelines folder")
    trigger.set_defaults(func=cmd_trigger)


def _add_toggles(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit pause` and `etlkit unpause`."""
    for name, text in (("pause", "stop scheduling a pipeline"), ("unpause", "schedule it again")):
        toggle = sub.add_parser(name, help=text)
        toggle.add_argument("pipeline")
        toggle.add_argument("--pipelines", help="pipelines folder")
        toggle.set_defaults(func=cmd_pause)


def _add_status(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit status`."""
    status = sub.add_parser("status", help="per pipeline: next due time, running runs, last run")
    status.add_argument("--pipelines", help="pipelines folder")
    status.set_defaults(func=cmd_status)


def _add_backfill(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit backfill`."""
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
    _add_executor_options(backfill, "its runs")
    backfill.set_defaults(func=cmd_backfill)


def _add_connections(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit connections`."""
    conns = sub.add_parser("connections", help="named connections: list them, test one")
    conns.add_argument("action", choices=["list", "test"])
    conns.add_argument("name", nargs="?", help="the connection to test")
    conns.add_argument("--timeout", type=float, default=5.0)
    conns.set_defaults(func=cmd_connections)


def _add_connectors(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit connectors`."""
    conns = sub.add_parser("connectors", help="the installed connectors (sources and sinks)")
    conns.set_defaults(func=cmd_connectors)


def _add_state(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit state`."""
    state = sub.add_parser("state", help="incremental cursors of a pipeline: show or reset")
    state.add_argument("action", choices=["show", "reset"])
    state.add_argument("pipeline")
    state.add_argument("node", nargs="?", help="reset only this node's cursor")
    state.set_defaults(func=cmd_state)


def _add_ui(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit ui`."""
    ui = sub.add_parser("ui", help="the web UI: pipelines, runs, staged data, live progress")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    ui.add_argument("--port", type=int, default=8765, help="port (0: a free one; default 8765)")
    ui.add_argument(
        "--token",
        help="required from every request (default: $ETLKIT_UI_TOKEN); needed off loopback",
    )
    ui.add_argument("--pipelines", help="pipelines folder")
    ui.set_defaults(func=cmd_ui)


def _add_validate(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit validate`."""
    validate = sub.add_parser("validate", help="load every pipeline and report every problem")
    validate.add_argument("--pipelines", help="pipelines folder")
    validate.set_defaults(func=cmd_validate)


def _add_import_airflow(sub: _Subparsers) -> None:
    """Adds the subparser of `etlkit import-airflow`."""
    airflow = sub.add_parser("import-airflow", help="turn an Airflow DAG file into a pipeline")
    airflow.add_argument("dag_file", help="the DAG file (parsed, never run)")
    airflow.add_argument("--out", help="folder of the pipeline file (default: <project>/pipelines)")
    airflow.add_argument("--name", help="the pipeline's name (default: the DAG id)")
    airflow.add_argument("--check", action="store_true", help="parse and report only")
    airflow.add_argument("--force", action="store_true", help="replace an existing file")
    airflow.set_defaults(func=cmd_import_airflow)


#: The commands, in the order `etlkit --help` lists them.
_COMMANDS: Final[tuple[Callable[[_Subparsers], None], ...]] = (
    _add_run,
    _add_list,
    _add_graph,
    _add_retry,
    _add_runs,
    _add_show,
    _add_logs,
    _add_gc,
    _add_query,
    _add_scheduler,
    _add_trigger,
    _add_toggles,
    _add_status,
    _add_backfill,
    _add_connections,
    _add_connectors,
    _add_state,
    _add_ui,
    _add_validate,
    _add_import_airflow,
)
