"""`DuckDBTableSource`: a table, view or query of a DuckDB database file, streamed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from connectors.tables import (
    check_name,
    closest_name,
    conform_batch,
    listing,
    node_name,
    parse_table,
    quote_ident,
)
from etlkit.connector import (
    Context,
    Source,
    arrow_schema,
    bind_sql,
    column_names,
)
from etlkit.errors import ConfigError, ConnectorError, quoted

if TYPE_CHECKING:
    import duckdb

    from etlkit.connector import Model


from connectors.duckdb.connection import (
    check_database,
    check_positive,
    connect,
    table_columns,
    table_names,
)

logger = logging.getLogger(__name__)


class DuckDBTableSource(Source):
    """Streams a table, view or query out of a DuckDB database file, one chunk at a time.

    The file is opened read-only and only the model's columns are read, cast to the model's
    Arrow types (every field nullable: nulls are reported by validation, not here). Column names
    match case-insensitively, as in DuckDB. `database`, `table` and `query` are templates filled
    from the context (`{ds}`, params); write literal braces in a query as `{{` and `}}`.

        source = DuckDBTableSource("warehouse/{ds}.duckdb", table="analytics.patients",
                                   schema=Patients)

    Args:
        database: path of the database file.
        table: `table` or `schema.table` to read; give this or `query`.
        query: a SELECT whose result is read; give this or `table`.
        schema: the model to read: its columns and types.
        chunk_rows: rows per batch (default: the context's `chunk_rows`); DuckDB honours it,
            only the last batch is shorter.
        threads: DuckDB worker threads (default 1: the source runs beside other nodes).

    Raises:
        ConfigError: neither or both of `table` and `query`, or a malformed table name.
    """

    def __init__(
        self,
        database: str,
        *,
        table: str | None = None,
        query: str | None = None,
        schema: Model,
        chunk_rows: int | None = None,
        threads: int = 1,
    ) -> None:
        super().__init__(schema=schema)
        owner = type(self).__name__
        if (table is None) == (query is None):
            got = "both" if table is not None else "neither"
            raise ConfigError(f"{owner} takes exactly one of table= or query=; got {got}.")
        check_database(database, owner)
        if table is not None:
            check_name(table, owner)
            if "{" not in table:
                parse_table(table, owner)
        check_positive(chunk_rows, "chunk_rows", owner)
        check_positive(threads, "threads", owner)
        self.database = database
        self.table = table
        self.query = query
        self.model: Model = schema
        self.chunk_rows = chunk_rows
        self.threads = threads

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        """Yield the model's columns, `chunk_rows` rows at a time.

        Raises:
            ConnectorError: the database file, table or a column is missing, the query fails,
                or a column cannot be cast to the model's type.
            DatabaseLockedError: a writer holds the database file.
        """
        import duckdb

        owner = node_name(self, ctx)
        rendered = ctx.render(self.database)
        path = Path(rendered)
        if not path.is_file():
            raise ConnectorError(
                f"{owner}: DuckDB database '{path}' does not exist"
                + (f" (rendered from {self.database!r})" if rendered != self.database else "")
                + "; check the path, or run the pipeline that creates it first."
            )
        target = pa.schema(f.with_nullable(True) for f in arrow_schema(self.model))
        con = connect(path, read_only=True, threads=self.threads, owner=owner)
        reader: pa.RecordBatchReader | None = None
        try:
            sql, what, params = self._select(con, ctx, path, owner)
            try:
                reader = con.sql(sql, params=params).to_arrow_reader(
                    self.chunk_rows or ctx.chunk_rows
                )
            except duckdb.Error as exc:
                raise ConnectorError(f"{owner}: reading {what} in '{path}' failed: {exc}") from exc
            chunks = 0
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except OSError as exc:  # DuckDB errors surface from the reader as OSError
                    raise ConnectorError(
                        f"{owner}: reading {what} in '{path}' failed after {chunks} chunk(s): {exc}"
                    ) from exc
                chunks += 1
                logger.debug("%s: chunk %d, %d rows", owner, chunks, batch.num_rows)
                yield conform_batch(batch, target, owner, what)
        finally:
            if reader is not None:
                reader.close()  # before the connection: reading after close hangs in DuckDB 2.0
            con.close()

    def _select(
        self, con: duckdb.DuckDBPyConnection, ctx: Context, path: Path, owner: str
    ) -> tuple[str, str, dict[str, str] | None]:
        """The projecting SELECT to run, what it reads (for messages) and its bound params."""
        import duckdb

        params: dict[str, str] | None = None
        try:
            if self.table is not None:
                table = parse_table(ctx.render(self.table), owner)
                relation, what = table.sql, f"table '{table.display}'"
                available = table_columns(con, table)
                if available is None:
                    names = table_names(con)
                    closest = closest_name(table.display, names)
                    raise ConnectorError(
                        f"{owner}: {what} not found in DuckDB database '{path}'; "
                        + (f"tables are {listing(names)}." if names else "it has no tables.")
                        + (f" Did you mean '{closest}'?" if closest else "")
                    )
            else:
                assert self.query is not None
                bound = bind_sql(self.query, ctx)  # params are bound values, never SQL
                text, params = bound.text.strip().rstrip(";").strip(), bound.params or None
                relation, what = f"({text}) AS _etlkit_query", "the query"
                available = list(con.sql(f"SELECT * FROM {relation}", params=params).columns)
        except duckdb.Error as exc:
            raise ConnectorError(f"{owner}: {what} in '{path}' cannot be read: {exc}") from exc
        by_lower: dict[str, str] = {}
        for column in available:
            by_lower.setdefault(column.lower(), column)
        wanted_columns = column_names(self.model)
        missing = [c for c in wanted_columns if c.lower() not in by_lower]
        if missing:
            hints = "".join(
                f" Did you mean '{closest}'" + (f" for '{column}'?" if len(missing) > 1 else "?")
                for column in missing
                if (closest := closest_name(column, available))
            )
            raise ConnectorError(
                f"{owner}: {what} in DuckDB database '{path}' has no column(s) {quoted(missing)} "
                f"that {self.model.__name__} declares; its columns are {listing(available)}."
                + hints
            )
        projection = ", ".join(
            f"{quote_ident(by_lower[c.lower()])} AS {quote_ident(c)}" for c in wanted_columns
        )
        return f"SELECT {projection} FROM {relation}", what, params
