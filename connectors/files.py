"""File sources and sinks on any fsspec filesystem: CSV, Parquet and newline-delimited JSON.

Paths are templates rendered with the run's context (`billing/{ds}/*.csv`), then resolved on the
filesystem their URL names (a local path, `s3://bucket/key`, `memory://...`). Sources read
files one chunk at a time, never a whole file at once, and read only the columns of their model,
with the model's types. Sinks write to a hidden temporary object next to the target and move it
into place only once every batch was written: a failed or cancelled run leaves the target as it
was.

    billing = CsvSource("s3://hospital-data/billing/{ds}/*.csv", schema=RawBilling)
    report = ParquetSink("reports/{ds}/totals.parquet", totals)

A path with glob characters (`*`, `?`, `[`) reads every matching file in sorted order; a
directory reads every file below it. Files and directories whose name starts with `.` or `_`
(temporary objects, `_SUCCESS` markers) are skipped.

Object stores: `conn="lake"` takes the credentials and endpoint of that named connection
(`etlkit.connections`: an s3, http(s) or file connection matching the path's scheme). Without
it, s3fs finds them itself: the AWS_* environment variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, and `AWS_ENDPOINT_URL` for S3-compatible stores), `~/.aws`, instance
roles. Sinks never create buckets. On S3 a move is a copy then a delete: a sink's target still
appears only once complete, but a dataset is replaced object by object.

    billing = CsvSource("s3://hospital-data/billing/{ds}/*.csv", schema=RawBilling, conn="lake")
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import difflib
import io
import json
import logging
import posixpath
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.json as pajson
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from etlkit.connections import resolve
from etlkit.errors import ConnectorError, StagingError
from etlkit.nodes import Context, Node, Sink, Source, SourceFiles, WriteResult
from etlkit.schema import Model, arrow_schema, column_names, model_name
from etlkit.staging import footer_checksum

logger = logging.getLogger(__name__)

_SAMPLE_BYTES: Final = 65_536
_MIN_BLOCK_BYTES: Final = 1_024
_MAX_BLOCK_BYTES: Final = 1 << 30
_HIVE_NULL: Final = "__HIVE_DEFAULT_PARTITION__"
_GLOB_CHARS: Final = re.compile(r"[*?\[]")
_ROW_NUMBER: Final = re.compile(r"Row #(\d+): ")
_CSV_CONVERSION: Final = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error")
_QUOTED: Final = re.compile(r"'(.*)'\s*$", re.DOTALL)
# fsspec protocols without real directories, whose makedirs would create a missing bucket
_OBJECT_STORES: Final = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az"})
# connection kind -> the path schemes reachable through it
_SCHEMES: Final[dict[str, frozenset[str]]] = {
    "s3": frozenset({"s3", "s3a"}),
    "http": frozenset({"http", "https"}),
    "https": frozenset({"http", "https"}),
    "file": frozenset({"file", "local"}),
}


# ---------------------------------------------------------------- paths and files


@dataclass(frozen=True)
class _Files:
    """The files a source path resolved to, on one filesystem."""

    fs: Any
    paths: list[str]
    sizes: list[int]


def _display(fs: Any, path: str) -> str:
    """A path as users wrote it: plain for local files, a URL elsewhere."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else str(fs.unstrip_protocol(path))


def _filesystem(where: str, url: str, conn: str | None) -> tuple[Any, str]:
    """The filesystem and path of a rendered URL, with the named connection's storage options.

    Raises:
        ConfigError: the connection is not defined (`ConnectionNotFoundError`) or unusable.
        ConnectorError: the path's scheme is not one the connection reaches.
    """
    options: dict[str, Any] = {}
    if conn is not None:
        options = _storage_options(where, url, conn)
    fs, path = url_to_fs(url, **options)
    return fs, str(path)


def _storage_options(where: str, url: str, conn: str) -> dict[str, Any]:
    connection = resolve(conn)
    scheme = url.partition("://")[0].lower() if "://" in url else "file"
    schemes = _SCHEMES.get(connection.kind, frozenset())
    if scheme not in schemes:
        wanted = " or ".join(f"{s}://" for s in sorted(schemes)) or "no file paths"
        raise ConnectorError(
            f"{where}: path {url!r} cannot be reached through connection '{connection.name}', "
            f"a {connection.kind} connection ({connection.source}), which takes {wanted}; fix "
            "the path or the conn= name."
        )
    return connection.storage_options()


def _object_store(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return bool(_OBJECT_STORES.intersection(protocols))


def _prepare_parent(where: str, fs: Any, path: str) -> None:
    """Create the target's directory; on object stores (no directories) check the bucket."""
    if not _object_store(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return
    bucket = path.split("/", 1)[0]
    if not fs.exists(bucket):
        raise ConnectorError(
            f"{where}: bucket {bucket!r} of {_display(fs, path)!r} does not exist, or these "
            "credentials cannot see it; create it first (sinks never create buckets), or "
            "check the connection's endpoint and credentials."
        )


def _move(fs: Any, source: str, target: str) -> None:
    """Move a directory tree: a rename where directories exist; on object stores a copy of each
    object, then a delete (fsspec's recursive move trips over S3's pseudo-directories)."""
    if not _object_store(fs):
        fs.mv(source, target, recursive=True)
        return
    files = fs.find(source)
    if files:
        fs.copy(files, [target + name[len(source) :] for name in files])
    _remove(fs, source)


def _visible(path: str, root: str) -> bool:
    relative = path[len(root) :] if path.startswith(root) else posixpath.basename(path)
    return not any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _resolve(where: str, template: str, ctx: Context, conn: str | None) -> _Files:
    """Render `template` and list the files it names, sorted; raise when there are none."""
    rendered = ctx.render(template)
    fs, path = _filesystem(where, rendered, conn)
    shown = repr(rendered) if rendered == template else f"{rendered!r} (from {template!r})"
    magic = _GLOB_CHARS.search(path)
    if magic is not None:
        root, found = path[: magic.start()].rpartition("/")[0], fs.glob(path, detail=True)
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError as exc:
            raise ConnectorError(f"{where}: file {shown} does not exist.") from exc
        if info["type"] != "directory":
            return _Files(fs, [path], [int(info.get("size") or 0)])
        root, found = path, fs.find(path, detail=True)
    files = {p: i for p, i in found.items() if i["type"] == "file" and _visible(p, root)}
    if not files and magic is not None:
        raise ConnectorError(
            f"{where}: no file matches {shown}; check the path, the glob and the run's date."
        )
    paths = sorted(files)
    return _Files(fs, paths, [int(files[p].get("size") or 0) for p in paths])


def _did_you_mean(missing: Sequence[str], available: Sequence[str]) -> str:
    hints = [
        f"'{close[0]}' for '{name}'"
        for name in missing
        if (close := difflib.get_close_matches(name, available, n=1))
    ]
    return f" Did you mean {', '.join(hints)}?" if hints else ""


def _missing_columns(where: str, shown: str, model: Model, found: Sequence[str]) -> ConnectorError:
    missing = [name for name in column_names(model) if name not in found]
    return ConnectorError(
        f"{where}: file {shown} has no column(s) {missing} declared by {model_name(model)}; "
        f"its columns are {list(found)}.{_did_you_mean(missing, found)}"
    )


def _short(value: object, limit: int = 80) -> str:
    """A value for a message: strings quoted, long ones cut."""
    text = repr(value[:limit] + "..." if isinstance(value, str) and len(value) > limit else value)
    return text if len(text) <= limit + 10 else text[:limit] + "..."


def _read_schema(model: Model) -> pa.Schema:
    """The model's Arrow schema, every field nullable: nulls are the validator's business."""
    return pa.schema([f.with_nullable(True) for f in arrow_schema(model)])


def _first_failing(count: int, fails: Callable[[int], bool]) -> int:
    """The smallest k in 1..count with fails(k) (fails is monotonic), minus one; -1 if none."""
    if count == 0 or not fails(count):
        return -1
    low, high = 1, count
    while low < high:
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle + 1
    return low - 1


def _utf8_error(fs: Any, path: str, limit_line: int | None = None) -> tuple[int, int, bytes] | None:
    """The first line of a file that is not UTF-8: (line, byte offset, bad bytes), or None."""
    offset = 0
    with fs.open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                codecs.decode(line, "utf-8")
            except UnicodeDecodeError as exc:
                return number, offset + exc.start, line[exc.start : exc.end]
            offset += len(line)
            if limit_line is not None and number > limit_line:
                return None
    return None


# ---------------------------------------------------------------- CSV


class CsvSource(Source):
    """Reads CSV files matching a path or glob on any fsspec filesystem, one chunk at a time.

    The model is the projection: only its columns are read, converted to its types (timestamps
    as ISO 8601, with a `T` or a space). A zero-byte file is an error (a CSV file has at least a
    header); a header without rows yields no rows. Empty fields are nulls, except in string
    columns, where they are empty strings.

    `chunk_rows` (default: the context's) is a hint: the reader's block size is estimated from
    the first 64 KiB of each file, so chunks hold about that many rows. Line numbers in errors
    count one line per row, so a quoted field spanning lines shifts them.

        billing = CsvSource("s3://hospital-data/billing/{ds}/*.csv", schema=RawBilling)

    Raises:
        ConnectorError: no file matches, a file is empty or not UTF-8, a declared column is
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
    ) -> None:
        super().__init__(schema=schema)
        self.path = path
        self.conn = conn
        self.model = schema
        self.chunk_rows = chunk_rows
        self.delimiter = delimiter
        self.header = header
        self.encoding = encoding

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        files = _resolve(self._where(), self.path, ctx, self.conn)
        for path, size in zip(files.paths, files.sizes, strict=True):
            logger.debug("%s: reading %s (%d bytes)", self._where(), path, size)
            yield from self._read_file(files.fs, path, self.chunk_rows or ctx.chunk_rows)

    def _where(self) -> str:
        return f"CsvSource '{self.name or '(unnamed)'}'"

    def _options(self, block_size: int) -> tuple[Any, Any, Any]:
        schema = _read_schema(self.model)
        read = pacsv.ReadOptions(
            use_threads=False,  # errors then carry row numbers; the reader streams anyway
            block_size=block_size,
            encoding=self.encoding,
            column_names=None if self.header else schema.names,
        )
        parse = pacsv.ParseOptions(delimiter=self.delimiter)
        convert = pacsv.ConvertOptions(
            column_types={f.name: f.type for f in schema}, include_columns=schema.names
        )
        return read, parse, convert

    def _read_file(self, fs: Any, path: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        with fs.open(path, "rb") as handle:
            sample = handle.read(_SAMPLE_BYTES)
            if not sample:
                raise ConnectorError(
                    f"{self._where()}: file {_display(fs, path)!r} is empty (0 bytes); a CSV "
                    "file needs at least a header line."
                )
            lines = sample.split(b"\n")
            per_row = len(sample) / max(len(lines) - 1, 1)
            longest = max(len(line) for line in lines)
            block = int(min(max(per_row * chunk_rows, 4 * longest, _MIN_BLOCK_BYTES), 2**28))
            yielded = 0
            while True:  # a row longer than a block: read again with larger blocks
                handle.seek(0)
                skip = yielded  # rows already yielded
                try:
                    for batch in self._batches(fs, path, handle, block):
                        if skip >= batch.num_rows:
                            skip -= batch.num_rows
                            continue
                        if skip:
                            batch, skip = batch.slice(skip), 0
                        yielded += batch.num_rows
                        yield batch
                    return
                except _BlockTooSmallError as exc:
                    if block >= _MAX_BLOCK_BYTES:
                        raise ConnectorError(
                            f"{self._where()}: file {_display(fs, path)!r} has a row longer "
                            f"than {_MAX_BLOCK_BYTES} bytes; check the quoting."
                        ) from exc
                    block = min(block * 4, _MAX_BLOCK_BYTES)

    def _batches(self, fs: Any, path: str, handle: Any, block: int) -> Iterator[pa.RecordBatch]:
        read, parse, convert = self._options(block)
        try:
            yield from pacsv.open_csv(handle, read, parse, convert)
        except pa.ArrowKeyError as exc:  # a declared column is not in the header
            raise _missing_columns(
                self._where(), repr(_display(fs, path)), self.model, self._header(fs, path)
            ) from exc
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc):
                raise _BlockTooSmallError(str(exc)) from exc
            raise self._explain(fs, path, exc) from exc
        except UnicodeDecodeError as exc:  # transcoding from a non-UTF-8 `encoding`
            raise ConnectorError(
                f"{self._where()}: file {_display(fs, path)!r} is not valid {self.encoding} "
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
        with fs.open(path, "rb") as handle:
            utf8 = self.encoding.replace("-", "").lower() == "utf8"
            encoding = "utf-8-sig" if utf8 else self.encoding  # pyarrow skips a BOM too
            text = io.TextIOWrapper(handle, encoding=encoding, errors="replace", newline="")
            return next(csv.reader(text, delimiter=self.delimiter), [])

    def _explain(self, fs: Any, path: str, exc: pa.ArrowInvalid) -> ConnectorError:
        """Turn pyarrow's CSV error into one naming the file, line, column and value."""
        message = str(exc)
        shown = repr(_display(fs, path))
        row = _ROW_NUMBER.search(message)
        line = int(row.group(1)) if row else None
        at = f", line {line}" if line is not None else ""
        if "invalid UTF8" in message and self.encoding.replace("-", "").lower() == "utf8":
            bad = _utf8_error(fs, path)
            if bad is not None:
                line, offset, data = bad
                at = f", line {line} (byte offset {offset})"
            return ConnectorError(
                f"{self._where()}: file {shown}{at} is not valid UTF-8"
                f"{f' (bytes {data!r})' if bad else ''}; pass encoding= with the file's "
                "encoding (for example encoding='latin1')."
            )
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
            expected = _read_schema(self.model).field(column).type if column in header else "?"
            return ConnectorError(
                f"{self._where()}: file {shown}{at}, column '{column}': cannot parse "
                f"{_short(value.group(1)) if value else 'a value'} as {expected} "
                f"(declared by {model_name(self.model)}; pyarrow says: "
                f"{message.split(': ')[-1]}). Fix the value, or declare the column as str "
                "and parse it in a transform."
            )
        return ConnectorError(f"{self._where()}: cannot read file {shown}{at}: {message}")


class _BlockTooSmallError(Exception):
    """A CSV row straddles two blocks: the file is read again with a larger block size."""


# ---------------------------------------------------------------- Parquet


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


class ParquetSource(Source):
    """Reads Parquet files matching a path, glob or directory, one row batch at a time.

    Only the model's columns are read. A column stored with another type is cast to the model's
    when the cast is safe (wider integers, integers to floats, string sizes, timestamp units,
    dictionaries); each value is checked. A declared column absent from a file but named in its
    directories (`month=2025-01/part-0.parquet`, as `ParquetDatasetSink` writes) is filled from
    the directory name. An existing directory without files yields no rows.

        billing = ParquetSource("s3://lake/billing/{ds}/*.parquet", schema=RawBilling)

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
    ) -> None:
        super().__init__(schema=schema)
        self.path = path
        self.conn = conn
        self.model = schema
        self.chunk_rows = chunk_rows

    def _where(self) -> str:
        return f"ParquetSource '{self.name or '(unnamed)'}'"

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        files = _resolve(self._where(), self.path, ctx, self.conn)
        for path, size in zip(files.paths, files.sizes, strict=True):
            shown = repr(_display(files.fs, path))
            if size == 0:
                raise ConnectorError(f"{self._where()}: file {shown} is empty (0 bytes).")
            logger.debug("%s: reading %s (%d bytes)", self._where(), path, size)
            with files.fs.open(path, "rb") as handle:
                try:
                    parquet = pq.ParquetFile(handle)
                except (pa.ArrowInvalid, OSError) as exc:
                    raise ConnectorError(
                        f"{self._where()}: file {shown} is not a Parquet file ({exc})."
                    ) from exc
                yield from self._read_file(parquet, path, shown, self.chunk_rows or ctx.chunk_rows)

    def files(self, ctx: Context) -> SourceFiles | None:
        """The local files `read` would read, for consumers that read them in place.

        None (stream as usual) for remote files, empty or unreadable files, files lacking a
        declared column (partition directories) or with a column no safe cast reaches: the
        streaming read reports those cases precisely.
        """
        found = _resolve(self._where(), self.path, ctx, self.conn)
        if not found.paths or not isinstance(found.fs, LocalFileSystem):
            return None
        expected = _read_schema(self.model)
        rows, sizes, checksums = 0, [], []
        for path, size in zip(found.paths, found.sizes, strict=True):
            if size == 0:
                return None
            try:
                with found.fs.open(path, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    stored, count = parquet.schema_arrow, parquet.metadata.num_rows
                length, checksum = footer_checksum(found.fs, path)
            except (pa.ArrowInvalid, OSError, StagingError):
                return None
            for target in expected:
                if target.name not in stored.names:
                    return None
                if not _castable(stored.field(target.name).type, target.type):
                    return None
            rows += count
            sizes.append(length)
            checksums.append(checksum)
        return SourceFiles(
            urls=tuple(found.paths),
            columns=tuple(expected.names),
            rows=rows,
            sizes=tuple(sizes),
            checksums=tuple(checksums),
        )

    def _read_file(
        self, parquet: Any, path: str, shown: str, chunk_rows: int
    ) -> Iterator[pa.RecordBatch]:
        expected = _read_schema(self.model)
        stored = parquet.schema_arrow
        partitions = _partition_values(path)
        present = [n for n in expected.names if n in stored.names]
        absent = [n for n in expected.names if n not in stored.names and n not in partitions]
        if absent:
            raise _missing_columns(self._where(), shown, self.model, stored.names)
        for name in present:
            found, wanted = stored.field(name).type, expected.field(name).type
            if not _castable(found, wanted):
                raise ConnectorError(
                    f"{self._where()}: file {shown}, column '{name}' is {found} but "
                    f"{model_name(self.model)} declares {wanted}, and there is no safe cast; "
                    "change the model or convert the column in a transform."
                )
        rows = 0
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=present):
            arrays = []
            for target in expected:
                if target.name in present:
                    column = batch.column(target.name)
                    arrays.append(self._cast(column, target, shown, rows))
                else:
                    value = partitions[target.name]
                    arrays.append(self._cast(pa.repeat(value, batch.num_rows), target, shown, rows))
            rows += batch.num_rows
            yield pa.RecordBatch.from_arrays(arrays, schema=expected)

    def _cast(self, column: pa.Array, target: pa.Field, shown: str, rows: int) -> pa.Array:
        if column.type == target.type:
            return column
        try:
            return pc.cast(column, target.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:

            def fails(count: int) -> bool:
                try:
                    pc.cast(column.slice(0, count), target.type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    return True
                return False

            index = _first_failing(len(column), fails)
            value = column[index].as_py() if index >= 0 else None
            raise ConnectorError(
                f"{self._where()}: file {shown}, row {rows + index + 1}, column "
                f"'{target.name}': cannot cast {_short(value)} from {column.type} to "
                f"{target.type} ({exc}); change the model or fix the data."
            ) from exc


# ---------------------------------------------------------------- NDJSON


class NdjsonSource(Source):
    """Reads newline-delimited JSON files (one object per line), `chunk_rows` lines at a time.

    Only the model's columns are read, with its types; other keys are ignored, and a key missing
    from an object is a null. Blank lines are skipped, so an empty file yields no rows. Each
    chunk is exactly `chunk_rows` objects (default: the context's), except the last of a file.

        events = NdjsonSource("logs/{ds}/*.jsonl", schema=Event)

    Raises:
        ConnectorError: no file matches, a line is not JSON or not UTF-8, or a value does not
            convert to its column's type; the message names the file, line and column.
    """

    def __init__(
        self,
        path: str,
        *,
        schema: Model,
        chunk_rows: int | None = None,
        conn: str | None = None,
    ) -> None:
        super().__init__(schema=schema)
        self.path = path
        self.conn = conn
        self.model = schema
        self.chunk_rows = chunk_rows

    def _where(self) -> str:
        return f"NdjsonSource '{self.name or '(unnamed)'}'"

    def read(self, ctx: Context) -> Iterator[pa.RecordBatch]:
        files = _resolve(self._where(), self.path, ctx, self.conn)
        chunk_rows = self.chunk_rows or ctx.chunk_rows
        for path in files.paths:
            logger.debug("%s: reading %s", self._where(), path)
            shown = repr(_display(files.fs, path))
            lines: list[bytes] = []
            numbers: list[int] = []
            offset = start = 0
            with files.fs.open(path, "rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        lines.append(line if line.endswith(b"\n") else line + b"\n")
                        numbers.append(number)
                    offset += len(line)
                    if len(lines) >= chunk_rows:
                        yield self._parse(lines, numbers, start, shown)
                        lines, numbers, start = [], [], offset
            if lines:
                yield self._parse(lines, numbers, start, shown)

    def _parse_lines(self, lines: list[bytes]) -> pa.RecordBatch:
        data = b"".join(lines)
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pajson.ParseOptions(
                explicit_schema=_read_schema(self.model), unexpected_field_behavior="ignore"
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

        index = _first_failing(len(lines), fails)
        if index < 0:
            return ConnectorError(f"{self._where()}: cannot read file {shown}: {exc}")
        line, at = lines[index], f"file {shown}, line {numbers[index]}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as bad:
            return ConnectorError(
                f"{self._where()}: {at} is not valid JSON ({bad.msg} at character "
                f"{bad.pos}): {_short(line.decode('utf-8', 'replace'))}."
            )
        if not isinstance(record, dict):
            return ConnectorError(
                f"{self._where()}: {at} is not a JSON object: {_short(record)}; each line of "
                "an NDJSON file holds one object."
            )
        schema = _read_schema(self.model)
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
                    f"{_short(record.get(target.name))} to {target.type} (declared by "
                    f"{model_name(self.model)}; pyarrow says: {column_exc}). Fix the value or "
                    "change the model."
                )
        return ConnectorError(f"{self._where()}: {at}: {exc}")


# ---------------------------------------------------------------- sinks


def _plain(dtype: pa.DataType) -> pa.DataType:
    """The everyday Arrow type for a file: `string` rather than `large_string` or a view."""
    t = pa.types
    if t.is_large_string(dtype) or t.is_string_view(dtype):
        return pa.string()
    if t.is_large_binary(dtype) or t.is_binary_view(dtype):
        return pa.binary()
    if t.is_large_list(dtype):
        return pa.list_(dtype.value_field.with_type(_plain(dtype.value_type)))
    return dtype


class _Conformer:
    """Casts each incoming batch to the sink's file schema: the model's, else the first batch's."""

    def __init__(self, where: str, model: Model | None) -> None:
        self.where = where
        self.model = model
        self.schema: pa.Schema | None = None
        if model is not None:
            self.schema = pa.schema([pa.field(f.name, _plain(f.type)) for f in arrow_schema(model)])

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.schema is None:
            self.schema = pa.schema([pa.field(f.name, _plain(f.type)) for f in batch.schema])
        names = self.schema.names
        missing = [name for name in names if name not in batch.schema.names]
        if missing:
            expected = (
                f"declared by {model_name(self.model)}" if self.model else "of the first batch"
            )
            raise ConnectorError(
                f"{self.where}: a batch lacks column(s) {missing} {expected}; it has "
                f"{batch.schema.names}.{_did_you_mean(missing, batch.schema.names)}"
            )
        if batch.schema.names != names:
            batch = batch.select(names)
        if batch.schema == self.schema:
            return batch
        try:
            return batch.cast(self.schema, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ConnectorError(
                f"{self.where}: cannot write a batch with schema {batch.schema.types} as "
                f"{self.schema.types} ({exc})."
            ) from exc


def _temp_path(path: str, ctx: Context, kind: str = "tmp") -> str:
    parent, name = posixpath.split(path)
    return posixpath.join(parent, f".{name}.{kind}-{ctx.run_id}-{secrets.token_hex(4)}")


def _remove(fs: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def _write_file(
    where: str,
    template: str,
    ctx: Context,
    write: Callable[[Any], int],
    conn: str | None,
) -> WriteResult:
    """Run `write(handle)` on a temporary object next to the target, then move it into place.

    On any exception (including `RunCancelledError` from the batches) the temporary object is
    deleted and the exception propagates: the target keeps its previous content.
    """
    fs, path = _filesystem(where, ctx.render(template), conn)
    temp = _temp_path(path, ctx)
    _prepare_parent(where, fs, path)
    committed = False
    try:
        with fs.open(temp, "wb") as handle:
            rows = write(handle)
        size = int(fs.size(temp))
        fs.mv(temp, path)
        committed = True
    finally:
        if not committed:
            _remove(fs, temp)
    logger.debug("%s: wrote %d rows (%d bytes) to %s", where, rows, size, _display(fs, path))
    return WriteResult(rows=rows, uri=str(fs.unstrip_protocol(path)), extra={"bytes": size})


class CsvSink(Sink):
    """Writes its input to one CSV file with a header, atomically.

    Columns are the model's, in its order, when one is given, else the first batch's. An empty
    input writes just the header, or a zero-byte file when no model gives the columns.

        export = CsvSink("exports/{ds}/billing.csv", billing, schema=Billing)

    Raises:
        ConnectorError: a batch lacks a column or cannot be cast to the file's types.
    """

    def __init__(
        self,
        path: str,
        input: Node | str,
        *,
        schema: Model | None = None,
        conn: str | None = None,
    ) -> None:
        super().__init__(input, schema=schema)
        self.path = path
        self.conn = conn

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        where = f"CsvSink '{self.name or '(unnamed)'}'"
        conform = _Conformer(where, self.input_model)

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

        return _write_file(where, self.path, ctx, write, self.conn)


class ParquetSink(Sink):
    """Writes its input to one Parquet file (zstd by default), atomically.

    Strings are written as `string` whatever the batches carry. An empty input writes a file
    with no rows and the model's schema (or no columns when there is no model).

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
        super().__init__(input, schema=schema)
        self.path = path
        self.conn = conn
        self.compression = compression

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        where = f"ParquetSink '{self.name or '(unnamed)'}'"
        conform = _Conformer(where, self.input_model)

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

        return _write_file(where, self.path, ctx, write, self.conn)


class NdjsonSink(Sink):
    """Writes its input as newline-delimited JSON, one object per row, atomically.

    Timestamps are written as ISO 8601 strings. An empty input writes a zero-byte file.

        events = NdjsonSink("exports/{ds}/events.jsonl", cleaned)

    Raises:
        ConnectorError: a batch lacks a column or cannot be cast to the file's types.
    """

    def __init__(
        self,
        path: str,
        input: Node | str,
        *,
        schema: Model | None = None,
        conn: str | None = None,
    ) -> None:
        super().__init__(input, schema=schema)
        self.path = path
        self.conn = conn

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        where = f"NdjsonSink '{self.name or '(unnamed)'}'"
        conform = _Conformer(where, self.input_model)

        def write(handle: Any) -> int:
            rows = 0
            for batch in batches:
                batch = conform(batch)
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)  # a record batch is never a Series
                frame.write_ndjson(handle)
                rows += batch.num_rows
            return rows

        return _write_file(where, self.path, ctx, write, self.conn)


class ParquetDatasetSink(Sink):
    """Writes its input as a hive-partitioned Parquet dataset: `path/col=value/part-0.parquet`.

    The dataset is written to a hidden temporary directory next to `path` and renamed into
    place when complete. An existing dataset at `path` is replaced: it is first moved aside,
    the new one moved in, then the old one deleted, so for the instant between the two renames
    `path` does not exist (readers see no dataset, never a partial one). On object stores,
    which cannot rename, each move copies then deletes objects and is not atomic.

    Partition values are URL-encoded in directory names (`/` becomes `%2F`), nulls are written
    as `__HIVE_DEFAULT_PARTITION__`, and partition columns are not repeated inside the files.
    An empty input commits an empty directory. `ParquetSource` reads the dataset back.

        by_month = ParquetDatasetSink("lake/billing", billing, partition_by=["month"])

    Raises:
        ConnectorError: a partition column is missing or has an unsafe name, more than
            `max_partitions` partitions are written, or a batch cannot be cast.
    """

    def __init__(
        self,
        path: str,
        input: Node | str,
        *,
        partition_by: Sequence[str],
        schema: Model | None = None,
        max_partitions: int = 1024,
        conn: str | None = None,
    ) -> None:
        super().__init__(input, schema=schema)
        if isinstance(partition_by, str):
            raise ConnectorError(
                f"ParquetDatasetSink for {path!r}: partition_by takes a list of column names; "
                f"write partition_by=[{partition_by!r}]."
            )
        unsafe = [c for c in partition_by if not c or "/" in c or "=" in c or c.startswith(".")]
        if unsafe or not partition_by:
            raise ConnectorError(
                f"ParquetDatasetSink for {path!r}: partition columns {list(partition_by)} "
                "must be non-empty names without '/', '=' or a leading '.'."
            )
        self.path = path
        self.conn = conn
        self.partition_by = list(partition_by)
        self.max_partitions = max_partitions

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        where = f"ParquetDatasetSink '{self.name or '(unnamed)'}'"
        conform = _Conformer(where, self.input_model)
        counter = {"rows": 0}

        def conformed(first: pa.RecordBatch | None) -> Iterator[pa.RecordBatch]:
            if first is not None:
                counter["rows"] += first.num_rows
                yield first
            for batch in batches:
                batch = conform(batch)
                counter["rows"] += batch.num_rows
                yield batch

        fs, path = _filesystem(where, ctx.render(self.path), self.conn)
        temp = _temp_path(path, ctx)
        _prepare_parent(where, fs, path)
        committed = False
        try:
            first = next(batches, None)
            first = conform(first) if first is not None else None
            schema = conform.schema
            if schema is not None:
                self._write_dataset(where, fs, temp, schema, conformed(first))
            if not _object_store(fs):  # an empty input commits an empty directory
                fs.makedirs(temp, exist_ok=True)
            files = fs.find(temp, detail=True)
            size = sum(int(info.get("size") or 0) for info in files.values())
            self._commit(fs, temp, path, ctx)
            committed = True
        finally:
            if not committed:
                _remove(fs, temp)
        logger.debug(
            "%s: wrote %d rows in %d files to %s",
            where,
            counter["rows"],
            len(files),
            _display(fs, path),
        )
        return WriteResult(
            rows=counter["rows"],
            uri=str(fs.unstrip_protocol(path)),
            extra={"bytes": size, "files": len(files)},
        )

    def _write_dataset(
        self, where: str, fs: Any, temp: str, schema: pa.Schema, data: Iterator[pa.RecordBatch]
    ) -> None:
        missing = [c for c in self.partition_by if c not in schema.names]
        if missing:
            raise ConnectorError(
                f"{where}: partition column(s) {missing} are not in the input; its columns are "
                f"{schema.names}.{_did_you_mean(missing, schema.names)}"
            )
        partitioning = pads.partitioning(
            pa.schema([schema.field(c) for c in self.partition_by]), flavor="hive"
        )
        try:
            pads.write_dataset(
                pa.RecordBatchReader.from_batches(schema, data),
                temp,
                format="parquet",
                partitioning=partitioning,
                filesystem=fs,
                basename_template="part-{i}.parquet",
                max_partitions=self.max_partitions,
                preserve_order=True,
                existing_data_behavior="error",
            )
        except pa.ArrowInvalid as exc:
            if "partitions" in str(exc):
                raise ConnectorError(
                    f"{where}: partitioning by {self.partition_by} gives more than "
                    f"{self.max_partitions} partitions ({exc}); partition by a coarser column "
                    "or raise max_partitions."
                ) from exc
            raise ConnectorError(f"{where}: cannot write the dataset: {exc}") from exc

    def _commit(self, fs: Any, temp: str, path: str, ctx: Context) -> None:
        if not fs.exists(path):
            _move(fs, temp, path)
            return
        old = _temp_path(path, ctx, kind="old")
        _move(fs, path, old)
        try:
            _move(fs, temp, path)
        except BaseException:
            _move(fs, old, path)
            raise
        _remove(fs, old)
