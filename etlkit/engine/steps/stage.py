"""Guard and stage: every chunk a node produces is validated, sent on and staged.

`stage_chunks` is the per-chunk path of every producing node: each item (a record batch or a
polars frame) is checked by the node's `OutputGuard` (its invalid-row policy applied), sliced
to the run's chunk size, appended to the node's writer and handed to each `send` (the executor's
channels). It writes and never commits, so one output may be written in parts (one writer per
partition of a source, say). `close_output` judges the output as a whole (an empty output, keys
repeating across chunks, dataset checks) and `commit_output` makes it visible: a staged copy's
manifest, or a reference to a source's own files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from etlkit.checks.guard import OutputGuard
from etlkit.engine.steps.dataset import check_dataset, take_out_repeats
from etlkit.engine.steps.references import check_unchanged, commit_reference
from etlkit.errors import RunCancelledError
from etlkit.model.chunks import Chunk
from etlkit.model.nodes import Origin, Source
from etlkit.model.schema import (
    arrow_schema,
    arrow_schema_in,
    has_regex,
    plain_schema,
    unique_sets_in,
)

if TYPE_CHECKING:
    import polars as pl

    from etlkit.checks.validation import IncreasingKey
    from etlkit.engine.steps.context import StepContext
    from etlkit.engine.steps.references import _Reference
    from etlkit.model.schema import Model
    from etlkit.storage.staging import NodeWriter


def output_guard(step: StepContext, *, input_side: bool = False) -> OutputGuard:
    """The check of the node's chunks against its output model (`input_side`: its input's)."""
    return OutputGuard(
        pipeline=step.pipeline,
        run_id=step.run_id,
        name=step.name,
        node=step.node,
        staging=step.staging,
        default_policy=step.options.on_invalid,
        default_max_fraction=step.options.max_invalid_fraction,
        input_side=input_side,
    )


def input_guard(step: StepContext) -> OutputGuard | None:
    """A check of chunks on arrival, where the inputs' own models do not already ensure it."""
    model = step.node.input_model
    if not step.options.validate or model is None:
        return None
    upstream = [step.graph.nodes[i].output_model for i in step.inputs]
    if all(m is not None and issubclass(m, model) for m in upstream):
        return None  # every input already validated against this model (or a subclass)
    return output_guard(step, input_side=True)


class ChunkWriter(Protocol):
    """Where `stage_chunks` writes: a node's whole output (`NodeWriter`), or the parts of one
    partition of it, which a coordinator commits as one output once every partition wrote."""

    def append(self, batch: pa.RecordBatch) -> None: ...


@dataclass
class Output:
    """What the chunks of one output left to judge it by, once they are all staged."""

    keys: list[IncreasingKey]
    first_schema: pa.Schema | None = None  # of the first chunk out
    produced: list[str] | None = None  # the columns of the first item the node yielded


def stage_chunks(
    step: StepContext,
    items: Iterable[pa.RecordBatch | pl.DataFrame],
    writer: ChunkWriter | None,
    guard: OutputGuard | None,
    sends: Sequence[Callable[[pa.RecordBatch], None]] = (),
    frame_sends: Sequence[Callable[[pl.DataFrame], None]] = (),
) -> Output:
    """Guard, slice, stage and send on every item the node produces (see the module
    docstring); the output is left uncommitted. This is the per-chunk path: it adds nothing
    per chunk beyond the checks, the writer's append and the sends.

    `sends` take record batches, `frame_sends` polars frames (the channels into transforms):
    each chunk is converted between the two at most once, and only if someone takes the
    other form (a frame the guard validated a batch as goes on as it is)."""
    from etlkit.checks.validation import IncreasingKey

    node, stats, cancelled, progress = step.node, step.stats, step.cancelled, step.progress
    rows, max_bytes = step.options.chunk_rows, step.options.chunk_bytes
    keys = [IncreasingKey(k[0]) for k in step.plan.unique_keys[step.name] if len(k) == 1]
    arrow = writer is not None or bool(sends) or bool(keys)  # whether batches are needed
    first_schema: pa.Schema | None = None
    produced: list[str] | None = None
    for item in items:
        if cancelled():
            raise RunCancelledError("run cancelled")
        chunk = stats.chunks_in if node.streaming else stats.chunks_out + 1
        origin = None
        if isinstance(item, pa.RecordBatch):
            origin, item = Origin.take(item)  # for failures only: staging does not keep it
        if produced is None:  # what regex columns match when no row passes
            produced = item.schema.names if isinstance(item, pa.RecordBatch) else item.columns
        checked = guard.check_chunk(item, chunk, origin) if guard is not None else Chunk.of(item)
        if guard is not None:
            stats.invalid_rows = guard.invalid_rows
        for piece in checked.split(rows, max_bytes):
            if first_schema is None:
                first_schema = piece.schema()
            batches = piece.batches() if arrow else []
            for batch in batches:
                for key in keys:
                    key.update(batch)
                if writer is not None:
                    writer.append(batch)
                for send in sends:
                    send(batch)
            if frame_sends:
                frame = piece.polars()
                for send_frame in frame_sends:
                    send_frame(frame)
            stats.rows_out += piece.num_rows
            stats.chunks_out += max(1, len(batches))
            progress()
    return Output(keys, first_schema, produced)


def close_output(
    step: StepContext,
    output: Output,
    writer: NodeWriter | None,
    guard: OutputGuard | None,
    referenced: _Reference | None = None,
) -> None:
    """Judge the whole output once every chunk is staged: an output of no chunk, keys
    repeating across chunks (taken out under drop and quarantine), dataset checks."""
    node = step.node
    produced = output.produced
    first_schema = output.first_schema
    keys = output.keys
    names = first_schema.names if first_schema is not None else []  # a regex key's columns
    if guard is not None and produced is None and not has_regex(guard.validator.model):
        # no chunk at all: Pandera still judges an empty frame (a check that cannot apply
        # to its column's type fails it)
        empty = pa.RecordBatch.from_pylist([], schema=arrow_schema(guard.validator.model))
        guard.check(empty, 1)
    if guard is not None:
        if writer is not None and guard.policy != "fail":
            increasing = [k.column for k in keys if k.holds]
            take_out_repeats(step, writer, guard, increasing, names)
        guard.finish()
    model = node.output_model
    if first_schema is None and model is not None and (writer or produced is not None):
        output.first_schema = first_schema = _empty_output_schema(model, produced)
    if first_schema is not None:  # the columns a sink of an empty output gets
        step.output_schemas[step.name] = plain_schema(first_schema)
    staged: Callable[[], list[str]] = list
    if writer is not None:
        staged = writer.part_urls  # closes the part being written: only called if needed
    elif referenced is not None:
        staged = partial(list, referenced.files.urls)  # the source's own files are staged
    proven: list[tuple[str, ...]] = [(key.column,) for key in keys if key.holds]
    if guard is not None and guard.policy != "fail":
        # taken out above, like a chunk's
        proven = list(unique_sets_in(guard.validator.model, names))
    check_dataset(
        step,
        staged,
        proven,
        referenced.files.format if referenced is not None else None,
        columns=names,
    )


def commit_output(
    step: StepContext,
    output: Output,
    writer: NodeWriter | None,
    guard: OutputGuard | None,
    referenced: _Reference | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Make the output visible: commit the staged copy with its manifest (`extra`: what it
    records besides, an incremental source's cursor), or a reference to the source's files."""
    node, stats = step.node, step.stats
    if writer is not None:
        manifest = writer.commit(
            empty_schema=output.first_schema,
            extra={
                "kind": node.kind,
                "chunks": stats.chunks_out,
                "invalid_rows": stats.invalid_rows,
                "policy": guard.policy if guard is not None else None,
                "validated": guard is not None,
                **(extra or {}),
            },
        )
        stats.bytes_staged = manifest.bytes
    elif referenced is not None and isinstance(node, Source):
        if referenced.files.format.schema is not None:  # parsed, not described
            check_unchanged(step, referenced.files)
        commit_reference(step, referenced.files, referenced.select)


def _empty_output_schema(model: Model, names: Sequence[str] | None) -> pa.Schema:
    """The schema of an output without rows: the model's, a regex column standing for the
    columns it matches in the first chunk the node yielded (`names`: it may have had no rows,
    or none passed validation), else for a column named as its pattern (a staged file needs
    at least one column)."""
    if names is not None:
        resolved = arrow_schema_in(model, names)
        if len(resolved):
            return resolved
    return arrow_schema(model)
