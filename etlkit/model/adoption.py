"""Sinks that adopt their input's staged Parquet instead of encoding it again.

A node's output is staged as Parquet by run id whatever consumes it; a sink writing the same
rows to a Parquet file would encode them a second time. A sink that can take the staged file
itself says how the staging must be written for that (`Sink.adoption` returns an `Adoption`:
the compression and the column types its file has). The engine then stages that input in one
part, written that way, makes the sink read its input's committed staging instead of a
channel, and offers it the committed parts (`StagedParquet`): the sink either says why it
cannot take them (`Sink.adoption_refused`; then it writes the input's batches as usual) or
adopts them (`Sink.adopt`), still atomically and exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Adoption:
    """How a sink wants its input staged so it can adopt the staged file as its own.

    `compression`: the Parquet codec of the sink's file. `file_type`: the type the sink writes
    a column of a given type as; it must keep every value (a layout change such as
    `large_string` to `string`), since the staged output is the node's output whoever reads it.
    """

    compression: str
    file_type: Callable[[pa.DataType], pa.DataType]

    def file_schema(self, schema: pa.Schema) -> pa.Schema:
        """`schema` with each column's type as the sink writes it."""
        import pyarrow as pa

        fields = [f.with_type(self.file_type(f.type)) for f in schema]
        return pa.schema(fields, metadata=schema.metadata)


@dataclass(frozen=True)
class StagedParquet:
    """A node's committed staged output, offered to the sink that consumes it (`Sink.adopt`).

    `fs` (an fsspec filesystem) holds `paths`, the output's Parquet parts in order; `local`
    says whether `fs` is the local disk. `schema` is the parts' Arrow schema, `rows` their
    rows, `compressions` every codec their column chunks use (upper case, as Parquet names
    them: `ZSTD`, `SNAPPY`; empty for an output of no row group). The files are immutable
    and stay the staging's: a sink copies or links them, never moves or changes them.
    """

    node: str
    fs: Any
    paths: tuple[str, ...]
    local: bool
    schema: pa.Schema
    rows: int
    compressions: frozenset[str]
