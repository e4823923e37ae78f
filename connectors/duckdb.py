"""DuckDB database files as sources and sinks.

`DuckDBTableSource` streams a table (or a query) out of a database file as Arrow record batches,
reading only the columns of its model. `DuckDBTableSink` loads record batches into a table inside
one transaction, so a failed or cancelled load leaves the table as it was.

DuckDB locks a database file: while a `DuckDBTableSink` writes a file, no other process can open
it, not even read-only, and a process holding it read-only keeps every writer out. Opening a
locked file raises `DatabaseLockedError`, which is a `TransientError`, so the node can be retried.
Inside one process, a read-only and a read-write connection to the same file cannot coexist
either (DuckDB refuses a second connection with a different configuration).

Neither class installs or autoloads DuckDB extensions, so nothing is written under `$HOME`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, get_args

import pyarrow as pa

from connectors.tables import (
    LEDGER,
    LEDGER_COLUMNS,
    Table,
    already_loaded,
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
    Node,
    Sink,
    Source,
    WriteResult,
    arrow_schema,
    bind_sql,
    column_names,
)
from etlkit.errors import ConfigError, ConnectorError, TransientError, quoted

if TYPE_CHECKING:
    import duckdb

    from etlkit.connector import Model

logger = logging.getLogger(__name__)

Mode = Literal["append", "replace"]

#: The name a chunk is registered under while it is loaded.
_CHUNK: Final = "__etlkit_chunk"


class DatabaseLockedError(ConnectorError, TransientError):
    """Another connection holds the DuckDB database file; retrying later may succeed."""


def _check_database(database: str, owner: str) -> None:
    if not database.strip() or database.startswith(":memory:"):
        raise ConfigError(
            f"{owner}: database {database!r} is not a file; an in-memory DuckDB database "
            "vanishes when its connection closes. Give the path of a database file."
        )


def _connect(path: Path, *, read_only: bool, threads: int, owner: str) -> duckdb.DuckDBPyConnection:
    """Open `path` with a modest thread count and extension autoloading off.

    Raises:
        DatabaseLockedError: another process (or connection in this one) holds the file.
        ConnectorError: the file cannot be opened as a DuckDB database.
    """
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = {
        "threads": threads,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.ConnectionException as exc:
        raise DatabaseLockedError(
            f"{owner}: DuckDB database '{path}' is already open in this process with other "
            "settings (a DuckDBTableSink writing it while a source reads it, or sources with "
            f"different threads=): {exc}. Run the nodes one after the other, or retry."
        ) from exc
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DatabaseLockedError(
                f"{owner}: DuckDB database '{path}' is locked by another process: {exc}. "
                "DuckDB allows one writer or several read-only readers at a time; retry "
                "when the other process is done."
            ) from exc
        raise ConnectorError(f"{owner}: cannot open DuckDB database '{path}': {exc}") from exc
    except duckdb.Error as exc:
        raise ConnectorError(f"{owner}: cannot open DuckDB database '{path}': {exc}") from exc
    # A connection setting, not a database one: without it long queries draw on the terminal.
    con.execute("SET enable_progress_bar = false")
    return con


def _table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every table and view of the open database file, `schema.` omitted for `main`."""
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND NOT internal "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE database_name = current_database() AND NOT internal"
    ).fetchall()
    return sorted(
        str(name) if schema == "main" else f"{schema}.{name}"
        for schema, name in rows
        if name != LEDGER  # the sinks' bookkeeping, not a table users load or read
    )


def _table_columns(con: duckdb.DuckDBPyConnection, table: Table) -> list[str] | None:
    """The columns of a table or view, None when it does not exist.

    Binding a SELECT is cheap, while the first read of the catalog functions
    (`duckdb_tables()`) is not, so those are asked only to explain an error.
    """
    import duckdb

    try:
        return list(con.sql(f"SELECT * FROM {table.sql}").columns)
    except duckdb.CatalogException:
        return None


def _check_positive(value: int | None, what: str, owner: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{owner}: {what} must be at least 1, got {value}.")


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
        _check_database(database, owner)
        if table is not None:
            check_name(table, owner)
            if "{" not in table:
                parse_table(table, owner)
        _check_positive(chunk_rows, "chunk_rows", owner)
        _check_positive(threads, "threads", owner)
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
        con = _connect(path, read_only=True, threads=self.threads, owner=owner)
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
                available = _table_columns(con, table)
                if available is None:
                    names = _table_names(con)
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


class DuckDBTableSink(Sink):
    """Loads its input into a DuckDB table, all of it or nothing, in one transaction.

    The database file (and its directory) is created when missing. Each chunk is handed to
    DuckDB as Arrow and inserted with one `INSERT ... SELECT`, never row by row.

    - `append` adds the rows to the table, creating it from the first chunk's columns if it is
      missing. Chunks must have exactly the table's columns (matched by name, in any order).
    - `replace` rebuilds the table from the chunks (`CREATE OR REPLACE TABLE` inside the
      transaction): until the commit, and forever if the load fails, the old table stays.

    With no chunks at all, a missing table is created empty from the model (when one is given);
    `replace` empties an existing table. `database` and `table` are templates filled from the
    context (`{ds}`, params).

    Each load is committed exactly once: the same transaction inserts a row for the run's load
    id into `_etlkit_loads` in the target's schema (created when missing), and a retry of the
    run that finds its load id there does not load again.

        report = DuckDBTableSink("warehouse/report.duckdb", "analytics.totals", totals,
                                 mode="replace")

    Args:
        database: path of the database file.
        table: `table` or `schema.table` to load; a missing schema is created.
        input: the node (or node name) whose chunks are loaded.
        mode: `append` or `replace`.
        schema: the model the input must satisfy; gives the columns of an empty table.
        threads: DuckDB worker threads (default 1: the sink runs beside other nodes).

    Raises:
        ConfigError: an unknown mode or a malformed table name.
    """

    def __init__(
        self,
        database: str,
        table: str,
        input: Node | str,
        *,
        mode: Mode = "append",
        schema: Model | None = None,
        threads: int = 1,
    ) -> None:
        super().__init__(input, schema=schema)
        owner = type(self).__name__
        if mode not in get_args(Mode):
            raise ConfigError(f"{owner}: mode must be 'append' or 'replace', got {mode!r}.")
        _check_database(database, owner)
        check_name(table, owner)
        if "{" not in table:
            parse_table(table, owner)
        _check_positive(threads, "threads", owner)
        self.database = database
        self.table = table
        self.mode: Mode = mode
        self.threads = threads

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        """Load every chunk, then commit; on any failure roll back and re-raise.

        Exceptions raised by `batches` (such as `RunCancelledError`) propagate unchanged after
        the rollback. A database file this call created is removed again when the load fails.

        Raises:
            ConnectorError: a chunk's columns do not match the table, or DuckDB rejects a
                chunk (a type that does not convert); nothing was written.
            DatabaseLockedError: another connection holds the database file.
        """
        import duckdb

        owner = node_name(self, ctx)
        table = parse_table(ctx.render(self.table), owner)
        path = Path(ctx.render(self.database))
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        con = _connect(path, read_only=False, threads=self.threads, owner=owner)
        committed = False
        try:
            con.begin()
            try:
                rows = self._load(con, batches, table, path, owner)
                _record_load(con, table, ctx, self.mode, rows)
                con.commit()
            except BaseException:
                with suppress(duckdb.Error):
                    con.rollback()
                raise
            committed = True
        except duckdb.Error as exc:
            raise ConnectorError(
                f"{owner}: loading table '{table.display}' in DuckDB database '{path}' failed: "
                f"{exc}. Nothing was written."
            ) from exc
        finally:
            con.close()
            if created and not committed:
                for leftover in (path, path.with_name(path.name + ".wal")):
                    leftover.unlink(missing_ok=True)
        uri = f"duckdb://{path.resolve()}/{table.display}"
        logger.debug("%s: %s %d rows into %s", owner, self.mode, rows, uri)
        return WriteResult(rows=rows, uri=uri, extra={"mode": self.mode})

    def find_load(self, ctx: Context) -> WriteResult | None:
        """What this run's load wrote, if `_etlkit_loads` beside the target records it.

        Raises:
            DatabaseLockedError: another connection holds the database file.
        """
        import duckdb

        owner = node_name(self, ctx)
        table = parse_table(ctx.render(self.table), owner)
        path = Path(ctx.render(self.database))
        if not path.exists():
            return None
        con = _connect(path, read_only=True, threads=self.threads, owner=owner)
        try:
            ledger = Table(table.schema, LEDGER)
            if _table_columns(con, ledger) is None:
                return None
            found = con.execute(
                f"SELECT row_count, mode FROM {ledger.sql} WHERE load_id = ?",
                [ctx.load_id],
            ).fetchone()
        except duckdb.Error as exc:
            raise ConnectorError(
                f"{owner}: looking up load {ctx.load_id} in DuckDB database '{path}' failed: {exc}."
            ) from exc
        finally:
            con.close()
        if found is None:
            return None
        rows, mode = found
        return WriteResult(
            rows=int(rows),
            uri=f"duckdb://{path.resolve()}/{table.display}",  # as `write` names it
            extra={"mode": mode, "load_id": ctx.load_id},
        )

    def _load(
        self,
        con: duckdb.DuckDBPyConnection,
        batches: Iterator[pa.RecordBatch],
        table: Table,
        path: Path,
        owner: str,
    ) -> int:
        """Insert every chunk inside the open transaction; the number of rows inserted."""
        existing = _table_columns(con, table)  # a failed lookup leaves the transaction usable
        if table.schema is not None and existing is None:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
        # The table's columns once it exists in the transaction; None until the first chunk
        # creates it (always so in replace mode).
        columns = existing if self.mode == "append" else None
        where = f"table '{table.display}' in DuckDB database '{path}'"
        rows = 0
        for index, batch in enumerate(batches, start=1):
            if columns is None:
                _insert(con, f"CREATE OR REPLACE TABLE {table.sql} AS", batch, owner, where, index)
                columns = list(batch.schema.names)
            else:
                _check_columns(batch, columns, owner, where, index)
                _insert(con, f"INSERT INTO {table.sql} BY NAME", batch, owner, where, index)
            rows += batch.num_rows
            logger.debug("%s: chunk %d, %d rows", owner, index, batch.num_rows)
        if columns is None:  # no chunks at all
            if self.input_model is not None:
                empty = arrow_schema(self.input_model).empty_table()
                _insert(con, f"CREATE OR REPLACE TABLE {table.sql} AS", empty, owner, where, 0)
            elif existing is not None and self.mode == "replace":
                con.execute(f"DELETE FROM {table.sql}")
        return rows


def _record_load(
    con: duckdb.DuckDBPyConnection, table: Table, ctx: Context, mode: Mode, rows: int
) -> None:
    """Insert the load's ledger row, in the load's transaction (a second insert fails on the
    primary key, so two attempts cannot both commit)."""
    import duckdb

    ledger = Table(table.schema, LEDGER)
    con.execute(f"CREATE TABLE IF NOT EXISTS {ledger.sql} ({LEDGER_COLUMNS})")
    try:
        con.execute(
            f"INSERT INTO {ledger.sql} (load_id, pipeline, run_id, node, target, mode, row_count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [ctx.load_id, ctx.pipeline, ctx.run_id, ctx.node, table.display, mode, rows],
        )
    except duckdb.ConstraintException as exc:
        raise ConnectorError(already_loaded(ctx, ledger.display)) from exc


def _check_columns(
    batch: pa.RecordBatch, columns: list[str], owner: str, where: str, index: int
) -> None:
    """Refuse a chunk whose columns are not the table's (names compare case-insensitively)."""
    have = {name.lower() for name in batch.schema.names}
    want = {name.lower() for name in columns}
    missing = [c for c in columns if c.lower() not in have]
    extra = [c for c in batch.schema.names if c.lower() not in want]
    if missing or extra:
        found = [
            *([f"missing column(s) {quoted(missing)}"] if missing else []),
            *([f"extra column(s) {quoted(extra)}"] if extra else []),
        ]
        raise ConnectorError(
            f"{owner}: chunk {index} does not match {where}: {' and '.join(found)}; "
            f"the table has {listing(columns)}. "
            "Nothing was written. Select the table's columns upstream, or use mode='replace' "
            "to rebuild the table."
        )


def _insert(
    con: duckdb.DuckDBPyConnection,
    statement: str,
    data: pa.RecordBatch | pa.Table,
    owner: str,
    where: str,
    index: int,
) -> None:
    """Run `statement` `SELECT * FROM` one chunk, handed to DuckDB as Arrow (no row loop).

    Raises:
        ConnectorError: DuckDB rejects the chunk (the message names it; 0 is the empty table).
    """
    import duckdb

    con.register(_CHUNK, data)
    try:
        con.execute(f"{statement} SELECT * FROM {_CHUNK}")
    except duckdb.Error as exc:
        columns = ", ".join(f"{f.name}: {f.type}" for f in data.schema)
        raise ConnectorError(
            f"{owner}: DuckDB rejected chunk {index} ({columns}) for {where}: {exc}. "
            "Nothing was written."
        ) from exc
    finally:
        with suppress(duckdb.Error):
            con.unregister(_CHUNK)
