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

from connectors.duckdb.connection import DatabaseLockedError
from connectors.duckdb.sink import DuckDBTableSink, Mode
from connectors.duckdb.source import DuckDBTableSource

__all__ = ["DatabaseLockedError", "DuckDBTableSink", "DuckDBTableSource", "Mode"]
