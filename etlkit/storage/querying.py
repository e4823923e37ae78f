"""Running SQL over a pipeline's staged outputs: `ek.query`, `etlkit query` and its shell.

(The module is `querying` so that `etlkit.query` can be the function `ek.query`.)

SQL runs on a `views.connect` connection: in-memory DuckDB, read-only, one view per committed
output (the view names and the restrictions are in `views`). `query` and `shell` refuse `COPY`
and `EXPORT` statements, which could overwrite a committed part the connection may read;
`Staging.verify` detects a part rewritten some other way. Results are rendered or saved by
`results`. This module re-exports `connect`, `latest_run`, `resolve_run`, `view_names` and
`write_result`, the names `etlkit query`, the UI and `ek.connect` use.
"""

from __future__ import annotations

import re
import sys
from contextlib import suppress
from typing import TYPE_CHECKING, Final, Literal, TextIO, overload

from etlkit.errors import QueryError
from etlkit.storage.results import render_table, write_result
from etlkit.storage.views import INTERNAL, connect, latest_run, resolve_run, view_names

if TYPE_CHECKING:
    from collections.abc import Callable

    import duckdb
    import polars as pl
    import pyarrow as pa

    from etlkit.storage.staging import Staging

__all__ = [
    "connect",
    "latest_run",
    "query",
    "query_connection",
    "resolve_run",
    "shell",
    "view_names",
    "write_result",
]

#: Statements listing the catalog, whose answer leaves `INTERNAL` names out.
_LISTING = re.compile(r"\s*(show\s+(all\s+)?tables|pragma\s+show_tables)\b", re.IGNORECASE)
#: Statements `query` and `shell` refuse: the ones that write files.
_WRITING: Final[frozenset[str]] = frozenset({"COPY", "EXPORT", "COPY_DATABASE"})
_SHELL_HELP: Final = (
    "End SQL statements with ';'. Commands: .tables lists the views, .help shows this, "
    ".quit (or end of input) leaves.\n"
)


# -- running SQL -----------------------------------------------------------------------------


def _statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    """The statements of `sql`, after refusing the ones that write files.

    Raises:
        QueryError: a syntax error, no statement, or a COPY/EXPORT statement.
    """
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"{exc}\n{_views_hint(con)}") from exc
    if not statements:
        raise QueryError(f"No SQL statement given. {_views_hint(con)}")
    for statement in statements:
        if statement.type.name in _WRITING:
            raise QueryError(
                f"{statement.type.name} statements are refused: queries over staged data are "
                "read-only. To save a result, run the SELECT with an output format instead "
                "(etlkit query --format csv|json|parquet --output FILE)."
            )
    return statements


def _views_hint(con: duckdb.DuckDBPyConnection) -> str:
    views = view_names(con)
    return "Available views: " + (", ".join(views) if views else "none")


def _run(
    con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, *, limit: int | None = None
) -> pa.Table:
    """Execute one statement and fetch its result (at most `limit` rows) as an Arrow table.

    `SHOW TABLES` leaves out the connection's internal registrations (the CSV datasets the
    views read), which DuckDB lists as temporary views.

    Raises:
        QueryError: DuckDB failed; the message lists the available views.
    """
    import duckdb

    try:
        relation = con.sql(statement.query)
        if limit is not None and statement.type.name == "SELECT":
            relation = relation.limit(limit)
        table = relation.to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"{exc}\n{_views_hint(con)}") from exc
    if _LISTING.match(statement.query) and "name" in table.column_names:
        import pyarrow.compute as pc

        table = table.filter(pc.invert(pc.starts_with(table.column("name"), INTERNAL)))
    return table


@overload
def query(
    sql: str,
    staging: Staging | str,
    pipeline: str,
    run: str = ...,
    *,
    as_: Literal["polars"] = ...,
) -> pl.DataFrame: ...


@overload
def query(
    sql: str, staging: Staging | str, pipeline: str, run: str = ..., *, as_: Literal["arrow"]
) -> pa.Table: ...


def query(
    sql: str,
    staging: Staging | str,
    pipeline: str,
    run: str = "latest",
    *,
    as_: Literal["polars", "arrow"] = "polars",
) -> pl.DataFrame | pa.Table:
    """Run SQL over a run's staged outputs and return the last statement's result.

    `staging` is a `Staging` or its root URL (`.etlkit/staging`, `s3://bucket/staging`).

    Example:
        >>> query("select count(*) as n from billing", Staging("data/staging"), "monthly_report")

    Raises:
        QueryError: the run cannot be resolved, or the SQL fails (the message lists the views),
            or it holds a COPY/EXPORT statement.
        StagingError: a name is not path-safe or a manifest is corrupt.
    """
    con = connect(staging, pipeline, run)
    try:
        table = query_connection(con, sql)
    finally:
        con.close()
    if as_ == "arrow":
        return table
    import polars as pl

    return pl.DataFrame(table)


def query_connection(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run SQL (one or more statements) on a `connect` connection; the last result as Arrow.

    Raises:
        QueryError: the SQL fails (the message lists the views) or holds COPY/EXPORT.
    """
    statements = _statements(con, sql)
    for statement in statements[:-1]:
        _run(con, statement)
    return _run(con, statements[-1])


# -- interactive shell -----------------------------------------------------------------------


def shell(
    con: duckdb.DuckDBPyConnection,
    *,
    input_fn: Callable[[str], str] = input,
    output: TextIO | None = None,
    max_rows: int = 100,
) -> None:
    """A prompt loop over `con`: SQL statements end with ';' and may span lines.

    Results print as tables of at most `max_rows` rows; `.tables` lists the views; `.quit`,
    `.exit` or end of input leaves. An error is printed and the loop goes on. `output` defaults
    to the current `sys.stdout`.
    """
    out = sys.stdout if output is None else output
    if input_fn is input:
        with suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    out.write(_SHELL_HELP)
    buffer: list[str] = []
    while True:
        try:
            line = input_fn("   ...> " if buffer else "etlkit> ")
        except EOFError:
            out.write("\n")
            return
        except KeyboardInterrupt:
            buffer.clear()
            out.write("\n")
            continue
        command = line.strip()
        if not buffer and command.startswith("."):
            if command in (".quit", ".exit"):
                return
            out.write(_command(con, command))
            continue
        if not command and not buffer:
            continue
        buffer.append(line)
        if command.endswith(";"):
            sql = "\n".join(buffer)
            buffer.clear()
            out.write(_shell_run(con, sql, max_rows))
            out.flush()


def _command(con: duckdb.DuckDBPyConnection, command: str) -> str:
    if command == ".tables":
        views = view_names(con)
        return "\n".join(views) + "\n" if views else "(no views)\n"
    if command == ".help":
        return _SHELL_HELP
    return f"Unknown command {command}. {_SHELL_HELP}"


def _shell_run(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int) -> str:
    parts: list[str] = []
    try:
        for statement in _statements(con, sql):
            table = _run(con, statement, limit=max_rows + 1)
            if statement.type.name == "EXPLAIN" and "explain_value" in table.column_names:
                parts.extend(f"{v}\n" for v in table.column("explain_value").to_pylist())
            elif table.num_rows > max_rows:
                footer = f"(first {max_rows} rows shown: add a LIMIT, or save all with --output)"
                parts.append(render_table(table.slice(0, max_rows), footer=footer))
            else:
                parts.append(render_table(table))
    except QueryError as exc:
        parts.append(f"Error: {exc}\n")
    except KeyboardInterrupt:
        parts.append("Interrupted\n")
    return "".join(parts)
