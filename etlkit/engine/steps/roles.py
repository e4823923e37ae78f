"""Which steps a node's role runs: what it produces, and where its output is staged.

`produce` gives a producing node's items (a source's batches, a transform's frames, a query's
result) from its arrivals (`received`: record batches, or frames on a transform's channel);
`open_output` decides where its output goes: a reference to a source's own files, or a staged
copy (in one part, in its sink's codec and file types, when the sink adopts it). An executor
then hands the items to `stage.stage_chunks`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

import pyarrow as pa

from etlkit.engine.steps.inputs import arrivals, staged_inputs
from etlkit.engine.steps.queries import run_lazy, run_sql
from etlkit.engine.steps.references import _proven, _Reference, reference
from etlkit.engine.steps.sources import read_source
from etlkit.engine.steps.transforms import transform
from etlkit.model.nodes import Lazy, Sink, Source, Sql, Transform
from etlkit.model.schema import from_polars, plain_strings

#: Rows past which an output staged for a sink to adopt would start a second part: never.
_ONE_PART: Final = sys.maxsize

if TYPE_CHECKING:
    import polars as pl

    from etlkit.checks.guard import OutputGuard
    from etlkit.engine.steps.context import StepContext
    from etlkit.engine.steps.inputs import Arrival
    from etlkit.storage.staging import NodeWriter


def received(step: StepContext, channel: Iterable[Arrival] | None) -> Iterator[Arrival]:
    """A streaming node's input chunks: from `channel` as they come, else (None) read back
    from its inputs' committed staging; counted and checked on arrival. A sink gets record
    batches (see `sink_input`)."""
    if isinstance(step.node, Sink):
        return sink_input(step, step.node, channel)
    return arrivals(step, channel if channel is not None else staged_inputs(step))


def sink_input(
    step: StepContext, node: Sink, channel: Iterable[Arrival] | None
) -> Iterator[pa.RecordBatch]:
    """A sink's input chunks (as `received` gives them) as record batches; a sink that does
    not take string views (`Sink.string_views`) gets their strings as `large_string`."""
    chunks = arrivals(step, channel if channel is not None else staged_inputs(step))
    for batch in as_batches(chunks):
        yield batch if node.string_views else plain_strings(batch)


def as_batches(chunks: Iterable[Arrival]) -> Iterator[pa.RecordBatch]:
    """Chunks as record batches: a polars frame exported (strings as views)."""
    for chunk in chunks:
        if isinstance(chunk, pa.RecordBatch):
            yield chunk
        else:
            yield from from_polars(chunk)


def produce(
    step: StepContext, channel: Iterable[Arrival] | None
) -> Iterator[pa.RecordBatch | pl.DataFrame]:
    """The items a producing node yields. `channel`: its input chunks as they come, or None
    when it reads its inputs' committed staging (a blocking node, a pooled one)."""
    node, ctx, stats = step.node, step.ctx, step.stats
    if isinstance(node, Source):
        return read_source(node, ctx, stats, step.options.cursor_seen.get(ctx.node, frozenset()))
    if isinstance(node, Transform):
        return transform(step, node, received(step, channel))
    if isinstance(node, Sql):
        arrived = as_batches(arrivals(step, channel)) if channel is not None else None
        return run_sql(step, node, arrived)
    if isinstance(node, Lazy):
        return run_lazy(step, node)
    raise TypeError(f"node '{step.name}' has an unknown role {type(node).__name__}")


def open_output(
    step: StepContext, guard: OutputGuard | None
) -> tuple[_Reference | None, NodeWriter | None]:
    """Where a producing node's output goes: `(reference, writer)`, a reference to a
    source's own files (the files are the copy), else a writer when the plan stages the
    output (neither: it only streams). What the files' statistics prove of the guard's
    checks is not checked again per chunk."""
    node, name = step.node, step.name
    referenced = None
    if isinstance(node, Source) and name in step.plan.references:
        referenced = reference(step, node)  # the files are the copy
        if referenced is not None and guard is not None:
            guard.validator.assume(_proven(guard.validator, referenced.files))
    if referenced is None and name in step.plan.staged:
        adoption = step.plan.stage_as.get(name)
        if adoption is None:
            return None, step.staging.writer(step.pipeline, step.run_id, name)
        # one part, as its sink writes its file: the sink adopts it instead of encoding again
        writer = step.staging.writer(step.pipeline, step.run_id, name, part_rows=_ONE_PART)
        writer.encode_as(adoption.compression, adoption.file_schema)
        return None, writer
    return referenced, None
