"""The read-only DuckDB connection over a pipeline's committed staged outputs, and its views.

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

`latest_run` and `resolve_run` say which run "latest" or a prefix of a run id means: run ids
sort by time, so "latest" is the newest run with at least one committed output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from etlkit.errors import QueryError
from etlkit.storage.manifest import Manifest
from etlkit.storage.parquet import PARQUET
from etlkit.storage.paths import is_safe_name
from etlkit.storage.staging import Staging

if TYPE_CHECKING:
    import duckdb

    from etlkit.storage.formats import FileFormat

logger = logging.getLogger(__name__)

#: The prefix of the connection's own registrations (datasets of parsed files): kept out of
#: listings.
INTERNAL: Final = "__etlkit_"
#: How many run ids an error message lists.
_LISTED_RUNS: Final = 10


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
        return f"{INTERNAL}ref_{self.run_id}_{self.manifest.node}"

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


def _gather(
    staging: Staging, pipeline: str, run: str
) -> tuple[str, dict[str, _Output], dict[str, list[_Output]]]:
    """The run id `run` means, that run's outputs by staged name, and every committed run's
    outputs by staged name (oldest run first).

    Raises:
        QueryError: the run cannot be resolved.
    """
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
    return run_id, current, history


def _open(
    *, threads: int | None, memory_limit: str | None, temp_directory: str | None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that installs, loads and persists nothing.

    Raises:
        QueryError: DuckDB rejects a setting.
    """
    import duckdb

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
        return duckdb.connect(":memory:", config=config)
    except duckdb.Error as exc:
        raise QueryError(f"Cannot open a DuckDB connection with {config}: {exc}") from exc


def _lock_down(con: duckdb.DuckDBPyConnection, allowed: list[str]) -> None:
    """Let `con` open only the files in `allowed`, for good (see the module docstring)."""
    con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


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
    run_id, current, history = _gather(staging, pipeline, run)
    allowed = sorted(  # parsed files (CSV) are read by their format: DuckDB opens none
        {
            f
            for outputs in history.values()
            for o in outputs
            for f in o.read_as.duckdb_paths(o.files)
        }
    )
    con = _open(threads=threads, memory_limit=memory_limit, temp_directory=temp_directory)
    try:
        con.execute("SET enable_progress_bar = false")  # a session option: not in config
        if not staging.local:
            con.register_filesystem(staging.fs)
        views = _view_sql(con, current, history)
        for view, sql in views:
            con.execute(f"CREATE VIEW {_ident(view)} AS {sql}")
        _lock_down(con, allowed)
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
