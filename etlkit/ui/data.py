"""The data page: a run's staged output, rejects and failures, queried as `etlkit query` does.

Every query goes through `querying.connect`: an in-memory DuckDB whose only views are the
pipeline's committed outputs, with file access limited to those parts and the configuration
locked, and `querying.query_connection`, which refuses COPY and EXPORT.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from etlkit.errors import QueryError, StagingError
from etlkit.storage import querying
from etlkit.storage.staging import Staging, check_path_part

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from etlkit.settings.config import Settings
    from etlkit.storage.store import RunRecord

#: Rows shown of an output or a query result.
PREVIEW_ROWS: Final = 50
#: Runs compared in the run-to-run chart.
COMPARED_RUNS: Final = 30


@dataclass(frozen=True)
class Result:
    """A query result as the page shows it: column names and types, rows as text."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total: int


@dataclass(frozen=True)
class DataPage:
    """One staged output of one run."""

    name: str
    view: str
    staged: tuple[str, ...]
    rows: int
    schema: tuple[tuple[str, str], ...]
    preview: Result
    summary: Result
    history: tuple[tuple[str, int], ...]
    views: tuple[str, ...]
    result: Result | None
    error: str | None


def view_name(name: str) -> str:
    """The query view of a staged name (`totals.rejects` is `totals_rejects`)."""
    return name.replace(".", "_")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def staged_names(record: RunRecord) -> list[str]:
    """The staged names committed in a run (its nodes' outputs, rejects and failures).

    Raises:
        StagingError: the staging root cannot be read.
    """
    return Staging(record.staging_root).committed(record.pipeline, record.run_id)


def _checked(record: RunRecord, name: str) -> list[str]:
    check_path_part("staged name", name)
    staged = staged_names(record)
    if name not in staged:
        raise StagingError(
            f"Run {record.run_id} of '{record.pipeline}' has no committed output named "
            f"{name!r}; it has {staged or 'none'}"
        )
    return staged


def _result(table: pa.Table, limit: int = PREVIEW_ROWS) -> Result:
    shown = table.slice(0, limit).to_pylist()
    columns = tuple(table.column_names)
    return Result(
        columns=columns,
        types=tuple(str(t) for t in table.schema.types),
        rows=tuple(tuple(_cell(row[c]) for c in columns) for row in shown),
        total=table.num_rows,
    )


def _cell(value: object) -> str:
    return "NULL" if value is None else str(value)


def _connect(record: RunRecord, settings: Settings) -> duckdb.DuckDBPyConnection:
    return querying.connect(
        Staging(record.staging_root),
        record.pipeline,
        record.run_id,
        threads=settings.duckdb.threads or None,
        memory_limit=settings.duckdb.memory_limit,
        temp_directory=settings.duckdb.temp_directory,
    )


def data_page(record: RunRecord, name: str, settings: Settings, sql: str | None) -> DataPage:
    """The output `name` of the run: first rows, schema, row count, column summaries, its
    row counts over the last runs (from `all_<view>`), and the result of `sql`, if given.

    Raises:
        StagingError: `name` is not a committed output of the run.
        QueryError: the views cannot be created.
    """
    staged = _checked(record, name)
    view = view_name(name)
    con = _connect(record, settings)
    with closing(con):
        views = querying.view_names(con)
        table = querying.query_connection(
            con, f"SELECT * FROM {_quoted(view)} LIMIT {PREVIEW_ROWS:d}"
        )
        count = querying.query_connection(con, f"SELECT count(*) AS n FROM {_quoted(view)}")
        summary = querying.query_connection(con, f"SUMMARIZE {_quoted(view)}")
        history = querying.query_connection(
            con,
            f"SELECT run_id, count(*) AS n FROM {_quoted('all_' + view)} GROUP BY run_id"
            f" ORDER BY run_id DESC LIMIT {COMPARED_RUNS:d}",
        )
        result, error = None, None
        if sql:
            try:
                result = _result(querying.query_connection(con, sql))
            except QueryError as exc:
                error = str(exc)
    points = sorted((str(r["run_id"]), int(r["n"])) for r in history.to_pylist())
    return DataPage(
        name=name,
        view=view,
        staged=tuple(staged),
        rows=int(count.column(0)[0].as_py()),
        schema=tuple((f.name, str(f.type)) for f in table.schema),
        preview=_result(table),
        summary=_result(summary, limit=1000),
        history=tuple(points),
        views=tuple(views),
        result=result,
        error=error,
    )


def download(
    record: RunRecord,
    name: str,
    settings: Settings,
    sql: str | None,
    fmt: Literal["csv", "parquet"],
) -> bytes:
    """The output `name` (or the result of `sql` over the run's views) as CSV or Parquet.

    Raises:
        StagingError: `name` is not a committed output of the run.
        QueryError: the SQL fails.
    """
    _checked(record, name)
    con = _connect(record, settings)
    with closing(con):
        table = querying.query_connection(con, sql or f"SELECT * FROM {_quoted(view_name(name))}")
    if fmt == "csv":
        text = querying.write_result(table, "csv", None)
        return (text or "").encode()
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def compared(points: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """The chart's points: run ids shortened to their time part."""
    return [(run_id.split("-", 1)[0], rows) for run_id, rows in points]
