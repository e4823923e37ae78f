"""Failure tables and the messages made from them.

A failure table (`FAILURE_SCHEMA`) holds one row per failed check and row: `column`, `check`,
`failure_case` (the value as text, as Pandera shows it) and `index` (the row in the chunk; null
for failures of no particular row). Owns building these tables (from etlkit's own checks and
from Pandera's `failure_cases`), trimming them to each check's `n_failure_cases`, the mask of
failing rows, the bounded summary, and the `DataValidationError` a node raises.
"""

from __future__ import annotations

from functools import cache
from typing import Final

import polars as pl

from etlkit.errors import DataValidationError

FAILURE_SCHEMA: Final = pl.Schema(
    {"column": pl.String, "check": pl.String, "failure_case": pl.String, "index": pl.Int64}
)
_NAMED_BY_CASE: Final = ["column_in_dataframe", "column_in_schema", "column_ordered"]

Limits = dict[tuple[str | None, str], int]


@cache
def _no_failures() -> pl.DataFrame:
    return pl.DataFrame(schema=FAILURE_SCHEMA)  # built once: a clone is far cheaper


def schema_failures(found: list[tuple[str | None, str, str]]) -> pl.DataFrame:
    """Failures of no particular row, each (column, check, failure case)."""
    if not found:
        return _no_failures().clone()
    columns, checks, cases = (list(x) for x in zip(*found, strict=True))
    data = {"column": columns, "check": checks, "failure_case": cases, "index": [None] * len(found)}
    return pl.DataFrame(data, schema=FAILURE_SCHEMA)


def as_text(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A value as the text Pandera shows in failure cases (nested values as JSON).

    polars cannot cast a duration to text (`1d 3µs` is its own notation), and panics on a
    date or datetime past the years it can show (then the value since 1970 is shown, in its
    unit: `4611686018427387904ms`).
    """
    if isinstance(dtype, pl.List | pl.Array | pl.Struct):
        return pl.struct(col.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
    if isinstance(dtype, pl.Duration):
        return col.dt.to_string("polars")
    if isinstance(dtype, pl.Date | pl.Datetime):
        unit = "d" if isinstance(dtype, pl.Date) else dtype.time_unit
        shown = pl.when(col.dt.year().is_not_null()).then(col)  # null where out of range
        since = col.to_physical().cast(pl.String) + pl.lit(unit)
        return pl.coalesce(shown.cast(pl.String, strict=False), since)
    return col.cast(pl.String, strict=False)


def apply_limits(failures: pl.DataFrame, limits: Limits) -> pl.DataFrame:
    """Keep the first `n_failure_cases` failures of the checks that set it, as Pandera does."""
    rank = pl.int_range(pl.len()).over("column", "check")
    drop = pl.lit(False)
    for (column, check), limit in limits.items():
        this = pl.col("column").eq_missing(pl.lit(column, pl.String)) & (pl.col("check") == check)
        drop = drop | (this & pl.col("index").is_not_null() & (rank >= limit))
    return failures.filter(drop.not_())


def from_pandera(failure_cases: pl.DataFrame) -> pl.DataFrame:
    """Pandera's failure cases in etlkit's shape (see the module docstring for `column`)."""
    frame_wide = pl.col("schema_context") == "DataFrameSchema"
    return failure_cases.select(
        pl.when(frame_wide & pl.col("check").is_in(_NAMED_BY_CASE))
        .then(pl.col("failure_case").cast(pl.String))
        .when(frame_wide)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.col("column").cast(pl.String))
        .alias("column"),
        pl.col("check").cast(pl.String),
        pl.col("failure_case").cast(pl.String).fill_null("null"),
        pl.col("index").cast(pl.Int64),
    )


def mask_from(failures: pl.DataFrame, height: int) -> pl.Series | None:
    rows = failures.get_column("index").drop_nulls()
    if rows.is_empty():
        return None
    return pl.repeat(False, height, eager=True).scatter(rows, True).alias("invalid")


# --- reporting ---------------------------------------------------------------------------------


def summarize(failures: pl.DataFrame, *, max_checks: int = 10, max_examples: int = 5) -> str:
    """A bounded summary of failures: one line per failed check, with a count and examples.

    At most `max_checks` lines, each with up to `max_examples` distinct values, e.g.
    `column 'amount' failed greater_than_or_equal_to(0) on 3 rows (examples: -1.0, -2.5, -7.0)`,
    then `... and N more checks` when some are left out.
    """
    if failures.is_empty():
        return "no failures"
    groups = failures.group_by("column", "check", maintain_order=True).agg(
        pl.len().alias("n"),
        pl.col("index").is_not_null().any().alias("row_level"),
        pl.col("failure_case").unique(maintain_order=True).head(max_examples).alias("examples"),
    )
    lines = []
    for column, check, n, row_level, examples in groups.head(max_checks).iter_rows():
        subject = f"column '{column}'" if column is not None else "dataframe check"
        shown = ", ".join(_shorten(str(e)) for e in examples)
        if row_level:
            rows = f"{n} row" if n == 1 else f"{n} rows"
            lines.append(f"{subject} failed {check} on {rows} (examples: {shown})")
        elif examples == [column]:  # a missing or extra column
            lines.append(f"{subject} failed {check}")
        else:
            lines.append(f"{subject} failed {check} (found: {shown})")
    if (more := groups.height - max_checks) > 0:
        lines.append(f"... and {more} more check{'s' if more > 1 else ''}")
    return "\n".join(lines)


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validation_error(
    failures: pl.DataFrame,
    *,
    pipeline: str,
    node: str,
    run_id: str,
    chunk: int | None,
    model_name: str,
    side: str = "Output",
    origin: str | None = None,
) -> DataValidationError:
    """A `DataValidationError` saying where data broke which schema, and how.

    `origin` says where a source's failing rows are (`file 'b.csv', lines 4, 7`).

    Besides the message, the error carries `.pipeline`, `.node`, `.run_id`, `.chunk`, `.model`,
    `.n_failures` (rows of `failures`), `.n_rows` (distinct failing rows) and `.checks`
    (column, check, count) for the scheduler and the store. It pickles.
    """
    where = f" on chunk {chunk}" if chunk is not None else ""
    where += f" ({origin})" if origin else ""
    head = f"{side} of node '{node}' in pipeline '{pipeline}' (run {run_id}) broke schema "
    summary = summarize(failures)
    if "\n" in summary:
        n_checks = failures.select(pl.struct("column", "check").n_unique()).item()
        lines = "".join(f"\n  - {line}" for line in summary.splitlines())
        body = f"{len(failures)} failures in {n_checks} checks:{lines}\n"
    else:
        body = f"{summary}. "
    hint = (
        f"Fix node '{node}' (or its inputs) so its output meets schema {model_name}, "
        "or change the schema if a rule is wrong."
    )
    exc = DataValidationError(f"{head}{model_name}{where}: {body}{hint}")
    counts = failures.group_by("column", "check", maintain_order=True).len()
    # The scheduler and the store read the context from attributes; EtlkitError pickles
    # __dict__, so they survive the trip out of a child process.
    exc.__dict__.update(
        pipeline=pipeline,
        node=node,
        run_id=run_id,
        chunk=chunk,
        model=model_name,
        n_failures=failures.height,
        n_rows=failures.get_column("index").drop_nulls().n_unique(),
        checks=[tuple(row) for row in counts.iter_rows()],
    )
    return exc
