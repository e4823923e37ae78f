"""What is known of a node's data as a whole: column statistics from Parquet footers, and the
dataset checks run over its whole staged output in DuckDB.

`parquet_statistics` combines the row groups' statistics (and, for dictionary-encoded text,
the dictionaries) of whole files into `ColumnStats`, from which `etlkit.checks.proofs` proves
checks without reading rows. `dataset_problems` runs the checks a single chunk cannot decide:
row counts, uniqueness across chunks, SQL assertions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from etlkit.errors import quoted
from etlkit.storage.staging import CsvLayout, duckdb_scan, parquet_batches

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class ColumnStats:
    """A column's statistics over whole files: extremes (None when unknown), null count, and for
    dictionary-encoded text columns every value the dictionaries hold (None when not read).

    `kind` is the Arrow type the extremes are values of, None when the files disagree on it or it
    has no order statistics can be trusted with (floats, dictionaries). Temporal extremes
    (timestamps, times, dates, durations) are the integers Parquet stores, counted in `kind`'s
    unit: Python's `datetime` and `time` stop at microseconds.
    """

    minimum: Any
    maximum: Any
    null_count: int | None
    floating: bool
    values: frozenset[str] | None = None
    kind: pa.DataType | None = None


#: Arrow's text types, as `str(type)` spells them.
_TEXT_TYPES: Final = ("string", "large_string", "string_view")
#: Arrow's floating-point types, as `str(type)` spells them.
_FLOAT_TYPES: Final = ("float", "double", "halffloat")
#: Past this many distinct values a column's dictionaries are not worth collecting.
_MAX_DICTIONARY_VALUES: Final = 4096


# One function of some length: it reads each footer once, in one pass over its row groups, and
# keeps per column only the few values the merge needs.
def parquet_statistics(
    paths: Sequence[str],
    columns: Sequence[str],
    *,
    values_of: Sequence[str] = (),
    metadata: Sequence[Any] = (),
) -> dict[str, ColumnStats]:
    """Every row group's statistics of `columns` in these Parquet files, combined per column.

    A column missing statistics in any row group gets unknown extremes or null count. For the
    text columns in `values_of` that are dictionary-encoded in every row group, `values` is
    the union of the dictionaries: a superset of the values present, read from the dictionary
    indices without materializing any string (a fraction of a full scan). `metadata`: the
    files' parsed footers (`pyarrow.parquet.FileMetaData`, in `paths` order) when the caller
    has them, so they are not parsed again.
    """
    import pyarrow.parquet as pq

    footers = list(metadata) or [pq.read_metadata(path) for path in paths]
    lows: dict[str, list[Any]] = {}
    highs: dict[str, list[Any]] = {}
    nulls: dict[str, int | None] = {}
    floating: dict[str, bool] = {}
    kinds: dict[str, list[pa.DataType | None]] = {}
    dictionary_coded = set(values_of)
    for footer in footers:
        types = {field.name: field.type for field in footer.schema.to_arrow_schema()}
        # (index, name, text, raw) of the wanted columns: a wide file's other columns are never
        # looked at (their statistics would be objects per column and row group)
        picked: list[tuple[int, str, bool, bool]] = []
        for index in range(footer.num_columns):
            column = footer.schema.column(index)
            name = column.path
            if name in columns:
                kind = str(types.get(name, ""))
                floating[name] = floating.get(name, False) or kind in _FLOAT_TYPES
                ordered = _ordered_kind(column, types.get(name))
                kinds.setdefault(name, []).append(ordered)
                raw = ordered is not None and _is_temporal(ordered)
                picked.append((index, name, kind in _TEXT_TYPES, raw))
                lows.setdefault(name, [])
                highs.setdefault(name, [])
                nulls.setdefault(name, 0)
        for group in range(footer.num_row_groups):
            row_group = footer.row_group(group)
            for index, name, text, raw in picked:
                chunk = row_group.column(index)
                if not (text and chunk.has_dictionary_page):
                    dictionary_coded.discard(name)
                stats = chunk.statistics
                low, high = _row_group_extremes(stats, raw)
                lows[name].append(low)
                highs[name].append(high)
                counted = nulls[name]
                if counted is not None:
                    has_count = stats is not None and stats.has_null_count
                    nulls[name] = counted + stats.null_count if has_count else None
    merged = {
        name: ColumnStats(
            *_extremes(lows[name], highs[name]),
            nulls[name],
            floating[name],
            kind=_same_kind(kinds[name]),
        )
        if len(kinds[name]) == len(footers)
        # a file without the column: its rows' values are unknown
        else ColumnStats(None, None, None, floating[name])
        for name in lows
    }
    # (a file without the column has no dictionary to read)
    complete = [c for c in values_of if c in merged and len(kinds[c]) == len(footers)]
    wanted = [c for c in complete if c in dictionary_coded]
    for name, values in _dictionary_values(paths, footers, wanted).items():
        merged[name] = replace(merged[name], values=values)
    return merged


def _ordered_kind(column: Any, kind: pa.DataType | None) -> pa.DataType | None:
    """The Arrow type a Parquet column's statistics are exact values of (see `ColumnStats`).

    None for floats (statistics leave NaN out), dictionaries (polars orders categories its own
    way), and temporal columns whose stored unit is not the Arrow type's (INT96 timestamps).
    """
    import pyarrow as pa

    if kind is None or pa.types.is_floating(kind) or pa.types.is_dictionary(kind):
        return None
    if not _is_temporal(kind):
        return kind
    physical = column.physical_type
    if pa.types.is_date(kind):
        return pa.date32() if physical == "INT32" else None
    if physical not in ("INT32", "INT64") or not (
        pa.types.is_timestamp(kind) or pa.types.is_time(kind) or pa.types.is_duration(kind)
    ):
        return None
    if pa.types.is_duration(kind):  # no Parquet type: the Arrow type's integers are stored
        return kind
    stored = json.loads(column.logical_type.to_json()).get("timeUnit")
    return kind if _UNITS.get(stored) == kind.unit else None


#: Parquet's time units, as Arrow spells them.
_UNITS: Final = {"milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns"}


def _is_temporal(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_temporal(kind))


def _row_group_extremes(stats: Any, raw: bool) -> tuple[Any, Any]:
    """A row group's minimum and maximum (None when unknown): temporal values as the integers
    stored, since Python's `datetime` and `time` would cut nanoseconds off."""
    if stats is None or not stats.has_min_max:
        return None, None
    try:
        return (stats.min_raw, stats.max_raw) if raw else (stats.min, stats.max)
    except ValueError:  # text cut inside a character by a writer that truncates statistics
        return None, None


def _same_kind(kinds: list[pa.DataType | None]) -> pa.DataType | None:
    """The type every file agrees on, else None."""
    first = kinds[0] if kinds else None
    if first is None or any(k is None or not k.equals(first) for k in kinds):
        return None
    return first


def _extremes(lows: list[Any], highs: list[Any]) -> tuple[Any, Any]:
    """The smallest low and largest high; both None when one is unknown or they do not compare."""
    if not lows or None in lows or None in highs:
        return None, None
    try:
        return min(lows), max(highs)
    except TypeError:
        return None, None


def _dictionary_values(
    paths: Sequence[str], footers: Sequence[Any], columns: list[str]
) -> dict[str, frozenset[str]]:
    """The union of each column's dictionaries; a column with too many values is left out."""
    import pyarrow.parquet as pq

    found: dict[str, set[str | None]] = {c: set() for c in columns}
    for path, footer in zip(paths, footers, strict=True):
        if not found:
            break
        names = list(found)
        parquet = pq.ParquetFile(path, metadata=footer, read_dictionary=names)
        for batch in parquet_batches(parquet, batch_size=1 << 20, columns=names):
            for name in list(found):
                found[name].update(batch.column(name).dictionary.to_pylist())
                if len(found[name]) > _MAX_DICTIONARY_VALUES:
                    del found[name]
            if not found:
                break
    return {name: frozenset(v for v in values if v is not None) for name, values in found.items()}


# -- dataset-level checks ------------------------------------------------------------------------


def quote(name: str) -> str:
    """`name` as a DuckDB identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def _fetch_rows(con: Any, sql: str) -> list[tuple[Any, ...]]:
    """A query's rows as Python values, through Arrow: DuckDB's own conversion of a zoned
    timestamp needs pytz, which etlkit does not depend on."""
    table = con.sql(sql).to_arrow_table()
    return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


def _examples(rows: list[tuple[Any, ...]], limit: int = 5) -> str:
    shown = [str(r[0]) if len(r) == 1 else str(tuple(r)) for r in rows[:limit]]
    return ", ".join(shown)


# One function of some length: the checks share one view of the output and one list of problems.
def dataset_problems(
    con: Any,
    files: Sequence[str],
    *,
    rows: int,
    min_rows: int | None = None,
    max_rows: int | None = None,
    unique: Sequence[Sequence[str]] = (),
    model_unique: Sequence[Sequence[str]] = (),
    sql: Sequence[str] = (),
    csv: CsvLayout | None = None,
) -> list[str]:
    """Checks a single chunk cannot decide, over a node's whole staged output.

    `con` is a DuckDB connection able to read `files` (the node's Parquet parts, or with `csv`
    the CSV files a reference names, parsed as it says). Returns one problem per failed check,
    with counts and up to 5 examples; an empty list means all passed. Keys in `unique` (a
    node's `expect(unique=...)`) ignore rows with a null key, as a SQL key does; keys in
    `model_unique` (its model's) count nulls as repeating, as Pandera's `unique` does within
    a chunk, so the verdict is the same whatever the chunk boundaries.
    """
    import duckdb

    problems: list[str] = []
    if min_rows is not None and rows < min_rows:
        hint = " (no data found: is the input empty or its path wrong?)" if rows == 0 else ""
        problems.append(f"has {rows} rows; expected at least {min_rows}{hint}")
    if max_rows is not None and rows > max_rows:
        problems.append(f"has {rows} rows; expected at most {max_rows}")
    if not files or not (unique or model_unique or sql):
        return problems
    scan = duckdb_scan(con, files, csv, "__output_csv")
    con.execute(f"CREATE OR REPLACE TEMP VIEW __output AS SELECT * FROM {scan}")
    for columns in [*unique, *model_unique]:
        keys = ", ".join(quote(c) for c in columns)
        where = f"WHERE ({keys}) IS NOT NULL " if columns in unique else ""
        duplicated = _fetch_rows(
            con,
            f"SELECT {keys}, count(*) AS n FROM __output {where}"
            f"GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC, {keys} LIMIT 6",
        )
        if duplicated:
            total = con.execute(
                f"SELECT count(*) FROM (SELECT {keys} FROM __output {where}"
                f"GROUP BY ALL HAVING count(*) > 1)"
            ).fetchall()[0][0]  # drained: the connection runs the next query
            what = f"column '{columns[0]}'" if len(columns) == 1 else f"columns {quoted(columns)}"
            problems.append(
                f"{what} must be unique across all chunks; {total} value(s) repeat "
                f"(examples: {_examples([d[:-1] for d in duplicated])})"
            )
    for query in sql:
        try:
            failing = con.execute(
                f"SELECT count(*) FROM ({query.replace('{output}', '__output')})"
            ).fetchall()[0][0]
            examples = (
                _fetch_rows(con, f"{query.replace('{output}', '__output')} LIMIT 5")
                if failing
                else []
            )
        except duckdb.Error as exc:
            problems.append(f"SQL assertion {query!r} could not run: {exc}")
            continue
        if failing:
            problems.append(
                f"SQL assertion {query!r} returned {failing} offending row(s) "
                f"(examples: {_examples(examples)})"
            )
    return problems
