"""Checks of a node's whole output, over its staging: what no single chunk can tell.

`check_dataset` runs row counts, uniqueness across chunks and SQL assertions with DuckDB over
the staged output, with the same verdict whatever the chunking; `take_out_repeats` takes out
of a staged output the rows whose unique key repeats across chunks (drop and quarantine).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from etlkit.errors import DataValidationError
from etlkit.model.schema import unique_sets_in

if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from etlkit.checks.guard import OutputGuard
    from etlkit.checks.validation import KeyCheck
    from etlkit.engine.steps.context import StepContext
    from etlkit.storage.formats import FileFormat
    from etlkit.storage.staging import NodeWriter


def check_dataset(
    step: StepContext,
    staged: Callable[[], list[str]],
    proven: Sequence[tuple[str, ...]] = (),
    read_as: FileFormat | None = None,
    *,
    columns: Sequence[str] = (),
) -> None:
    """Row counts, uniqueness across chunks and SQL assertions over the whole output.

    `staged` gives the output's Parquet files (or the files a reference names, in format
    `read_as`), asked for only when a check reads them. `proven`: key sets
    already known unique (seen strictly increasing as they streamed). `columns`: the
    output's columns, which a unique regex column's pattern selects its keys from.
    """
    node, stats, name = step.node, step.stats, step.name
    expected = node.expectations
    modelled: list[tuple[str, ...]] = []  # the model's keys, where nulls repeat (Pandera)
    if step.options.validate and node.output_model is not None and stats.chunks_out > 1:
        # one chunk was checked on its own; a regex key, on each column it matches
        modelled.extend(unique_sets_in(node.output_model, columns))
    modelled = [k for k in modelled if k not in proven]
    unique = [expected.unique] if expected.unique and expected.unique not in proven else []
    unique = [k for k in unique if k not in modelled]
    if (
        expected.min_rows is None
        and expected.max_rows is None
        and not (unique or modelled or expected.sql)
    ):
        return
    from etlkit.checks.validation import dataset_problems
    from etlkit.storage.parquet import PARQUET

    read_as = read_as or PARQUET
    files = staged() if unique or modelled or expected.sql else []
    con = step.database.connect(read_as.duckdb_paths(files)) if files else None
    try:
        with step.database.interruptible(con):
            problems = dataset_problems(
                con,
                files,
                rows=stats.rows_out,
                min_rows=expected.min_rows,
                max_rows=expected.max_rows,
                unique=unique,
                model_unique=modelled,
                sql=expected.sql,
                read_as=read_as,
            )
    finally:
        if con is not None:
            con.close()
    if problems:
        where = f"Output of node '{name}' in pipeline '{step.pipeline}' (run {step.run_id})"
        body = problems[0] if len(problems) == 1 else "".join(f"\n  - {p}" for p in problems)
        error = DataValidationError(f"{where} {body}")
        error.__dict__.update(pipeline=step.pipeline, node=name, run_id=step.run_id, chunk=None)
        raise error


def take_out_repeats(
    step: StepContext,
    writer: NodeWriter,
    guard: OutputGuard,
    increasing: Sequence[str],
    columns: Sequence[str],
) -> None:
    """Under drop and quarantine, take out of the staged output the rows whose unique key
    repeats across chunks, as a chunk's check takes out those repeating within it: every
    occurrence, nulls included, counting rows already taken out (Pandera's verdict on the
    whole output). The verdict then does not depend on where chunks begin and end.

    DuckDB counts the keys over the staged parts; only when some repeat is the output read
    back in order, the rows kept spooled to a local file and staged again.
    """
    import pyarrow.parquet as pq  # here, as below: a run without unique keys never loads it

    from etlkit.checks.validation import flag_repeats, key_checks

    stats = step.stats
    model = step.node.output_model
    assert model is not None
    checks = [
        c
        for c in key_checks(model, columns)
        if guard.invalid_rows or c.column is None or c.column not in increasing
    ]
    if not checks or guard.checked_chunks < 2:
        return  # one chunk: its own check saw every row; or keys seen increasing, none out
    output, judged = writer.part_urls(), guard.judged_parts()
    if not output:
        return
    removed = 0
    con = step.database.connect()
    try:
        with (
            step.database.interruptible(con),
            tempfile.TemporaryDirectory(prefix="etlkit-unique-") as spool,
        ):
            select = flag_repeats(con, output, judged, checks)
            if select is None:
                return
            kept = f"{spool}/kept.parquet"
            removed = _split_repeats(step, con, select, checks, writer, guard, kept)
            writer.restart()
            if os.path.exists(kept):  # noqa: PTH110
                with pq.ParquetFile(kept) as spooled:
                    writer.append_many(spooled.iter_batches(step.options.chunk_rows))
    finally:
        con.close()
    stats.rows_out -= removed
    stats.invalid_rows = guard.invalid_rows


def _split_repeats(
    step: StepContext,
    con: Any,
    select: str,
    checks: Sequence[KeyCheck],
    writer: NodeWriter,
    guard: OutputGuard,
    kept_file: str,
) -> int:
    """Read the flagged output (`flag_repeats`): rows with a repeated key go to the guard,
    the others to `kept_file`. Returns how many rows went to the guard."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from etlkit.checks.validation import repeat_rejects

    columns = list(writer.schema.names) if writer.schema is not None else []
    flags = [f"__repeat_{n}" for n in range(len(checks))]
    removed = 0
    kept: pq.ParquetWriter | None = None
    try:
        for batch in con.sql(select).to_arrow_reader(step.options.chunk_rows):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            out = frame.select(pl.any_horizontal(flags)).to_series()
            if out.any():
                rows, failures = repeat_rejects(frame.filter(out), checks, columns)
                guard.reject_repeats(rows, failures)
                removed += rows.height
            keep = batch.filter(pc.invert(out.to_arrow())).select(columns)
            kept = kept or pq.ParquetWriter(kept_file, keep.schema)
            kept.write_batch(keep)
    finally:
        if kept is not None:
            kept.close()
    return removed
