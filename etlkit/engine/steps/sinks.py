"""The sink step: write a sink's input exactly once, even across a retry of the run.

A load this run already committed (`Sink.find_load`) is kept, not repeated; an input of no
chunk still reaches the sink as an empty batch with the columns it would have had. A sink the
plan lets adopt its input's staged file (`Plan.adopts`) is offered the committed parts first
(`staged_parquet`); the run log says whether it adopted them or, and why not, wrote the input.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from etlkit.engine import runlog
from etlkit.model.adoption import StagedParquet
from etlkit.model.schema import arrow_schema, arrow_schema_in

if TYPE_CHECKING:
    from etlkit.engine.steps.context import StepContext
    from etlkit.model.nodes import Sink, WriteResult

logger = logging.getLogger(__name__)


def write_sink(step: StepContext, node: Sink, batches: Iterable[pa.RecordBatch]) -> WriteResult:
    """Write a sink exactly once: a load this run already committed is not repeated.

    A retry after a kill between the destination's commit and the store's finds the load
    (`Sink.find_load`) and keeps it; the inputs are drained all the same, so their producers
    finish. Temporary objects a dead attempt of this run left are removed first.
    """
    name, ctx = step.name, step.ctx
    chunks = sink_batches(step, batches)
    for leftover in node.discard_leftovers(ctx):
        logger.info("node %s: removed %s, left by an earlier attempt", name, leftover)
    result = node.find_load(ctx)
    if result is None and name in step.plan.adopts:
        result = adopt(step, node)
        if result is not None:
            return result  # its input is committed staging, read by no one: nothing to drain
    if result is None:
        result = node.write(chunks, ctx)
    else:
        runlog.note(
            step.run_id,
            name,
            f"node {name}: load {ctx.load_id} already committed {result.rows} rows to "
            f"{result.uri}; not loading again",
            logger=logger,
        )
    for _ in chunks:  # a sink that stopped early must not leave its producers blocked
        pass
    return result


def adopt(step: StepContext, node: Sink) -> WriteResult | None:
    """The sink's adoption of its input's committed staged file, or None (logged, with why)
    when the staging or the sink rules it out: the caller then writes the input."""
    name, upstream = step.name, step.inputs[0]
    staged = staged_parquet(step, upstream)
    reason = staged if isinstance(staged, str) else node.adoption_refused(staged)
    if reason is not None or isinstance(staged, str):
        runlog.note(
            step.run_id,
            name,
            f"node {name}: encoding its input: the staged output of {upstream} cannot be "
            f"adopted ({reason})",
            logger=logger,
        )
        return None
    result = node.adopt(staged, step.ctx)
    step.stats.rows_in = staged.rows
    how = result.extra.get("adopted", "adopted")
    runlog.note(
        step.run_id,
        name,
        f"node {name}: adopted the staged output of {upstream} ({how}) as {result.uri}: "
        f"{result.rows} rows, not encoded again",
        logger=logger,
    )
    return result


def staged_parquet(step: StepContext, upstream: str) -> StagedParquet | str:
    """A node's committed staged output as the Parquet parts a sink may adopt, or why not."""
    import pyarrow.parquet as pq

    staging = step.staging
    manifest = staging.manifest(step.pipeline, step.run_id, upstream)
    if manifest is None:
        return "it is not committed"
    if manifest.reference_select is not None:
        return "it is a reference to a source's own files"
    run_dir = staging.run_dir(step.pipeline, step.run_id)
    paths = tuple(f"{run_dir}/{f.name}" for f in manifest.files)
    if not paths:
        return "it has no file"
    compressions: set[str] = set()
    schema = None
    for path in paths:
        with staging.fs.open(path, "rb") as handle:
            metadata = pq.read_metadata(handle)
        if schema is None:
            schema = metadata.schema.to_arrow_schema()
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            compressions |= {row_group.column(c).compression for c in range(row_group.num_columns)}
    assert schema is not None
    return StagedParquet(
        node=upstream,
        fs=staging.fs,
        paths=paths,
        local=staging.local,
        schema=schema,
        rows=manifest.rows,
        compressions=frozenset(compressions),
    )


def sink_batches(step: StepContext, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The sink's arriving chunks (each reported as progress), or one empty batch."""
    progress = step.progress
    for batch in batches:
        progress()
        yield batch
    if step.stats.chunks_in == 0:
        schema = empty_schema(step)
        if schema is not None:  # an empty output still has the model's columns and types
            yield pa.RecordBatch.from_pylist([], schema=schema)


def empty_schema(step: StepContext) -> pa.Schema | None:
    """The columns of a sink's input when no chunk arrived: its model's, else its inputs'.

    A regex column stands for the columns it matches in what its input staged; where
    that is unknown, for a column named as its pattern (a file needs at least one column).
    """
    staged = [step.output_schemas.get(u) for u in step.inputs]
    names = next((s.names for s in staged if s is not None), None)
    wanted = step.node.input_model
    if wanted is not None:
        return arrow_schema(wanted) if names is None else arrow_schema_in(wanted, names)
    for upstream, schema in zip(step.inputs, staged, strict=True):
        model = step.graph.nodes[upstream].output_model
        if schema is None and model is not None:
            schema = arrow_schema(model)
        if schema is not None:
            return schema
    return None
