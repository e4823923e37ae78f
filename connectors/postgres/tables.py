"""PostgreSQL relations in the catalog, and the message for a table that is not there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.postgres.connection import Dsn, fetch_rows
from connectors.tables import LEDGER, Table, closest_name, listing

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Cursor


@dataclass(frozen=True)
class Found:
    """An existing relation: its schema, name and kind (`r` table, `v` view, `p` partitioned)."""

    schema: str
    name: str
    kind: str

    @property
    def table(self) -> Table:
        return Table(self.schema, self.name)


def find_relation(cur: Cursor, table: Table) -> Found | None:
    """The relation `table` names (unqualified names follow the search_path), or None."""
    rows = fetch_rows(
        cur,
        "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
        [table.sql],
    )
    return Found(*rows[0]) if rows else None


def _table_names(cur: Cursor) -> list[str]:
    """Every table and view the user can see, `schema.` omitted for the current schema."""
    rows = fetch_rows(
        cur,
        "SELECT table_schema::text, table_name::text, "
        "table_schema = current_schema() FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
        "AND table_schema NOT LIKE 'pg\\_temp\\_%' AND table_schema NOT LIKE 'pg\\_toast%'",
    )
    return sorted(
        str(name) if current else f"{schema}.{name}"
        for schema, name, current in rows
        if name != LEDGER  # the sinks' bookkeeping, not a table users load or read
    )


def missing_table(cur: Cursor, owner: str, table: Table, dsn: Dsn, hint: str = "") -> str:
    names = _table_names(cur)
    closest = closest_name(table.display, names)
    return (
        f"{owner}: table '{table.display}' not found in PostgreSQL {dsn.masked}; "
        + (f"tables are {listing(names)}." if names else "it has no tables.")
        + (f" Did you mean '{closest}'?" if closest else "")
        + hint
    )
