"""Opening a DuckDB database file for a node, and what both nodes ask of it: its tables and
columns. A locked file is a `DatabaseLockedError`, which is transient."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.tables import (
    LEDGER,
    Table,
)
from etlkit.errors import ConfigError, ConnectorError, TransientError

if TYPE_CHECKING:
    import duckdb


logger = logging.getLogger(__name__)


class DatabaseLockedError(ConnectorError, TransientError):
    """Another connection holds the DuckDB database file; retrying later may succeed."""


def check_database(database: str, owner: str) -> None:
    if not database.strip() or database.startswith(":memory:"):
        raise ConfigError(
            f"{owner}: database {database!r} is not a file; an in-memory DuckDB database "
            "vanishes when its connection closes. Give the path of a database file."
        )


def connect(path: Path, *, read_only: bool, threads: int, owner: str) -> duckdb.DuckDBPyConnection:
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


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
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


def table_columns(con: duckdb.DuckDBPyConnection, table: Table) -> list[str] | None:
    """The columns of a table or view, None when it does not exist.

    Binding a SELECT is cheap, while the first read of the catalog functions
    (`duckdb_tables()`) is not, so those are asked only to explain an error.
    """
    import duckdb

    try:
        return list(con.sql(f"SELECT * FROM {table.sql}").columns)
    except duckdb.CatalogException:
        return None


def check_positive(value: int | None, what: str, owner: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{owner}: {what} must be at least 1, got {value}.")
