"""SQL table names as users write them (`table` or `schema.table`), checked and quoted.

Shared by the database connectors (DuckDB, PostgreSQL): a name that could not be quoted safely
is refused before any SQL is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from etlkit.errors import ConfigError

_FORBIDDEN: Final = re.compile(r"[\"'`;\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Table:
    """A table name, optionally qualified by its schema (`analytics.patients`)."""

    schema: str | None
    name: str

    @property
    def sql(self) -> str:
        parts = [self.name] if self.schema is None else [self.schema, self.name]
        return ".".join(quote_ident(part) for part in parts)

    @property
    def display(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


def quote_ident(identifier: str) -> str:
    """`identifier` as a quoted SQL identifier (embedded double quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def check_name(name: str, owner: str) -> None:
    bad = _FORBIDDEN.search(name)
    if bad:
        raise ConfigError(
            f"{owner}: table name {name!r} contains {bad.group()!r}; table names may not hold "
            "quotes, semicolons or control characters. Write 'table' or 'schema.table'."
        )


def parse_table(name: str, owner: str) -> Table:
    """Split `table` or `schema.table`, refusing anything that could not be quoted safely.

    Raises:
        ConfigError: the name is empty, has more than two parts or holds a forbidden character.
    """
    check_name(name, owner)
    parts = name.split(".")
    if len(parts) > 2 or not all(part.strip() for part in parts):
        raise ConfigError(
            f"{owner}: table name {name!r} is not of the form 'table' or 'schema.table'."
        )
    return Table(None, parts[0]) if len(parts) == 1 else Table(parts[0], parts[1])
