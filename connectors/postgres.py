"""PostgreSQL tables as sources and sinks, through ADBC: Arrow in, Arrow out, no row loop.

`PostgresSource` streams a table (or a query) as Arrow record batches, reading only the model's
columns, cast in SQL to the model's types. `PostgresSink` bulk-loads record batches (ADBC ingest,
which is binary `COPY`) and appends, replaces or upserts, all inside one transaction: a failed or
cancelled load leaves the table exactly as it was and no staging table behind.

Where to connect is either `dsn="postgresql://user:password@host:port/database"` or
`conn="hospital_db"`, a named connection resolved when the node runs (never when the pipeline is
declared, so `etlkit validate` needs no database). The password never appears in a message, a log
line, a `repr` or a `WriteResult.uri`: they show `postgresql://user:***@host:port/database`.

Table names are used exactly as given, quoted: PostgreSQL's folding of unquoted names to lower
case does not apply, so write them as they are stored (usually in lower case). Sessions run with
`TimeZone=UTC`, so naive timestamps mean UTC in both directions.

The driver (`adbc-driver-postgresql`) is an optional dependency:
`pip install "etlkit-framework[postgres]"`.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final, Literal, Self, get_args
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import polars as pl
import pyarrow as pa

from etlkit.errors import ConfigError, ConnectorError, MissingDependencyError, TransientError
from etlkit.nodes import Context, Node, Sink, Source, WriteResult
from etlkit.schema import ColumnSpec, arrow_schema, columns

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection, Cursor

    from etlkit.nodes import Model

logger = logging.getLogger(__name__)

Mode = Literal["append", "replace", "upsert"]

INSTALL: Final = 'pip install "etlkit-framework[postgres]"'
#: Characters no table name may hold: quotes, semicolons and control characters.
_FORBIDDEN: Final = re.compile(r"[\"'`;\x00-\x1f\x7f]")
#: How many table or column names an error message lists before it says "and N more".
_LISTED: Final = 20
#: The alias of the relation a source reads (a table, or the user's query as a subquery).
_ALIAS: Final = '"_etlkit_rel"'
#: Connection parameters added to a DSN that does not set them.
_DSN_DEFAULTS: Final = {"connect_timeout": "10", "application_name": "etlkit"}
#: Query parameters libpq takes in a URI: a named connection's other extras are etlkit's own.
_LIBPQ_PARAMETERS: Final = frozenset(
    (
        *("host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service"),
        *("connect_timeout", "client_encoding", "options", "application_name", "replication"),
        *("fallback_application_name", "target_session_attrs", "load_balance_hosts"),
        *("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"),
        *("tcp_user_timeout", "channel_binding", "require_auth", "requirepeer"),
        *("sslmode", "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword"),
        *("sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni"),
        *("ssl_min_protocol_version", "ssl_max_protocol_version"),
        *("gssencmode", "krbsrvname", "gsslib", "gssdelegation"),
    )
)
#: SQLSTATEs worth a retry: connection exceptions (class 08), shutdown, too many connections,
#: serialization failures, deadlocks, lock timeouts.
_TRANSIENT_STATES: Final = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03")
_TRANSIENT_TEXT: Final = (
    "connection refused",
    "timeout expired",
    "timed out",
    "could not translate host name",
    "the database system is starting up",
    "the database system is shutting down",
    "too many connections",
    "server closed the connection",
    "connection reset",
    "no route to host",
    "network is unreachable",
)

#: PostgreSQL type names (as ADBC reports them) by the family the model's types are mapped from.
_FAMILIES: Final = {
    **dict.fromkeys(("int2", "int4", "int8", "oid"), "integer"),
    **dict.fromkeys(("float4", "float8"), "float"),
    "numeric": "numeric",
    "bool": "boolean",
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "char", "citext"), "text"),
    **dict.fromkeys(("json", "jsonb"), "json"),
    "uuid": "uuid",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "bytea": "bytea",
}
#: Families a partition column may have: its values are split into ranges.
_PARTITIONABLE: Final = ("integer", "float", "numeric", "date", "timestamp", "timestamptz")


class PostgresTransientError(ConnectorError, TransientError):
    """PostgreSQL could not be reached or asked for a retry (connection refused, timeout,
    too many connections, deadlock, serialization failure); retrying later may succeed."""


# -- DSNs, named connections and the driver ------------------------------------------------------


class _Dsn:
    """A connection URI whose `repr` and `str` hide the password (`postgresql://u:***@h/db`)."""

    __slots__ = ("_uri",)

    def __init__(self, uri: str) -> None:
        self._uri = uri

    def reveal(self) -> str:
        """The URI with its password, for the driver only."""
        return self._uri

    @property
    def masked(self) -> str:
        """`scheme://user:***@host:port/database`, without the query string."""
        parts = urlsplit(self._uri)
        return f"{parts.scheme}://{_masked_netloc(self._uri)}{parts.path}"

    def location(self, table: str) -> str:
        """The masked URI of `table` in this database."""
        return f"{self.masked.rstrip('/')}/{table}"

    def scrub(self, text: str) -> str:
        """`text` with this URI and its password replaced by their masked forms.

        A password shorter than 4 characters is replaced only where it follows `user:`, as
        replacing every occurrence of one or two letters would garble the message.
        """
        text = text.replace(self._uri, self.masked)
        password = urlsplit(self._uri).password
        for secret in {password, unquote(password)} if password else set():
            if len(secret) >= 4:
                text = text.replace(secret, "***")
            else:
                text = text.replace(f":{secret}@", ":***@")
        return text

    def __repr__(self) -> str:
        return repr(self.masked)

    def __str__(self) -> str:
        return self.masked


def _masked_netloc(uri: str) -> str:
    netloc = urlsplit(uri).netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return netloc
    user = userinfo.partition(":")[0]
    return f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"


def mask_dsn(text: str) -> str:
    """`text` with the password of every `postgresql://user:password@` URI in it masked.

    Also masks `password=...` in a query string or in libpq's `key=value` form.
    """
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password\s*=\s*)[^&\s]+", r"\1***", text, flags=re.IGNORECASE)


def _check_dsn(dsn: str, owner: str) -> _Dsn:
    """`dsn` wrapped, after checking it is a `postgresql://` URI (the message masks it)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres") or not (parts.netloc or parts.query):
        raise ConfigError(
            f"{owner}: dsn {mask_dsn(dsn)!r} is not a PostgreSQL URI; write "
            "'postgresql://user:password@host:port/database', or name a connection "
            "with conn='...'."
        )
    return _Dsn(dsn)


def _with_defaults(uri: str) -> str:
    """`uri` with a connect timeout and an application name unless it sets them."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {key for key, _ in query}
    query += [(key, value) for key, value in _DSN_DEFAULTS.items() if key not in given]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))  # libpq: no '+'


def _resolve_conn(name: str, owner: str) -> _Dsn:
    """The URI of the named connection, read from `etlkit.connections` when the node runs.

    Raises:
        ConnectorError: named connections are not available, or the name resolves to no URI.
    """
    try:
        connections = importlib.import_module("etlkit.connections")
    except ImportError as exc:
        raise ConnectorError(
            f"{owner}: conn={name!r} names a connection, but named connections "
            f"(etlkit.connections) are not available in this etlkit ({exc}); pass "
            "dsn='postgresql://user:password@host:port/database' instead."
        ) from exc
    uri: object = connections.resolve(name).uri
    for reveal in ("get_secret_value", "reveal"):
        if callable(getattr(uri, reveal, None)):
            uri = getattr(uri, reveal)()
            break
    if not isinstance(uri, str):
        raise ConnectorError(
            f"{owner}: connection {name!r} resolved to a {type(uri).__name__}, not a URI string."
        )
    return _check_dsn(_libpq_only(uri), f"{owner} (connection {name!r})")


def _libpq_only(uri: str) -> str:
    """`uri` without the query parameters libpq does not know (etlkit's, such as pool_slots)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(key, value) for key, value in query if key in _LIBPQ_PARAMETERS]
    return urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))


def _driver() -> Any:
    """The ADBC PostgreSQL DB-API module.

    Raises:
        MissingDependencyError: the driver is not installed.
    """
    try:
        import adbc_driver_postgresql.dbapi
    except ImportError as exc:
        raise MissingDependencyError(
            "PostgreSQL connectors need the ADBC PostgreSQL driver (adbc-driver-postgresql), "
            f"which is not installed ({exc}). Install it with: {INSTALL}"
        ) from exc
    return adbc_driver_postgresql.dbapi


def _driver_errors() -> tuple[type[Exception], ...]:
    """What ADBC raises: its DB-API errors, and OSError from a record batch reader."""
    import adbc_driver_manager

    return (adbc_driver_manager.Error, OSError)


def _is_transient(exc: BaseException) -> bool:
    state = str(getattr(exc, "sqlstate", None) or "")
    text = str(exc).lower()
    return state.startswith(_TRANSIENT_STATES) or any(t in text for t in _TRANSIENT_TEXT)


def _reason(exc: BaseException, dsn: _Dsn) -> str:
    """The driver's message, on one line, the password scrubbed."""
    text = str(exc)
    for prefix in ("IO: ", "[libpq] ", "Failed to connect: "):
        text = text.replace(prefix, "")
    return dsn.scrub(" ".join(text.split()))


def _failure(exc: BaseException, message: str) -> ConnectorError:
    """`message` as a PostgresTransientError when `exc` is worth a retry, else ConnectorError."""
    return PostgresTransientError(message) if _is_transient(exc) else ConnectorError(message)


def _connect(dsn: _Dsn, owner: str) -> Connection:
    """A connection with autocommit off: everything until `commit` is one transaction.

    Raises:
        PostgresTransientError: connection refused, timed out, too many connections, ...
        ConnectorError: authentication failed, the database does not exist, ...
        MissingDependencyError: the driver is not installed.
    """
    dbapi = _driver()
    try:
        con: Connection = dbapi.connect(_with_defaults(dsn.reveal()))
    except _driver_errors() as exc:
        transient = _is_transient(exc)
        hint = (
            "Is the server running and reachable? The node may be retried."
            if transient
            else "Check the host, database, user and password."
        )
        raise _failure(
            exc,
            f"{owner}: cannot connect to PostgreSQL {dsn.masked}: {_reason(exc, dsn)}. {hint}",
        ) from exc  # libpq never repeats the password in its messages
    return con


def _close(con: Connection) -> None:
    with suppress(*_driver_errors()):
        con.rollback()
    with suppress(*_driver_errors()):
        con.close()


def _rows(
    cur: Cursor, sql: str, parameters: Sequence[object] | None = None
) -> list[tuple[Any, ...]]:
    cur.execute(sql, parameters)
    return cur.fetchall()


# -- names ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A table name, optionally qualified by its schema (`analytics.patients`)."""

    schema: str | None
    name: str

    @property
    def sql(self) -> str:
        parts = [self.name] if self.schema is None else [self.schema, self.name]
        return ".".join(_quote(part) for part in parts)

    @property
    def display(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


def _quote(identifier: str) -> str:
    """`identifier` as a quoted SQL identifier (embedded double quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def _literal(value: str) -> str:
    """`value` as an SQL string literal (standard_conforming_strings: only quotes double)."""
    return "'" + value.replace("'", "''") + "'"


def _check_name(name: str, owner: str) -> None:
    bad = _FORBIDDEN.search(name)
    if bad:
        raise ConfigError(
            f"{owner}: table name {name!r} contains {bad.group()!r}; table names may not hold "
            "quotes, semicolons or control characters. Write 'table' or 'schema.table'."
        )


def _parse_table(name: str, owner: str) -> _Table:
    """Split `table` or `schema.table`, refusing anything that could not be quoted safely.

    Raises:
        ConfigError: the name is empty, has more than two parts or holds a forbidden character.
    """
    _check_name(name, owner)
    parts = name.split(".")
    if len(parts) > 2 or not all(part.strip() for part in parts):
        raise ConfigError(
            f"{owner}: table name {name!r} is not of the form 'table' or 'schema.table'."
        )
    return _Table(None, parts[0]) if len(parts) == 1 else _Table(parts[0], parts[1])


def _listing(names: Sequence[str]) -> str:
    shown = list(names[:_LISTED])
    more = len(names) - len(shown)
    return f"{shown}" + (f" and {more} more" if more else "")


def _closest(wanted: str, candidates: Sequence[str]) -> str | None:
    """The candidate `wanted` most likely meant: other case, another schema, or a typo."""
    last = wanted.lower().rsplit(".", 1)[-1]
    same = [c for c in candidates if c.lower().rsplit(".", 1)[-1] == last]
    if same:
        return same[0]
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(wanted.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def _node_name(node: Node, ctx: Context) -> str:
    return f"{type(node).__name__} '{ctx.node or node.name or '(unnamed)'}'"


def _check_positive(value: int | None, what: str, owner: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{owner}: {what} must be at least 1, got {value}.")


def _target(dsn: str | None, conn: str | None, owner: str) -> _Dsn | None:
    """The checked DSN (None for a named connection, resolved when the node runs)."""
    if (dsn is None) == (conn is None):
        got = "both" if dsn is not None else "neither"
        raise ConfigError(
            f"{owner} takes exactly one of dsn= (a postgresql:// URI) or conn= (a named "
            f"connection); got {got}."
        )
    return _check_dsn(dsn, owner) if dsn is not None else None


# -- catalog -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    """An existing relation: its schema, name and kind (`r` table, `v` view, `p` partitioned)."""

    schema: str
    name: str
    kind: str

    @property
    def table(self) -> _Table:
        return _Table(self.schema, self.name)


def _find(cur: Cursor, table: _Table) -> _Found | None:
    """The relation `table` names (unqualified names follow the search_path), or None."""
    rows = _rows(
        cur,
        "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
        [table.sql],
    )
    return _Found(*rows[0]) if rows else None


def _table_names(cur: Cursor) -> list[str]:
    """Every table and view the user can see, `schema.` omitted for the current schema."""
    rows = _rows(
        cur,
        "SELECT table_schema::text, table_name::text, "
        "table_schema = current_schema() FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
        "AND table_schema NOT LIKE 'pg\\_temp\\_%' AND table_schema NOT LIKE 'pg\\_toast%'",
    )
    return sorted(str(name) if current else f"{schema}.{name}" for schema, name, current in rows)


def _missing_table(cur: Cursor, owner: str, table: _Table, dsn: _Dsn, hint: str = "") -> str:
    names = _table_names(cur)
    closest = _closest(table.display, names)
    return (
        f"{owner}: table '{table.display}' not found in PostgreSQL {dsn.masked}; "
        + (f"tables are {_listing(names)}." if names else "it has no tables.")
        + (f" Did you mean '{closest}'?" if closest else "")
        + hint
    )


def _relation_columns(cur: Cursor, relation: str) -> pa.Schema:
    """The columns of `relation` (a table or a subquery) with ADBC's types and PG type names."""
    cur.execute(f"SELECT * FROM {relation} LIMIT 0")
    reader = cur.fetch_record_batch()
    try:
        schema: pa.Schema = reader.schema
    finally:
        reader.close()
    return schema


def _pg_type(field: pa.Field) -> str:
    """The PostgreSQL type name ADBC reports for a result column (`numeric(10,2)`, `jsonb`)."""
    metadata = field.metadata or {}
    name = metadata.get(b"POSTGRESQL:type", b"?").decode()
    precision, scale = _numeric_precision(field)
    return f"{name}({precision},{scale})" if precision is not None else name


def _numeric_precision(field: pa.Field) -> tuple[int | None, int | None]:
    metadata = field.metadata or {}
    typmod = int(metadata.get(b"POSTGRESQL:typmod", b"-1"))
    if metadata.get(b"POSTGRESQL:type") != b"numeric" or typmod < 4:
        return None, None
    return ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF


def _family(field: pa.Field) -> str:
    name = (field.metadata or {}).get(b"POSTGRESQL:type", b"").decode()
    if name in _FAMILIES:
        return _FAMILIES[name]
    # enums and other text-like types arrive as strings
    return "text" if pa.types.is_string(field.type) else "other"


# -- the source ----------------------------------------------------------------------------------


def _int_sql(dtype: pl.DataType) -> str:
    if dtype in (pl.Int8, pl.Int16, pl.UInt8):
        return "smallint"
    return "integer" if dtype in (pl.Int32, pl.UInt16) else "bigint"


def _readable(dtype: pl.DataType) -> str:
    """The PostgreSQL types a model type can be read from (for error messages)."""
    if dtype.is_integer():
        return "smallint, integer, bigint, numeric without a fractional scale"
    if dtype.is_float():
        return "smallint, integer, bigint, real, double precision, numeric"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "text, varchar, char, name, enums, json, jsonb, uuid, numeric"
    if isinstance(dtype, pl.Datetime):
        return "timestamp, timestamptz, date"
    readable = {pl.Boolean: "boolean", pl.Date: "date", pl.Time: "time", pl.Binary: "bytea"}
    return readable.get(type(dtype), "numeric, integer" if dtype.is_decimal() else "?")


def _projection(column: str, field: pa.Field, spec: ColumnSpec) -> str | None:
    """The SQL reading `column` as the model's type, or None when the types do not map."""
    family, dtype, col = _family(field), spec.dtype, _quote(column)
    if dtype.is_integer():
        scale = _numeric_precision(field)[1]
        if family == "integer" or (family == "numeric" and not scale):
            return f"{col}::{_int_sql(dtype)}"
    elif dtype.is_float():
        if family in ("integer", "float", "numeric"):
            return f"{col}::{'real' if dtype == pl.Float32 else 'double precision'}"
    elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        if family in ("text", "json", "uuid", "numeric"):
            return f"{col}::text"
    elif isinstance(dtype, pl.Datetime):
        naive = dtype.time_zone is None
        if family == "timestamp":
            return f"{col}::timestamp" if naive else f"({col} AT TIME ZONE 'UTC')"
        if family == "timestamptz":
            return f"({col} AT TIME ZONE 'UTC')" if naive else f"{col}::timestamptz"
        if family == "date":
            return f"{col}::timestamp" if naive else f"({col}::timestamp AT TIME ZONE 'UTC')"
    elif dtype.is_decimal():
        if family in ("numeric", "integer"):
            return f"{col}::text"  # ADBC's numeric is opaque; Arrow parses the text exactly
    elif dtype == pl.Boolean:
        return f"{col}::boolean" if family == "boolean" else None
    elif dtype == pl.Date:
        return f"{col}::date" if family == "date" else None
    elif dtype == pl.Time:
        return f"{col}::time" if family == "time" else None
    elif dtype == pl.Binary:
        return col if family == "bytea" else None
    else:
        return col  # nested and other types: left to the Arrow cast, which names the column
    return None


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
        incremental_column: the column `read_since` filters on (`column > last value`).

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
        self._dsn = _target(dsn, conn, owner)
        if table is not None:
            _check_name(table, owner)
            if "{" not in table:
                _parse_table(table, owner)
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
        self.partitions = partitions
        self.incremental_column = incremental_column
        if incremental_column is not None:
            self.incremental(incremental_column)  # the run keeps the cursor between runs

    def incremental(self, cursor: str) -> Self:
        """Load only rows above the last run's cursor; the predicate runs in PostgreSQL."""
        self.incremental_column = cursor
        return super().incremental(cursor)

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
        yield from self.read_since(ctx, pushed)

    def read_since(self, ctx: Context, last_value: str | None) -> Iterator[pa.RecordBatch]:
        """Like `read`, only rows whose `incremental_column` is greater than `last_value`.

        The filter is pushed down (`WHERE column > 'last_value'`, the literal taking the
        column's type); `None` reads everything. Storing the high-water mark between runs is
        the caller's business.

        Raises:
            ConfigError: `last_value` is given but the source has no `incremental_column`.
            ConnectorError: as for `read`, or the incremental column is missing.
        """
        owner = _node_name(self, ctx)
        if last_value is not None and self.incremental_column is None:
            raise ConfigError(f"{owner}: read_since(last_value=...) needs incremental_column=.")
        dsn = self._dsn or _resolve_conn(str(self.conn), owner)
        yield from self._read(ctx, owner, dsn, last_value)

    def _read(
        self, ctx: Context, owner: str, dsn: _Dsn, last_value: str | None
    ) -> Iterator[pa.RecordBatch]:
        target = pa.schema(f.with_nullable(True) for f in arrow_schema(self.model))
        chunk_rows = self.chunk_rows or ctx.chunk_rows
        con = _connect(dsn, owner)
        reader: pa.RecordBatchReader | None = None
        what, chunks = "the source", 0
        try:
            cur = con.cursor()
            try:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SET TIME ZONE 'UTC'")
                plan = self._plan(cur, ctx, owner, dsn, last_value)
                what = plan.what
                for extra in self._ranges(cur, plan, owner):
                    cur.execute(plan.sql(*extra))
                    reader = cur.fetch_record_batch()
                    for batch in reader:
                        for start in range(0, max(batch.num_rows, 1), chunk_rows):
                            chunks += 1
                            piece = batch.slice(start, chunk_rows)
                            logger.debug("%s: chunk %d, %d rows", owner, chunks, piece.num_rows)
                            yield _conform(piece, target, owner, what)
                    reader.close()
                    reader = None
            except _driver_errors() as exc:
                raise _failure(
                    exc,
                    f"{owner}: reading {what} from PostgreSQL {dsn.masked} failed"
                    + (f" after {chunks} chunk(s)" if chunks else "")
                    + f": {_reason(exc, dsn)}",
                ) from exc
        finally:
            if reader is not None:
                with suppress(*_driver_errors()):
                    reader.close()
            _close(con)

    def _plan(
        self, cur: Cursor, ctx: Context, owner: str, dsn: _Dsn, last_value: str | None
    ) -> _Plan:
        """The projecting SELECT, after checking the relation, its columns and their types."""
        if self.table is not None:
            table = _parse_table(ctx.render(self.table), owner)
            what = f"table '{table.display}'"
            found = _find(cur, table)
            if found is None:
                raise ConnectorError(_missing_table(cur, owner, table, dsn))
            relation = f"{found.table.sql} AS {_ALIAS}"
        else:
            assert self.query is not None
            text = ctx.render(self.query).strip().rstrip(";").strip()
            relation, what = f"({text}) AS {_ALIAS}", "the query"
        try:
            available = _relation_columns(cur, relation)
        except _driver_errors() as exc:
            raise ConnectorError(
                f"{owner}: {what} in PostgreSQL {dsn.masked} cannot be read: {_reason(exc, dsn)}"
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
                if (closest := _closest(column, names))
            )
            raise ConnectorError(
                f"{owner}: {what} in PostgreSQL {dsn.masked} has no column(s) {missing} "
                f"that {self.model.__name__} declares or the source reads; its columns are "
                f"{_listing(names)}." + hints
            )
        projection = []
        for spec in wanted:
            name = str(actual(spec.name))
            expression = _projection(name, fields[name], spec)
            if expression is None:
                raise ConnectorError(
                    f"{owner}: column '{name}' of {what} is PostgreSQL type "
                    f"{_pg_type(fields[name])}, which cannot be read as {spec.dtype}, the type "
                    f"{self.model.__name__} declares; {spec.dtype} reads from "
                    f"{_readable(spec.dtype)}. Cast it in a query (query='SELECT "
                    f"{name}::text AS {name}, ... FROM ...') or change the model."
                )
            projection.append(f"{expression} AS {_quote(spec.name)}")
        filters = []
        if last_value is not None and self.incremental_column is not None:
            column = _quote(str(actual(self.incremental_column)))
            filters.append(f"{column} > {_literal(last_value)}")
        select = f"SELECT {', '.join(projection)} FROM {relation}"
        return _Plan(select, relation, what, available, tuple(filters))

    def _ranges(self, cur: Cursor, plan: _Plan, owner: str) -> list[tuple[str, ...]]:
        """The extra WHERE conditions of each read: one empty tuple when not partitioned."""
        if self.partition_column is None or self.partitions == 1:
            return [()]
        by_lower = {f.name.lower(): f for f in plan.columns}
        field = next((f for f in plan.columns if f.name == self.partition_column), None)
        field = field or by_lower[self.partition_column.lower()]
        family = _family(field)
        if family not in _PARTITIONABLE:
            raise ConnectorError(
                f"{owner}: partition_column '{field.name}' of {plan.what} is PostgreSQL type "
                f"{_pg_type(field)}; partitioned reads need a numeric, date or timestamp column."
            )
        column = _quote(field.name)
        cast = {"integer": "::bigint", "numeric": "::double precision"}.get(family, "")
        where = " WHERE " + " AND ".join(plan.filters) if plan.filters else ""
        cur.execute(f"SELECT min({column}){cast}, max({column}){cast} FROM {plan.relation}{where}")
        low, high = cur.fetchall()[0]
        cuts = _cuts(low, high, self.partitions)
        if not cuts:
            return [()]
        literals = [_literal(_text(cut)) for cut in cuts]
        ranges: list[tuple[str, ...]] = [(f"{column} < {literals[0]}",)]
        ranges += [(f"{column} >= {a}", f"{column} < {b}") for a, b in pairwise(literals)]
        ranges += [(f"{column} >= {literals[-1]}",), (f"{column} IS NULL",)]
        logger.debug("%s: %d ranges of %s: cuts %s", owner, len(ranges), field.name, literals)
        return ranges


_EPOCH: Final = datetime(1970, 1, 1)


def _cuts(low: object, high: object, parts: int) -> list[object]:
    """Up to `parts - 1` increasing values splitting [low, high] evenly; none when they can't."""
    if low is None or high is None or low == high:
        return []
    if isinstance(low, int) and isinstance(high, int):
        return list(_int_cuts(low, high, parts))
    if isinstance(low, float | int) and isinstance(high, float | int):
        if not (math.isfinite(low) and math.isfinite(high)):
            return []  # NaN or infinity: one range
        values = dict.fromkeys(low + (high - low) * i / parts for i in range(1, parts))
        return [value for value in values if low < value <= high]
    if isinstance(low, datetime) and isinstance(high, datetime):
        base = _EPOCH if low.tzinfo is None else _EPOCH.replace(tzinfo=UTC)
        step = timedelta(microseconds=1)
        micros = _int_cuts((low - base) // step, (high - base) // step, parts)
        return [base + m * step for m in micros]
    if isinstance(low, date) and isinstance(high, date):
        return [date.fromordinal(d) for d in _int_cuts(low.toordinal(), high.toordinal(), parts)]
    return []


def _int_cuts(low: int, high: int, parts: int) -> list[int]:
    values = dict.fromkeys(low + (high - low + 1) * i // parts for i in range(1, parts))
    return [value for value in values if low < value <= high]


def _text(value: object) -> str:
    """A partition cut as the text of an SQL literal of the column's type."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)


def _conform(batch: pa.RecordBatch, target: pa.Schema, owner: str, what: str) -> pa.RecordBatch:
    """`batch` with the target's types and no ADBC metadata, casting only what differs.

    Raises:
        ConnectorError: a column's values cannot be cast (the message names the column).
    """
    arrays = []
    for column, field in zip(batch.columns, target, strict=True):
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise ConnectorError(
                    f"{owner}: column '{field.name}' of {what} arrives as {column.type} and "
                    f"cannot be cast to the model's {field.type}: {exc}"
                ) from exc
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=target)


# -- the sink ------------------------------------------------------------------------------------


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
            raise ConfigError(f"{owner}: mode must be one of {list(get_args(Mode))}, got {mode!r}.")
        self._dsn = _target(dsn, conn, owner)
        _check_name(table, owner)
        if "{" not in table:
            _parse_table(table, owner)
        if isinstance(key, str):
            raise ConfigError(f"{owner}: key is a list of column names: write key=[{key!r}].")
        if mode == "upsert" and not key:
            raise ConfigError(
                f"{owner}: mode='upsert' needs key=[...], the columns identifying a row."
            )
        if len(set(key)) != len(key):
            raise ConfigError(f"{owner}: key {list(key)} names a column twice.")
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
        owner = _node_name(self, ctx)
        table = _parse_table(ctx.render(self.table), owner)
        dsn = self._dsn or _resolve_conn(str(self.conn), owner)
        con = _connect(dsn, owner)
        try:
            cur = con.cursor()
            try:
                rows = self._load(cur, batches, table, dsn, owner)
                con.commit()
            except _driver_errors() as exc:
                raise _failure(
                    exc,
                    f"{owner}: loading table '{table.display}' into PostgreSQL {dsn.masked} "
                    f"failed: {_reason(exc, dsn)}. Nothing was written.",
                ) from exc
        finally:
            _close(con)  # rolls back whatever did not commit
        uri = dsn.location(table.display)
        logger.debug("%s: %s %d rows into %s", owner, self.mode, rows, uri)
        return WriteResult(rows=rows, uri=uri, extra={"mode": self.mode})

    def _load(
        self,
        cur: Cursor,
        batches: Iterator[pa.RecordBatch],
        table: _Table,
        dsn: _Dsn,
        owner: str,
    ) -> int:
        """Stage every chunk and apply the mode, inside the open transaction; rows loaded."""
        cur.execute("SET TIME ZONE 'UTC'")
        where = f"table '{table.display}' in PostgreSQL {dsn.masked}"
        found = _find(cur, table)
        existing: list[str] | None = None
        if found is None:
            if not self.create:
                hint = " Create it first, or pass create=True."
                raise ConnectorError(_missing_table(cur, owner, table, dsn, hint))
            if table.schema is not None:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(table.schema)}")
            schema = table.schema or _rows(cur, "SELECT current_schema()::text")[0][0]
            if schema is None:
                raise ConnectorError(
                    f"{owner}: cannot create {where}: the search_path names no existing schema. "
                    "Qualify the table ('schema.table') or fix the search_path."
                )
        else:
            _check_kind(found, self.mode, owner, where)
            schema, existing = found.schema, _column_names(cur, found.table)
            if self.mode == "upsert":
                _check_unique_key(cur, found, existing, self.key, owner, where)
        target = _Table(schema, table.name)
        replace = self.mode == "replace"
        name = f"{table.name[:40]}__etlkit_{secrets.token_hex(4)}"
        stage = _Table(schema, name) if replace else _Table("pg_temp", name)

        def ingest(data: pa.RecordBatch | pa.Table, mode: Literal["create", "append"]) -> None:
            cur.adbc_ingest(
                name, data, mode, db_schema_name=schema if replace else None, temporary=not replace
            )

        first: pa.Schema | None = None
        rows = 0
        for index, batch in enumerate(batches, start=1):
            if first is None:
                first = pa.schema(field.with_nullable(True) for field in batch.schema)
                self._check_columns(first, existing, owner, where, index)
                ingest(first.empty_table(), "create")
            try:
                ingest(_align(batch, first, owner, where, index), "append")
            except _driver_errors() as exc:
                described = ", ".join(f"{f.name}: {f.type}" for f in batch.schema)
                raise _failure(
                    exc,
                    f"{owner}: PostgreSQL rejected chunk {index} ({described}) for {where}: "
                    f"{_reason(exc, dsn)}. Nothing was written.",
                ) from exc
            rows += batch.num_rows
            logger.debug("%s: chunk %d, %d rows staged", owner, index, batch.num_rows)
        if first is None:  # no chunks at all
            if self.input_model is not None:
                first = arrow_schema(self.input_model)
                self._check_columns(first, existing, owner, where, 0)
                ingest(first.empty_table(), "create")
            elif replace and found is not None:
                cur.execute(f"CREATE TABLE {stage.sql} (LIKE {found.table.sql})")
            else:
                return 0  # nothing to change, and no columns to create a table from
        if replace:
            if self.key:
                _add_primary_key(cur, stage, self.key)
            if found is not None:
                cur.execute(f"DROP TABLE {found.table.sql}")
            cur.execute(f"ALTER TABLE {stage.sql} RENAME TO {_quote(table.name)}")
            if self.key:
                cur.execute(
                    f"ALTER TABLE {target.sql} RENAME CONSTRAINT {_quote(_pkey(stage.name))} "
                    f"TO {_quote(_pkey(table.name))}"
                )
            return rows
        assert first is not None
        if existing is None:
            cur.execute(f"CREATE TABLE {target.sql} (LIKE {stage.sql})")
            if self.key:
                _add_primary_key(cur, target, self.key)
            existing = list(first.names)
        self._insert(cur, stage, target, list(first.names), existing, owner, where, dsn)
        cur.execute(f"DROP TABLE {stage.sql}")
        return rows

    def _check_columns(
        self, schema: pa.Schema, existing: list[str] | None, owner: str, where: str, index: int
    ) -> None:
        """Refuse chunks lacking a key column, or (append, upsert) holding unknown columns."""
        chunk = f"chunk {index}" if index else "the model"
        missing_key = [k for k in self.key if k not in schema.names]
        if missing_key:
            raise ConnectorError(
                f"{owner}: {chunk} for {where} has no key column(s) {missing_key}; its columns "
                f"are {_listing(schema.names)}. Nothing was written."
            )
        if existing is None or self.mode == "replace":
            return
        extra = [c for c in schema.names if _match(c, existing) is None]
        if extra:
            hints = "".join(
                f" Did you mean '{closest}' for '{column}'?"
                for column in extra
                if (closest := _closest(column, existing))
            )
            raise ConnectorError(
                f"{owner}: {chunk} does not match {where}: extra column(s) {extra}; the table "
                f"has {_listing(existing)}.{hints} Nothing was written. Select the table's "
                "columns upstream, or use mode='replace' to rebuild the table."
            )

    def _insert(
        self,
        cur: Cursor,
        stage: _Table,
        target: _Table,
        names: list[str],
        existing: list[str],
        owner: str,
        where: str,
        dsn: _Dsn,
    ) -> None:
        """`INSERT` the staged rows into the target (`ON CONFLICT ... DO UPDATE` to upsert)."""
        into = [str(_match(name, existing)) for name in names]
        sql = (
            f"INSERT INTO {target.sql} ({', '.join(map(_quote, into))}) "
            f"SELECT {', '.join(map(_quote, names))} FROM {stage.sql}"
        )
        if self.mode == "upsert":
            keys = [str(_match(k, existing)) for k in self.key]
            updates = [f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in into if c not in keys]
            sql += f" ON CONFLICT ({', '.join(map(_quote, keys))}) DO " + (
                f"UPDATE SET {', '.join(updates)}" if updates else "NOTHING"
            )
        try:
            cur.execute(sql)
        except _driver_errors() as exc:
            hint = (
                f" The input holds some key {list(self.key)} more than once: make it unique "
                "upstream (for example with .expect(unique=[...]) on the input)."
                if getattr(exc, "sqlstate", None) == "21000"
                else ""
            )
            raise _failure(
                exc,
                f"{owner}: {self.mode} into {where} failed: {_reason(exc, dsn)}.{hint} "
                "Nothing was written.",
            ) from exc


def _match(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate named `name`, else the only one equal ignoring case, else None."""
    if name in candidates:
        return name
    same = [c for c in candidates if c.lower() == name.lower()]
    return same[0] if len(same) == 1 else None


def _pkey(table: str) -> str:
    return f"{table[:58]}_pkey"


def _add_primary_key(cur: Cursor, table: _Table, key: Sequence[str]) -> None:
    cur.execute(
        f"ALTER TABLE {table.sql} ADD CONSTRAINT {_quote(_pkey(table.name))} "
        f"PRIMARY KEY ({', '.join(map(_quote, key))})"
    )


def _column_names(cur: Cursor, table: _Table) -> list[str]:
    rows = _rows(
        cur,
        "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [table.sql],
    )
    return [str(name) for (name,) in rows]


_KINDS: Final = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}


def _check_kind(found: _Found, mode: Mode, owner: str, where: str) -> None:
    """Refuse to load a view (any mode) or to replace a partitioned table."""
    allowed = ("r",) if mode == "replace" else ("r", "p")
    if found.kind not in allowed:
        kind = _KINDS.get(found.kind, f"relation of kind {found.kind!r}")
        raise ConnectorError(
            f"{owner}: {where} is a {kind}; mode={mode!r} loads "
            + ("ordinary tables only." if mode == "replace" else "tables only.")
        )


def _check_unique_key(
    cur: Cursor, found: _Found, existing: list[str], key: Sequence[str], owner: str, where: str
) -> None:
    """Refuse an upsert into a table without a primary key or unique index on `key`."""
    missing = [k for k in key if _match(k, existing) is None]
    if missing:
        raise ConnectorError(
            f"{owner}: {where} has no key column(s) {missing}; its columns are "
            f"{_listing(existing)}. Nothing was written."
        )
    rows = _rows(
        cur,
        "SELECT i.indexrelid::regclass::text, a.attname::text FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass($1) AND i.indisunique "
        "AND i.indpred IS NULL AND i.indexprs IS NULL",
        [found.table.sql],
    )
    indexes: dict[str, set[str]] = {}
    for index, column in rows:
        indexes.setdefault(str(index), set()).add(str(column))
    wanted = {str(_match(k, existing)) for k in key}
    if wanted not in indexes.values():
        described = "; its unique indexes are on " + ", ".join(
            str(sorted(cols)) for cols in indexes.values()
        )
        raise ConnectorError(
            f"{owner}: mode='upsert' into {where} needs a primary key or unique index on "
            f"exactly {sorted(wanted)} (for ON CONFLICT), but the table has none"
            + (described if indexes else "")
            + f". Add one (ALTER TABLE {found.table.sql} ADD PRIMARY KEY "
            f"({', '.join(map(_quote, sorted(wanted)))})), or change key=. Nothing was written."
        )


def _align(
    batch: pa.RecordBatch, first: pa.Schema, owner: str, where: str, index: int
) -> pa.RecordBatch:
    """`batch` with the first chunk's columns, in its order and with its types.

    Raises:
        ConnectorError: the columns differ from the first chunk's, or a type does not cast.
    """
    if batch.schema.names == first.names and batch.schema.types == first.types:
        return batch
    if sorted(batch.schema.names) != sorted(first.names):
        raise ConnectorError(
            f"{owner}: chunk {index} for {where} has columns {_listing(batch.schema.names)}, "
            f"but the first chunk had {_listing(first.names)}. Nothing was written."
        )
    try:
        return batch.select(first.names).cast(first)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ConnectorError(
            f"{owner}: chunk {index} for {where} does not cast to the first chunk's types "
            f"({', '.join(f'{f.name}: {f.type}' for f in first)}): {exc}. Nothing was written."
        ) from exc
