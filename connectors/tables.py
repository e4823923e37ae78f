"""SQL table names as users write them (`table` or `schema.table`), checked and quoted.

Shared by the database connectors (DuckDB, PostgreSQL): a name that could not be quoted safely
is refused before any SQL is built; `listing`, `closest_name` and `node_name` phrase their
messages; `conform_batch` casts what a database returns to the model's types. `LEDGER` is the
load ledger both database sinks keep beside their target tables.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pyarrow as pa

from etlkit.connector import Context, Node
from etlkit.errors import ConfigError, ConnectorError, quoted

_FORBIDDEN: Final = re.compile(r"[\"'`;\x00-\x1f\x7f]")

#: The load ledger a database sink keeps in its target's schema: one row per committed load
#: (`Context.load_id`), inserted in the load's own transaction, so a retry finds a load that
#: committed before the run store heard of it. A separate table leaves the target's columns
#: as the user made them.
LEDGER: Final = "_etlkit_loads"
LEDGER_COLUMNS: Final = (
    "load_id VARCHAR PRIMARY KEY, pipeline VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
    "node VARCHAR NOT NULL, target VARCHAR NOT NULL, mode VARCHAR NOT NULL, "
    "row_count BIGINT NOT NULL, loaded_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()"
)


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


def already_loaded(ctx: Context, ledger: str) -> str:
    """The message for a second load under one load id: what happened, and what to do."""
    return (
        f"Node '{ctx.node}' in pipeline '{ctx.pipeline}' (run {ctx.run_id}): load "
        f"{ctx.load_id} was already committed ({ledger} records it), and a run loads each "
        "sink once. Nothing was written. To load the data again, start a new run."
    )


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


#: How many table or column names an error message lists before it says "and N more".
_LISTED: Final = 20


def listing(names: Sequence[str]) -> str:
    """Names for a message: the first 20, then how many more."""
    shown = list(names[:_LISTED])
    more = len(names) - len(shown)
    if not more:
        return quoted(shown)
    return ", ".join(f"'{name}'" for name in shown) + f" and {more} more"


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
    """The node as messages name it: `DuckDBSource 'patients'`."""
    return f"{type(node).__name__} '{ctx.node or node.name or '(unnamed)'}'"


def conform_batch(
    batch: pa.RecordBatch, target: pa.Schema, owner: str, what: str
) -> pa.RecordBatch:
    """`batch` with the target's types (and no driver metadata), casting only what differs.

    Raises:
        ConnectorError: a column's values cannot be cast (the message names the column).
    """
    if batch.schema.equals(target, check_metadata=True):
        return batch
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
