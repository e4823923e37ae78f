"""File references: a source staged as a reference to its own files instead of a copy.

When a source's output is its files as they are (immutable Parquet files read in place, or
CSV files every consumer of which takes the chunks as they come), its staged output is a
manifest naming the files, their sizes and checksums, and the SQL casts to the source's model;
the files are validated in one pass (`refer`), from footer statistics (`_proven`), or as they
stream. A cast is allowed only where polars, DuckDB and pyarrow read the same values from the
files (`_exact_cast`, `_checked_cast`), and `check_unchanged` fails a source whose CSV files
changed while it read them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, cast

import polars as pl

from etlkit.engine.steps.dataset import check_dataset
from etlkit.errors import StagingError
from etlkit.model.nodes import Sql
from etlkit.model.schema import polars_schema_in

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.checks.validation import ChunkValidator
    from etlkit.engine.steps.context import StepContext
    from etlkit.model.nodes import Context, Source, SourceFiles

logger = logging.getLogger(__name__)

_SQL_TYPES: dict[type[pl.DataType], str] = {
    pl.Int8: "TINYINT",
    pl.Int16: "SMALLINT",
    pl.Int32: "INTEGER",
    pl.Int64: "BIGINT",
    pl.UInt8: "UTINYINT",
    pl.UInt16: "USMALLINT",
    pl.UInt32: "UINTEGER",
    pl.UInt64: "UBIGINT",
    pl.Float32: "FLOAT",
    pl.Float64: "DOUBLE",
    pl.String: "VARCHAR",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
}
_SQL_NAIVE: Final = {"ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}
_SQL_ZONED: Final = {"us": "TIMESTAMPTZ", "ns": "TIMESTAMPTZ_NS"}  # DuckDB has no zoned ms
_INTEGER_RANGES: Final[dict[type[pl.DataType], tuple[int, int]]] = {
    pl.Int8: (-(2**7), 2**7 - 1),
    pl.Int16: (-(2**15), 2**15 - 1),
    pl.Int32: (-(2**31), 2**31 - 1),
    pl.Int64: (-(2**63), 2**63 - 1),
    pl.UInt8: (0, 2**8 - 1),
    pl.UInt16: (0, 2**16 - 1),
    pl.UInt32: (0, 2**32 - 1),
    pl.UInt64: (0, 2**64 - 1),
}


def _sql_type(dtype: pl.DataType) -> str | None:
    """The DuckDB type a polars dtype casts to, or None when there is no plain equivalent."""
    if isinstance(dtype, pl.Datetime):
        unit = dtype.time_unit or "us"
        if dtype.time_zone:
            return _SQL_ZONED.get(unit)
        return _SQL_NAIVE[unit]
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision or 38}, {dtype.scale or 0})"
    return _SQL_TYPES.get(type(dtype))


def _exact_cast(found: pl.DataType, wanted: pl.DataType) -> bool:
    """Whether every value of type `found` has an exact equal of type `wanted`.

    A reference is validated with polars' cast, its SQL consumers read DuckDB's and a resumed
    run pyarrow's: only a cast that loses nothing gives them all the same values (and passes
    wherever the streamed path's safe cast does). Others, whose result depends on rounding or
    range (`timestamp[ns]` to µs, narrower decimals or integers, int64 to float, dates to µs
    timestamps past year 294,000), are left to the streamed path, which reports the first value
    it cannot cast.
    """
    if found == wanted:
        return True
    if isinstance(wanted, pl.String):
        return isinstance(found, pl.String | pl.Categorical | pl.Enum)
    if found.is_integer():
        low, high = _INTEGER_RANGES.get(type(found), (1, 0))
        if low > high:
            return False
        if wanted.is_integer():
            wanted_low, wanted_high = _INTEGER_RANGES.get(type(wanted), (1, 0))
            return wanted_low <= low and high <= wanted_high
        if isinstance(wanted, pl.Float32 | pl.Float64):  # pyarrow's safe cast bounds it so
            limit = 1 << (24 if isinstance(wanted, pl.Float32) else 53)
            return -limit <= low and high <= limit
        if isinstance(wanted, pl.Decimal):
            digits = (wanted.precision or 38) - (wanted.scale or 0)
            return len(str(max(-low, high))) <= digits
        return False
    if isinstance(found, pl.Float32):
        return isinstance(wanted, pl.Float64)
    if isinstance(found, pl.Decimal) and isinstance(wanted, pl.Decimal):
        found_scale, wanted_scale = found.scale or 0, wanted.scale or 0
        return (
            wanted_scale >= found_scale
            and (wanted.precision or 38) - wanted_scale >= (found.precision or 38) - found_scale
        )
    if isinstance(found, pl.Decimal) and isinstance(wanted, pl.Float64):
        # inexact, but polars and DuckDB both divide the integer by 10**scale, rounding once
        return (found.precision or 38) <= 15 and 0 <= (found.scale or 0) <= 22
    if isinstance(found, pl.Date) and isinstance(wanted, pl.Datetime):
        return wanted.time_unit == "ms" and wanted.time_zone is None  # holds every date
    if isinstance(found, pl.Datetime) and isinstance(wanted, pl.Datetime):
        # one instant in another time zone; a naive timestamp has no instant to keep
        return bool(found.time_unit == wanted.time_unit and found.time_zone and wanted.time_zone)
    return False


def _checked_cast(found: pl.DataType, wanted: pl.DataType) -> bool:
    """Whether a cast keeps some values and changes others, `_changes` tells which, and
    pyarrow's safe cast rejects every value it changes (so a streamed source staged as a
    reference to its files commits only if none changed). A reference then holds the files
    only when it keeps them all, equal whoever casts them: `timestamp[ns]` holding whole
    microseconds, int64 within int32's range, and so on. float64 to float32 is not one: pyarrow
    rounds where DuckDB fails past float32's range."""
    if found.is_integer():
        return wanted.is_integer() or isinstance(wanted, pl.Float32 | pl.Float64 | pl.Decimal)
    if isinstance(found, pl.Decimal):
        return wanted.is_integer() or isinstance(wanted, pl.Decimal)
    if isinstance(found, pl.Date):
        return isinstance(wanted, pl.Datetime) and wanted.time_zone is None
    if isinstance(found, pl.Datetime) and isinstance(wanted, pl.Datetime):
        return (found.time_zone is None) == (wanted.time_zone is None)
    return False


def _changes(column: str, found: pl.DataType, wanted: pl.DataType) -> pl.Expr:
    """Whether casting a value of `column` from `found` to `wanted` changes it (or fails): the
    value does not come back from a cast back, or is an integer beyond what pyarrow's safe cast
    to floats accepts (2**53, 2**24 for float32)."""
    value = pl.col(column)
    cast = value.cast(wanted, strict=False)
    changed = cast.is_null() | (cast.cast(found, strict=False) != value).fill_null(True)
    if found.is_integer() and isinstance(wanted, pl.Float32 | pl.Float64):
        limit = 1 << (24 if isinstance(wanted, pl.Float32) else 53)
        changed = changed | (value > limit)
        if found.is_signed_integer():
            changed = changed | (value < -limit)
    return value.is_not_null() & changed


def _changed(lossy: pl.LazyFrame) -> bool:
    """Whether a reference's casts would change a value (also when polars cannot tell)."""
    try:
        return bool(lossy.collect(engine="streaming").item())
    except pl.exceptions.PolarsError:
        return True


def _readers_differ(files: SourceFiles) -> bool:
    """Whether polars, DuckDB and pyarrow would read a referenced column differently (Parquet's
    INT96 timestamps, say), so that only a copy reads the same everywhere."""
    return not files.format.readers_agree(files.metadata, files.columns)


def _proven(validator: ChunkValidator, files: SourceFiles) -> frozenset[tuple[str, str]]:
    """The checks the files' metadata (Parquet footer statistics and dictionaries) prove for
    all rows."""
    found = files.format.statistics(
        files.urls, files.columns, values_of=validator.text_columns(), metadata=files.metadata
    )
    return validator.proven_checks(found) if found else frozenset()


@dataclass(frozen=True)
class _Reference:
    """A source staged as a reference to its files: the files (in their format), their SQL
    casts to its model and, for files that describe themselves (Parquet), a lazy frame over
    them as the source would yield them (None for parsed ones, such as CSV: a parse costs what
    a copy saves)."""

    files: SourceFiles
    select: list[tuple[str, str | None]]
    frame: pl.LazyFrame | None
    lossy: pl.LazyFrame | None = None  # one row: whether the casts would change any value


def _expected_rows(node: Source, ctx: Context, referenced: _Reference | None) -> int | None:
    """How many rows a source is about to read, for progress: the row counts in the footers
    `reference` already read (files that describe themselves), else the source's own estimate."""
    if referenced is not None and referenced.files.format.schema is None:
        return referenced.files.rows
    return node.estimate(ctx)


def check_unchanged(step: StepContext, files: SourceFiles) -> None:
    """Fail when a source's parsed (CSV) files changed while it read them: a reference to them
    would not hold what it read (a copy would have half-written data)."""

    def state(found: SourceFiles) -> dict[str, tuple[int, str]]:
        return dict(zip(found.urls, zip(found.sizes, found.checksums, strict=True), strict=True))

    node = cast("Source", step.node)
    again = node.files(step.ctx)
    before, after = state(files), {} if again is None else state(again)
    changed = sorted(u for u in before.keys() | after.keys() if before.get(u) != after.get(u))
    if changed:
        raise StagingError(
            f"Source '{step.name}' of pipeline '{step.pipeline}' (run {step.run_id}): "
            f"its files changed while it read them ({', '.join(changed[:5])}"
            f"{', ...' if len(changed) > 5 else ''}); nothing of it was staged. Run again "
            "once the files are complete (a sensor can wait for them)."
        )


def reference(step: StepContext, node: Source) -> _Reference | None:
    """The files a source reads, the SQL casts to its model, and (Parquet) a lazy frame
    over them as the source would yield them; None when the source cannot be referenced.

    CSV files are referenced only when every consumer takes the source's chunks from a
    channel: nothing of this run parses them again (unless a unique key is not seen
    increasing as it streams), and a copy would cost as much as the parse it saves.
    """
    if not step.options.reference_sources or node.cursor_column is not None:
        return None
    if not node.files_in_place and not all(
        c in step.plan.channels for c in step.graph.consumers[step.name]
    ):
        return None
    files = node.files(step.ctx)
    if files is None:
        return None
    if files.format.schema is not None:
        return parsed_reference(node, files, files.format.schema)
    if _readers_differ(files):
        return None
    frame = files.format.frame(files.urls, storage_options=files.storage_options).select(
        files.columns
    )
    lossy: pl.LazyFrame | None = None
    select: list[tuple[str, str | None]] = [(c, None) for c in files.columns]
    model = node.output_model
    if model is not None:
        found = frame.collect_schema()
        wanted = polars_schema_in(model, files.columns)
        casts = {c: t for c, t in wanted.items() if c in found and found[c] != t}
        checked = {c: t for c, t in casts.items() if not _exact_cast(found[c], t)}
        if not all(_checked_cast(found[c], t) for c, t in checked.items()):
            return None
        sql_types = {c: _sql_type(t) for c, t in casts.items()}
        if any(t is None for t in sql_types.values()):
            return None
        if checked:
            changed = [_changes(c, found[c], t) for c, t in checked.items()]
            lossy = frame.select(pl.any_horizontal(changed).any())
        frame = frame.with_columns(pl.col(c).cast(t) for c, t in casts.items())
        select = [(c, sql_types.get(c)) for c in files.columns]
    return _Reference(files, select, frame, lossy=lossy)


def parsed_reference(node: Source, files: SourceFiles, schema: pa.Schema) -> _Reference | None:
    """A reference to files its format parses (CSV) into `schema`: the columns as parsed,
    cast to the model's types in SQL; None when a cast has no SQL spelling."""
    select: list[tuple[str, str | None]] = [(c, None) for c in schema.names]
    model = node.output_model
    if model is not None:
        parsed = cast("pl.DataFrame", pl.from_arrow(schema.empty_table())).schema
        wanted = polars_schema_in(model, schema.names)
        casts = {c: t for c, t in wanted.items() if c in parsed and parsed[c] != t}
        if not all(_exact_cast(parsed[c], t) for c, t in casts.items()):
            return None
        sql_types = {c: _sql_type(t) for c, t in casts.items()}
        if any(t is None for t in sql_types.values()):
            return None
        select = [(c, sql_types.get(c)) for c in schema.names]
    return _Reference(files, select, None)


def commit_reference(
    step: StepContext,
    files: SourceFiles,
    select: list[tuple[str, str | None]],
) -> None:
    writer = step.staging.writer(step.pipeline, step.run_id, step.name)
    writer.commit_reference(
        urls=files.urls,
        rows=files.rows if files.format.schema is None else step.stats.rows_out,
        sizes=files.sizes,
        checksums=files.checksums,
        select=select,
        extra={
            "kind": step.node.kind,
            "validated": step.options.validate and step.node.output_model is not None,
        },
        read_as=files.format,
    )


def refer(step: StepContext, node: Source) -> bool:
    """Stage a reference to the immutable files a source reads, validated in one pass.

    Only when nothing streams from the source (its consumers are Sql and Lazy nodes, which
    read files anyway): the data is then not read here at all. False means: stream it as
    usual (also when validation finds failures, so the chunks report them exactly).
    """
    name, stats = step.name, step.stats
    if not node.files_in_place or step.plan.streaming_consumers(name):
        return False
    found = reference(step, node)
    if found is None or found.frame is None:
        return False
    files, select, frame = found.files, found.select, found.frame
    if any(isinstance(step.graph.nodes[c], Sql) for c in step.graph.consumers[name]):
        step.database.prepare_soon(files.urls)  # the SQL node reads them: open while we check
    if found.lossy is not None and _changed(found.lossy):
        logger.info(
            "node %s: its model's types would change values of the files; streaming them",
            name,
            extra={"run_id": step.run_id, "node": name},
        )
        return False  # the streamed path names the first value its cast cannot keep
    model = node.output_model
    if step.options.validate and model is not None:
        from etlkit.checks.validation import ChunkValidator

        validator = ChunkValidator(model)
        verdict = validator.scan_clean(frame, _proven(validator, files))
        if verdict is not True:
            logger.info(
                "node %s: %s; validating chunk by chunk",
                name,
                "the files break the model" if verdict is False else "custom checks",
                extra={"run_id": step.run_id, "node": name},
            )
            return False
    stats.rows_in = stats.rows_out = files.rows
    stats.chunks_out = len(files.urls)
    check_dataset(step, partial(list, files.urls))
    commit_reference(step, files, select)
    return True
