"""What a file source tells etlkit about its files: `SourceFiles` and `Origin`.

`SourceFiles` describes the immutable files a source reads, so staging may keep a verified
reference to them instead of a copy. `Origin` rides on each chunk a file source yields and names
the file and line of every row that fails validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.storage.formats import FileFormat


@dataclass(frozen=True)
class SourceFiles:
    """Immutable files a source would read, which staging may reference instead of copying.

    Files that describe themselves (Parquet, `format` `PARQUET`): a source that can describe
    its input this way (`Source.files`) is not copied into staging when only `Sql` and `Lazy`
    nodes read it: the staged output is a reference (these files, their sizes and footer
    checksums, which a resume verifies), validated in one pass; when it streams to other nodes
    it is validated chunk by chunk and still staged as the reference.

    Files parsed by fixed rules (`format` with a `schema`, such as connectors.files' CSV
    layout): when every consumer takes the source's chunks as they are read, the staged output
    is a reference to the files (sizes and the format's fingerprints, which a resume verifies);
    whoever reads it later (a resumed run, `etlkit query`) reads them again through the format,
    as the source did. `rows` is unknown then (0).

    `metadata`: what the source parsed of the files anyway (Parquet footers,
    `pyarrow.parquet.FileMetaData`, in `urls` order), so the format does not parse it again.
    """

    urls: tuple[str, ...]
    columns: tuple[str, ...]
    rows: int
    sizes: tuple[int, ...]
    checksums: tuple[str, ...]
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    format: FileFormat = field(default_factory=lambda: _parquet())
    metadata: tuple[Any, ...] = field(default=(), compare=False, repr=False)


def _parquet() -> FileFormat:
    """The Parquet format, imported on use: importing the model loads no pyarrow."""
    from etlkit.storage.parquet import PARQUET

    return PARQUET


_ORIGIN_KEY: Final = b"etlkit.origin"


@dataclass(frozen=True)
class Origin:
    """Where a source chunk's rows come from: a file, and each row's number in it.

    File sources attach it to each chunk they yield (`attach`), as schema metadata: nothing
    is computed per row unless rows fail validation, which then names the file and the row
    (`<node>_failures`, `<node>_rejects`, the error message). `first_row` counts the file's
    rows before the chunk's; `first_line` is the line of its first row in a text file
    (counting a header line); `jumps` are the rows (index in the chunk, line) after which
    lines were skipped (blank lines between rows).

        yield Origin("billing/2025-01.csv", first_row=0, first_line=2).attach(batch)
    """

    file: str
    first_row: int
    first_line: int | None = None
    jumps: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of_lines(cls, file: str, first_row: int, lines: Sequence[int]) -> Origin:
        """The origin of a chunk whose rows are on `lines` (increasing, maybe with gaps)."""
        jumps = tuple(
            (index, lines[index])
            for index in range(1, len(lines))
            if lines[index] != lines[index - 1] + 1
        )
        return cls(file, first_row, lines[0] if lines else None, jumps)

    def attach(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch carrying this origin (no copy of its data)."""
        metadata = dict(batch.schema.metadata or {})
        metadata[_ORIGIN_KEY] = json.dumps(
            [self.file, self.first_row, self.first_line, self.jumps]
        ).encode()
        return batch.replace_schema_metadata(metadata)

    @staticmethod
    def take(batch: pa.RecordBatch) -> tuple[Origin | None, pa.RecordBatch]:
        """The batch's origin, if any, and the batch without it (staged outputs do not keep
        it)."""
        metadata = batch.schema.metadata
        if not metadata or _ORIGIN_KEY not in metadata:
            return None, batch
        file, first_row, first_line, jumps = json.loads(metadata[_ORIGIN_KEY])
        rest = {k: v for k, v in metadata.items() if k != _ORIGIN_KEY}
        origin = Origin(file, first_row, first_line, tuple((i, n) for i, n in jumps))
        return origin, batch.replace_schema_metadata(rest or None)

    def row(self, index: int) -> int:
        """The row number in the file (from 1) of the chunk's row `index` (from 0)."""
        return self.first_row + index + 1

    def line(self, index: int) -> int | None:
        """The line in the file (from 1) of the chunk's row `index`; None without lines."""
        if self.first_line is None:
            return None
        start, line = 0, self.first_line
        for jump, jumped_to in self.jumps:
            if jump > index:
                break
            start, line = jump, jumped_to
        return line + index - start
