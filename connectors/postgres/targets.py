"""The target table of a `PostgresSink`: its kind, columns and keys checked against the
mode, chunks aligned to its columns, a replacement swapped in, primary keys named."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal

import pyarrow as pa

from connectors.postgres.connection import (
    fetch_rows,
)
from connectors.postgres.tables import Found
from connectors.tables import (
    Table,
    closest_name,
    listing,
    quote_ident,
)
from etlkit.errors import ConnectorError, quoted

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Cursor


#: How a sink loads its input into the target table.
Mode = Literal["append", "replace", "upsert"]


def match(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate named `name`, else the only one equal ignoring case, else None."""
    if name in candidates:
        return name
    same = [c for c in candidates if c.lower() == name.lower()]
    return same[0] if len(same) == 1 else None


def pkey(table: str) -> str:
    return f"{table[:58]}_pkey"


def add_primary_key(cur: Cursor, table: Table, key: Sequence[str]) -> None:
    cur.execute(
        f"ALTER TABLE {table.sql} ADD CONSTRAINT {quote_ident(pkey(table.name))} "
        f"PRIMARY KEY ({', '.join(map(quote_ident, key))})"
    )


def column_names(cur: Cursor, table: Table) -> list[str]:
    rows = fetch_rows(
        cur,
        "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [table.sql],
    )
    return [str(name) for (name,) in rows]


KINDS: Final = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}


def check_kind(found: Found, mode: Mode, owner: str, where: str) -> None:
    """Refuse to load a view (any mode) or to replace a partitioned table."""
    allowed = ("r",) if mode == "replace" else ("r", "p")
    if found.kind not in allowed:
        kind = KINDS.get(found.kind, f"relation of kind {found.kind!r}")
        raise ConnectorError(
            f"{owner}: {where} is a {kind}; mode={mode!r} loads "
            + ("ordinary tables only." if mode == "replace" else "tables only.")
        )


def check_unique_key(
    cur: Cursor, found: Found, existing: list[str], key: Sequence[str], owner: str, where: str
) -> None:
    """Refuse an upsert into a table without a primary key or unique index on `key`."""
    missing = [k for k in key if match(k, existing) is None]
    if missing:
        raise ConnectorError(
            f"{owner}: {where} has no key column(s) {quoted(missing)}; its columns are "
            f"{listing(existing)}. Nothing was written."
        )
    rows = fetch_rows(
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
    wanted = {str(match(k, existing)) for k in key}
    if wanted not in indexes.values():
        described = "; its unique indexes are on " + ", ".join(
            f"({', '.join(sorted(cols))})" for cols in indexes.values()
        )
        raise ConnectorError(
            f"{owner}: mode='upsert' into {where} needs a primary key or unique index on "
            f"exactly {quoted(sorted(wanted))} (for ON CONFLICT), but the table has none"
            + (described if indexes else "")
            + f". Add one (ALTER TABLE {found.table.sql} ADD PRIMARY KEY "
            f"({', '.join(map(quote_ident, sorted(wanted)))})), or change key=. "
            "Nothing was written."
        )


def align(
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
            f"{owner}: chunk {index} for {where} has columns {listing(batch.schema.names)}, "
            f"but the first chunk had {listing(first.names)}. Nothing was written."
        )
    try:
        return batch.select(first.names).cast(first)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ConnectorError(
            f"{owner}: chunk {index} for {where} does not cast to the first chunk's types "
            f"({', '.join(f'{f.name}: {f.type}' for f in first)}): {exc}. Nothing was written."
        ) from exc


def swap_in(
    cur: Cursor, stage: Table, found: Found | None, target: Table, key: Sequence[str]
) -> None:
    """Mode replace: the stage table, keyed, takes the target's place in the transaction."""
    if key:
        add_primary_key(cur, stage, key)
    if found is not None:
        cur.execute(f"DROP TABLE {found.table.sql}")
    cur.execute(f"ALTER TABLE {stage.sql} RENAME TO {quote_ident(target.name)}")
    if key:
        cur.execute(
            f"ALTER TABLE {target.sql} RENAME CONSTRAINT {quote_ident(pkey(stage.name))} "
            f"TO {quote_ident(pkey(target.name))}"
        )


def check_columns(
    schema: pa.Schema,
    existing: list[str] | None,
    key: Sequence[str],
    mode: Mode,
    owner: str,
    where: str,
    index: int,
) -> None:
    """Refuse chunks lacking a key column, or (append, upsert) holding unknown columns."""
    chunk = f"chunk {index}" if index else "the model"
    missing_key = [k for k in key if k not in schema.names]
    if missing_key:
        raise ConnectorError(
            f"{owner}: {chunk} for {where} has no key column(s) {missing_key}; its columns "
            f"are {listing(schema.names)}. Nothing was written."
        )
    if existing is None or mode == "replace":
        return
    extra = [c for c in schema.names if match(c, existing) is None]
    if extra:
        hints = "".join(
            f" Did you mean '{closest}' for '{column}'?"
            for column in extra
            if (closest := closest_name(column, existing))
        )
        raise ConnectorError(
            f"{owner}: {chunk} does not match {where}: extra column(s) {quoted(extra)}; the "
            f"table has {listing(existing)}.{hints} Nothing was written. Select the table's "
            "columns upstream, or use mode='replace' to rebuild the table."
        )
