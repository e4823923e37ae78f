"""A node's inputs: chunks as they arrive (checked against its input model), or read back.

`arrivals` counts and checks the chunks a streaming node receives, whatever delivers them (a
channel, or `staged_inputs` reading its inputs' committed outputs); `read_back` reads one
committed output typed as its node yields it; `input_files` and `staged_rows` describe the
committed inputs a blocking node queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from etlkit.engine.steps.stage import input_guard
from etlkit.errors import RunCancelledError
from etlkit.model.schema import arrow_schema_in, cast_array

if TYPE_CHECKING:
    from typing import TypeAlias

    import polars as pl

    from etlkit.engine.steps.context import StepContext

    Arrival: TypeAlias = pa.RecordBatch | pl.DataFrame


def arrivals(step: StepContext, batches: Iterable[Arrival]) -> Iterator[Arrival]:
    """The chunks arriving at a streaming node, checked against its input model if needed
    (record batches, or polars frames where a transform's channel carries them)."""
    stats = step.stats
    guard = input_guard(step)
    for batch in batches:
        stats.rows_in += len(batch)
        stats.chunks_in += 1
        if guard is None:
            yield batch
        elif isinstance(batch, pa.RecordBatch):
            yield from guard.check(batch, stats.chunks_in)
        else:  # a transform's input: polars in, polars out
            yield guard.check_chunk(batch, stats.chunks_in).polars()


def staged_inputs(step: StepContext) -> Iterator[pa.RecordBatch]:
    """A node's inputs read back from their committed staged outputs, one after another."""
    for upstream in step.inputs:
        for batch in read_back(step, upstream):
            if step.cancelled():
                raise RunCancelledError("run cancelled")
            yield batch


def read_back(step: StepContext, name: str) -> Iterator[pa.RecordBatch]:
    """A node's committed output of this run, chunk by chunk, typed as the node yields it:
    a reference holds the source's files, whose columns keep their stored types (decimals,
    say, where the model wants floats) until cast to the model's, as the source casts them."""
    model = step.graph.nodes[name].output_model
    wanted: pa.Schema | None = None
    for batch in step.staging.iter_batches(
        step.pipeline, step.run_id, name, batch_size=step.options.chunk_rows
    ):
        if model is not None and wanted is None:  # a regex column: the columns it matches
            wanted = arrow_schema_in(model, batch.schema.names)
        if wanted is not None and batch.schema.types != wanted.types:
            batch = _typed(batch, wanted)
        yield batch


def _typed(batch: pa.RecordBatch, wanted: pa.Schema) -> pa.RecordBatch:
    """`batch` with each of its columns the model declares cast to the declared type (text
    stays in the layout it has: string, large string or view, polars takes each alike)."""
    columns, schema = list(batch.columns), batch.schema
    for i, field in enumerate(schema):
        index = wanted.get_field_index(field.name)
        target = wanted.field(index).type if index >= 0 else field.type
        if field.type != target and not (_is_text(field.type) and _is_text(target)):
            columns[i] = cast_array(columns[i], target)  # as the source cast it
            schema = schema.set(i, field.with_type(target))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    )


def staged_rows(step: StepContext, names: Sequence[str]) -> int:
    """The rows of these nodes' committed outputs, as their manifests count them."""
    manifests = [step.staging.manifest(step.pipeline, step.run_id, n) for n in names]
    return sum(m.rows for m in manifests if m is not None)


def input_files(step: StepContext) -> dict[str, list[str]]:
    """The committed files of each of the node's inputs."""
    files = {}
    for upstream in step.inputs:
        files[upstream] = step.staging.files(step.pipeline, step.run_id, upstream)
    return files
