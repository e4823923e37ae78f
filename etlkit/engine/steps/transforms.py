"""The transform step: a `Transform`'s `process` over each arriving chunk, as polars frames.

A chunk arrives as a record batch, converted to polars once (without copying), or as the
polars frame its producer's guard already holds; an empty result is not passed on, and
an input of no chunk still yields the transform's (empty) output, so its columns are known.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import polars as pl

from etlkit.model.schema import polars_schema, to_polars

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.engine.steps.context import StepContext
    from etlkit.model.nodes import Transform


def transform(
    step: StepContext,
    node: Transform[Any, Any],
    batches: Iterable[pa.RecordBatch | pl.DataFrame],
) -> Iterator[pl.DataFrame]:
    """`node.process` over each chunk of `batches` (the node's arrivals, counted as they come:
    record batches, or the frames a producer's guard validated them as)."""
    ctx, stats = step.ctx, step.stats
    for batch in batches:
        frame = batch if isinstance(batch, pl.DataFrame) else to_polars(batch)
        out = node.process(frame, ctx)
        if not isinstance(out, pl.DataFrame):
            raise TypeError(
                f"{type(node).__name__}.process returned {type(out).__name__}; "
                "transforms return a polars DataFrame"
            )
        if out.height:
            yield out
    if stats.chunks_in == 0:
        empty = empty_input(step)
        if empty is not None:
            yield node.process(empty, ctx).clear()


def empty_input(step: StepContext) -> pl.DataFrame | None:
    """An empty frame shaped like the node's input, so an empty run still has a schema."""
    model = step.node.input_model
    if model is None:
        upstream = [step.graph.nodes[i].output_model for i in step.inputs]
        model = upstream[0] if upstream else None
    return pl.DataFrame(schema=polars_schema(model)) if model is not None else None
