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

- `connection`: DSNs and their masking, named connections, the driver, connecting, its errors.
- `tables`: table names, quoting, and finding relations in the catalog.
- `columns`: mapping PostgreSQL types to the model's, in SQL, and casting what arrives.
- `source`: `PostgresSource`.
- `ranges`: a partitioned read's key ranges: bounds (a partition's data) and their conditions.
- `sink`: `PostgresSink`.
"""

from __future__ import annotations

from connectors.postgres.connection import INSTALL, PostgresTransientError, mask_dsn
from connectors.postgres.sink import PostgresSink
from connectors.postgres.source import PostgresSource
from connectors.postgres.targets import Mode

__all__ = [
    "INSTALL",
    "Mode",
    "PostgresSink",
    "PostgresSource",
    "PostgresTransientError",
    "mask_dsn",
]
