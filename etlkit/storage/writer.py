"""Writing one node's output: Parquet parts, sizing, and the atomic commit.

`PartsWriter` appends record batches (each cast to the first one's schema by `conform_chunk`),
holds a small output in memory and writes a larger one in parts on a thread of its own.
`NodeWriter` is the writer of a node's whole output: it commits by renaming the last part, the
manifest in its footer, into place (`partitions.PartitionWriter` is the writer of one
partition of it). It writes through a `StagingRoot`; `Staging.writer` says where.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import pyarrow as pa

from etlkit.errors import StagingError
from etlkit.storage.manifest import MANIFEST_KEY, Manifest, StagedFile, reference_details
from etlkit.storage.parquet import PARQUET, footer_checksum

if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from etlkit.storage.formats import FileFormat
    from etlkit.storage.root import StagingRoot


def _parquet_writer(where: Any, schema: pa.Schema, compression: str) -> pq.ParquetWriter:
    import pyarrow.parquet as pq  # here: a run that stages nothing never loads it

    # Staging is scratch space read back soon: fast snappy (unless a sink adopts the file as
    # its own, in its codec), dictionaries only where they pay (strings): a dictionary of
    # unique numbers saves nothing and multiplies the write's cost.
    dictionary = [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_string_view(f.type)
        or pa.types.is_dictionary(f.type)
    ]
    return pq.ParquetWriter(where, schema, compression=compression, use_dictionary=dictionary)


def _encode(
    batches: list[pa.RecordBatch],
    schema: pa.Schema,
    manifest: Manifest,
    compression: str = "snappy",
) -> pa.Buffer:
    """A whole small output as the bytes of one Parquet file, the manifest in its footer."""
    sink = pa.BufferOutputStream()
    writer = _parquet_writer(sink, schema, compression)
    for batch in batches:
        writer.write_batch(batch)
    writer.add_key_value_metadata({MANIFEST_KEY: manifest.to_json()})
    writer.close()
    return sink.getvalue()


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
#: The staging thread gathers batches into row groups of this many rows (or `_GROUP_BYTES`)
#: before encoding them: a row group per chunk of a filtered stream (tens of thousands of rows)
#: costs its per-group statistics, dictionaries and page headers for a few rows each, and the
#: staging thread is the per-chunk path's slowest stage. Readers get fewer, fuller row groups.
_GROUP_ROWS: Final = 262_144
_GROUP_BYTES: Final = 64 << 20


class PartsWriter:
    """Appends record batches as Parquet parts of one output, sized and encoded for staging.

    The part being written is `partial`; a part that fills up (`part_rows`) or is read before
    the end (`part_urls`) moves to the directory `parts` (relative to `run_dir`) as
    `part-NNNNN.parquet`. `NodeWriter` commits such parts as a node's output; a
    `PartitionWriter` (`storage.partitions`) finishes them as one partition of it.

    Batches are held in memory while they add up to at most `_HELD_BYTES` (and `part_rows`
    rows): a small output is encoded and written at the end in one go. Past that, the held
    batches and the batch that overflowed are written at once, and later batches are handed to
    a thread of the writer's own (at most `_QUEUED_BATCHES` waiting), so encoding and
    compressing Parquet overlaps with the node producing its next chunk. A write that fails
    there is raised by the next `append`, by `part_urls` or by the commit.

    `encode_as` changes the parts' codec and the types they hold, for a sink that adopts the
    staged file as its own (`etlkit.model.adoption`).
    """

    def __init__(
        self,
        staging: StagingRoot,
        pipeline: str,
        run_id: str,
        node: str,
        run_dir: str,
        part_rows: int,
        *,
        parts: str,
        partial: str,
    ) -> None:
        self.staging = staging
        self.compression = "snappy"
        self._retype: Callable[[pa.Schema], pa.Schema] | None = None
        self.pipeline, self.run_id, self.node = pipeline, run_id, node
        self.run_dir = run_dir
        self.part_rows = part_rows
        self.schema: pa.Schema | None = None
        self.rows = 0
        self._parts = parts
        self._partial = partial
        self._files: list[StagedFile] = []
        self._held: list[pa.RecordBatch] = []
        self._held_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._group: list[pa.RecordBatch] = []  # the row group being gathered (`_write`)
        self._group_rows = self._group_bytes = 0
        self._handle: Any = None
        self._part_rows = 0
        self._state: Literal["open", "committed", "finished", "aborted"] = "open"
        self._queue: queue.Queue[pa.RecordBatch | None] | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def encode_as(
        self, compression: str, retype: Callable[[pa.Schema], pa.Schema] | None = None
    ) -> None:
        """Write the parts with `compression`, the columns with the types `retype` gives the
        first batch's schema (types only, each cast keeping every value).

        Raises:
            StagingError: a batch is already appended.
        """
        if self.schema is not None:
            raise StagingError(
                f"Node '{self.node}' of pipeline '{self.pipeline}' (run {self.run_id}): its "
                "staged encoding is chosen before its first batch"
            )
        self.compression, self._retype = compression, retype

    def _check_open(self, action: str) -> None:
        if self._state != "open":
            raise StagingError(
                f"Cannot {action} node '{self.node}' of pipeline '{self.pipeline}' "
                f"(run {self.run_id}): its writer is already {self._state}"
            )

    def _open_part(self, schema: pa.Schema) -> pq.ParquetWriter:
        if self.staging.local:
            return _parquet_writer(self._partial, schema, self.compression)
        self._handle = self.staging.fs.open(self._partial, "wb")
        return _parquet_writer(self._handle, schema, self.compression)

    def _close_writer(self, manifest: Manifest | None = None) -> None:
        assert self._writer is not None
        self._write_group()
        if manifest is not None:
            self._writer.add_key_value_metadata({MANIFEST_KEY: manifest.to_json()})
        self._writer.close()
        self._writer = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _close_part(self) -> None:
        """Close the part being written into the parts directory (not the last, or read early)."""
        if self._writer is None:
            return
        self._close_writer()
        staging = self.staging
        name = f"{self._parts}/part-{len(self._files):05d}.parquet"
        path = f"{self.run_dir}/{name}"
        if not self._files:
            staging.makedirs(f"{self.run_dir}/{self._parts}")
        staging.rename(self._partial, path)
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
        self._group.append(batch)
        self._group_rows += batch.num_rows
        self._group_bytes += batch.get_total_buffer_size()
        self._part_rows += batch.num_rows
        if self._group_rows >= _GROUP_ROWS or self._group_bytes >= _GROUP_BYTES:
            self._write_group()

    def _write_group(self) -> None:
        """Encode the batches gathered as one row group of the open part."""
        rows, group = self._group_rows, self._take_group()
        if group and self._writer is not None:
            self._writer.write_table(pa.Table.from_batches(group), row_group_size=rows)

    def _take_group(self) -> list[pa.RecordBatch]:
        """The batches gathered so far, the writer left gathering none."""
        group, self._group, self._group_rows, self._group_bytes = self._group, [], 0, 0
        return group

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
            self.schema = batch.schema if self._retype is None else self._retype(batch.schema)
        if batch.schema != self.schema:
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
        self._take_group()  # discarded, not written
        if self._writer is not None:
            self._close_writer()
        self.staging.remove(self._partial)
        self.staging.remove(f"{self.run_dir}/{self._parts}")
        self._files, self._held, self._held_bytes = [], [], 0
        self._part_rows = self.rows = 0

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
        self._take_group()
        if self._state != "open":
            return
        self._state = "aborted"
        staging = self.staging
        staging.remove(self._partial)
        staging.remove(f"{self.run_dir}/{self._parts}")


class NodeWriter(PartsWriter):
    """Writes a node's output; `commit` makes it visible, `abort` cleans up.

    The part being written is `.<node>.partial.parquet`. At `commit` it receives the manifest
    in its footer and is renamed to `<node>.parquet`, the output's commit; a part that fills
    up (`part_rows`) or is read before the commit (`part_urls`) moves to `<node>.parts/`. A
    small output, held in memory, is encoded and written by `commit` in one go.
    """

    def __init__(
        self,
        staging: StagingRoot,
        pipeline: str,
        run_id: str,
        node: str,
        run_dir: str,
        part_rows: int,
    ) -> None:
        super().__init__(
            staging,
            pipeline,
            run_id,
            node,
            run_dir,
            part_rows,
            parts=f"{node}.parts",
            partial=f"{run_dir}/.{node}.partial.parquet",
        )
        self._marker = f"{node}.parquet"

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
            data = _encode(self._held, self.schema or pa.schema([]), manifest, self.compression)
            self._held, self._held_bytes = [], 0
            if staging.object_store:
                staging.write_bytes(path, data)  # one upload: it appears complete or not at all
            else:
                staging.write_bytes(self._partial, data)
                staging.rename(self._partial, path)
            size = data.size
        else:
            self._close_writer(manifest)
            staging.rename(self._partial, path)
            size = staging.size(path)
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
        read_as: FileFormat = PARQUET,
    ) -> Manifest:
        """Commit a reference to immutable source files instead of a copy of their data.

        `select` lists the columns read and the SQL type each is cast to (None: as stored, or
        as `read_as` parses it). The files' sizes and checksums (`read_as.fingerprint`s) let
        a resume verify they did not change; the committed file holds no data, only the
        manifest, which records the format and its options.

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
        columns, details = reference_details(select, read_as, extra)
        self.schema = None
        return self._commit_marker(files, columns, details, total_bytes=0)
