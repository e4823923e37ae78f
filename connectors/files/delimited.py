"""CSV files: `CsvSource` and `CsvSink`."""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import pyarrow as pa
import pyarrow.csv as pacsv
from fsspec.implementations.local import LocalFileSystem

from connectors.files.columns import Conformer, missing_columns, read_schema, short
from connectors.files.csv_blocks import (
    SAMPLE_BYTES,
    ReadSeriallyError,
    blocks,
    open_file,
    parse_block,
)
from connectors.files.csv_format import MAX_CSV_BLOCK, CsvLayout, csv_block_size
from connectors.files.paths import (
    FileSink,
    FileSource,
    compressed_looking,
    compression,
    display,
    filesystem,
    open_lines,
    os_error,
    write_file,
)
from etlkit.connector import (
    Context,
    Model,
    Origin,
    Partition,
    SourceFiles,
    WriteResult,
    column_names,
    file_fingerprint,
    has_regex,
    model_name,
)
from etlkit.errors import ConnectorError

logger = logging.getLogger(__name__)


_MAX_WORKERS: Final = 8  # blocks parsed at once: memory holds about one more than that
_ROW_NUMBER: Final = re.compile(r"Row #(\d+): ")
_CSV_CONVERSION: Final = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error")
_QUOTED: Final = re.compile(r"'(.*)'\s*$", re.DOTALL)
_LINE_END: Final = re.compile(rb"[\r\n]")


def _utf8_error(fs: Any, path: str, limit_line: int | None = None) -> tuple[int, int, bytes] | None:
    """The first line of a file that is not UTF-8: (line, byte offset, bad bytes), or None."""
    offset = 0
    with open_lines(fs, path) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                codecs.decode(line, "utf-8")
            except UnicodeDecodeError as exc:
                return number, offset + exc.start, line[exc.start : exc.end]
            offset += len(line)
            if limit_line is not None and number > limit_line:
                return None
    return None


def _workers() -> int:
    """How many blocks of a file are parsed at once: Arrow's CPU count, at most 8; 1 CPU
    reads serially."""
    return min(int(pa.cpu_count()), _MAX_WORKERS)


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("-", "").lower() == "utf8"


def _first_line(sample: bytes) -> bytes | None:
    """The first line of a file's first bytes, without its line end; None without one."""
    end = _LINE_END.search(sample)
    return sample[: end.start()] if end else None


class CsvSource(FileSource):
    """Reads CSV files matching a path or glob on any fsspec filesystem, one chunk at a time.

    The model is the projection: only its columns are read, converted to its types (timestamps
    as ISO 8601, with a `T` or a space). A zero-byte file is an error (a CSV file has at least a
    header); a header without rows yields no rows. Empty fields and pyarrow's null markers
    (`NA`, `NULL`, `NaN`, `N/A`, ...) are nulls, except in string columns, where they are text.

    Files named `.gz`, `.bz2` or `.zst` are decompressed as they are read (serially, and
    copied into staging rather than referenced).

    `chunk_rows` (default: the context's) is a hint: the reader's block size is estimated from
    the first 64 KiB of each file, so chunks hold about that many rows. Line numbers in errors
    and in validation failures (`etlkit.connector.Origin`) count the header and one line per row,
    so a quoted field spanning lines, or a blank line (skipped), shifts them.

    UTF-8 files are cut into those blocks and parsed on a pool of threads (one per CPU, up to
    8), in order: the chunks are those of a serial read. When a block fails to parse, or a
    quoted value may span two blocks, the file is read again serially, skipping the rows
    already yielded, so errors name the same line and column as a serial read does.

    Local files whose rows all stream to their consumers are staged as a reference to the files
    (see `etlkit.connector.SourceFiles`), not a copy: keep them in place, unchanged, while their
    runs may be resumed or queried.

        billing = CsvSource("s3://hospital-data/billing/{ds}/*.csv", schema=RawBilling)

    Raises:
        ConnectorError: no file matches (without `allow_empty`), a file cannot be read, is
            empty, compressed unlike its name says, or not UTF-8, a declared column is
            missing from the header, a row has the wrong number of fields or a value does not
            parse as its column's type. The message names the file, line and column.
    """

    def __init__(
        self,
        path: str,
        *,
        schema: Model,
        chunk_rows: int | None = None,
        delimiter: str = ",",
        header: bool = True,
        encoding: str = "utf8",
        conn: str | None = None,
        allow_empty: bool = False,
        each_day: bool = False,
    ) -> None:
        super().__init__(
            path,
            schema=schema,
            chunk_rows=chunk_rows,
            conn=conn,
            allow_empty=allow_empty,
            each_day=each_day,
        )
        self.delimiter = delimiter
        self.header = header
        self.encoding = encoding

    files_in_place = False  # parsing is the work: consumers take the parsed chunks

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        files = self._resolve(ctx)
        total = 0
        for path, size in zip(files.paths, files.sizes, strict=True):
            logger.debug("%s: reading %s (%d bytes)", self._where(), path, size)
            for batch in self._read_one(files.fs, path, self.chunk_rows or ctx.chunk_rows):
                yield batch
                total += batch.num_rows
        if total == 0 and files.paths and self.header and has_regex(self.model):
            yield self._no_rows(files.fs, files.paths[-1])

    def read_partition(self, ctx: Context, partition: Partition) -> Iterator[pa.RecordBatch]:
        """Read one file of `partitions`, as `read` reads it; a file of no rows under a model
        with a regex column yields a chunk of no rows with the columns its header names (`read`
        yields one only when no file has rows)."""
        fs, path = self._partition_file(ctx, partition)
        logger.debug("%s: reading partition %s", self._where(), partition.id)
        rows = 0
        for batch in self._read_one(fs, path, self.chunk_rows or ctx.chunk_rows):
            yield batch
            rows += batch.num_rows
        if rows == 0 and self.header and has_regex(self.model):
            yield self._no_rows(fs, path)

    def _read_one(self, fs: Any, path: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        """One file's chunks, each carrying its `Origin`."""
        shown, rows = display(fs, path), 0
        first_line = 2 if self.header else 1  # one line per row (see above)
        try:
            for batch in self._read_file(fs, path, chunk_rows):
                yield Origin(shown, rows, first_line + rows).attach(batch)
                rows += batch.num_rows
        except OSError as exc:  # permissions, a folder, a corrupt compressed stream
            raise os_error(self._where(), "read", fs, path, exc) from exc

    def _no_rows(self, fs: Any, path: str) -> pa.RecordBatch:
        """No rows, but the columns the header names that a regex column matches: an empty
        output then has them, as a frame read from the file does."""
        return pa.RecordBatch.from_pylist([], schema=self._file_layout(fs, path).schema)

    def estimate(self, ctx: Context) -> int | None:
        """About how many rows the files hold, from their sizes and the line length of the
        first file's first 64 KiB (one row per line; None for compressed files)."""
        return self._line_estimate(ctx, 1 if self.header else 0)

    def files(self, ctx: Context) -> SourceFiles | None:
        """The local files `read` would read and how it parses them, so that staging may
        reference them instead of a copy of their rows (see `SourceFiles`).

        None (copy as usual) for remote or empty files.
        """
        fs, _ = filesystem(self._where(), ctx.render(self.path), self.conn)
        if not isinstance(fs, LocalFileSystem):
            return None  # not even listed: a remote listing costs a round trip
        found = self._resolve(ctx)
        if not found.paths or 0 in found.sizes:
            return None
        if any(compression(path) is not None for path in found.paths):
            return None  # readers of a reference parse plain files only
        layouts = {self._file_layout(found.fs, path) for path in found.paths}
        if len(layouts) != 1:
            return None  # a regex column matches different columns in different files
        layout = layouts.pop()
        fingerprints = [file_fingerprint(found.fs, path) for path in found.paths]
        return SourceFiles(
            urls=tuple(found.paths),
            columns=tuple(layout.schema.names),
            rows=0,
            sizes=tuple(size for size, _ in fingerprints),
            checksums=tuple(checksum for _, checksum in fingerprints),
            format=layout,
        )

    def _layout(self, header: list[str] | None = None) -> CsvLayout:
        """How to parse a file; `header`, its column names, resolves regex columns to those
        they match (without it, a regex column stands for a column named as its pattern)."""
        schema = read_schema(self.model, header)
        names = None if self.header else tuple(schema.names)
        return CsvLayout(schema, self.delimiter, self.header, self.encoding, names)

    def _file_layout(self, fs: Any, path: str) -> CsvLayout:
        """How to parse this file: a model with regex columns reads every column of the
        header they match, as Pandera selects them."""
        if not (self.header and has_regex(self.model)):
            return self._layout()
        return self._layout(self._header(fs, path))

    def _read_options(self, block_size: int, column_names: list[str] | None) -> Any:
        """`CsvLayout.options`' read options, with the given column names (None: the first
        line is the header)."""
        return pacsv.ReadOptions(
            use_threads=False,  # errors then carry row numbers; blocks are parsed in parallel
            block_size=block_size,
            encoding=self.encoding,
            column_names=column_names,
        )

    def _read_file(self, fs: Any, path: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        with open_file(fs, path) as handle:
            sample = handle.read(SAMPLE_BYTES)
            if not sample:
                raise ConnectorError(
                    f"{self._where()}: file {display(fs, path)!r} is empty (0 bytes); a CSV "
                    "file needs at least a header line."
                )
            looks = compressed_looking(sample)
            if looks is not None:
                raise ConnectorError(
                    f"{self._where()}: file {display(fs, path)!r} is {looks}, not CSV text; "
                    "files named .gz, .bz2 or .zst are decompressed as they are read."
                )
            block = csv_block_size(sample, chunk_rows)
            layout = self._file_layout(fs, path)
            yielded = 0
            if self._parallel(sample):
                try:
                    for batch in self._parallel_batches(handle, sample, block, layout):
                        yielded += batch.num_rows
                        yield batch
                    return
                except ReadSeriallyError as exc:
                    logger.debug("%s: reading %s serially (%s)", self._where(), path, exc)
            yield from self._serial_batches(fs, path, handle, block, yielded, layout)

    def _parallel(self, sample: bytes) -> bool:
        """Whether blocks can be parsed in parallel: UTF-8 (other encodings are transcoded as
        a stream), several CPUs, and a header line read whole, without a quoted line end."""
        if not _is_utf8(self.encoding) or _workers() < 2:
            return False
        header = _first_line(sample) if self.header else b""
        return header is not None and header.count(b'"') % 2 == 0

    def _parallel_batches(
        self, handle: Any, sample: bytes, block: int, layout: CsvLayout
    ) -> Iterator[pa.RecordBatch]:
        """The serial reader's batches, its blocks parsed on a pool of threads, in order.

        At most one block more than the pool has threads is in flight, so memory stays a few
        blocks. Raises `ReadSeriallyError` when a block cannot be vouched for or fails to
        parse: the serial reader then gives the rows, or the exact error.
        """
        _, parse, convert = layout.options(block)
        names = self._column_names(sample, parse)
        workers = _workers()
        pending: deque[Future[list[pa.RecordBatch]]] = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="etlkit-csv") as pool:
            try:
                for index, (data, last) in enumerate(blocks(handle, block)):
                    header = index == 0 and self.header  # the first block holds the header
                    read = self._read_options(data.size + 1, None if header else names)
                    pending.append(pool.submit(parse_block, data, last, (read, parse, convert)))
                    if len(pending) > workers:
                        yield from pending.popleft().result()
                while pending:
                    yield from pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def _column_names(self, sample: bytes, parse: Any) -> list[str]:
        """The file's column names, as pyarrow reads them from its header line."""
        line = _first_line(sample) if self.header else None
        if line is None:
            return column_names(self.model)
        read = pacsv.ReadOptions(use_threads=False, block_size=len(line) + 2)
        try:
            header = pacsv.read_csv(pa.py_buffer(line + b"\n"), read, parse)
        except pa.ArrowException as exc:
            raise ReadSeriallyError(f"cannot read the header: {exc}") from exc
        try:
            return list(header.column_names)
        except UnicodeDecodeError as exc:  # the serial reader names the line and bytes
            raise ReadSeriallyError(f"the header is not UTF-8: {exc}") from exc

    def _serial_batches(
        self, fs: Any, path: str, handle: Any, block: int, yielded: int, layout: CsvLayout
    ) -> Iterator[pa.RecordBatch]:
        """The file read serially, with its exact errors; the first `yielded` rows skipped."""
        try:
            yield from layout.read(handle, block, skip=yielded)
        except pa.ArrowKeyError as exc:  # a declared column is not in the header
            bad = _utf8_error(fs, path, limit_line=1) if _is_utf8(self.encoding) else None
            if bad is not None:  # binary garbage: its "header" names no column
                raise self._not_utf8(fs, path, bad) from exc
            raise missing_columns(
                self._where(), repr(display(fs, path)), self.model, self._header(fs, path)
            ) from exc
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc):
                raise ConnectorError(
                    f"{self._where()}: file {display(fs, path)!r} has a row longer "
                    f"than {MAX_CSV_BLOCK} bytes; check the quoting."
                ) from exc
            raise self._explain(fs, path, exc) from exc
        except UnicodeDecodeError as exc:  # transcoding from a non-UTF-8 `encoding`
            raise ConnectorError(
                f"{self._where()}: file {display(fs, path)!r} is not valid {self.encoding} "
                f"({exc}); pass the file's encoding as encoding=."
            ) from exc
        except pa.ArrowNotImplementedError as exc:
            raise ConnectorError(
                f"{self._where()}: cannot read {model_name(self.model)}'s column types from "
                f"CSV ({exc}); declare the column as str and convert it in a transform."
            ) from exc

    def _header(self, fs: Any, path: str) -> list[str]:
        if not self.header:
            return column_names(self.model)
        with open_lines(fs, path) as handle:
            # pyarrow skips a BOM too
            encoding = "utf-8-sig" if _is_utf8(self.encoding) else self.encoding
            text = io.TextIOWrapper(handle, encoding=encoding, errors="replace", newline="")
            return next(csv.reader(text, delimiter=self.delimiter), [])

    def _not_utf8(
        self, fs: Any, path: str, bad: tuple[int, int, bytes] | None, at: str = ""
    ) -> ConnectorError:
        """The file is not UTF-8: at `bad` (line, byte offset, bytes) when known."""
        if bad is not None:
            at = f", line {bad[0]} (byte offset {bad[1]})"
        return ConnectorError(
            f"{self._where()}: file {display(fs, path)!r}{at} is not valid UTF-8"
            f"{f' (bytes {bad[2]!r})' if bad else ''}; pass encoding= with the file's "
            "encoding (for example encoding='latin1')."
        )

    def _explain(self, fs: Any, path: str, exc: pa.ArrowInvalid) -> ConnectorError:
        """Turn pyarrow's CSV error into one naming the file, line, column and value."""
        message = str(exc)
        shown = repr(display(fs, path))
        row = _ROW_NUMBER.search(message)
        line = int(row.group(1)) if row else None
        at = f", line {line}" if line is not None else ""
        if "invalid UTF8" in message and _is_utf8(self.encoding):
            return self._not_utf8(fs, path, _utf8_error(fs, path), at)
        if "Expected" in message and "columns, got" in message:
            detail = message.split(": ", 1)[-1]
            detail = _ROW_NUMBER.sub("", detail)
            detail = detail if len(detail) <= 200 else detail[:200] + "..."
            return ConnectorError(
                f"{self._where()}: file {shown}{at}: wrong number of fields ({detail}). "
                f"Check the delimiter ({self.delimiter!r}) and the quoting of that line."
            )
        conversion = _CSV_CONVERSION.search(message)
        if conversion is not None:
            index = int(conversion.group(1))
            header = self._header(fs, path)
            column = header[index] if index < len(header) else f"#{index}"
            value = _QUOTED.search(message)
            schema = read_schema(self.model, header)
            expected = schema.field(column).type if column in schema.names else "?"
            return ConnectorError(
                f"{self._where()}: file {shown}{at}, column '{column}': cannot parse "
                f"{short(value.group(1)) if value else 'a value'} as {expected} "
                f"(declared by {model_name(self.model)}; pyarrow says: "
                f"{message.split(': ')[-1]}). Fix the value, or declare the column as str "
                "and parse it in a transform."
            )
        return ConnectorError(f"{self._where()}: cannot read file {shown}{at}: {message}")


class CsvSink(FileSink):
    """Writes its input to one CSV file with a header, atomically.

    Columns are the model's, in its order, when one is given, else the first batch's. An empty
    input writes just the header (in a run, the engine hands a sink without a model one empty
    batch with its input's columns), or a zero-byte file when nothing gives the columns.

        export = CsvSink("exports/{ds}/billing.csv", billing, schema=Billing)

    Raises:
        ConnectorError: a batch lacks a column or cannot be cast to the file's types.
    """

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        where = self._where()
        conform = Conformer(where, self.input_model)

        def write(handle: Any) -> int:
            rows, writer = 0, None
            try:
                for batch in batches:
                    batch = conform(batch)
                    writer = writer or pacsv.CSVWriter(handle, batch.schema)
                    writer.write_batch(batch)
                    rows += batch.num_rows
                if writer is None and conform.schema is not None:
                    writer = pacsv.CSVWriter(handle, conform.schema)
            finally:
                if writer is not None:
                    writer.close()
            return rows

        return write_file(where, self.path, ctx, write, self.conn)
