"""Test doubles: in-memory sources and sinks, the reference implementations of the node roles.

source = MemorySource(table, schema=Billing, chunk_rows=2)
sink = MemorySink(source)
...
assert sink.table().num_rows == 4
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from etlkit.model.nodes import Context, Node, Sink, Source, WriteResult
from etlkit.model.schema import project

if TYPE_CHECKING:
    from etlkit.model.nodes import Model


class MemorySource(Source):
    """Yields an in-memory Arrow table in chunks of `chunk_rows` (default: the context's).

    `batches` may instead be a callable returning fresh batches for each read, to stream data
    far larger than memory. `reads` counts how often `read` was called.
    """

    def __init__(
        self,
        data: pa.Table | Callable[[], Iterator[pa.RecordBatch]],
        *,
        schema: Model | None = None,
        chunk_rows: int | None = None,
        stage: bool = True,
    ) -> None:
        super().__init__(schema=schema, stage=stage)
        self.data = data
        self.chunk_rows = chunk_rows
        self.reads = 0

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        """Yield the data in chunks, projected to the model's columns like every source."""
        self.reads += 1
        model = self.output_model
        if callable(self.data):
            for batch in self.data():
                yield batch.select(project(model, batch.schema.names)) if model else batch
            return
        table = self.data.select(project(model, self.data.column_names)) if model else self.data
        if not table.num_rows:  # its columns still reach the guard, as a file's header does
            yield pa.RecordBatch.from_pylist([], schema=table.schema)
            return
        yield from table.to_batches(max_chunksize=self.chunk_rows or ctx.chunk_rows)


class MemorySink(Sink):
    """Collects what it is given; `table()` returns it once the write committed.

    Like every sink it is atomic: a write that is interrupted keeps nothing.
    """

    def __init__(self, *inputs: Node | str, schema: Model | None = None) -> None:
        super().__init__(*inputs, schema=schema)
        self._lock = threading.Lock()
        self._committed: list[pa.RecordBatch] | None = None

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        pending = list(batches)  # raises if the run is cancelled: nothing is committed
        with self._lock:
            self._committed = pending
        return WriteResult(rows=sum(b.num_rows for b in pending), uri=f"memory://{ctx.node}")

    @property
    def committed(self) -> bool:
        """Whether a write completed."""
        return self._committed is not None

    def table(self) -> pa.Table:
        """Everything the last completed write received, as one table."""
        if self._committed is None:
            raise AssertionError(f"MemorySink {self.name!r} has no committed write")
        if not self._committed:
            return pa.table({})
        return pa.Table.from_batches(self._committed)
