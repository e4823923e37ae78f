"""The blocking steps: a `Sql` node's query in the run's DuckDB, a `Lazy` node's polars query.

Both read their inputs' committed staging (a reference's files as its source parsed them),
out of core, and yield their result in chunks. A SQL node over one streamed input may instead
scan that input's chunks as they come (`_SqlStream`, an Arrow stream DuckDB reads once), unless
its plan scans the input more than once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import polars as pl
import pyarrow as pa

from etlkit.engine.steps.inputs import input_files
from etlkit.errors import NodeError
from etlkit.model.nodes import bind_sql
from etlkit.model.schema import polars_schema, polars_schema_in
from etlkit.storage.parquet import PARQUET
from etlkit.storage.staging import conform_chunk

if TYPE_CHECKING:
    from etlkit.engine.steps.context import StepContext
    from etlkit.model.nodes import Lazy, Sql

logger = logging.getLogger(__name__)

SQL_FILES_HINT: Final = (
    "A SQL node reads only its inputs (the nodes named in braces) and writes no file itself: "
    "read other files with a source node, write with a sink."
)


def _arrow_scans(con: Any, sql: str, params: Mapping[str, str] | None = None) -> int:
    """How many times the query's plan scans a registered Arrow stream (-1: no plan)."""
    import json

    import duckdb

    try:
        rows = con.execute(f"EXPLAIN (FORMAT json) {sql}", params).fetchall()
    except duckdb.Error:  # the query fails: let it fail where it runs, as it always does
        return -1
    found = 0
    plans: list[Any] = [json.loads(row[1]) for row in rows]
    while plans:
        plan = plans.pop()
        if isinstance(plan, list):
            plans.extend(plan)
        elif isinstance(plan, dict):
            found += plan.get("name") == "PYTHON_ARROW_SCAN"
            plans.extend(plan.get("children", []))
    return found


class _SqlStream:
    """A SQL node's arriving chunks as a record batch reader, for DuckDB to scan once.

    DuckDB's threads call `__next__` (one at a time: a lock, as a Python generator cannot be
    resumed by one thread while another waits in it). Chunks are cast to the first chunk's
    types, as staging casts them. What stops the input (cancellation, an input check) is kept
    in `failure`, for the node to raise instead of DuckDB's rewording of it.
    """

    def __init__(
        self, first: pa.RecordBatch, rest: Iterator[pa.RecordBatch], producer: str
    ) -> None:
        self.schema = first.schema
        self.producer = producer  # names the input in errors
        self.failure: BaseException | None = None
        self._first: pa.RecordBatch | None = first
        self._rest = rest
        self._lock = threading.Lock()

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        with self._lock:
            if self._first is not None:
                batch, self._first = self._first, None
                return batch
            try:
                batch = conform_chunk(next(self._rest), self.schema, self.producer)
            except StopIteration:
                raise
            except BaseException as exc:
                self.failure = exc
                raise
            return batch

    def drain(self) -> None:
        """Read what DuckDB left, to the input's end (its commit)."""
        for _ in self:
            pass
        if self.failure is not None:
            raise self.failure


def run_sql(
    step: StepContext, node: Sql, arrived: Iterator[pa.RecordBatch] | None = None
) -> Iterator[pa.RecordBatch]:
    """The query's result in chunks. `arrived`: the chunks of its one input as they come,
    scanned as a stream when the query reads it once; None: every input is read from
    its committed staging."""
    name = step.name
    bound = bind_sql(node.query, step.ctx, {u: u for u in step.inputs})
    sql, params = bound.text, bound.params or None
    staged = {} if arrived is not None else input_files(step)
    con = step.database.connect([f for files in staged.values() for f in files])
    stream: _SqlStream | None = None
    with contextlib.closing(con), step.database.interruptible(con):
        if arrived is not None:
            stream = sql_stream(step, con, sql, params, arrived)
            if stream is None:  # read from staging, in the run's directory
                staged = input_files(step)
        for upstream, files in staged.items():
            manifest = step.staging.manifest(step.pipeline, step.run_id, upstream)
            if not files:
                raise NodeError(
                    f"Input '{upstream}' of SQL node '{name}' produced no rows and declares "
                    "no schema, so its columns are unknown; give it an output model",
                    pipeline=step.pipeline,
                    node=name,
                    run_id=step.run_id,
                )
            read_as = (manifest.reference_format if manifest is not None else None) or PARQUET
            scan = read_as.scan(con, files, f"__etlkit_ref_{upstream}")
            columns = manifest.select_sql() if manifest is not None else "*"
            con.execute(f'CREATE TEMP VIEW "{upstream}" AS SELECT {columns} FROM {scan}')
        try:
            reader = con.sql(sql, params=params).to_arrow_reader(step.options.chunk_rows)
            if node.output_model is None:  # the columns of an empty result, for its sinks
                step.output_schemas.setdefault(name, reader.schema)
            yield from reader
        except Exception:
            if stream is not None and stream.failure is not None:
                raise stream.failure from None  # what stopped the input, not DuckDB's words
            raise
        if stream is not None:
            stream.drain()  # a query may stop early (LIMIT): the input still commits first


def sql_stream(
    step: StepContext,
    con: Any,
    sql: str,
    params: Mapping[str, str] | None,
    arrived: Iterator[pa.RecordBatch],
) -> _SqlStream | None:
    """Register the SQL node's one input as the Arrow stream of its arriving chunks.

    None when the input is read from staging instead, after it commits: it had no rows (its
    staged output knows its columns), or the query's plan scans it more than once (or not
    at all), which a stream cannot serve.
    """
    name = step.name
    upstream = step.inputs[0]
    first = next(arrived, None)
    if first is None:
        return None
    producer = f"Input '{upstream}' of SQL node '{name}' (run {step.run_id})"
    stream = _SqlStream(first, arrived, producer)  # DuckDB's threads read the rest
    con.register(upstream, stream.reader())
    scans = _arrow_scans(con, sql, params)
    if scans in (1, -1):  # -1: the query is wrong; running it says how, before the input ends
        return stream
    logger.info(
        "node %s: its query scans input %s %d times: reading it from staging",
        name,
        upstream,
        scans,
        extra={"run_id": step.run_id, "node": name},
    )
    con.unregister(upstream)
    stream.drain()
    return None


def _polars_options(step: StepContext, files: list[str]) -> dict[str, str] | None:
    """polars' storage options for staged files (None for local ones)."""
    if all("://" not in f for f in files):
        return None
    return step.staging.polars_storage_options()


def run_lazy(step: StepContext, node: Lazy[Any]) -> Iterator[pl.DataFrame]:
    """The lazy query over its inputs' committed outputs, run by polars' streaming engine."""
    frames = []
    for upstream, files in input_files(step).items():
        if files:
            manifest = step.staging.manifest(step.pipeline, step.run_id, upstream)
            read_as = (manifest.reference_format if manifest is not None else None) or PARQUET
            frame = read_as.frame(files, storage_options=_polars_options(step, files))
            if manifest is not None and manifest.reference_select is not None:
                model = step.graph.nodes[upstream].output_model
                columns = [c for c, _ in manifest.reference_select]
                frame = frame.select(columns)
                if model is not None:
                    wanted = polars_schema_in(model, columns)
                    frame = frame.with_columns(pl.col(c).cast(wanted[c]) for c in columns)
            frames.append(frame)
        else:
            model = step.graph.nodes[upstream].output_model
            frames.append(pl.LazyFrame(schema=polars_schema(model) if model else None))
    query = node.query(step.ctx, *frames)
    if not isinstance(query, pl.LazyFrame):
        raise TypeError(
            f"{type(node).__name__}.query returned {type(query).__name__}; "
            "lazy nodes return a polars LazyFrame"
        )
    yield from _coalesce(
        query.collect_batches(chunk_size=step.options.chunk_rows, engine="streaming"),
        step.options.chunk_rows,
    )


def _coalesce(frames: Iterator[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Frames of about `rows` rows in one piece each: the streaming engine emits a selective
    query's output as frames of hundreds of small pieces, each of which would otherwise cross
    the channels and staging as a chunk of its own."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        pending.append(frame)
        held += frame.height
        if held >= rows:
            yield pl.concat(pending).rechunk()
            pending, held = [], 0
    if pending:
        yield pl.concat(pending).rechunk()
