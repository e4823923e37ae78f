"""Newline-delimited JSON files: `NdjsonSource` and `NdjsonSink`."""

from __future__ import annotations

import codecs
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.json as pajson

from connectors.files.columns import Conformer, first_failing, read_schema, short
from connectors.files.paths import (
    FileSink,
    FileSource,
    compressed_looking,
    display,
    open_lines,
    os_error,
    write_file,
)
from etlkit.connector import Context, Origin, Partition, WriteResult, model_name
from etlkit.errors import ConnectorError

logger = logging.getLogger(__name__)


class NdjsonSource(FileSource):
    """Reads newline-delimited JSON files (one object per line), `chunk_rows` lines at a time.

    Only the model's columns are read, with its types; other keys are ignored, and a key missing
    from an object is a null. Blank lines are skipped, so an empty file yields no rows. Each
    chunk is exactly `chunk_rows` objects (default: the context's), except the last of a file.
    Files named `.gz`, `.bz2` or `.zst` are decompressed as they are read.

        events = NdjsonSource("logs/{ds}/*.jsonl", schema=Event)

    Raises:
        ConnectorError: no file matches, a line is not JSON or not UTF-8, or a value does not
            convert to its column's type; the message names the file, line and column.
    """

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        files = self._resolve(ctx)
        chunk_rows = self.chunk_rows or ctx.chunk_rows
        for path in files.paths:
            logger.debug("%s: reading %s", self._where(), path)
            try:
                yield from self._read_file(files.fs, path, chunk_rows)
            except OSError as exc:  # permissions, a folder, a corrupt compressed stream
                raise os_error(self._where(), "read", files.fs, path, exc) from exc

    def read_partition(self, ctx: Context, partition: Partition) -> Iterator[pa.RecordBatch]:
        """Read one file of `partitions`, as `read` reads it."""
        fs, path = self._partition_file(ctx, partition)
        logger.debug("%s: reading partition %s", self._where(), partition.id)
        try:
            yield from self._read_file(fs, path, self.chunk_rows or ctx.chunk_rows)
        except OSError as exc:  # permissions, a folder, a corrupt compressed stream
            raise os_error(self._where(), "read", fs, path, exc) from exc

    def estimate(self, ctx: Context) -> int | None:
        """About how many rows the files hold, from their sizes and the line length of the
        first file's first 64 KiB (None for compressed files)."""
        return self._line_estimate(ctx, 0)

    def _read_file(self, fs: Any, path: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        shown = repr(display(fs, path))
        lines: list[bytes] = []
        numbers: list[int] = []
        offset = start = rows = 0
        with open_lines(fs, path) as handle:
            for number, line in enumerate(handle, start=1):
                if number == 1 and (looks := compressed_looking(line)) is not None:
                    raise ConnectorError(
                        f"{self._where()}: file {shown} is {looks}, not NDJSON text; files "
                        "named .gz, .bz2 or .zst are decompressed as they are read."
                    )
                if line.strip():
                    lines.append(line if line.endswith(b"\n") else line + b"\n")
                    numbers.append(number)
                offset += len(line)
                if len(lines) >= chunk_rows:
                    yield Origin.of_lines(display(fs, path), rows, numbers).attach(
                        self._parse(lines, numbers, start, shown)
                    )
                    lines, numbers, start, rows = [], [], offset, rows + len(lines)
        if lines:
            yield Origin.of_lines(display(fs, path), rows, numbers).attach(
                self._parse(lines, numbers, start, shown)
            )

    def _parse_lines(self, lines: list[bytes]) -> pa.RecordBatch:
        data = b"".join(lines)
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pajson.ParseOptions(
                explicit_schema=read_schema(self.model), unexpected_field_behavior="ignore"
            ),
        )
        return table.combine_chunks().to_batches()[0]

    def _parse(
        self, lines: list[bytes], numbers: list[int], start: int, shown: str
    ) -> pa.RecordBatch:
        offset = start
        for line, number in zip(lines, numbers, strict=True):  # Arrow does not check UTF-8
            try:
                codecs.decode(line, "utf-8")
            except UnicodeDecodeError as exc:
                raise ConnectorError(
                    f"{self._where()}: file {shown}, line {number} (byte offset "
                    f"{offset + exc.start}) is not valid UTF-8 (bytes "
                    f"{line[exc.start : exc.end]!r}); NDJSON files must be UTF-8."
                ) from exc
            offset += len(line)
        try:
            return self._parse_lines(lines)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise self._explain(lines, numbers, shown, exc) from exc

    def _explain(
        self, lines: list[bytes], numbers: list[int], shown: str, exc: Exception
    ) -> ConnectorError:
        """Find the first line that fails to parse (by bisection) and the column at fault."""

        def fails(count: int) -> bool:
            try:
                self._parse_lines(lines[:count])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return True
            return False

        index = first_failing(len(lines), fails)
        if index < 0:
            return ConnectorError(f"{self._where()}: cannot read file {shown}: {exc}")
        line, at = lines[index], f"file {shown}, line {numbers[index]}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as bad:
            return ConnectorError(
                f"{self._where()}: {at} is not valid JSON ({bad.msg} at character "
                f"{bad.pos}): {short(line.decode('utf-8', 'replace'))}."
            )
        if not isinstance(record, dict):
            return ConnectorError(
                f"{self._where()}: {at} is not a JSON object: {short(record)}; each line of "
                "an NDJSON file holds one object."
            )
        schema = read_schema(self.model)
        for target in schema:
            try:
                pajson.read_json(
                    io.BytesIO(line),
                    parse_options=pajson.ParseOptions(
                        explicit_schema=pa.schema([target]), unexpected_field_behavior="ignore"
                    ),
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as column_exc:
                return ConnectorError(
                    f"{self._where()}: {at}, column '{target.name}': cannot convert "
                    f"{short(record.get(target.name))} to {target.type} (declared by "
                    f"{model_name(self.model)}; pyarrow says: {column_exc}). Fix the value or "
                    "change the model."
                )
        return ConnectorError(f"{self._where()}: {at}: {exc}")


class NdjsonSink(FileSink):
    """Writes its input as newline-delimited JSON, one object per row, atomically.

    Timestamps are written as ISO 8601 strings. An empty input writes a zero-byte file.

        events = NdjsonSink("exports/{ds}/events.jsonl", cleaned)

    Raises:
        ConnectorError: a batch lacks a column or cannot be cast to the file's types.
    """

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        where = self._where()
        conform = Conformer(where, self.input_model)

        def write(handle: Any) -> int:
            rows = 0
            for batch in batches:
                batch = conform(batch)
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)  # a record batch is never a Series
                frame.write_ndjson(handle)
                rows += batch.num_rows
            return rows

        return write_file(where, self.path, ctx, write, self.conn)
