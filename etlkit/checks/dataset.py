"""The dataset checks a single chunk cannot decide, run over a node's whole staged output in
DuckDB: row counts, uniqueness across chunks, SQL assertions (`dataset_problems`).

The column statistics that prove checks without reading rows come from the file's format
(`etlkit.storage.parquet.parquet_statistics`); `etlkit.checks.proofs` uses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from etlkit.errors import quoted
from etlkit.storage.formats import FileFormat
from etlkit.storage.parquet import PARQUET


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
    read_as: FileFormat = PARQUET,
) -> list[str]:
    """Checks a single chunk cannot decide, over a node's whole staged output.

    `con` is a DuckDB connection able to read `files` (the node's Parquet parts, or the files
    a reference names, read in their format `read_as`). Returns one problem per failed check,
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
    scan = read_as.scan(con, files, "__output_scan")
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
