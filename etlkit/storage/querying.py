"""DuckDB views over the committed staged output of a pipeline's runs, for ad-hoc SQL.

(The module is `querying` so that `etlkit.query` can be the function `ek.query`.)

`connect` opens an in-memory DuckDB connection (never a database file, so it takes no lock a
running pipeline needs) with one view per committed output of a run, named:

```text
<node>             the node's output in the chosen run
<node>_rejects     rows quarantined by validation (staged as `<node>.rejects`)
<node>_failures    the validation failure table (staged as `<node>.failures`)
all_<node>         the node's output of every committed run, with a leading `run_id` column
                   (likewise `all_<node>_rejects`, `all_<node>_failures`)
```

A staged name's dots become underscores. Outputs whose manifest lists no files (nothing staged
and no schema known) get no view; nor, with a warning, does a reference to parsed files (CSV)
that are gone or changed since (its view reads the files through their format, as its source did).
`all_*` views read every run's parts with `read_parquet(..., union_by_name=true)`, so a column
added in a later run reads as NULL in older runs and a widened type is widened everywhere.

Read-only, as far as DuckDB 2.0 allows: once the views exist the connection is restricted with
`allowed_paths` = exactly the committed Parquet parts behind the views, then
`enable_external_access = false` and `lock_configuration = true`. So no other file can be read
or written (`COPY ... TO`, `ATTACH`, `INSTALL`/`LOAD`, `read_csv`, globs and secrets all fail) and
the settings cannot be changed back. Two gaps remain: `allowed_paths` grants writes too, so
`COPY ... TO '<a staged part>' (USE_TMP_FILE false)` could overwrite a committed part, and
tables created in the in-memory catalog live until the connection closes. `query` and `shell`
close the first gap by refusing `COPY` and `EXPORT` statements; `Staging.verify` detects a part
rewritten some other way. Extensions are never installed or autoloaded (nothing is written under
`$HOME`) and the progress bar is off. DuckDB spills to its default temporary directory (`.tmp`
under the working directory) unless `temp_directory` is given.

Run ids sort by time, so "latest" is the newest run with at least one committed output.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TextIO, overload

import pyarrow as pa

from etlkit.errors import QueryError
from etlkit.storage.parquet import PARQUET
from etlkit.storage.staging import Manifest, Staging, is_safe_name

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from etlkit.storage.formats import FileFormat

logger = logging.getLogger(__name__)

#: The prefix of the connection's own registrations (datasets of parsed files): kept out of
#: listings.
_INTERNAL: Final = "__etlkit_"
#: Statements listing the catalog, whose answer leaves `_INTERNAL` names out.
_LISTING = re.compile(r"\s*(show\s+(all\s+)?tables|pragma\s+show_tables)\b", re.IGNORECASE)
#: Statements `query` and `shell` refuse: the ones that write files.
_WRITING: Final[frozenset[str]] = frozenset({"COPY", "EXPORT", "COPY_DATABASE"})
#: How many run ids an error message lists.
_LISTED_RUNS: Final = 10
#: Longest cell the text table shows before cutting it with an ellipsis.
_MAX_CELL: Final = 80
_SHELL_HELP: Final = (
    "End SQL statements with ';'. Commands: .tables lists the views, .help shows this, "
    ".quit (or end of input) leaves.\n"
)


# -- runs and committed outputs --------------------------------------------------------------


def latest_run(staging: Staging, pipeline: str) -> str | None:
    """The newest run id with at least one committed output, or None.

    Raises:
        StagingError: the pipeline name is not path-safe.
    """
    for run_id in reversed(staging.runs(pipeline)):
        if is_safe_name(run_id) and staging.committed(pipeline, run_id):
            return run_id
    return None


def _committed(staging: Staging, pipeline: str) -> dict[str, list[str]]:
    """The committed staged names of each run that has any, oldest run first."""
    found = {}
    for run_id in staging.runs(pipeline):
        names = staging.committed(pipeline, run_id) if is_safe_name(run_id) else []
        if names:
            found[run_id] = names
    return found


def _recent(runs: Sequence[str]) -> str:
    if not runs:
        return "none"
    newest = list(reversed(runs))[:_LISTED_RUNS]
    more = f" (and {len(runs) - len(newest)} older)" if len(runs) > len(newest) else ""
    return ", ".join(newest) + more


def resolve_run(staging: Staging, pipeline: str, run: str) -> str:
    """The run id meant by `run`: "latest", a full run id or a unique prefix of one.

    Only runs with at least one committed output count.

    Raises:
        QueryError: no such run, an ambiguous prefix, or no committed run at all; the message
            lists the most recent run ids.
        StagingError: the pipeline name is not path-safe.
    """
    return _resolve(staging, pipeline, run, list(_committed(staging, pipeline)))


def _resolve(staging: Staging, pipeline: str, run: str, runs: Sequence[str]) -> str:
    where = f"pipeline '{pipeline}' in {staging.root_url}"
    if run == "latest":
        if not runs:
            raise QueryError(
                f"No committed run of {where}: nothing to query yet. Run the pipeline first "
                "(etlkit run), or check the staging root and pipeline name."
            )
        return runs[-1]
    if run in runs:
        return run
    matches = [r for r in runs if r.startswith(run)] if run else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise QueryError(
            f"Run '{run}' of {where} is ambiguous: it begins {len(matches)} run ids "
            f"({_recent(matches)}); give more of the id"
        )
    if run in staging.runs(pipeline):
        reason = "has no committed output (did it fail before any node committed?)"
    else:
        reason = "matches no run"
    raise QueryError(
        f"Run '{run}' of {where} {reason}. Recent runs with committed output, newest first: "
        f"{_recent(runs)}; or use 'latest'"
    )


# -- views -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Output:
    """One committed output of one run: the URLs of its parts, its manifest, and the format
    its files are read in."""

    run_id: str
    files: tuple[str, ...]
    manifest: Manifest
    read_as: FileFormat = PARQUET

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(column for column, _ in self.manifest.schema)

    @property
    def registered(self) -> str:
        """The name a format registers a dataset over the files under (see `scan`)."""
        return f"{_INTERNAL}ref_{self.run_id}_{self.manifest.node}"

    def scan(self, con: duckdb.DuckDBPyConnection, *, union_by_name: bool = False) -> str:
        """What a view reads: the Parquet parts, or what the format of a reference to a
        source's files gives (a dataset registered on `con`, for parsed files)."""
        return self.read_as.scan(con, self.files, self.registered, union_by_name=union_by_name)


def _outputs(
    staging: Staging, pipeline: str, run_id: str, names: Sequence[str]
) -> dict[str, _Output]:
    found = {}
    for name in names:
        manifest = staging.manifest(pipeline, run_id, name)
        if manifest is None:  # removed since it was listed (gc)
            continue
        read_as = manifest.reference_format or PARQUET
        if read_as.schema is not None:  # the source's own parsed files: still as they were?
            problems = staging.verify(pipeline, run_id, name)
            if problems:
                logger.warning(
                    "no view of %s in run %s: it is a reference to %s files, and %s",
                    name,
                    run_id,
                    read_as.name,
                    problems[0],
                )
                continue
        files = tuple(staging.manifest_urls(pipeline, run_id, name, manifest))
        found[name] = _Output(run_id, files, manifest, read_as)
    return found


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _across_runs_sql(con: duckdb.DuckDBPyConnection, outputs: Sequence[_Output]) -> str:
    """Every run's output under one another, by column name, after a leading `run_id`."""
    scans = []
    for output in outputs:
        scans.append(
            f"SELECT {_literal(output.run_id)} AS run_id, "
            f"{output.manifest.select_sql(omit='run_id')} "
            f"FROM {output.scan(con, union_by_name=True)}"
        )
    return "\nUNION ALL BY NAME\n".join(scans)


def _view_sql(
    con: duckdb.DuckDBPyConnection,
    current: dict[str, _Output],
    history: dict[str, list[_Output]],
) -> list[tuple[str, str]]:
    """(view name, SELECT) pairs; own outputs first, so they win a clash of names. A format
    that parses its files registers a dataset over them on `con`."""
    planned: list[tuple[str, str]] = []
    staged_names = sorted(history, key=lambda n: ("." in n, n))
    for name in staged_names:
        output = current.get(name)
        if output is not None and output.files:
            sql = f"SELECT {output.manifest.select_sql()} FROM {output.scan(con)}"
            planned.append((name.replace(".", "_"), sql))
    for name in staged_names:
        outputs = [o for o in history[name] if o.files]
        if outputs:
            if any("run_id" in o.columns for o in outputs):
                logger.warning(
                    "staged output %s has its own run_id column; all_%s shows the run id "
                    "instead (query the per-run view for the column)",
                    name,
                    name.replace(".", "_"),
                )
            planned.append((f"all_{name.replace('.', '_')}", _across_runs_sql(con, outputs)))
    views: list[tuple[str, str]] = []
    taken: set[str] = set()
    for view, sql in planned:
        if view.lower() in taken:  # DuckDB names are case-insensitive
            logger.warning("two staged outputs map to view %s; keeping the first", view)
            continue
        taken.add(view.lower())
        views.append((view, sql))
    return views


def connect(
    staging: Staging | str,
    pipeline: str,
    run: str = "latest",
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory, read-only DuckDB connection with views over the pipeline's staged outputs.

    See the module docstring for the view names and the read-only restrictions. The views are a
    snapshot: outputs committed after `connect` need a new connection. `threads`,
    `memory_limit` and `temp_directory` left at None (or 0 / "") keep DuckDB's defaults.

    Example:
        >>> con = connect(Staging("data/staging"), "monthly_report", "latest")
        >>> con.sql("select month, total from totals order by month").fetchall()

    Raises:
        QueryError: the run cannot be resolved, or DuckDB rejects a setting or a view.
        StagingError: a name is not path-safe or a manifest is corrupt.
    """
    import duckdb

    staging = Staging(staging) if isinstance(staging, str) else staging
    committed = _committed(staging, pipeline)
    run_id = _resolve(staging, pipeline, run, list(committed))
    history: dict[str, list[_Output]] = {}
    current: dict[str, _Output] = {}
    for each_run, names in committed.items():
        outputs = _outputs(staging, pipeline, each_run, names)
        for name, output in outputs.items():
            history.setdefault(name, []).append(output)
        if each_run == run_id:
            current = outputs
    allowed = sorted(  # parsed files (CSV) are read by their format: DuckDB opens none
        {
            f
            for outputs in history.values()
            for o in outputs
            for f in o.read_as.duckdb_paths(o.files)
        }
    )

    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_persistent_secrets": False,
    }
    if threads:  # None or 0 (as in [duckdb] settings): DuckDB's default
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    if temp_directory:
        config["temp_directory"] = temp_directory
    try:
        con = duckdb.connect(":memory:", config=config)
    except duckdb.Error as exc:
        raise QueryError(f"Cannot open a DuckDB connection with {config}: {exc}") from exc
    try:
        con.execute("SET enable_progress_bar = false")  # a session option: not in config
        if not staging.local:
            con.register_filesystem(staging.fs)
        views = _view_sql(con, current, history)
        for view, sql in views:
            con.execute(f"CREATE VIEW {_ident(view)} AS {sql}")
        con.execute("SET allowed_paths = ?", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise QueryError(
            f"Cannot create the views over run {run_id} of pipeline '{pipeline}' in "
            f"{staging.root_url}: {exc}"
        ) from exc
    logger.info(
        "query connection on %s run %s: %d views over %d files",
        pipeline,
        run_id,
        len(views),
        len(allowed),
    )
    return con


def view_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The names of the connection's views (the staged outputs it can query), sorted."""
    rows = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND database_name = 'memory' "
        "AND schema_name = 'main' ORDER BY view_name"
    ).fetchall()
    return [str(row[0]) for row in rows]


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

        table = table.filter(pc.invert(pc.starts_with(table.column("name"), _INTERNAL)))
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


# -- results ---------------------------------------------------------------------------------


def _cell(value: object) -> str:
    text = "NULL" if value is None else str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def _render(table: pa.Table, *, footer: str | None = None) -> str:
    """An aligned plain-text table: names, a rule, the rows, then `footer` or the row count."""
    columns = [[_cell(v) for v in column.to_pylist()] for column in table.columns]
    lines = []
    if table.num_columns:
        names = table.column_names
        widths = [
            max([len(name), *(len(c) for c in cells)])
            for name, cells in zip(names, columns, strict=True)
        ]
        right = [_numeric(field.type) for field in table.schema]
        lines.append(" | ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip())
        lines.append("-+-".join("-" * w for w in widths))
        for i in range(table.num_rows):
            cells = [
                col[i].rjust(w) if r else col[i].ljust(w)
                for col, w, r in zip(columns, widths, right, strict=True)
            ]
            lines.append(" | ".join(cells).rstrip())
    lines.append(footer or f"({table.num_rows} row{'' if table.num_rows == 1 else 's'})")
    return "\n".join(lines) + "\n"


def write_result(
    table: pa.Table, fmt: Literal["table", "csv", "json", "parquet"], output: str | None
) -> str | None:
    """Render or save a query result.

    `table` is aligned plain text for a terminal. `csv` has a header row; `json` is one array of
    row objects (`[{"col": value, ...}, ...]`, dates and times as ISO strings). With `output`
    the result goes to that local file, atomically (a temporary file in the same directory,
    then a rename), and None is returned; without it the text is returned.

    Raises:
        QueryError: parquet without `output`, a result the format cannot hold (nested columns
            in CSV), or the file cannot be written.
    """
    if fmt == "parquet":
        if output is None:
            raise QueryError(
                "The parquet format needs an output file (--output FILE); "
                "use table, csv or json to print the result"
            )
        import pyarrow.parquet as pq

        _write_atomically(output, lambda tmp: pq.write_table(table, tmp))
        return None
    if fmt == "table":
        text = _render(table)
    elif fmt in ("csv", "json"):
        import polars as pl

        try:
            frame = pl.DataFrame(table)
            text = frame.write_csv() if fmt == "csv" else frame.write_json()
        except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
            raise QueryError(f"Cannot write the result as {fmt}: {exc}") from exc
    else:
        raise QueryError(f"Unknown output format {fmt!r}; use table, csv, json or parquet")
    if output is None:
        return text
    _write_atomically(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return None


def _write_atomically(output: str, write: Callable[[Path], object]) -> None:
    target = Path(output)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        tmp.replace(target)
    except (OSError, pa.ArrowException) as exc:
        raise QueryError(f"Cannot write the result to {output}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("query result written to %s", output)


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
                parts.append(_render(table.slice(0, max_rows), footer=footer))
            else:
                parts.append(_render(table))
    except QueryError as exc:
        parts.append(f"Error: {exc}\n")
    except KeyboardInterrupt:
        parts.append("Interrupted\n")
    return "".join(parts)
