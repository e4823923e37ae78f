"""`etlkit query`: SQL over a run's staged outputs in DuckDB, one view per node, or a shell."""

from __future__ import annotations

import argparse

from etlkit.cli.project import open_store, settings_for
from etlkit.errors import ConfigError, StagingError, quoted


def cmd_query(args: argparse.Namespace) -> int:
    """`etlkit query`: SQL over a run's staged outputs, or an interactive shell."""
    from etlkit.storage import querying
    from etlkit.storage.staging import Staging, check_path_part

    settings = settings_for(args)
    pipeline, run = args.pipeline, args.run
    root = settings.paths.staging_root
    if run != "latest" and pipeline is None:
        with open_store(settings) as store:
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
