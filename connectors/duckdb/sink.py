"""`DuckDBTableSink`: record batches loaded into a DuckDB table in one transaction, once."""

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
    listing,
    node_name,
    parse_table,
    quote_ident,
)
from etlkit.connector import (
    Context,
    Node,
    Sink,
    WriteResult,
    arrow_schema,
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
)

logger = logging.getLogger(__name__)

Mode = Literal["append", "replace"]

#: The name a chunk is registered under while it is loaded.
_CHUNK: Final = "__etlkit_chunk"


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
        check_database(database, owner)
        check_name(table, owner)
        if "{" not in table:
            parse_table(table, owner)
        check_positive(threads, "threads", owner)
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
        con = connect(path, read_only=False, threads=self.threads, owner=owner)
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
        con = connect(path, read_only=True, threads=self.threads, owner=owner)
        try:
            ledger = Table(table.schema, LEDGER)
            if table_columns(con, ledger) is None:
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
        existing = table_columns(con, table)  # a failed lookup leaves the transaction usable
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
