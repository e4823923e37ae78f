"""`PostgresSink`: staged bulk loads, appended, replaced or upserted in one transaction."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, get_args

import pyarrow as pa

from connectors.postgres.connection import (
    Dsn,
    check_target,
    close,
    connect,
    driver_errors,
    failure,
    fetch_rows,
    reason,
    resolve_conn,
)
from connectors.postgres.tables import Found, find_relation, missing_table
from connectors.postgres.targets import (
    Mode,
    add_primary_key,
    align,
    check_columns,
    check_kind,
    check_unique_key,
    column_names,
    match,
    swap_in,
)
from connectors.tables import (
    LEDGER,
    LEDGER_COLUMNS,
    Table,
    already_loaded,
    check_name,
    node_name,
    parse_table,
    quote_ident,
)
from etlkit.connector import Context, Node, Sink, WriteResult, arrow_schema
from etlkit.errors import ConfigError, ConnectorError, quoted

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Cursor

    from etlkit.connector import Model

logger = logging.getLogger(__name__)


class PostgresSink(Sink):
    """Loads its input into a PostgreSQL table, all of it or nothing, in one transaction.

    Chunks are bulk-loaded with ADBC ingest (binary COPY), never row by row, into a staging
    table `<table>__etlkit_<hex>`; the modes then differ in what happens to the target:

    - `append` inserts the staged rows (`INSERT ... SELECT`, so PostgreSQL converts types and
      the chunks' columns are matched to the table's by name, in any order; table columns the
      chunks lack get their defaults). A missing table is created from the chunks' columns.
    - `replace` loads into a new table and, at the end, drops the old one and renames the new
      one in its place. Until the commit, and forever if the load fails, the old table stays as
      it was. The new table has the chunks' columns: indexes, grants and comments of the old
      one are not carried over, and views or foreign keys depending on it make the swap fail.
    - `upsert` inserts the staged rows with `INSERT ... ON CONFLICT (key) DO UPDATE`: rows whose
      key exists are updated, the others inserted. The table needs a primary key or unique index
      on exactly the `key` columns; a table this sink creates gets a primary key on them.

    Any failure, including `RunCancelledError` raised by the input after some chunks, rolls the
    transaction back: the target is unchanged and the staging table is gone. With no chunks at
    all, a missing table is created empty from the model (when one is given) and `replace`
    empties an existing table. `table` is a template filled from the context (`{ds}`, params).

    Each load is committed exactly once: the same transaction inserts a row for the run's load
    id into `_etlkit_loads` in the target's schema (created when missing), and a retry of the
    run that finds its load id there does not load again.

        load = PostgresSink(cleaned, conn="hospital_db", table="clinic.patients",
                            mode="upsert", key=["patient_id"])

    Args:
        input: the node (or node name) whose chunks are loaded.
        dsn: `postgresql://user:password@host:port/database`; give this or `conn`.
        conn: the name of a connection (etlkit.toml or `ETLKIT_CONN_<NAME>`), resolved when
            the node runs.
        table: `table` or `schema.table` to load; a missing schema is created with the table.
        mode: `append`, `replace` or `upsert`.
        key: the columns identifying a row: the conflict target of `upsert`, and the primary
            key of a table this sink creates (in any mode).
        schema: the model the input must satisfy; gives the columns of an empty table.
        create: create the table when it is missing (else a missing table is an error).

    Raises:
        ConfigError: an unknown mode, `upsert` without `key`, a malformed table name or DSN, or
            neither or both of `dsn` and `conn`.
    """

    def __init__(
        self,
        input: Node | str,
        *,
        dsn: str | None = None,
        conn: str | None = None,
        table: str,
        mode: Mode = "append",
        key: Sequence[str] = (),
        schema: Model | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(input, schema=schema)
        owner = type(self).__name__
        if mode not in get_args(Mode):
            raise ConfigError(
                f"{owner}: mode must be one of {quoted(get_args(Mode))}, got {mode!r}."
            )
        self._dsn = check_target(dsn, conn, owner)
        check_name(table, owner)
        if "{" not in table:
            parse_table(table, owner)
        if isinstance(key, str):
            raise ConfigError(f"{owner}: key is a list of column names: write key=[{key!r}].")
        if mode == "upsert" and not key:
            raise ConfigError(
                f"{owner}: mode='upsert' needs key=[...], the columns identifying a row."
            )
        if len(set(key)) != len(key):
            raise ConfigError(f"{owner}: key {quoted(key)} names a column twice.")
        self.conn = conn
        self.table = table
        self.mode: Mode = mode
        self.key: tuple[str, ...] = tuple(key)
        self.create = create

    def __repr__(self) -> str:
        where = self._dsn.location(self.table) if self._dsn else f"conn={self.conn!r}"
        return f"<{type(self).__name__} {self.name or '(unnamed)'} {self.mode} {where}>"

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        """Load every chunk, then commit; on any failure roll back and re-raise.

        Exceptions raised by `batches` (such as `RunCancelledError`) propagate unchanged after
        the rollback.

        Raises:
            ConnectorError: the table is missing (with `create=False`), is not a table, lacks
                a unique index on `key` (upsert), a chunk's columns do not match it, or
                PostgreSQL rejects the data; nothing was written.
            PostgresTransientError: the server refused or dropped the connection, or a
                deadlock or lock timeout; nothing was written, a retry may succeed.
        """
        owner = node_name(self, ctx)
        table = parse_table(ctx.render(self.table), owner)
        dsn = self._dsn or resolve_conn(str(self.conn), owner)
        con = connect(dsn, owner)
        try:
            cur = con.cursor()
            try:
                rows, schema = self._load(cur, batches, table, dsn, owner)
                _record_load(cur, Table(schema, table.name), ctx, self.mode, rows)
                con.commit()
            except driver_errors() as exc:
                raise failure(
                    exc,
                    f"{owner}: loading table '{table.display}' into PostgreSQL {dsn.masked} "
                    f"failed: {reason(exc, dsn)}. Nothing was written.",
                ) from exc
        finally:
            close(con)  # rolls back whatever did not commit
        uri = dsn.location(table.display)
        logger.debug("%s: %s %d rows into %s", owner, self.mode, rows, uri)
        return WriteResult(rows=rows, uri=uri, extra={"mode": self.mode})

    def find_load(self, ctx: Context) -> WriteResult | None:
        """What this run's load wrote, if `_etlkit_loads` beside the target records it.

        Raises:
            ConnectorError: PostgreSQL could not be reached or refused the lookup.
        """
        owner = node_name(self, ctx)
        table = parse_table(ctx.render(self.table), owner)
        dsn = self._dsn or resolve_conn(str(self.conn), owner)
        con = connect(dsn, owner)
        try:
            cur = con.cursor()
            try:
                found = _find_load(cur, table, ctx.load_id)
            except driver_errors() as exc:
                raise failure(
                    exc,
                    f"{owner}: looking up load {ctx.load_id} beside table '{table.display}' in "
                    f"PostgreSQL {dsn.masked} failed: {reason(exc, dsn)}.",
                ) from exc
        finally:
            close(con)
        if found is None:
            return None
        rows, mode = found
        uri = dsn.location(table.display)  # as `write` names it
        return WriteResult(rows=rows, uri=uri, extra={"mode": mode, "load_id": ctx.load_id})

    def _load(
        self,
        cur: Cursor,
        batches: Iterator[pa.RecordBatch],
        table: Table,
        dsn: Dsn,
        owner: str,
    ) -> tuple[int, str]:
        """Stage every chunk and apply the mode, inside the open transaction; rows loaded and
        the target's schema."""
        cur.execute("SET TIME ZONE 'UTC'")
        where = f"table '{table.display}' in PostgreSQL {dsn.masked}"
        found, schema, existing = self._target(cur, table, dsn, owner, where)
        target = Table(schema, table.name)
        replace = self.mode == "replace"
        name = f"{table.name[:40]}__etlkit_{secrets.token_hex(4)}"
        stage = Table(schema, name) if replace else Table("pg_temp", name)

        def ingest(data: pa.RecordBatch | pa.Table, mode: Literal["create", "append"]) -> None:
            cur.adbc_ingest(
                name, data, mode, db_schema_name=schema if replace else None, temporary=not replace
            )

        first, rows = self._stage(batches, ingest, existing, dsn, owner, where)
        if first is None:  # no chunks at all
            if self.input_model is not None:
                first = arrow_schema(self.input_model)
                check_columns(first, existing, self.key, self.mode, owner, where, 0)
                ingest(first.empty_table(), "create")
            elif replace and found is not None:
                cur.execute(f"CREATE TABLE {stage.sql} (LIKE {found.table.sql})")
            else:
                return 0, schema  # nothing to change, and no columns to create a table from
        if replace:
            swap_in(cur, stage, found, target, self.key)
            return rows, schema
        assert first is not None
        if existing is None:
            cur.execute(f"CREATE TABLE {target.sql} (LIKE {stage.sql})")
            if self.key:
                add_primary_key(cur, target, self.key)
            existing = list(first.names)
        self._insert(cur, stage, target, list(first.names), existing, owner, where, dsn)
        cur.execute(f"DROP TABLE {stage.sql}")
        return rows, schema

    def _target(
        self, cur: Cursor, table: Table, dsn: Dsn, owner: str, where: str
    ) -> tuple[Found | None, str, list[str] | None]:
        """The target table if it exists, the schema it is (to be) in, and its columns."""
        found = find_relation(cur, table)
        if found is not None:
            check_kind(found, self.mode, owner, where)
            existing = column_names(cur, found.table)
            if self.mode == "upsert":
                check_unique_key(cur, found, existing, self.key, owner, where)
            return found, found.schema, existing
        if not self.create:
            hint = " Create it first, or pass create=True."
            raise ConnectorError(missing_table(cur, owner, table, dsn, hint))
        if table.schema is not None:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
        schema = table.schema or fetch_rows(cur, "SELECT current_schema()::text")[0][0]
        if schema is None:
            raise ConnectorError(
                f"{owner}: cannot create {where}: the search_path names no existing schema. "
                "Qualify the table ('schema.table') or fix the search_path."
            )
        return None, str(schema), None

    def _stage(
        self,
        batches: Iterator[pa.RecordBatch],
        ingest: Callable[[pa.RecordBatch | pa.Table, Literal["create", "append"]], None],
        existing: list[str] | None,
        dsn: Dsn,
        owner: str,
        where: str,
    ) -> tuple[pa.Schema | None, int]:
        """Every chunk ingested into the stage table: its schema (None: no chunks) and rows."""
        first: pa.Schema | None = None
        rows = 0
        for index, batch in enumerate(batches, start=1):
            if first is None:
                first = pa.schema(field.with_nullable(True) for field in batch.schema)
                check_columns(first, existing, self.key, self.mode, owner, where, index)
                ingest(first.empty_table(), "create")
            try:
                ingest(align(batch, first, owner, where, index), "append")
            except driver_errors() as exc:
                described = ", ".join(f"{f.name}: {f.type}" for f in batch.schema)
                raise failure(
                    exc,
                    f"{owner}: PostgreSQL rejected chunk {index} ({described}) for {where}: "
                    f"{reason(exc, dsn)}. Nothing was written.",
                ) from exc
            rows += batch.num_rows
            logger.debug("%s: chunk %d, %d rows staged", owner, index, batch.num_rows)
        return first, rows

    def _insert(
        self,
        cur: Cursor,
        stage: Table,
        target: Table,
        names: list[str],
        existing: list[str],
        owner: str,
        where: str,
        dsn: Dsn,
    ) -> None:
        """`INSERT` the staged rows into the target (`ON CONFLICT ... DO UPDATE` to upsert)."""
        into = [str(match(name, existing)) for name in names]
        sql = (
            f"INSERT INTO {target.sql} ({', '.join(map(quote_ident, into))}) "
            f"SELECT {', '.join(map(quote_ident, names))} FROM {stage.sql}"
        )
        if self.mode == "upsert":
            keys = [str(match(k, existing)) for k in self.key]
            updates = [
                f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in into if c not in keys
            ]
            sql += f" ON CONFLICT ({', '.join(map(quote_ident, keys))}) DO " + (
                f"UPDATE SET {', '.join(updates)}" if updates else "NOTHING"
            )
        try:
            cur.execute(sql)
        except driver_errors() as exc:
            hint = (
                f" The input holds some key {quoted(self.key)} more than once: make it unique "
                "upstream (for example with .expect(unique=[...]) on the input)."
                if getattr(exc, "sqlstate", None) == "21000"
                else ""
            )
            raise failure(
                exc,
                f"{owner}: {self.mode} into {where} failed: {reason(exc, dsn)}.{hint} "
                "Nothing was written.",
            ) from exc


def _find_load(cur: Cursor, table: Table, load_id: str) -> tuple[int, str] | None:
    """`(rows, mode)` of the load recorded in the ledger of `table`'s schema, if any."""
    if table.schema is None:
        regclass = "to_regclass(quote_ident(current_schema()) || '.' || $1)::text"
        name = quote_ident(LEDGER)
    else:
        regclass = "to_regclass($1)::text"
        name = Table(table.schema, LEDGER).sql
    ledger = fetch_rows(cur, f"SELECT {regclass}", [name])[0][0]
    if ledger is None:
        return None  # no load ever committed in this schema
    found = fetch_rows(
        cur,
        f"SELECT row_count, mode FROM {ledger} WHERE load_id = $1",
        [load_id],
    )
    return (int(found[0][0]), str(found[0][1])) if found else None


def _record_load(cur: Cursor, target: Table, ctx: Context, mode: Mode, rows: int) -> None:
    """Insert the load's ledger row, in the load's transaction (a second insert fails on the
    primary key, so two attempts racing cannot both commit)."""
    ledger = Table(target.schema, LEDGER)
    if fetch_rows(cur, "SELECT to_regclass($1)::text", [ledger.sql])[0][0] is None:
        # only when missing: CREATE needs the schema's CREATE privilege even if it exists
        cur.execute(f"CREATE TABLE IF NOT EXISTS {ledger.sql} ({LEDGER_COLUMNS})")
    try:
        cur.execute(
            f"INSERT INTO {ledger.sql} (load_id, pipeline, run_id, node, target, mode, row_count) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [ctx.load_id, ctx.pipeline, ctx.run_id, ctx.node, target.display, mode, rows],
        )
    except driver_errors() as exc:
        if getattr(exc, "sqlstate", None) != "23505":  # unique_violation
            raise
        raise ConnectorError(already_loaded(ctx, ledger.display)) from exc
