"""The source step: read a source into record batches, keeping only new rows when incremental.

`read_source` yields what `Source.read` yields, counting it; an incremental source keeps the
rows at or above its last cursor value, less those loaded at that value (by `row_hashes`), and
tracks its new high-water mark in its `NodeStats` (`cursor_extra` records it with the output).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from etlkit.model.nodes import Origin

if TYPE_CHECKING:
    from etlkit.engine.events import NodeStats
    from etlkit.model.nodes import Context, Node, Partition, Source


def row_hashes(batch: pa.RecordBatch, key: Sequence[str]) -> list[str]:
    """A stable hash per row of `key`'s columns (of every column when `key` is empty).

    Stable across runs and processes (SHA-256 of the values as JSON text), unlike polars' and
    Python's hashes: it identifies rows an incremental source already loaded.
    """
    import hashlib
    import json

    columns = list(key) or batch.schema.names
    rows = zip(*(batch.column(c).to_pylist() for c in columns), strict=True)
    return [
        hashlib.sha256(
            json.dumps(list(row), default=str, separators=(",", ":")).encode()
        ).hexdigest()[:32]
        for row in rows
    ]


def _track_cursor(stats: NodeStats, batch: pa.RecordBatch, column: str, key: Sequence[str]) -> None:
    """Move an incremental source's high-water mark to the batch's largest cursor value and
    collect the hashes of the rows read at the mark (every one, loaded or already loaded)."""
    import pyarrow.compute as pc  # here: a run without incremental sources never loads it

    top = pc.max(batch.column(column))
    if not top.is_valid:
        return
    value = top.as_py()
    if stats.cursor is not None and value < stats.cursor_value:
        return
    if stats.cursor is None or value > stats.cursor_value:
        stats.cursor_value = value
        stats.cursor = str(top.cast(pa.string()).as_py())
        stats.cursor_seen = set()
    at_top = batch.filter(pc.equal(batch.column(column), top))
    stats.cursor_seen.update(row_hashes(at_top, key))


def read_source(
    node: Source, ctx: Context, stats: NodeStats, seen: frozenset[str] = frozenset()
) -> Iterator[pa.RecordBatch]:
    """The source's batches (`seen`: the hashes of the rows an incremental source loaded at
    its stored cursor value)."""
    if node.cursor_column is not None:
        return incremental(node, ctx, stats, read_all(node, ctx, stats), seen)
    return read_all(node, ctx, stats)


def incremental(
    node: Source,
    ctx: Context,
    stats: NodeStats,
    batches: Iterator[pa.RecordBatch],
    seen: frozenset[str],
) -> Iterator[pa.RecordBatch]:
    """Keep the rows not loaded yet: at or above the last cursor value, less those loaded
    at that value (by row hash); remember the largest value seen and its rows' hashes."""
    import pyarrow.compute as pc  # here: a run without incremental sources never loads it

    column = node.cursor_column
    assert column is not None
    last: pa.Scalar | None = None
    for batch in batches:
        if column not in batch.schema.names:
            raise KeyError(
                f"incremental cursor column '{column}' is not among the source's columns "
                f"{batch.schema.names}"
            )
        values = batch.column(column)
        if ctx.cursor is not None:
            if last is None:
                last = pa.scalar(ctx.cursor).cast(values.type)
            # the rows left are no longer where the batch's origin says they are
            batch = Origin.take(batch)[1].filter(pc.greater_equal(values, last))
        if not batch.num_rows:
            yield batch
            continue
        _track_cursor(stats, batch, column, node.cursor_key)
        if last is not None and seen:
            at_last = pc.equal(batch.column(column), last)
            if pc.any(at_last).as_py():
                hashes = row_hashes(batch.filter(at_last), node.cursor_key)
                loaded = pa.array([h in seen for h in hashes], pa.bool_())
                # in place of each row at the last value: whether it was loaded before
                batch = batch.filter(pc.invert(pc.replace_with_mask(at_last, at_last, loaded)))
        yield batch


def cursor_extra(node: Node, ctx: Context, stats: NodeStats) -> dict[str, Any]:
    """What an incremental source's committed output records of its cursor: the value it
    read from, the largest value it read and the hashes of its rows at that value."""
    if node.cursor_column is None:
        return {}
    return {
        "cursor": {
            "since": ctx.cursor,
            "value": stats.cursor,
            "seen": sorted(stats.cursor_seen),
        }
    }


def read_all(node: Source, ctx: Context, stats: NodeStats) -> Iterator[pa.RecordBatch]:
    """All of a source's batches (`Source.read`), counted in `stats`."""
    yield from _counted(node, node.read(ctx), "read", stats)


def read_partition(
    node: Source, ctx: Context, stats: NodeStats, partition: Partition
) -> Iterator[pa.RecordBatch]:
    """One partition of a source's batches (`Source.read_partition`), counted as `read_all`
    counts them."""
    yield from _counted(node, node.read_partition(ctx, partition), "read_partition", stats)


def _counted(
    node: Source, reader: Iterable[Any], method: str, stats: NodeStats
) -> Iterator[pa.RecordBatch]:
    """The batches of `reader` (what `node.<method>` returned), checked and counted; the
    reader is closed however the caller stops."""
    try:
        for batch in reader:
            if not isinstance(batch, pa.RecordBatch):
                raise TypeError(
                    f"{type(node).__name__}.{method} yielded {type(batch).__name__}; "
                    "sources yield pyarrow.RecordBatch"
                )
            stats.rows_in += batch.num_rows
            stats.chunks_in += 1
            yield batch
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()
