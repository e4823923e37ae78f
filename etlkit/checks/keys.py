"""Unique keys across a node's chunks: a chunk checks its own rows, these check them all.

`IncreasingKey` proves a key unique as chunks stream when its values increase (exports usually
come in key order), sparing the pass over the whole output. Under the `drop` and `quarantine`
policies, `key_checks` lists a model's unique keys, `flag_repeats` finds the staged rows whose
key occurs more than once among every row the node produced (in DuckDB), and `repeat_rejects`
turns them into rejects and failures, as a chunk's own uniqueness failures are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from etlkit.checks.dataset import quote
from etlkit.checks.failures import as_text

if TYPE_CHECKING:
    import pandera.polars as pdp
    import pyarrow as pa


def strictly_increasing(values: pl.Series) -> bool:
    """Whether a column's non-null values are strictly increasing: then no two are equal.

    False for a type without an order (a struct, a list), and when a NaN repeats.
    """
    values = values.drop_nulls()
    n = values.len()
    if n < 2:
        return True
    try:
        return bool((values.slice(1) > values.slice(0, n - 1)).all())
    except pl.exceptions.PolarsError:
        return False


class IncreasingKey:
    """Watches one key column across a node's chunks: strictly increasing values are unique.

    Uniqueness across chunks otherwise takes a pass over the whole output (a hash of every
    key, in DuckDB). Exports are usually written in key order, and then a comparison of
    neighbours per chunk, as the chunks stream, proves it without that pass. A null repeats
    another null (as in Pandera's `unique`), so a second null anywhere ends the proof. Once a
    value fails to exceed the one before, `holds` is False for good and the full check decides.
    """

    def __init__(self, column: str) -> None:
        self.column = column
        self.holds = True
        self._last: pl.Series | None = None
        self._nulls = 0

    def update(self, batch: pa.RecordBatch) -> None:
        """Take the next chunk of the output, in output order."""
        if not self.holds:
            return
        index = batch.schema.get_field_index(self.column)
        if index < 0:
            self.holds = False
            return
        column = batch.column(index)
        self._nulls += column.null_count
        if self._nulls > 1:
            self.holds = False
            return
        values = pl.Series(column).drop_nulls()
        if values.len() == 0:
            return
        # compared as polars values: a datetime outside Python's range does not convert
        try:
            after_last = self._last is None or bool((values.head(1) > self._last).item())
        except pl.exceptions.PolarsError:
            after_last = False
        self.holds = after_last and strictly_increasing(values)
        self._last = values.tail(1)


@dataclass(frozen=True)
class KeyCheck:
    """A unique key of a model, named as Pandera's `failure_cases` names its check."""

    columns: tuple[str, ...]
    check: str  # `field_uniqueness` (a `unique=True` field) or `multiple_fields_uniqueness`
    column: str | None  # the field's name; None for `Config.unique`, a check of the frame


def key_checks(model: type[pdp.DataFrameModel], columns: Sequence[str]) -> list[KeyCheck]:
    """The unique keys `model` declares, as `schema.unique_sets_in` lists them for an output
    holding `columns` (a unique regex column: one key per column it matches)."""
    from etlkit.model.schema import unique_sets, unique_sets_in

    keys = unique_sets_in(model, columns)
    fields = {str(n) for n, c in model.to_schema().columns.items() if c.unique}
    fields |= {k[0] for k in keys if len(k) == 1 and k not in unique_sets(model)}  # by regex
    return [
        KeyCheck(k, "field_uniqueness", k[0])
        if len(k) == 1 and k[0] in fields
        else KeyCheck(k, "multiple_fields_uniqueness", None)
        for k in keys
    ]


def flag_repeats(
    con: Any, output: Sequence[str], judged: Sequence[str], checks: Sequence[KeyCheck]
) -> str | None:
    """The SELECT of a node's staged output, in order, with a boolean `__repeat_<n>` per check
    saying whether the row's key occurs more than once among every row the node produced: its
    output (`output`, Parquet parts) and the rows it took out (`judged`, files holding at least
    the key columns). Nulls repeat, as in Pandera's `is_duplicated`. None: no key repeats.
    """

    def files(urls: Sequence[str]) -> str:
        return "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in urls) + "]"

    scans = [
        f"SELECT {i} AS __file, file_row_number AS __line, * EXCLUDE (file_row_number) "
        f"FROM read_parquet({files([url])}, file_row_number = true)"
        for i, url in enumerate(output)
    ]
    con.execute("CREATE OR REPLACE TEMP VIEW __output AS " + " UNION ALL ".join(scans))
    flags: list[str] = []
    for n, check in enumerate(checks):
        keys = ", ".join(quote(c) for c in check.columns)
        every = f"SELECT {keys} FROM __output"
        if judged:
            every += (
                f" UNION ALL SELECT {keys} FROM read_parquet({files(judged)}, union_by_name = true)"
            )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __repeats_{n} AS "
            f"SELECT {keys} FROM ({every}) GROUP BY ALL HAVING count(*) > 1"
        )
        if not con.execute(f"SELECT count(*) FROM __repeats_{n}").fetchall()[0][0]:
            flags.append(f"false AS __repeat_{n}")
            continue
        same = " AND ".join(
            f"r.{quote(c)} IS NOT DISTINCT FROM o.{quote(c)}" for c in check.columns
        )
        flags.append(f"EXISTS (SELECT 1 FROM __repeats_{n} r WHERE {same}) AS __repeat_{n}")
    if all(f.startswith("false ") for f in flags):
        return None
    return (
        f"SELECT o.* EXCLUDE (__file, __line), {', '.join(flags)} "
        "FROM __output o ORDER BY o.__file, o.__line"
    )


def repeat_rejects(
    rows: pl.DataFrame, checks: Sequence[KeyCheck], columns: Sequence[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """For rows flagged by `flag_repeats`: the rows as a chunk's quarantine stages them (with
    `_check`, `_column` and `_reason` of their first failure) and their failure table."""
    cases: list[pl.Expr] = [
        as_text(pl.col(c.column), rows.schema[c.column])
        if c.column is not None
        else pl.struct(list(columns)).struct.json_encode()
        for c in checks
    ]
    failures = pl.concat(
        [
            rows.filter(pl.col(f"__repeat_{n}")).select(
                column=pl.lit(c.column, pl.String),
                check=pl.lit(c.check, pl.String),
                failure_case=cases[n].fill_null("null"),
                index=pl.lit(None, pl.Int64),
                chunk=pl.lit(None, pl.Int64),
            )
            for n, c in enumerate(checks)
        ]
    )
    flagged = [pl.col(f"__repeat_{n}") for n in range(len(checks))]
    reasons = [
        pl.when(flag).then(
            pl.concat_str(
                pl.lit(f"column '{c.column or '*'}' failed {c.check}: "),
                cases[n].fill_null("null"),
            )
        )
        for n, (c, flag) in enumerate(zip(checks, flagged, strict=True))
    ]
    annotated = rows.select(
        *columns,
        _check=pl.coalesce(
            pl.when(f).then(pl.lit(c.check)) for c, f in zip(checks, flagged, strict=True)
        ),
        _column=pl.coalesce(
            pl.when(f).then(pl.lit(c.column, pl.String))
            for c, f in zip(checks, flagged, strict=True)
        ),
        _reason=pl.concat_list(reasons).list.drop_nulls().list.join("; "),
    )
    return annotated, failures
