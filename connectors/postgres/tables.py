"""Table names (parsed, quoted, listed and matched in messages) and relations in the catalog."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from connectors.postgres.connection import Dsn, fetch_rows
from connectors.tables import Table
from etlkit.nodes import Context, Node

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Cursor

#: Characters no table name may hold: quotes, semicolons and control characters.
#: How many table or column names an error message lists before it says "and N more".
_LISTED: Final = 20


def listing(names: Sequence[str]) -> str:
    shown = list(names[:_LISTED])
    more = len(names) - len(shown)
    return f"{shown}" + (f" and {more} more" if more else "")


def closest_name(wanted: str, candidates: Sequence[str]) -> str | None:
    """The candidate `wanted` most likely meant: other case, another schema, or a typo."""
    last = wanted.lower().rsplit(".", 1)[-1]
    same = [c for c in candidates if c.lower().rsplit(".", 1)[-1] == last]
    if same:
        return same[0]
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(wanted.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def node_name(node: Node, ctx: Context) -> str:
    return f"{type(node).__name__} '{ctx.node or node.name or '(unnamed)'}'"


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
    return sorted(str(name) if current else f"{schema}.{name}" for schema, name, current in rows)


def missing_table(cur: Cursor, owner: str, table: Table, dsn: Dsn, hint: str = "") -> str:
    names = _table_names(cur)
    closest = closest_name(table.display, names)
    return (
        f"{owner}: table '{table.display}' not found in PostgreSQL {dsn.masked}; "
        + (f"tables are {listing(names)}." if names else "it has no tables.")
        + (f" Did you mean '{closest}'?" if closest else "")
        + hint
    )
