"""Key ranges of a partitioned read: a column's minimum to maximum cut into ranges, as bounds
(JSON-able, the cuts as the text of SQL literals, a `Partition`'s data) and as the WHERE
conditions that read each range."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final

from connectors.postgres.columns import pg_type, type_family
from connectors.tables import quote_ident
from etlkit.errors import ConnectorError

if TYPE_CHECKING:
    import pyarrow as pa
    from adbc_driver_manager.dbapi import Cursor

logger = logging.getLogger(__name__)

#: Families a partition column may have: its values are split into ranges.
_PARTITIONABLE: Final = ("integer", "float", "numeric", "date", "timestamp", "timestamptz")


def literal(value: str) -> str:
    """`value` as an SQL string literal (standard_conforming_strings: only quotes double)."""
    return "'" + value.replace("'", "''") + "'"


def partition_field(columns: pa.Schema, name: str, what: str, owner: str) -> pa.Field:
    """The relation's partition column `name` (exactly, else case-insensitively).

    Raises:
        ConnectorError: its type is not numeric, date or timestamp.
    """
    by_lower = {f.name.lower(): f for f in columns}
    field = next((f for f in columns if f.name == name), None) or by_lower[name.lower()]
    if type_family(field) not in _PARTITIONABLE:
        raise ConnectorError(
            f"{owner}: partition_column '{field.name}' of {what} is PostgreSQL type "
            f"{pg_type(field)}; partitioned reads need a numeric, date or timestamp column."
        )
    return field


def bounds(
    cur: Cursor,
    relation: str,
    filters: tuple[str, ...],
    field: pa.Field,
    parts: int,
    owner: str,
) -> list[dict[str, Any]]:
    """The ranges of `field`'s values in `relation` (under `filters`), in order:
    `{"high": c1}`, `{"low": c1, "high": c2}`, ..., `{"low": cN}`, then `{"null": True}`; one
    `{}` (everything) when the column has no two distinct values."""
    column = quote_ident(field.name)
    cast = {"integer": "::bigint", "numeric": "::double precision"}.get(type_family(field), "")
    where = " WHERE " + " AND ".join(filters) if filters else ""
    cur.execute(f"SELECT min({column}){cast}, max({column}){cast} FROM {relation}{where}")
    low, high = cur.fetchall()[0]
    cuts = [_text(cut) for cut in _cuts(low, high, parts)]
    if not cuts:
        return [{}]
    ranges: list[dict[str, Any]] = [{"high": cuts[0]}]
    ranges += [{"low": a, "high": b} for a, b in pairwise(cuts)]
    ranges += [{"low": cuts[-1]}, {"null": True}]
    logger.debug("%s: %d ranges of %s: cuts %s", owner, len(ranges), field.name, cuts)
    return ranges


def conditions(field: pa.Field, bound: Mapping[str, Any], owner: str) -> tuple[str, ...]:
    """The WHERE conditions reading one range of `bounds` (`{}`: none); its values become
    SQL literals, never SQL text.

    Raises:
        ConnectorError: `bound` is not one `bounds` makes.
    """
    low, high, null = bound.get("low"), bound.get("high"), bound.get("null", False)
    if (
        not set(bound) <= {"low", "high", "null"}
        or not all(value is None or isinstance(value, str) for value in (low, high))
        or null not in (True, False)
        or (null and (low is not None or high is not None))
    ):
        raise ConnectorError(f"{owner}: {dict(bound)!r} is not a range of this source.")
    column = quote_ident(field.name)
    if null:
        return (f"{column} IS NULL",)
    found = [] if low is None else [f"{column} >= {literal(low)}"]
    return (*found, *([] if high is None else [f"{column} < {literal(high)}"]))


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
