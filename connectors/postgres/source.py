"""`PostgresSource`: a table, view or query read in one snapshot, optionally range by range."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Any, Final, Self

import pyarrow as pa

from connectors.postgres.columns import (
    pg_type,
    projection_sql,
    readable_types,
    relation_columns,
)
from connectors.postgres.connection import (
    Dsn,
    check_target,
    close,
    connect,
    driver_errors,
    failure,
    reason,
    resolve_conn,
)
from connectors.postgres.ranges import bounds, conditions, literal, partition_field
from connectors.postgres.tables import find_relation, missing_table
from connectors.tables import (
    check_name,
    closest_name,
    conform_batch,
    listing,
    node_name,
    parse_table,
    quote_ident,
)
from etlkit.connector import Context, Partition, Source, arrow_schema, bind_sql, columns
from etlkit.errors import ConfigError, ConnectorError, quoted

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Cursor

    from etlkit.connector import Model

logger = logging.getLogger(__name__)

#: The alias of the relation a source reads (a table, or the user's query as a subquery).
_ALIAS: Final = '"_etlkit_rel"'


def _constant(value: str) -> str:
    """`value` as a dollar-quoted string constant, its tag one the value does not contain, so
    that no value ends it, whatever the session's `standard_conforming_strings`."""
    tag = next(t for t in (f"etlkit{n}" for n in count()) if f"${t}" not in value)
    return f"${tag}${value}${tag}$"


def _check_positive(value: int | None, what: str, owner: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{owner}: {what} must be at least 1, got {value}.")


@dataclass(frozen=True)
class _Plan:
    """What a source reads: the projecting SELECT, its filters and the relation's columns."""

    select: str
    relation: str
    what: str
    columns: pa.Schema
    filters: tuple[str, ...]

    def sql(self, *extra: str) -> str:
        where = [*self.filters, *extra]
        return self.select + (" WHERE " + " AND ".join(f"({w})" for w in where) if where else "")


class PostgresSource(Source):
    """Streams a PostgreSQL table, view or query, one chunk at a time, through ADBC.

    Only the model's columns are read, cast in SQL to the model's types (every field nullable:
    nulls are reported by validation, not here). `numeric` reads as integers (when it has no
    fractional scale; PostgreSQL rounds an unconstrained one), floats, decimals or text; json,
    jsonb, uuid and enums as text; `timestamptz` as naive UTC for a `pl.Datetime` without a time
    zone. A column whose type does not map raises `ConnectorError` naming it: cast it in a query
    instead. Model columns match the relation's exactly, else case-insensitively. `table` and
    `query` are templates filled from the context (`{ds}`, params); write literal braces in a
    query as `{{` and `}}`.

        patients = PostgresSource(conn="hospital_db", table="clinic.patients", schema=Patient,
                                  partition_column="patient_id", partitions=4)

    Everything is read in one read-only REPEATABLE READ transaction, so a partitioned read sees
    one snapshot. With `partition_column` and `partitions=N`, the column's minimum and maximum
    are queried, split into N ranges (plus one for its nulls) and the ranges are read **one after
    another, in order, on the same connection**: this bounds each query and keeps the snapshot,
    but it is not parallel. Parallelism comes from the engine running nodes side by side.

    Args:
        dsn: `postgresql://user:password@host:port/database`; give this or `conn`.
        conn: the name of a connection (etlkit.toml or `ETLKIT_CONN_<NAME>`), resolved when
            the node runs.
        table: `table` or `schema.table` to read; give this or `query`.
        query: a SELECT whose result is read (as a subquery); give this or `table`.
        schema: the model to read: its columns and types.
        chunk_rows: at most this many rows per batch (default: the context's `chunk_rows`).
            ADBC's batches are sliced (no copy), so some batches are shorter.
        partition_column: a numeric, date or timestamp column of the relation to split reads on.
        partitions: how many ranges to read (1: no partitioning).
        incremental_column: the column `read_since` filters on (`column > last value`; the
            run's incremental reads take `column >= last value`, see `Node.incremental`).

    Raises:
        ConfigError: neither or both of `table` and `query` (or `dsn` and `conn`), a malformed
            table name or DSN, or `partitions > 1` without a `partition_column`.
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        conn: str | None = None,
        table: str | None = None,
        query: str | None = None,
        schema: Model,
        chunk_rows: int | None = None,
        partition_column: str | None = None,
        partitions: int = 1,
        incremental_column: str | None = None,
    ) -> None:
        super().__init__(schema=schema)
        owner = type(self).__name__
        if (table is None) == (query is None):
            got = "both" if table is not None else "neither"
            raise ConfigError(f"{owner} takes exactly one of table= or query=; got {got}.")
        self._dsn = check_target(dsn, conn, owner)
        if table is not None:
            check_name(table, owner)
            if "{" not in table:
                parse_table(table, owner)
        _check_positive(chunk_rows, "chunk_rows", owner)
        _check_positive(partitions, "partitions", owner)
        if partitions > 1 and partition_column is None:
            raise ConfigError(f"{owner}: partitions={partitions} needs a partition_column.")
        self.conn = conn
        self.table = table
        self.query = query
        self.model: Model = schema
        self.chunk_rows = chunk_rows
        self.partition_column = partition_column
        self.partition_count = partitions  # `partitions` is the method of `Source`
        self.incremental_column = incremental_column
        if incremental_column is not None:
            self.incremental(incremental_column)  # the run keeps the cursor between runs

    def incremental(self, cursor: str, *, primary_key: Sequence[str] = ()) -> Self:
        """Load only rows not loaded yet (see `Node.incremental`); `column >= cursor` runs in
        PostgreSQL, the rows already loaded at the cursor's value are dropped as they stream."""
        self.incremental_column = cursor
        return super().incremental(cursor, primary_key=primary_key)

    def __repr__(self) -> str:
        where = self._dsn.masked if self._dsn is not None else f"conn={self.conn!r}"
        read = f"table={self.table!r}" if self.table is not None else "query=..."
        return f"<{type(self).__name__} {self.name or '(unnamed)'} {where} {read}>"

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        """Yield the model's columns, at most `chunk_rows` rows at a time.

        Raises:
            ConnectorError: the table or a column is missing, a column's type does not map to
                the model's, the query fails, or the server cannot be reached.
            PostgresTransientError: the server refused or dropped the connection.
        """
        pushed = ctx.cursor if self.cursor_column is not None else None
        # inclusive: rows that arrived late at the stored value are loaded; the run drops
        # the ones already loaded (`Node.incremental`)
        yield from self.read_since(ctx, pushed, inclusive=True)

    def partitions(self, ctx: Context) -> Sequence[Partition] | None:
        """With `partition_column` and `partitions > 1`, the ranges `read` reads one after
        another, one partition each (`{"low": ..., "high": ...}`, the cuts as literal text;
        `{"null": True}`; `{}` when the column has no two distinct values); None otherwise.

        `read` reads every range in one snapshot; each `read_partition` reads in a
        transaction of its own, so partitions read at different times see the table as it is
        then: a row whose partition column changes in between may be read twice or not at
        all. Partition a column whose values do not change (an id, a creation time).

        Raises:
            ConnectorError: as for `read`; PostgresTransientError as well.
        """
        if self.partition_column is None or self.partition_count == 1:
            return None
        owner = node_name(self, ctx)
        dsn = self._dsn or resolve_conn(str(self.conn), owner)
        pushed = ctx.cursor if self.cursor_column is not None else None
        con = connect(dsn, owner)
        try:
            cur = con.cursor()
            try:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SET TIME ZONE 'UTC'")
                plan = self._plan(cur, ctx, owner, dsn, pushed, inclusive=True)
                ranges = self._bounds(cur, plan, owner)
            except driver_errors() as exc:
                raise failure(
                    exc,
                    f"{owner}: splitting the source in PostgreSQL {dsn.masked} into ranges "
                    f"failed: {reason(exc, dsn)}",
                ) from exc
        finally:
            close(con)
        label = f"{self.partition_column}-{{}}-of-{len(ranges)}"
        return [
            Partition.labelled(label.format(index), bound)
            for index, bound in enumerate(ranges, start=1)
        ]

    def read_partition(self, ctx: Context, partition: Partition) -> Iterator[pa.RecordBatch]:
        """Read one range of `partitions`, as `read` reads it (in a transaction of its own).

        Raises:
            ConnectorError: as for `read`, or the partition is not a range of this source.
            PostgresTransientError: the server refused or dropped the connection.
        """
        owner = node_name(self, ctx)
        dsn = self._dsn or resolve_conn(str(self.conn), owner)
        pushed = ctx.cursor if self.cursor_column is not None else None
        yield from self._read(ctx, owner, dsn, pushed, True, partition.data)

    def read_since(
        self, ctx: Context, last_value: str | None, *, inclusive: bool = False
    ) -> Iterator[pa.RecordBatch]:
        """Like `read`, only rows whose `incremental_column` is greater than `last_value` (or
        equal to it, with `inclusive`).

        The filter is pushed down (`WHERE column > 'last_value'`, the literal taking the
        column's type); `None` reads everything. Storing the high-water mark between runs is
        the caller's business.

        Raises:
            ConfigError: `last_value` is given but the source has no `incremental_column`.
            ConnectorError: as for `read`, or the incremental column is missing.
        """
        owner = node_name(self, ctx)
        if last_value is not None and self.incremental_column is None:
            raise ConfigError(f"{owner}: read_since(last_value=...) needs incremental_column=.")
        dsn = self._dsn or resolve_conn(str(self.conn), owner)
        yield from self._read(ctx, owner, dsn, last_value, inclusive)

    def _read(
        self,
        ctx: Context,
        owner: str,
        dsn: Dsn,
        last_value: str | None,
        inclusive: bool,
        bound: Mapping[str, Any] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Every range of the read, in order, or only the range `bound` (a partition's)."""
        target = pa.schema(f.with_nullable(True) for f in arrow_schema(self.model))
        chunk_rows = self.chunk_rows or ctx.chunk_rows
        con = connect(dsn, owner)
        reader: pa.RecordBatchReader | None = None
        what, chunks = "the source", 0
        try:
            cur = con.cursor()
            try:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SET TIME ZONE 'UTC'")
                plan = self._plan(cur, ctx, owner, dsn, last_value, inclusive)
                what = plan.what
                ranges = (
                    self._ranges(cur, plan, owner)
                    if bound is None
                    else [self._conditions(plan, bound, owner)]
                )
                for extra in ranges:
                    cur.execute(plan.sql(*extra))
                    reader = cur.fetch_record_batch()
                    for batch in reader:
                        for start in range(0, max(batch.num_rows, 1), chunk_rows):
                            chunks += 1
                            piece = batch.slice(start, chunk_rows)
                            logger.debug("%s: chunk %d, %d rows", owner, chunks, piece.num_rows)
                            yield conform_batch(piece, target, owner, what)
                    reader.close()
                    reader = None
            except driver_errors() as exc:
                raise failure(
                    exc,
                    f"{owner}: reading {what} from PostgreSQL {dsn.masked} failed"
                    + (f" after {chunks} chunk(s)" if chunks else "")
                    + f": {reason(exc, dsn)}",
                ) from exc
        finally:
            if reader is not None:
                with suppress(*driver_errors()):
                    reader.close()
            close(con)

    def _plan(
        self,
        cur: Cursor,
        ctx: Context,
        owner: str,
        dsn: Dsn,
        last_value: str | None,
        inclusive: bool = False,
    ) -> _Plan:
        """The projecting SELECT, after checking the relation, its columns and their types."""
        relation, what = self._relation(cur, ctx, owner, dsn)
        try:
            available = relation_columns(cur, relation)
        except driver_errors() as exc:
            raise ConnectorError(
                f"{owner}: {what} in PostgreSQL {dsn.masked} cannot be read: {reason(exc, dsn)}"
            ) from exc
        fields = {field.name: field for field in available}
        by_lower: dict[str, str] = {}
        for name in fields:
            by_lower.setdefault(name.lower(), name)

        def actual(column: str) -> str | None:
            return column if column in fields else by_lower.get(column.lower())

        wanted = columns(self.model)
        extra = [c for c in (self.partition_column, self.incremental_column) if c is not None]
        missing = [c for c in [s.name for s in wanted] + extra if actual(c) is None]
        if missing:
            names = list(fields)
            hints = "".join(
                f" Did you mean '{closest}'" + (f" for '{column}'?" if len(missing) > 1 else "?")
                for column in missing
                if (closest := closest_name(column, names))
            )
            raise ConnectorError(
                f"{owner}: {what} in PostgreSQL {dsn.masked} has no column(s) {quoted(missing)} "
                f"that {self.model.__name__} declares or the source reads; its columns are "
                f"{listing(names)}." + hints
            )
        projection = []
        for spec in wanted:
            name = str(actual(spec.name))
            expression = projection_sql(name, fields[name], spec)
            if expression is None:
                raise ConnectorError(
                    f"{owner}: column '{name}' of {what} is PostgreSQL type "
                    f"{pg_type(fields[name])}, which cannot be read as {spec.dtype}, the type "
                    f"{self.model.__name__} declares; {spec.dtype} reads from "
                    f"{readable_types(spec.dtype)}. Cast it in a query (query='SELECT "
                    f"{name}::text AS {name}, ... FROM ...') or change the model."
                )
            projection.append(f"{expression} AS {quote_ident(spec.name)}")
        filters = []
        if last_value is not None and self.incremental_column is not None:
            column = quote_ident(str(actual(self.incremental_column)))
            operator = ">=" if inclusive else ">"
            filters.append(f"{column} {operator} {literal(last_value)}")
        select = f"SELECT {', '.join(projection)} FROM {relation}"
        return _Plan(select, relation, what, available, tuple(filters))

    def _relation(self, cur: Cursor, ctx: Context, owner: str, dsn: Dsn) -> tuple[str, str]:
        """What the source reads, as SQL (aliased), and how messages name it."""
        if self.table is not None:
            table = parse_table(ctx.render(self.table), owner)
            found = find_relation(cur, table)
            if found is None:
                raise ConnectorError(missing_table(cur, owner, table, dsn))
            return f"{found.table.sql} AS {_ALIAS}", f"table '{table.display}'"
        assert self.query is not None
        # ADBC binds a string as text, so `id < $1` would fail: each param becomes a constant
        # of unknown type instead (as `'5'` is), which no value can end
        text = bind_sql(self.query, ctx, constant=_constant).text.strip().rstrip(";").strip()
        return f"({text}) AS {_ALIAS}", "the query"

    def _ranges(self, cur: Cursor, plan: _Plan, owner: str) -> list[tuple[str, ...]]:
        """The extra WHERE conditions of each read: one empty tuple when not partitioned."""
        return [self._conditions(plan, bound, owner) for bound in self._bounds(cur, plan, owner)]

    def _bounds(self, cur: Cursor, plan: _Plan, owner: str) -> list[dict[str, Any]]:
        """The partition column's range of each read (see `ranges.bounds`)."""
        if self.partition_column is None or self.partition_count == 1:
            return [{}]
        field = partition_field(plan.columns, self.partition_column, plan.what, owner)
        return bounds(cur, plan.relation, plan.filters, field, self.partition_count, owner)

    def _conditions(self, plan: _Plan, bound: Mapping[str, Any], owner: str) -> tuple[str, ...]:
        """The WHERE conditions of one range of `_bounds`."""
        if not bound:
            return ()
        if self.partition_column is None:
            raise ConnectorError(f"{owner}: {dict(bound)!r} is not a range of this source.")
        field = partition_field(plan.columns, self.partition_column, plan.what, owner)
        return conditions(field, bound, owner)
