"""Parquet files: `ParquetSource` (files, globs and hive-partitioned datasets) and
`ParquetSink`."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from connectors.files.adopt import adopt_file, refusal
from connectors.files.columns import (
    Conformer,
    first_failing,
    missing_columns,
    plain_type,
    read_schema,
    short,
)
from connectors.files.parquet_scan import (
    group_batches,
    group_rows,
    polars_batches,
    polars_readable,
    spans,
)
from connectors.files.paths import (
    FileSink,
    FileSource,
    display,
    file_partition,
    os_error,
    write_file,
)
from etlkit.connector import (
    Adoption,
    Context,
    Model,
    Node,
    Origin,
    Partition,
    SourceFiles,
    StagedParquet,
    WriteResult,
    cast_array,
    footer_checksum,
    has_regex,
    model_name,
    parquet_batches,
)
from etlkit.errors import ConfigError, ConnectorError, StagingError

logger = logging.getLogger(__name__)

_HIVE_NULL: Final = "__HIVE_DEFAULT_PARTITION__"
#: The rows of a `ParquetSource` partition by default: a file of more rows is split into runs
#: of row groups of at most this many, so one big file spreads over a cluster's workers (a
#: task of a few seconds each, against a per-task cost of tens of milliseconds).
PARTITION_ROWS: Final = 4_000_000


def _castable(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type `found` may be cast to `expected` (values are still checked)."""
    t = pa.types
    if found == expected or t.is_null(found):
        return True
    if t.is_dictionary(found):
        return _castable(found.value_type, expected)
    stringy = (t.is_string, t.is_large_string, t.is_string_view)
    binary = (t.is_binary, t.is_large_binary, t.is_binary_view)
    for family in (
        stringy,
        binary,
        (t.is_integer, t.is_floating, t.is_decimal),
        (t.is_date,),
        (t.is_boolean,),
    ):
        if any(f(found) for f in family) and any(f(expected) for f in family):
            return not (t.is_floating(found) and t.is_integer(expected))
    if t.is_timestamp(found) and t.is_timestamp(expected):
        return (found.tz is None) == (expected.tz is None)
    return t.is_date(found) and t.is_timestamp(expected) and expected.tz is None


def _partition_values(path: str) -> dict[str, str | None]:
    """`col=value` directory names in a path (hive partitioning), URL-decoded."""
    values: dict[str, str | None] = {}
    for part in path.split("/")[:-1]:
        name, sep, value = part.partition("=")
        if sep and name:
            values[name] = None if value == _HIVE_NULL else unquote(value)
    return values


class ParquetSource(FileSource):
    """Reads Parquet files matching a path, glob or directory, one row batch at a time.

    Only the model's columns are read. A column stored with another type is cast to the model's
    when the cast is safe (wider integers, integers to floats, string sizes, timestamp units,
    dictionaries); each value is checked. A declared column absent from a file but named in its
    directories (`month=2025-01/part-0.parquet`, as `ParquetDatasetSink` writes) is filled from
    the directory name. A whole local file whose columns to read are integers, floats,
    booleans, dates, decimals or text is decoded by polars' reader (`parquet_scan`), others by
    pyarrow's; both give the same chunks' values, types and origins.

        billing = ParquetSource("s3://lake/billing/{ds}/*.parquet", schema=RawBilling)

    Its partitions (`partitions`, which only a partitioned executor such as Dask's asks for)
    are its files, a file of more than `partition_rows` rows (default `PARTITION_ROWS`, 4
    million) split into runs of consecutive row groups of at most that many rows (a row group
    holding more is a partition of its own); `partition_rows=None` or `0`: one partition per
    file, no footer read to split it.

    Raises:
        ConnectorError: no file matches, a file is empty or not Parquet, a declared column is
            missing, or a column's type cannot be cast; the message names file and column.
    """

    def __init__(
        self,
        path: str,
        *,
        schema: Model,
        chunk_rows: int | None = None,
        conn: str | None = None,
        allow_empty: bool = False,
        each_day: bool = False,
        partition_rows: int | None = PARTITION_ROWS,
    ) -> None:
        super().__init__(
            path,
            schema=schema,
            chunk_rows=chunk_rows,
            conn=conn,
            allow_empty=allow_empty,
            each_day=each_day,
        )
        if partition_rows is not None and partition_rows < 0:
            raise ConfigError(
                f"{type(self).__name__} for {path!r}: partition_rows must be at least 1 (the "
                f"most rows of a partition), or 0 or None for one partition per file; got "
                f"{partition_rows}."
            )
        self.partition_rows = partition_rows or None

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        files = self._resolve(ctx)
        for path, size in zip(files.paths, files.sizes, strict=True):
            yield from self._read_one(files.fs, path, size, self.chunk_rows or ctx.chunk_rows)

    def partitions(self, ctx: Context) -> Sequence[Partition] | None:
        """One partition per file, in the order `read` reads them; with `partition_rows` (by
        default), a file of more rows is split into runs of consecutive row groups of at most
        that many rows (a row group holding more is a partition of its own): `{"path": ...,
        "row_groups": [first, end]}`. Splitting reads each file's footer once, here; a file
        whose footer cannot be read is one partition, whose read says why.
        """
        found = self._resolve(ctx)
        split: list[Partition] = []
        for path, size in zip(found.paths, found.sizes, strict=True):
            counts = group_rows(found.fs, path) if self.partition_rows and size else None
            runs = spans(counts, self.partition_rows) if counts and self.partition_rows else []
            if len(runs) <= 1:
                split.append(file_partition(path))
            else:
                split += [file_partition(path, run) for run in runs]
        return split

    def read_partition(self, ctx: Context, partition: Partition) -> Iterator[pa.RecordBatch]:
        """Read one partition of `partitions`: a file as `read` reads it, or some of its row
        groups (chunks then end where the partition does; each row keeps its row number)."""
        fs, path = self._partition_file(ctx, partition)
        groups = partition.data.get("row_groups")
        if groups is not None and not (
            isinstance(groups, list) and len(groups) == 2 and all(type(g) is int for g in groups)
        ):
            raise ConnectorError(
                f"{self._where()}: partition {partition.id!r} has row_groups {groups!r}, not "
                "[first, end]."
            )
        logger.debug("%s: reading partition %s", self._where(), partition.id)
        try:
            size = int(fs.size(path))
        except OSError as exc:  # gone, permissions
            raise os_error(self._where(), "read", fs, path, exc) from exc
        chunk_rows = self.chunk_rows or ctx.chunk_rows
        yield from self._read_one(
            fs, path, size, chunk_rows, None if groups is None else range(*groups)
        )

    def _read_one(
        self, fs: Any, path: str, size: int, chunk_rows: int, groups: range | None = None
    ) -> Iterator[pa.RecordBatch]:
        """One file's chunks (or those of its row groups `groups`), each with its `Origin`."""
        shown = repr(display(fs, path))
        if size == 0:
            raise ConnectorError(f"{self._where()}: file {shown} is empty (0 bytes).")
        logger.debug("%s: reading %s (%d bytes)", self._where(), path, size)
        try:
            for batch, rows in self._read_path(fs, path, shown, chunk_rows, groups):
                yield Origin(display(fs, path), rows).attach(batch)
        except OSError as exc:  # permissions, a folder
            raise os_error(self._where(), "read", fs, path, exc) from exc

    def _read_path(
        self, fs: Any, path: str, shown: str, chunk_rows: int, groups: range | None
    ) -> Iterator[tuple[pa.RecordBatch, int]]:
        """The file's batches and the row (from the file's start, 0) each begins at."""
        with fs.open(path, "rb") as handle:
            try:
                parquet = pq.ParquetFile(handle)
            except (pa.ArrowInvalid, OSError) as exc:
                raise ConnectorError(
                    f"{self._where()}: file {shown} is not a Parquet file ({exc})."
                ) from exc
            rows = 0
            if groups is not None:
                count = parquet.metadata.num_row_groups
                if not 0 <= groups.start < groups.stop <= count:
                    raise ConnectorError(
                        f"{self._where()}: file {shown} has {count} row groups, not the "
                        f"{groups.start} to {groups.stop - 1} of its partition: it changed "
                        "since the run split it; run it again."
                    )
                rows = sum(parquet.metadata.row_group(g).num_rows for g in range(groups.start))
            for batch in self._read_file(
                parquet,
                path,
                shown,
                chunk_rows,
                reopen=functools.partial(_open_parquet, fs, path),
                groups=groups,
                local=isinstance(fs, LocalFileSystem),
            ):
                yield batch, rows
                rows += batch.num_rows

    def estimate(self, ctx: Context) -> int | None:
        """The row count in the footers of the local files `read` will read.

        The engine takes the counts from `files` when it called it (the footers are read
        once); this reads them only otherwise. None for remote files, which would cost a round
        trip per file before the read, and for a file that is not Parquet (the read says why).
        """
        found = self._resolve(ctx)
        if not found.paths or not isinstance(found.fs, LocalFileSystem):
            return None
        rows = 0
        for path in found.paths:
            try:
                with found.fs.open(path, "rb") as handle:
                    rows += pq.read_metadata(handle).num_rows
            except (pa.ArrowInvalid, OSError):
                return None
        return rows

    def files(self, ctx: Context) -> SourceFiles | None:
        """The local files `read` would read, for consumers that read them in place.

        None (stream as usual) for remote files, empty or unreadable files, files lacking a
        declared column (partition directories) or with a column no safe cast reaches: the
        streaming read reports those cases precisely.
        """
        found = self._resolve(ctx)
        if not found.paths or not isinstance(found.fs, LocalFileSystem):
            return None
        expected: pa.Schema | None = None
        rows, sizes, checksums, footers = 0, [], [], []
        for path, size in zip(found.paths, found.sizes, strict=True):
            if size == 0:
                return None
            try:
                with found.fs.open(path, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    stored, count = parquet.schema_arrow, parquet.metadata.num_rows
                    footers.append(parquet.metadata)
                length, checksum = footer_checksum(found.fs, path)
            except (pa.ArrowInvalid, OSError, StagingError):
                return None
            columns = read_schema(self.model, stored.names)  # a regex column: those it matches
            if expected is not None and columns.names != expected.names:
                return None  # a regex column matches different columns in different files
            expected = columns
            for target in expected:
                if target.name not in stored.names:
                    return None
                if not _castable(stored.field(target.name).type, target.type):
                    return None
            rows += count
            sizes.append(length)
            checksums.append(checksum)
        if expected is None:
            return None
        return SourceFiles(
            urls=tuple(found.paths),
            columns=tuple(expected.names),
            rows=rows,
            sizes=tuple(sizes),
            checksums=tuple(checksums),
            metadata=tuple(footers),
        )

    def _read_file(
        self,
        parquet: Any,
        path: str,
        shown: str,
        chunk_rows: int,
        *,
        reopen: Callable[[], contextlib.AbstractContextManager[pq.ParquetFile]] | None = None,
        groups: range | None = None,
        local: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """The file's batches as the model wants them (`_conform`): a whole local file of
        plain column types decoded by polars (`parquet_scan`), else by pyarrow."""
        stored = parquet.schema_arrow
        expected = read_schema(self.model, stored.names)
        partitions = _partition_values(path)
        present = [n for n in expected.names if n in stored.names]
        absent = [n for n in expected.names if n not in stored.names and n not in partitions]
        if absent:
            raise missing_columns(self._where(), shown, self.model, stored.names)
        for name in present:
            found, wanted = stored.field(name).type, expected.field(name).type
            if not _castable(found, wanted):
                raise ConnectorError(
                    f"{self._where()}: file {shown}, column '{name}' is {found} but "
                    f"{model_name(self.model)} declares {wanted}, and there is no safe cast; "
                    "change the model or convert the column in a transform."
                )
        if parquet.metadata.num_rows == 0 and has_regex(self.model):
            # no rows, but the columns a regex column matches: an empty output has them
            yield pa.RecordBatch.from_pylist([], schema=expected)
            return

        def convert(batch: pa.RecordBatch, row: int) -> pa.RecordBatch:
            return self._conform(batch, expected, present, partitions, shown, row)

        if groups is not None:
            yield from group_batches(parquet, groups, chunk_rows, present, convert)
            return
        if local and polars_readable(stored, present):
            row = 0
            for batch in polars_batches(path, present, chunk_rows, self._where(), shown):
                yield convert(batch, row)
                row += batch.num_rows
            return
        yield from parquet_batches(
            parquet, batch_size=chunk_rows, columns=present, reopen=reopen, convert=convert
        )

    def _conform(
        self,
        batch: pa.RecordBatch,
        expected: pa.Schema,
        present: list[str],
        partitions: dict[str, str | None],
        shown: str,
        rows: int,
    ) -> pa.RecordBatch:
        """A batch as the model wants it: its columns cast, partition columns filled in."""
        arrays = []
        for target in expected:
            if target.name in present:
                arrays.append(self._cast(batch.column(target.name), target, shown, rows))
            else:
                value = partitions[target.name]
                arrays.append(self._cast(pa.repeat(value, batch.num_rows), target, shown, rows))
        return pa.RecordBatch.from_arrays(arrays, schema=expected)

    def _cast(self, column: pa.Array, target: pa.Field, shown: str, rows: int) -> pa.Array:
        if column.type == target.type:
            return column
        try:
            return cast_array(column, target.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:

            def fails(count: int) -> bool:
                try:
                    pc.cast(column.slice(0, count), target.type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    return True
                return False

            index = first_failing(len(column), fails)
            value = column[index].as_py() if index >= 0 else None
            raise ConnectorError(
                f"{self._where()}: file {shown}, row {rows + index + 1}, column "
                f"'{target.name}': cannot cast {short(value)} from {column.type} to "
                f"{target.type} ({exc}); change the model or fix the data."
            ) from exc


@contextlib.contextmanager
def _open_parquet(fs: Any, path: str) -> Iterator[pq.ParquetFile]:
    """The file opened again, for a second reader of its row groups."""
    with fs.open(path, "rb") as handle:
        yield pq.ParquetFile(handle)


class ParquetSink(FileSink):
    """Writes its input to one Parquet file (zstd by default), atomically.

    Strings are written as `string` whatever the batches carry. An empty input writes a file
    with no rows and the model's schema (the engine hands a sink without a model one empty
    batch with its input's columns; only a direct `write` of no batches gives no columns).

    Its input staged as the file would be (one part, its codec and column types) is adopted
    instead of encoded again (`adopt`: a hard link or a copy, moved into place); the adopted
    file's footer keeps the staging's manifest (pipeline, run, node) among its metadata.

        report = ParquetSink("reports/{ds}/totals.parquet", totals)

    Raises:
        ConnectorError: a batch lacks a column or cannot be cast to the file's types.
    """

    def __init__(
        self,
        path: str,
        input: Node | str,
        *,
        schema: Model | None = None,
        compression: str = "zstd",
        conn: str | None = None,
    ) -> None:
        super().__init__(path, input, schema=schema, conn=conn)
        self.compression = compression

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        where = self._where()
        conform = Conformer(where, self.input_model)

        def write(handle: Any) -> int:
            rows, writer = 0, None
            try:
                for batch in batches:
                    batch = conform(batch)
                    writer = writer or pq.ParquetWriter(
                        handle, batch.schema, compression=self.compression
                    )
                    writer.write_batch(batch)
                    rows += batch.num_rows
                if writer is None:
                    schema = conform.schema if conform.schema is not None else pa.schema([])
                    writer = pq.ParquetWriter(handle, schema, compression=self.compression)
            finally:
                if writer is not None:
                    writer.close()
            return rows

        return write_file(where, self.path, ctx, write, self.conn)

    def adoption(self) -> Adoption:
        return Adoption(compression=self.compression, file_type=plain_type)

    def adoption_refused(self, staged: StagedParquet) -> str | None:
        schema = Conformer(self._where(), self.input_model).file_schema(staged.schema)
        return refusal(staged, self.compression, schema)

    def adopt(self, staged: StagedParquet, ctx: Context) -> WriteResult:
        return adopt_file(self._where(), self.path, ctx, staged, self.conn)
