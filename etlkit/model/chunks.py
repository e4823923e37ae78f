"""A chunk in the forms at hand: a record batch, a polars frame, or both of the same rows.

A source yields record batches and a transform polars frames; the guard of its output may
convert one to the other to validate it. `Chunk` keeps whichever forms exist, so the staging
writer and Arrow consumers take the batches, transforms take the frame, and neither form is
made twice (or at all, where nobody asks for it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from etlkit.model.schema import exported_schema, from_polars, to_polars

if TYPE_CHECKING:
    import polars as pl


@dataclass
class Chunk:
    """The same rows as a record batch (`batch`), a polars frame (`frame`), or both."""

    batch: pa.RecordBatch | None = None
    frame: pl.DataFrame | None = None

    @classmethod
    def of(cls, item: pa.RecordBatch | pl.DataFrame) -> Chunk:
        """The chunk of a record batch or a polars frame."""
        return cls(batch=item) if isinstance(item, pa.RecordBatch) else cls(frame=item)

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows if self.batch is not None else len(self.polars())

    def batches(self) -> list[pa.RecordBatch]:
        """The rows as record batches: the batch itself, or the frame exported (strings as
        views, see `schema.from_polars`)."""
        if self.batch is not None:
            return [self.batch]
        assert self.frame is not None
        return from_polars(self.frame)

    def schema(self) -> pa.Schema:
        """The schema of `batches()`, without exporting the frame."""
        if self.batch is not None:
            return self.batch.schema
        assert self.frame is not None
        return exported_schema(self.frame)

    def polars(self) -> pl.DataFrame:
        """The rows as a polars frame: the frame itself, or the batch converted (once)."""
        if self.frame is None:
            assert self.batch is not None
            self.frame = to_polars(self.batch)
        return self.frame

    def split(self, rows: int, max_bytes: int) -> Iterator[Chunk]:
        """Slices (without copying) of at most `rows` rows or about `max_bytes` each, every
        form held sliced alike."""
        n = self.num_rows
        if n == 0:
            return
        step = rows
        size = _size(self, max_bytes) if n > 1 else 0
        if size > max_bytes:
            step = min(step, max(1, n * max_bytes // size))
        if n <= step:
            yield self
            return
        for offset in range(0, n, step):
            yield Chunk(
                batch=None if self.batch is None else self.batch.slice(offset, step),
                frame=None if self.frame is None else self.frame.slice(offset, step),
            )


def _size(chunk: Chunk, limit: int) -> int:
    """About how many bytes the chunk holds, where that may be over `limit`. The buffers' total
    bounds a batch's size (a slice shares its parent's): its exact size is only worth its cost
    (microseconds, per chunk) when the bound is over the limit."""
    if chunk.batch is None:
        assert chunk.frame is not None
        return int(chunk.frame.estimated_size())
    if chunk.batch.get_total_buffer_size() <= limit:
        return 0
    return int(chunk.batch.nbytes)
