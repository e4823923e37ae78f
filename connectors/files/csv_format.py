"""The CSV file format: how a CSV source parses its files (`CsvLayout`), recorded with a reference
to them so that any later reader (a resumed run, SQL nodes, `etlkit query`) parses them again
exactly as the source did. `CsvLayout` is the `etlkit.connector.FileFormat` named `csv`, found
through the `etlkit.formats` entry point this package declares.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.csv as pacsv

from etlkit.connector import ColumnStats, file_fingerprint

if TYPE_CHECKING:
    import polars as pl

#: Bytes of a CSV file that tell its typical row length.
_CSV_SAMPLE_BYTES: Final = 65_536
#: The largest block a CSV file is parsed in: a row must fit in one.
MAX_CSV_BLOCK: Final = 1 << 30


def csv_block_size(sample: bytes, rows: int) -> int:
    """A CSV reader block holding about `rows` rows, judging by a file's first bytes."""
    lines = sample.split(b"\n")
    per_row = len(sample) / max(len(lines) - 1, 1)
    longest = max(len(line) for line in lines)
    return int(min(max(per_row * rows, 4 * longest, 1_024), 2**28))


@dataclass(frozen=True)
class CsvLayout:
    """How a source parses its CSV files: enough for any reader of a staged reference to them
    to parse them again exactly as the source did (pyarrow's CSV reader, these options).

    `schema` holds the columns read, in order, with their types; `column_names` all of a
    file's columns when it has no header line. `blank_lines`: a blank line is a row of empty
    fields (nulls, empty text), as `polars.read_csv` and so Pandera see it, rather than
    skipped (pyarrow's default, which layouts committed before kept).
    """

    schema: pa.Schema
    delimiter: str = ","
    header: bool = True
    encoding: str = "utf8"
    column_names: tuple[str, ...] | None = None
    blank_lines: bool = True

    def options(self, block_size: int = 1 << 22) -> tuple[Any, Any, Any]:
        """pyarrow's (read, parse, convert) options; read one block at a time, serially, so
        errors carry row numbers."""
        read = pacsv.ReadOptions(
            use_threads=False,
            block_size=block_size,
            encoding=self.encoding,
            column_names=list(self.column_names) if self.column_names is not None else None,
        )
        parse = pacsv.ParseOptions(
            delimiter=self.delimiter, ignore_empty_lines=not self.blank_lines
        )
        convert = pacsv.ConvertOptions(
            column_types={f.name: f.type for f in self.schema}, include_columns=self.schema.names
        )
        return read, parse, convert

    def dataset(self, paths: Sequence[str]) -> Any:
        """A `pyarrow.dataset.Dataset` over local files, which DuckDB and polars scan (more
        than once, with projections) and parse as `options` do."""
        import pyarrow.dataset as ds

        read, parse, convert = self.options(1 << 24)  # rows of up to 16 MiB
        convert = pacsv.ConvertOptions(column_types=convert.column_types)  # the dataset projects
        layout = ds.CsvFileFormat(read_options=read, parse_options=parse, convert_options=convert)
        return ds.dataset(list(paths), format=layout, schema=self.schema)

    @property
    def name(self) -> str:
        return "csv"

    def batches(
        self, paths: Sequence[str], *, columns: Sequence[str] = (), batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        """Local files' record batches in order, parsed as `options` do, about `batch_size`
        rows each (judged from each file's first 64 KiB). `columns` is ignored: `schema`
        holds the columns read."""
        del columns
        for path in paths:
            with pa.OSFile(path) as handle:
                block = csv_block_size(handle.read(_CSV_SAMPLE_BYTES), batch_size)
                yield from self.read(handle, block)

    def read(self, handle: Any, block: int, *, skip: int = 0) -> Iterator[pa.RecordBatch]:
        """An open file's batches from its start, parsed serially as `options` do, its first
        `skip` rows left out. A row longer than a block is read again with blocks four times
        larger, up to 1 GiB (past it pyarrow's "straddling" error is raised)."""
        yielded = skip
        while True:
            handle.seek(0)
            left = yielded  # rows already yielded
            try:
                for batch in pacsv.open_csv(handle, *self.options(block)):
                    if left >= batch.num_rows:
                        left -= batch.num_rows
                        continue
                    if left:
                        batch, left = batch.slice(left), 0
                    yielded += batch.num_rows
                    yield batch
                return
            except pa.ArrowInvalid as exc:
                if "straddl" not in str(exc) or block >= MAX_CSV_BLOCK:
                    raise
                block = min(block * 4, MAX_CSV_BLOCK)

    def to_json(self) -> dict[str, Any]:
        """The layout as JSON values (the schema as base64 of its Arrow IPC form)."""
        return {
            "schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode(),
            "delimiter": self.delimiter,
            "header": self.header,
            "encoding": self.encoding,
            "column_names": list(self.column_names) if self.column_names is not None else None,
            "blank_lines": self.blank_lines,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CsvLayout:
        """The layout `to_json` wrote."""
        names = data.get("column_names")
        return cls(
            schema=pa.ipc.read_schema(pa.py_buffer(base64.b64decode(data["schema"]))),
            delimiter=str(data["delimiter"]),
            header=bool(data["header"]),
            encoding=str(data["encoding"]),
            column_names=tuple(names) if names is not None else None,
            blank_lines=bool(data.get("blank_lines", False)),  # older layouts skipped them
        )

    def frame(
        self, urls: Sequence[str], *, storage_options: Mapping[str, Any] | None = None
    ) -> pl.LazyFrame:
        """A lazy frame over local files, parsed again as the source did."""
        import polars as pl

        del storage_options  # local files only
        return pl.scan_pyarrow_dataset(self.dataset(urls))

    def scan(self, con: Any, urls: Sequence[str], name: str, *, union_by_name: bool = False) -> str:
        """A dataset registered on `con` as `name`, which pyarrow parses (every file has
        `schema`'s columns, so `union_by_name` changes nothing)."""
        del union_by_name
        con.register(name, self.dataset(urls))
        return '"' + name.replace('"', '""') + '"'

    def duckdb_paths(self, urls: Sequence[str]) -> list[str]:
        del urls
        return []  # pyarrow parses them: DuckDB opens none

    def fingerprint(self, fs: Any, path: str) -> tuple[int, str]:
        return file_fingerprint(fs, path)

    def readers_agree(self, metadata: Sequence[Any], columns: Sequence[str]) -> bool:
        del metadata, columns
        return True  # every reader gets pyarrow's parse

    def statistics(
        self,
        urls: Sequence[str],
        columns: Sequence[str],
        *,
        values_of: Sequence[str] = (),
        metadata: Sequence[Any] = (),
    ) -> Mapping[str, ColumnStats]:
        del urls, columns, values_of, metadata
        return {}  # text files carry no statistics
