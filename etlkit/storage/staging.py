"""Run-keyed Parquet staging of node outputs on any fsspec filesystem, with atomic commit.

Layout, in `<root>/<pipeline>/<run_id>/`:

- `<node>.parquet`: the node's committed output. It is an ordinary Parquet file (the output's
  rows, or its last part's) whose footer also holds the manifest (key `etlkit.manifest`: rows,
  schema, parts, checksums, how it was made). It appears last, complete, by an atomic rename, so
  it is the commit: an output without it does not exist for readers.
- `<node>.parts/part-NNNNN.parquet`: the other parts of an output larger than one part (or whose
  parts were read before the commit, by whole-output checks).
- `.<node>.partial.parquet`: the part being written; leftovers of an interrupted write are
  ignored by readers and removed by the next writer of that node.

One file for a typical node: creating files and directories is what a node's staging costs most
on local disks (a new directory and the first file in it each cost more than writing a small part).
Runs staged by etlkit before this layout (`<node>/part-NNNNN.parquet` and `<node>/_manifest.json`)
are still read, resumed and deleted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import shutil
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from etlkit.errors import StagingError

#: The footer key holding a committed output's manifest (JSON).
MANIFEST_KEY: Final = "etlkit.manifest"
#: The manifest file of the layout before markers (`<node>/_manifest.json`), still read.
LEGACY_MANIFEST: Final = "_manifest.json"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# fsspec protocols without real directories, whose makedirs would create a missing bucket
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az"})


def check_path_part(kind: str, value: str) -> str:
    """Reject names that could escape the staging root (`..`, `/`, empty, odd characters).

    Raises:
        StagingError: names the offending value.
    """
    if not _SAFE.fullmatch(value) or ".." in value:
        raise StagingError(
            f"{kind} {value!r} is not safe in a staging path: use letters, digits, '_', '-' "
            "and '.', starting with a letter or digit, without '..'"
        )
    return value


@dataclass(frozen=True)
class StagedFile:
    """One committed Parquet part of a node's output.

    `checksum` is the CRC-32 of the part's Parquet footer (which holds every column chunk's
    offsets, sizes and statistics): with the byte size, it detects a truncated, replaced or
    rewritten part without reading the data again.
    """

    name: str
    rows: int
    bytes: int
    checksum: str = ""


#: Row groups are read in windows of about this many batches: one `iter_batches` over a whole
#: large file holds on to memory it has finished with until the end (RSS grows with the
#: file), while a window's reader frees all of it when done.
_WINDOW_BATCHES = 16
#: With a second reader, windows are this many batches: it decodes the next window whole while
#: the consumer takes the current one, each reader holding at most this many batches.
_PARALLEL_WINDOW_BATCHES = 4


def _windows(metadata: pq.FileMetaData, rows: int) -> list[list[int]]:
    """Consecutive row groups in windows of at least `rows` rows (the last may hold fewer)."""
    windows: list[list[int]] = [[]]
    held = 0
    for group in range(metadata.num_row_groups):
        windows[-1].append(group)
        held += metadata.row_group(group).num_rows
        if held >= rows and group < metadata.num_row_groups - 1:
            windows.append([])
            held = 0
    return [w for w in windows if w]


def parquet_batches(
    parquet: pq.ParquetFile,
    *,
    batch_size: int,
    columns: Sequence[str] | None = None,
    reopen: Callable[[], contextlib.AbstractContextManager[pq.ParquetFile]] | None = None,
    convert: Callable[[pa.RecordBatch, int], pa.RecordBatch] | None = None,
) -> Iterator[pa.RecordBatch]:
    """A Parquet file's record batches in order, read in bounded memory whatever its size.

    `convert(batch, first_row)`: applied to each batch (`first_row` counts from the file's
    start), by whichever reader read it. `reopen`: opens the same file again; then a second
    reader, on a thread of its own, reads (and converts) every other window of row groups
    ahead of the consumer: pyarrow decodes one window's columns on several threads but not the
    next window, and a cast, a validation or a transform of the chunk meanwhile leaves a core
    idle. The batches are the same, in the same order.
    """
    metadata = parquet.metadata
    if reopen is not None and (os.cpu_count() or 1) > 1:
        windows = _windows(metadata, batch_size * _PARALLEL_WINDOW_BATCHES)
        if len(windows) > 1:
            yield from _read_alternately(parquet, reopen, windows, batch_size, columns, convert)
            return
    windows = _windows(metadata, batch_size * _WINDOW_BATCHES)
    for window, first in zip(windows, _first_rows(metadata, windows), strict=True):
        yield from _read_window(parquet, window, first, batch_size, columns, convert)


def _first_rows(metadata: pq.FileMetaData, windows: list[list[int]]) -> list[int]:
    """Each window's first row, counted from the file's start."""
    firsts, row = [], 0
    for window in windows:
        firsts.append(row)
        row += sum(metadata.row_group(g).num_rows for g in window)
    return firsts


def _read_window(
    parquet: pq.ParquetFile,
    window: list[int],
    first_row: int,
    batch_size: int,
    columns: Sequence[str] | None,
    convert: Callable[[pa.RecordBatch, int], pa.RecordBatch] | None,
) -> Iterator[pa.RecordBatch]:
    """One window of row groups' batches, converted (see `parquet_batches`)."""
    row = first_row
    for batch in parquet.iter_batches(batch_size=batch_size, row_groups=window, columns=columns):
        yield batch if convert is None else convert(batch, row)
        row += batch.num_rows


def _read_alternately(
    parquet: pq.ParquetFile,
    reopen: Callable[[], contextlib.AbstractContextManager[pq.ParquetFile]],
    windows: list[list[int]],
    batch_size: int,
    columns: Sequence[str] | None,
    convert: Callable[[pa.RecordBatch, int], pa.RecordBatch] | None,
) -> Iterator[pa.RecordBatch]:
    """Windows 0, 2, 4, ... read here, 1, 3, 5, ... by a helper thread into a bounded queue."""
    firsts = _first_rows(parquet.metadata, windows)

    def read(pf: pq.ParquetFile, index: int) -> Iterator[pa.RecordBatch]:
        return _read_window(pf, windows[index], firsts[index], batch_size, columns, convert)

    ahead: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(
        _PARALLEL_WINDOW_BATCHES
    )
    stop = threading.Event()

    def put(item: pa.RecordBatch | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def helper() -> None:
        try:
            with reopen() as again:
                for index in range(1, len(windows), 2):
                    for batch in read(again, index):
                        if not put(batch):
                            return
                    if not put(None):  # the window's end
                        return
        except BaseException as exc:  # raised by the consumer where the window comes
            put(exc)

    thread = threading.Thread(target=helper, name="etlkit-parquet-reader", daemon=True)
    thread.start()
    try:
        for index in range(len(windows)):
            if index % 2 == 0:
                yield from read(parquet, index)
                continue
            while (item := ahead.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        stop.set()
        thread.join()


def footer_checksum(fs: Any, path: str) -> tuple[int, str]:
    """The byte size of a Parquet file and the CRC-32 of its footer, as hex.

    Raises:
        StagingError: the file is not a complete Parquet file.
    """
    with fs.open(path, "rb") as fh:
        size = int(fs.size(path))
        if size < 12:
            raise StagingError(f"{path} is not a Parquet file ({size} bytes)")
        fh.seek(size - 8)
        tail = fh.read(8)
        if tail[4:] != b"PAR1":
            raise StagingError(f"{path} is not a complete Parquet file (no footer)")
        length = int.from_bytes(tail[:4], "little")
        fh.seek(size - 8 - length)
        footer = fh.read(length)
    return size, f"{zlib.crc32(footer):08x}"


#: Bytes at each end of a file that `file_fingerprint` covers.
_FINGERPRINT_BYTES: Final = 65_536
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


def file_fingerprint(fs: Any, path: str) -> tuple[int, str]:
    """The byte size of a file (CSV, say) and a fingerprint of it, as hex: the CRC-32 of its
    modification time and its first and last 64 KiB.

    Hashing a large CSV file whole would cost a good share of parsing it; this detects a file
    replaced, truncated, appended to or touched, but not a rewrite in place that keeps its
    size, both ends and its modification time.
    """
    info = fs.info(path)
    size = int(info["size"])
    crc = zlib.crc32(str(info.get("mtime", info.get("LastModified", ""))).encode())
    with fs.open(path, "rb") as fh:
        crc = zlib.crc32(fh.read(_FINGERPRINT_BYTES), crc)
        if size > 2 * _FINGERPRINT_BYTES:
            fh.seek(size - _FINGERPRINT_BYTES)
        crc = zlib.crc32(fh.read(_FINGERPRINT_BYTES), crc)
    return size, f"{crc:08x}"


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

    def batches(self, paths: Sequence[str], *, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Local files' record batches in order, parsed as `options` do, about `batch_size`
        rows each (judged from each file's first 64 KiB)."""
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


def duckdb_scan(con: Any, files: Sequence[str], csv: CsvLayout | None, name: str) -> str:
    """What DuckDB reads a staged output from, for a FROM clause: its Parquet files, or for a
    reference to CSV files (`csv`) a dataset registered on `con` as `name`, which parses them
    as their source did."""
    if csv is not None:
        con.register(name, csv.dataset(files))
        return _quote(name)
    return "read_parquet([" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "])"


@dataclass(frozen=True)
class Manifest:
    """What a node's committed output holds and how it was made.

    `files` are the parts in order, named relative to the run's directory (a reference to a
    source's own files lists their URLs instead). The last part of most outputs is the committed
    `<node>.parquet` itself: its entry has no checksum (the manifest is inside that file's footer)
    and its byte size is filled in when the manifest is read.
    """

    pipeline: str
    run_id: str
    node: str
    rows: int
    bytes: int
    files: tuple[StagedFile, ...]
    schema: tuple[tuple[str, str], ...]
    committed_at: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The manifest as JSON text."""
        data = {
            "format_version": 2,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "node": self.node,
            "rows": self.rows,
            "bytes": self.bytes,
            "files": [
                {"name": f.name, "rows": f.rows, "bytes": f.bytes, "checksum": f.checksum}
                for f in self.files
            ],
            "schema": [list(pair) for pair in self.schema],
            "committed_at": self.committed_at,
            "extra": dict(self.extra),
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def reference_select(self) -> list[tuple[str, str | None]] | None:
        """For a reference to a source's own files: the columns read and their SQL casts."""
        reference = self.extra.get("reference")
        if not isinstance(reference, Mapping):
            return None
        return [(str(c), t) for c, t in reference.get("select", [])]

    @property
    def reference_csv(self) -> CsvLayout | None:
        """For a reference to a source's own CSV files: how to parse them (None otherwise)."""
        reference = self.extra.get("reference")
        if not isinstance(reference, Mapping) or reference.get("csv") is None:
            return None
        return CsvLayout.from_json(reference["csv"])

    def select_sql(self, *, omit: str | None = None) -> str:
        """The SELECT list that reads this output's files as its node yields it: `*` for staged
        parts; for a reference to a source's own files, only the columns it reads, cast to its
        model's types. `omit`: a column left out, if the output has it.
        """
        select = self.reference_select
        if select is None:
            if omit is not None and omit in (c for c, _ in self.schema):
                return f"* EXCLUDE ({_quote(omit)})"
            return "*"
        return ", ".join(
            f"CAST({_quote(c)} AS {t}) AS {_quote(c)}" if t else _quote(c)
            for c, t in select
            if c != omit
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest written by `to_json` (or by the older, directory layout)."""
        data = json.loads(text)
        data.pop("format_version", None)
        data["files"] = tuple(StagedFile(**f) for f in data["files"])
        data["schema"] = tuple(tuple(pair) for pair in data["schema"])
        return cls(**data)

    def with_marker_size(self, marker: str, size: int) -> Manifest:
        """This manifest with the committed file `marker`'s byte size filled in."""
        files = tuple(
            StagedFile(f.name, f.rows, size, f.checksum) if f.name == marker else f
            for f in self.files
        )
        return Manifest(  # not `replace`, which re-runs __init__: once per staged node
            pipeline=self.pipeline,
            run_id=self.run_id,
            node=self.node,
            rows=self.rows,
            bytes=sum(f.bytes for f in files),
            files=files,
            schema=self.schema,
            committed_at=self.committed_at,
            extra=self.extra,
        )


class Staging:
    """The staging area under one root URL (a local directory, `s3://bucket/prefix`, ...).

    On S3 the credentials and endpoint are `storage_options` (s3fs's: key, secret,
    endpoint_url, ...) or, without them, s3fs's defaults: the AWS_* environment variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), ~/.aws, instance roles. The
    bucket must exist: staging never creates one.
    """

    def __init__(self, root: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root_url = root
        self.fs, self.root = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        protocol = self.fs.protocol
        self.protocols: tuple[str, ...] = (protocol,) if isinstance(protocol, str) else protocol
        self.object_store = bool(_OBJECT_STORES.intersection(self.protocols))
        # run directories this object created, with the nodes it gave a writer there: a node's
        # first writer in such a directory has no leftovers or commit to look for
        self._created: dict[str, set[str] | None] = {}
        self._run_dirs: dict[tuple[str, str], str] = {}  # checked names, joined
        self._lock = threading.Lock()

    def polars_storage_options(self) -> dict[str, str] | None:
        """Options for polars' own S3 reader (`pl.scan_parquet(urls, storage_options=...)`)
        reaching the same root as `self.fs`; None where polars needs none (local, memory).

        Credentials and endpoint given as `storage_options` are translated to polars' names;
        otherwise polars reads the same AWS_* variables as s3fs, and only `aws_allow_http` is
        added when the endpoint s3fs resolved is plain http (polars refuses http otherwise).
        """
        if "s3" not in self.protocols:
            return None
        given = dict(self.fs.storage_options)
        names = {
            "key": "aws_access_key_id",
            "secret": "aws_secret_access_key",
            "token": "aws_session_token",
            "endpoint_url": "aws_endpoint_url",
        }
        options = {theirs: str(given[ours]) for ours, theirs in names.items() if given.get(ours)}
        region = (given.get("client_kwargs") or {}).get("region_name")
        if region:
            options["aws_region"] = str(region)
        endpoint = options.get("aws_endpoint_url") or self.fs.connect().meta.endpoint_url
        if str(endpoint).startswith("http://"):
            options["aws_allow_http"] = "true"
        return options

    # -- paths and file operations ------------------------------------------------------------
    # On local disks, plain os calls: a node's staging is a handful of them, and fsspec's (or
    # pathlib's) layers cost more than the calls themselves.

    def run_dir(self, pipeline: str, run_id: str) -> str:
        """The directory of a run's staged outputs (a path on `self.fs`)."""
        run_dir = self._run_dirs.get((pipeline, run_id))
        if run_dir is None:
            parts = [check_path_part("pipeline name", pipeline), check_path_part("run id", run_id)]
            run_dir = self._run_dirs[pipeline, run_id] = "/".join([self.root, *parts])
        return run_dir

    def output_path(self, pipeline: str, run_id: str, node: str) -> str:
        """The committed file of a node's output, `<run dir>/<node>.parquet` (a path on `fs`)."""
        return f"{self.run_dir(pipeline, run_id)}/{check_path_part('node name', node)}.parquet"

    def url(self, path: str) -> str:
        """A path on `self.fs` as a URL other engines understand (local: a plain path)."""
        if self.local:
            return path
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{path}"

    def _exists(self, path: str) -> bool:
        return os.path.exists(path) if self.local else bool(self.fs.exists(path))  # noqa: PTH110

    def _remove(self, path: str) -> None:
        """Remove a file or a directory tree if it exists."""
        if not self.local:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        elif os.path.isdir(path):  # noqa: PTH112
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.remove(path)  # noqa: PTH107

    def _remove_legacy(self, run_dir: str, node: str) -> None:
        """Remove a node's directory of the older layout, if any (only a directory: a file
        `<run dir>/<node>` is another node's commit, as in a node named `x.parquet`)."""
        path = f"{run_dir}/{node}"
        if os.path.isdir(path) if self.local else self.fs.isdir(path):  # noqa: PTH112
            self._remove(path)

    def _rename(self, source: str, target: str) -> None:
        """Move a file into place: atomic on local disks, a copy then a delete on object stores
        (where the target appears complete at once too)."""
        if self.local:
            os.replace(source, target)  # noqa: PTH105
        else:
            self.fs.mv(source, target)

    def _makedirs(self, path: str) -> None:
        if self.local:
            os.makedirs(path, exist_ok=True)  # noqa: PTH103
        elif not self.object_store:
            self.fs.makedirs(path, exist_ok=True)

    def _size(self, path: str) -> int:
        return os.path.getsize(path) if self.local else int(self.fs.size(path))  # noqa: PTH202

    def _write_bytes(self, path: str, data: pa.Buffer) -> None:
        if self.local:  # plain system calls: a file object's set-up costs more than the write
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        else:
            with self.fs.open(path, "wb") as fh:
                fh.write(data.to_pybytes())

    def _first_writer(self, run_dir: str, node: str) -> bool:
        """Whether `node` gets its first writer in a local run directory this object created
        (creating it if it does not exist yet): nothing of the node can be there yet."""
        if not self.local:
            return False
        with self._lock:
            if run_dir not in self._created:
                try:
                    os.makedirs(run_dir)  # noqa: PTH103
                except FileExistsError:
                    self._created[run_dir] = None  # not ours: always look
                except OSError:
                    return False  # `writer` reports it, with what it was doing
                else:
                    self._created[run_dir] = set()
            names = self._created[run_dir]
            if names is None or node in names:
                return False
            names.add(node)
            return True

    # -- writing ------------------------------------------------------------------------------

    def writer(
        self, pipeline: str, run_id: str, node: str, *, part_rows: int = 8_388_608
    ) -> NodeWriter:
        """A writer for a node's output; leftovers of an uncommitted earlier attempt are removed.

        Raises:
            StagingError: the node is already committed in this run, or the root is unusable.
        """
        run_dir = self.run_dir(pipeline, run_id)
        marker = self.output_path(pipeline, run_id, node)
        if self._first_writer(run_dir, node):
            return NodeWriter(self, pipeline, run_id, node, run_dir, part_rows)
        legacy = f"{run_dir}/{node}"
        for committed in (marker, f"{legacy}/{LEGACY_MANIFEST}"):
            if self._exists(committed):
                raise StagingError(
                    f"Node '{node}' of run {run_id} is already committed in "
                    f"{self.url(committed)}; committed outputs are immutable"
                )
        try:
            self._remove(f"{run_dir}/{node}.parts")
            self._remove_legacy(run_dir, node)
            if not self.object_store:
                self._makedirs(run_dir)
            elif not self.fs.exists(self.root.split("/", 1)[0]):
                raise StagingError(
                    f"Cannot stage under {self.root_url}: its bucket does not exist, or these "
                    "credentials cannot see it (staging never creates buckets); create it, or "
                    "check AWS_ENDPOINT_URL and the credentials"
                )
        except OSError as exc:
            raise StagingError(f"Cannot prepare staging directory {run_dir}: {exc}") from exc
        return NodeWriter(self, pipeline, run_id, node, run_dir, part_rows)

    # -- reading ------------------------------------------------------------------------------

    def manifest(self, pipeline: str, run_id: str, node: str) -> Manifest | None:
        """The node's manifest if its output is committed, else None.

        Raises:
            StagingError: the committed file is damaged or not an etlkit output.
        """
        path = self.output_path(pipeline, run_id, node)
        try:
            if self.local:
                metadata = pq.read_metadata(path)
            else:
                with self.fs.open(path, "rb") as fh:
                    metadata = pq.read_metadata(fh)
            size = self._size(path)
        except FileNotFoundError:
            return self._legacy_manifest(pipeline, run_id, node)
        except (OSError, pa.ArrowException) as exc:
            raise StagingError(
                f"Staged output {self.url(path)} is damaged (not a complete Parquet file: {exc}); "
                "delete it to recompute the node"
            ) from exc
        text = (metadata.metadata or {}).get(MANIFEST_KEY.encode())
        if text is None:
            raise StagingError(
                f"{self.url(path)} is not a staged etlkit output (no manifest in its footer)"
            )
        try:
            manifest = Manifest.from_json(text.decode())
        except (ValueError, KeyError, TypeError) as exc:
            raise StagingError(f"Manifest in {self.url(path)} is corrupt: {exc}") from exc
        return manifest.with_marker_size(f"{node}.parquet", size)

    def _legacy_manifest(self, pipeline: str, run_id: str, node: str) -> Manifest | None:
        """A manifest of the directory layout, its part names made relative to the run."""
        path = f"{self.run_dir(pipeline, run_id)}/{node}/{LEGACY_MANIFEST}"
        try:
            with self.fs.open(path, "r") as fh:
                manifest = Manifest.from_json(fh.read())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise StagingError(f"Manifest {self.url(path)} is corrupt: {exc}") from exc
        if manifest.reference_select is not None:
            return manifest
        files = tuple(replace(f, name=f"{node}/{f.name}") for f in manifest.files)
        return replace(manifest, files=files)

    def committed(self, pipeline: str, run_id: str) -> list[str]:
        """The staged names with a committed output in a run (companions such as `x.rejects`
        included), sorted; [] for a run that staged nothing.

        Raises:
            StagingError: the pipeline name or run id is not path-safe.
        """
        run_dir = self.run_dir(pipeline, run_id)
        if not self.fs.exists(run_dir):
            return []
        names = []
        for entry in self.fs.ls(run_dir, detail=True):
            base = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "directory":  # the directory layout
                if is_safe_name(base) and self._exists(f"{run_dir}/{base}/{LEGACY_MANIFEST}"):
                    names.append(base)
            elif base.endswith(".parquet") and is_safe_name(base.removesuffix(".parquet")):
                names.append(base.removesuffix(".parquet"))
        return sorted(names)

    def files(self, pipeline: str, run_id: str, node: str) -> list[str]:
        """URLs of a committed node output's Parquet parts.

        Raises:
            StagingError: the node's output is not committed.
        """
        manifest = self.manifest(pipeline, run_id, node)
        if manifest is None:
            raise StagingError(
                f"Node '{node}' of pipeline '{pipeline}' has no committed output in run {run_id}"
            )
        return self.manifest_urls(pipeline, run_id, node, manifest)

    def manifest_urls(self, pipeline: str, run_id: str, node: str, manifest: Manifest) -> list[str]:
        """The URLs of a manifest's parts (a reference lists its source's own files)."""
        if manifest.reference_select is not None:
            return [f.name for f in manifest.files]
        run_dir = self.run_dir(pipeline, run_id)
        return [self.url(f"{run_dir}/{f.name}") for f in manifest.files]

    def iter_batches(
        self, pipeline: str, run_id: str, node: str, *, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        """Stream a committed node output back, one record batch at a time."""
        manifest = self.manifest(pipeline, run_id, node)
        if manifest is None:
            raise StagingError(f"Node '{node}' has no committed output in run {run_id}")
        select = manifest.reference_select
        csv = manifest.reference_csv
        if csv is not None:
            yield from csv.batches([f.name for f in manifest.files], batch_size=batch_size)
            return
        if select is not None:
            columns = [c for c, _ in select]
            for staged in manifest.files:
                fs, path = fsspec.core.url_to_fs(staged.name)
                with fs.open(path, "rb") as fh:
                    yield from parquet_batches(
                        pq.ParquetFile(fh), batch_size=batch_size, columns=columns
                    )
            return
        run_dir = self.run_dir(pipeline, run_id)
        for staged in manifest.files:
            with self.fs.open(f"{run_dir}/{staged.name}", "rb") as fh:
                yield from parquet_batches(pq.ParquetFile(fh), batch_size=batch_size)

    def verify(self, pipeline: str, run_id: str, node: str) -> list[str]:
        """Problems with a committed output's parts (missing, resized, rewritten); [] if intact."""
        try:
            manifest = self.manifest(pipeline, run_id, node)
        except StagingError as exc:
            return [str(exc)]
        if manifest is None:
            return [f"node '{node}' has no committed output in run {run_id}"]
        if (manifest.pipeline, manifest.run_id, manifest.node) != (pipeline, run_id, node):
            return [
                f"{self.url(self.output_path(pipeline, run_id, node))} was committed for "
                f"node '{manifest.node}' of run {manifest.run_id} of '{manifest.pipeline}'"
            ]
        run_dir = self.run_dir(pipeline, run_id)
        reference = manifest.reference_select is not None
        problems = []
        for staged in manifest.files:
            if staged.name == f"{node}.parquet":
                continue  # the committed file itself: read whole above, manifest included
            path = staged.name if reference else f"{run_dir}/{staged.name}"
            shown = path if reference else self.url(path)
            try:
                if reference:
                    fs, local = fsspec.core.url_to_fs(path)
                    if manifest.reference_csv is not None:
                        size, checksum = file_fingerprint(fs, local)
                    else:
                        size, checksum = footer_checksum(fs, local)
                else:
                    size, checksum = footer_checksum(self.fs, path)
            except (OSError, StagingError) as exc:
                problems.append(f"{shown}: {exc}")
                continue
            if size != staged.bytes or (staged.checksum and checksum != staged.checksum):
                problems.append(
                    f"{shown} changed since it was committed ({staged.bytes} bytes, checksum "
                    f"{staged.checksum}; now {size} bytes, checksum {checksum})"
                )
        return problems

    # -- removing -----------------------------------------------------------------------------

    def discard(self, pipeline: str, run_id: str, node: str) -> None:
        """Remove a node's staged output of a run, committed or not (its commit first)."""
        run_dir = self.run_dir(pipeline, run_id)
        self._remove(self.output_path(pipeline, run_id, node))
        self._remove(f"{run_dir}/{node}/{LEGACY_MANIFEST}")
        self._remove(f"{run_dir}/{node}.parts")
        self._remove(f"{run_dir}/.{node}.partial.parquet")
        self._remove_legacy(run_dir, node)

    def delete_run(self, pipeline: str, run_id: str) -> None:
        """Remove everything a run staged (commits first, so nothing looks committed)."""
        base = self.run_dir(pipeline, run_id)
        with self._lock:
            self._created.pop(base, None)
        if not self.fs.exists(base):
            return
        for name in self.committed(pipeline, run_id):
            self._remove(self.output_path(pipeline, run_id, name))
            self._remove(f"{base}/{name}/{LEGACY_MANIFEST}")
        self.fs.rm(base, recursive=True)

    def pipelines(self) -> list[str]:
        """Pipelines with a staging directory."""
        if not self.fs.exists(self.root):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))

    def runs(self, pipeline: str) -> list[str]:
        """Run ids with a staging directory for the pipeline, oldest first."""
        base = f"{self.root}/{check_path_part('pipeline name', pipeline)}"
        if not self.fs.exists(base):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))


def is_safe_name(name: str) -> bool:
    """Whether `check_path_part` accepts `name` (directory listings may hold other entries)."""
    try:
        check_path_part("staged name", name)
    except StagingError:
        return False
    return True


def _parquet_writer(where: Any, schema: pa.Schema) -> pq.ParquetWriter:
    # Staging is scratch space read back soon: fast snappy, dictionaries only where they pay
    # (strings): a dictionary of unique numbers saves nothing and multiplies the write's cost.
    dictionary = [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_string_view(f.type)
        or pa.types.is_dictionary(f.type)
    ]
    return pq.ParquetWriter(where, schema, compression="snappy", use_dictionary=dictionary)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _describe(schema: pa.Schema) -> str:
    return "[" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "]"


def conform_chunk(batch: pa.RecordBatch, schema: pa.Schema, producer: str) -> pa.RecordBatch:
    """A node's later chunk cast to the types of its first (`schema`), columns in its order.

    Raises:
        StagingError: the columns differ, or a type does not cast losslessly; the message
            begins with `producer` ("Node 'x' of pipeline 'p' (run r)").
    """
    if batch.schema == schema:
        return batch
    try:
        if sorted(batch.schema.names) != sorted(schema.names):
            raise ValueError("the column names differ")  # select() would drop columns
        return batch.select(schema.names).cast(schema)
    except (KeyError, ValueError, pa.ArrowException) as exc:
        raise StagingError(
            f"{producer} produced a chunk with columns {_describe(batch.schema)} after chunks "
            f"with {_describe(schema)}; every chunk of a node must have the same columns, of "
            f"the same types or types that cast losslessly ({exc})"
        ) from exc


#: Batches a node may have queued for its staging thread before `append` waits for it.
_QUEUED_BATCHES: Final = 4
#: An output up to this size is held in memory and written in one go by `commit`: most nodes of
#: an orchestration graph are small, and each step of writing a file is a system call that can
#: hand the GIL to another node's thread.
_HELD_BYTES: Final = 1 << 20


class NodeWriter:
    """Appends record batches as Parquet parts; `commit` makes them visible, `abort` cleans up.

    The part being written is `.<node>.partial.parquet`. At `commit` it receives the manifest
    in its footer and is renamed to `<node>.parquet`, the output's commit; a part that fills
    up (`part_rows`) or is read before the commit (`part_urls`) moves to `<node>.parts/`.

    Batches are held in memory while they add up to at most `_HELD_BYTES` (and `part_rows`
    rows): a small output is encoded and written by `commit` in one go. Past that, the held
    batches and the batch that overflowed are written at once, and later batches are handed to
    a thread of the writer's own (at most `_QUEUED_BATCHES` waiting), so encoding and
    compressing Parquet overlaps with the node producing its next chunk. A write that fails
    there is raised by the next `append`, by `part_urls` or by `commit`.
    """

    def __init__(
        self,
        staging: Staging,
        pipeline: str,
        run_id: str,
        node: str,
        run_dir: str,
        part_rows: int,
    ) -> None:
        self.staging = staging
        self.pipeline, self.run_id, self.node = pipeline, run_id, node
        self.run_dir = run_dir
        self.part_rows = part_rows
        self.schema: pa.Schema | None = None
        self.rows = 0
        self._marker = f"{node}.parquet"
        self._partial = f"{run_dir}/.{node}.partial.parquet"
        self._files: list[StagedFile] = []
        self._held: list[pa.RecordBatch] = []
        self._held_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._handle: Any = None
        self._part_rows = 0
        self._state: Literal["open", "committed", "aborted"] = "open"
        self._queue: queue.Queue[pa.RecordBatch | None] | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def _check_open(self, action: str) -> None:
        if self._state != "open":
            raise StagingError(
                f"Cannot {action} node '{self.node}' of pipeline '{self.pipeline}' "
                f"(run {self.run_id}): its writer is already {self._state}"
            )

    def _open_part(self, schema: pa.Schema) -> pq.ParquetWriter:
        if self.staging.local:
            return _parquet_writer(self._partial, schema)
        self._handle = self.staging.fs.open(self._partial, "wb")
        return _parquet_writer(self._handle, schema)

    def _close_writer(self, manifest: Manifest | None = None) -> None:
        assert self._writer is not None
        if manifest is not None:
            self._writer.add_key_value_metadata({MANIFEST_KEY: manifest.to_json()})
        self._writer.close()
        self._writer = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _close_part(self) -> None:
        """Close the part being written into `<node>.parts/` (not the last, or read early)."""
        if self._writer is None:
            return
        self._close_writer()
        staging = self.staging
        name = f"{self.node}.parts/part-{len(self._files):05d}.parquet"
        path = f"{self.run_dir}/{name}"
        if not self._files:
            staging._makedirs(f"{self.run_dir}/{self.node}.parts")
        staging._rename(self._partial, path)
        size, checksum = footer_checksum(staging.fs, path)
        self._files.append(StagedFile(name, self._part_rows, size, checksum))
        self._part_rows = 0

    def _write(self, batch: pa.RecordBatch) -> None:
        # a full part is closed when more rows come, so the last one is always still open for
        # the commit (an output of exactly `part_rows` rows is one file)
        if self._part_rows >= self.part_rows:
            self._close_part()
        if self._writer is None:
            assert self.schema is not None
            self._writer = self._open_part(self.schema)
        self._writer.write_batch(batch)
        self._part_rows += batch.num_rows

    def _drain(self, batches: queue.Queue[pa.RecordBatch | None]) -> None:
        """The staging thread: write queued batches until None; after a failure, only drain."""
        while (batch := batches.get()) is not None:
            if self._failure is None:
                try:
                    self._write(batch)
                except BaseException as exc:  # raised to the node by its next call
                    self._failure = exc

    def _settle(self) -> None:
        """Wait until every queued batch is written; raise what the staging thread hit."""
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = self._queue = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _write_held(self) -> None:
        held, self._held, self._held_bytes = self._held, [], 0
        for batch in held:
            self._write(batch)

    def part_urls(self) -> list[str]:
        """Close the open part and return the URLs of every part written so far (uncommitted)."""
        self._settle()
        self._write_held()
        self._close_part()
        return [self.staging.url(f"{self.run_dir}/{f.name}") for f in self._files]

    def append(self, batch: pa.RecordBatch) -> None:
        """Stage one batch (cast to the schema of the first batch).

        Raises:
            StagingError: the batch's columns differ from the first batch's, or the writer is
                already committed or aborted.
        """
        self._check_open("append to")
        if self.schema is None:
            self.schema = batch.schema
        else:
            producer = f"Node '{self.node}' of pipeline '{self.pipeline}' (run {self.run_id})"
            batch = conform_chunk(batch, self.schema, producer)
        self.rows += batch.num_rows
        if self._queue is None and self._writer is None and not self._files:
            size = batch.get_total_buffer_size()  # a slice's parent's, at most: held or not
            if self._held_bytes + size <= _HELD_BYTES and self.rows <= self.part_rows:
                self._held.append(batch)
                self._held_bytes += size
                return
            self._write_held()
            self._write(batch)  # the output outgrew memory: to a file, from now on
            return
        if self._failure is not None:
            self._settle()
        if self._queue is None:
            self._queue = queue.Queue(_QUEUED_BATCHES)
            self._thread = threading.Thread(
                target=self._drain,
                args=(self._queue,),
                name=f"etlkit-stage-{self.node}",
                daemon=True,  # never holds up interpreter exit; `abort` or `commit` joins it
            )
            self._thread.start()
        self._queue.put(batch)

    def append_many(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Stage several batches (see `append`)."""
        for batch in batches:
            self.append(batch)

    def restart(self) -> None:
        """Discard every batch staged so far and stay open, keeping the schema: the node's
        output is written again (rows taken out after a check of the whole output).

        Raises:
            StagingError: the writer is already committed or aborted.
        """
        self._check_open("restart")
        self._settle()
        if self._writer is not None:
            self._close_writer()
        self.staging._remove(self._partial)
        self.staging._remove(f"{self.run_dir}/{self.node}.parts")
        self._files, self._held, self._held_bytes = [], [], 0
        self._part_rows = self.rows = 0

    def commit(
        self, *, empty_schema: pa.Schema | None = None, extra: Mapping[str, Any] | None = None
    ) -> Manifest:
        """Write the manifest into the last part's footer and rename it into place: from now
        on the output is visible.

        A node that produced nothing gets one empty part with `empty_schema`, when known.

        Raises:
            StagingError: the writer is already committed or aborted.
        """
        self._check_open("commit")
        self._settle()
        if self.schema is None:
            self.schema = empty_schema
        schema = self.schema
        columns = tuple((f.name, str(f.type)) for f in schema) if schema is not None else ()
        # the last part is the committed file; it lists itself if it holds rows, or if it is
        # the only part with columns (an empty output keeps its schema for readers)
        rows = self._part_rows + sum(b.num_rows for b in self._held)
        last = rows > 0 or (not self._files and schema is not None)
        files = [*self._files, StagedFile(self._marker, rows, 0, "")] if last else []
        return self._commit_marker(files or self._files, columns, dict(extra or {}))

    def _commit_marker(
        self,
        files: list[StagedFile],
        columns: tuple[tuple[str, str], ...],
        extra: dict[str, Any],
        *,
        total_bytes: int | None = None,
    ) -> Manifest:
        manifest = Manifest(
            pipeline=self.pipeline,
            run_id=self.run_id,
            node=self.node,
            rows=self.rows,
            bytes=sum(f.bytes for f in files) if total_bytes is None else total_bytes,
            files=tuple(files),
            schema=columns,
            committed_at=datetime.now(UTC).isoformat(),
            extra=extra,
        )
        staging = self.staging
        path = f"{self.run_dir}/{self._marker}"
        if self._writer is None:  # what is held (if anything): encoded and written in one go
            sink = pa.BufferOutputStream()
            writer = _parquet_writer(sink, self.schema or pa.schema([]))
            for batch in self._held:
                writer.write_batch(batch)
            writer.add_key_value_metadata({MANIFEST_KEY: manifest.to_json()})
            writer.close()
            data = sink.getvalue()
            self._held, self._held_bytes = [], 0
            if staging.object_store:
                staging._write_bytes(path, data)  # one upload: it appears complete or not at all
            else:
                staging._write_bytes(self._partial, data)
                staging._rename(self._partial, path)
            size = data.size
        else:
            self._close_writer(manifest)
            staging._rename(self._partial, path)
            size = staging._size(path)
        self._state = "committed"
        if total_bytes is not None:
            return manifest
        return manifest.with_marker_size(self._marker, size)

    def commit_reference(
        self,
        *,
        urls: Sequence[str],
        rows: int,
        sizes: Sequence[int],
        checksums: Sequence[str],
        select: Sequence[tuple[str, str | None]],
        extra: Mapping[str, Any] | None = None,
        csv: CsvLayout | None = None,
    ) -> Manifest:
        """Commit a reference to immutable source files instead of a copy of their data.

        `select` lists the columns read and the SQL type each is cast to (None: as stored, or
        as `csv` parses it). The files' sizes and checksums (Parquet footers', or
        `file_fingerprint`s of CSV files) let a resume verify they did not change; the
        committed file holds no data, only the manifest. `csv`: the files are CSV, parsed so.

        Raises:
            StagingError: the writer already wrote parts, or is committed or aborted.
        """
        self._check_open("commit")
        if self._files or self._writer is not None or self._held:
            raise StagingError(f"Node '{self.node}' wrote parts; it cannot also be a reference")
        self.rows = rows
        files = [
            StagedFile(url, 0, size, checksum)
            for url, size, checksum in zip(urls, sizes, checksums, strict=True)
        ]
        reference: dict[str, Any] = {"select": [list(pair) for pair in select]}
        stored = {c: "as stored" for c, _ in select}
        if csv is not None:
            reference["csv"] = csv.to_json()
            stored = {f.name: str(f.type) for f in csv.schema}
        details = {"reference": reference, **dict(extra or {})}
        self.schema = None
        return self._commit_marker(
            files, tuple((c, t or stored[c]) for c, t in select), details, total_bytes=0
        )

    def abort(self) -> None:
        """Discard everything written; safe to call more than once."""
        with contextlib.suppress(Exception):
            self._settle()  # the failure that led here is already being raised
        try:
            if self._writer is not None:
                self._writer.close()
            if self._handle is not None:
                self._handle.close()
        except (OSError, pa.ArrowException):
            pass
        self._writer = None
        self._handle = None
        self._held, self._held_bytes = [], 0
        if self._state != "open":
            return
        self._state = "aborted"
        staging = self.staging
        staging._remove(self._partial)
        staging._remove(f"{self.run_dir}/{self.node}.parts")
