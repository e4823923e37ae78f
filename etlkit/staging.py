"""Run-keyed Parquet staging of node outputs on any fsspec filesystem, with atomic commit.

Layout: `<root>/<pipeline>/<run_id>/<node>/part-NNNNN.parquet` plus `_manifest.json`, written
last. A node's output exists for readers only once its manifest does: an interrupted write leaves
parts without a manifest, which readers ignore and the next writer of that node removes.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from etlkit.errors import StagingError

MANIFEST: str = "_manifest.json"
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
#: large file holds on to memory it has finished with until the end (RSS grew to 750 MiB over
#: the 60M-row TPC-H SF10 lineitem), while a window's reader frees all of it when done.
_WINDOW_BATCHES = 16


def parquet_batches(
    parquet: pq.ParquetFile, *, batch_size: int, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """A Parquet file's record batches in order, read in bounded memory whatever its size."""
    metadata = parquet.metadata
    window: list[int] = []
    held = 0
    for group in range(metadata.num_row_groups):
        window.append(group)
        held += metadata.row_group(group).num_rows
        if held >= batch_size * _WINDOW_BATCHES or group == metadata.num_row_groups - 1:
            yield from parquet.iter_batches(
                batch_size=batch_size, row_groups=window, columns=columns
            )
            window, held = [], 0


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


@dataclass(frozen=True)
class Manifest:
    """The commit marker of a node's staged output: what it holds and how it was made."""

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
        data = asdict(self)
        data["format_version"] = 1
        return json.dumps(data, indent=2, sort_keys=True)

    @property
    def reference_select(self) -> list[tuple[str, str | None]] | None:
        """For a reference to a source's own files: the columns read and their SQL casts."""
        reference = self.extra.get("reference")
        if not isinstance(reference, Mapping):
            return None
        return [(str(c), t) for c, t in reference.get("select", [])]

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest written by `to_json`."""
        data = json.loads(text)
        data.pop("format_version", None)
        data["files"] = tuple(StagedFile(**f) for f in data["files"])
        data["schema"] = tuple(tuple(pair) for pair in data["schema"])
        return cls(**data)


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

    def node_dir(self, pipeline: str, run_id: str, node: str) -> str:
        """Where a node's staged output lives (a path on `self.fs`)."""
        parts = [
            check_path_part("pipeline name", pipeline),
            check_path_part("run id", run_id),
            check_path_part("node name", node),
        ]
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        """A path on `self.fs` as a URL other engines understand (local: a plain path)."""
        if self.local:
            return path
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{path}"

    def writer(
        self, pipeline: str, run_id: str, node: str, *, part_rows: int = 8_388_608
    ) -> NodeWriter:
        """A writer for a node's output; leftovers of an uncommitted earlier attempt are removed.

        Raises:
            StagingError: the node is already committed in this run, or the root is unusable.
        """
        directory = self.node_dir(pipeline, run_id, node)
        if self.fs.exists(f"{directory}/{MANIFEST}"):
            raise StagingError(
                f"Node '{node}' of run {run_id} is already committed in {self.url(directory)}; "
                "committed outputs are immutable"
            )
        try:
            if self.fs.exists(directory):
                self.fs.rm(directory, recursive=True)
            if not self.object_store:
                self.fs.makedirs(directory, exist_ok=True)
            elif not self.fs.exists(self.root.split("/", 1)[0]):
                raise StagingError(
                    f"Cannot stage under {self.root_url}: its bucket does not exist, or these "
                    "credentials cannot see it (staging never creates buckets); create it, or "
                    "check AWS_ENDPOINT_URL and the credentials"
                )
        except OSError as exc:
            raise StagingError(f"Cannot prepare staging directory {directory}: {exc}") from exc
        return NodeWriter(self, pipeline, run_id, node, directory, part_rows)

    def manifest(self, pipeline: str, run_id: str, node: str) -> Manifest | None:
        """The node's manifest if its output is committed, else None."""
        path = f"{self.node_dir(pipeline, run_id, node)}/{MANIFEST}"
        try:
            with self.fs.open(path, "r") as fh:
                return Manifest.from_json(fh.read())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise StagingError(f"Manifest {self.url(path)} is corrupt: {exc}") from exc

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
        directory = self.node_dir(pipeline, run_id, node)
        return [self.url(f"{directory}/{f.name}") for f in manifest.files]

    def iter_batches(
        self, pipeline: str, run_id: str, node: str, *, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        """Stream a committed node output back, one record batch at a time."""
        directory = self.node_dir(pipeline, run_id, node)
        manifest = self.manifest(pipeline, run_id, node)
        if manifest is None:
            raise StagingError(f"Node '{node}' has no committed output in run {run_id}")
        select = manifest.reference_select
        if select is not None:
            columns = [c for c, _ in select]
            for staged in manifest.files:
                fs, path = fsspec.core.url_to_fs(staged.name)
                with fs.open(path, "rb") as fh:
                    yield from parquet_batches(
                        pq.ParquetFile(fh), batch_size=batch_size, columns=columns
                    )
            return
        for staged in manifest.files:
            with self.fs.open(f"{directory}/{staged.name}", "rb") as fh:
                yield from parquet_batches(pq.ParquetFile(fh), batch_size=batch_size)

    def verify(self, pipeline: str, run_id: str, node: str) -> list[str]:
        """Problems with a committed output's parts (missing, resized, rewritten); [] if intact."""
        manifest = self.manifest(pipeline, run_id, node)
        if manifest is None:
            return [f"node '{node}' has no committed output in run {run_id}"]
        directory = self.node_dir(pipeline, run_id, node)
        problems = []
        reference = manifest.reference_select is not None
        for staged in manifest.files:
            path = staged.name if reference else f"{directory}/{staged.name}"
            try:
                if reference:
                    fs, local = fsspec.core.url_to_fs(path)
                    size, checksum = footer_checksum(fs, local)
                else:
                    size, checksum = footer_checksum(self.fs, path)
            except (OSError, StagingError) as exc:
                problems.append(f"{path if reference else self.url(path)}: {exc}")
                continue
            if size != staged.bytes or (staged.checksum and checksum != staged.checksum):
                problems.append(
                    f"{path if reference else self.url(path)} changed since it was committed "
                    f"({staged.bytes} bytes, checksum {staged.checksum}; now {size} bytes, "
                    f"checksum {checksum})"
                )
        return problems

    def discard(self, pipeline: str, run_id: str, node: str) -> None:
        """Remove a node's staged output of a run, committed or not (manifest first)."""
        directory = self.node_dir(pipeline, run_id, node)
        if self.fs.exists(f"{directory}/{MANIFEST}"):
            self.fs.rm(f"{directory}/{MANIFEST}")
        if self.fs.exists(directory):
            self.fs.rm(directory, recursive=True)

    def delete_run(self, pipeline: str, run_id: str) -> None:
        """Remove everything a run staged (manifests first, so nothing looks committed)."""
        base = "/".join([self.root, pipeline, check_path_part("run id", run_id)])
        if not self.fs.exists(base):
            return
        for manifest in self.fs.glob(f"{base}/*/{MANIFEST}"):
            self.fs.rm(manifest)
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


def _describe(schema: pa.Schema) -> str:
    return "[" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "]"


#: Batches a node may have queued for its staging thread before `append` waits for it.
_QUEUED_BATCHES: Final = 4


class NodeWriter:
    """Appends record batches as Parquet parts; `commit` writes the manifest, `abort` cleans up.

    The first batch is written at once. From the second on, batches are handed to a thread of
    the writer's own (at most `_QUEUED_BATCHES` waiting), so encoding and compressing Parquet
    overlaps with the node producing its next chunk; a single-chunk output never starts one.
    A write that fails there is raised by the next `append`, by `part_urls` or by `commit`.
    """

    def __init__(
        self,
        staging: Staging,
        pipeline: str,
        run_id: str,
        node: str,
        directory: str,
        part_rows: int,
    ) -> None:
        self.staging = staging
        self.pipeline, self.run_id, self.node = pipeline, run_id, node
        self.directory = directory
        self.part_rows = part_rows
        self.schema: pa.Schema | None = None
        self.rows = 0
        self._files: list[StagedFile] = []
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
        name = f"part-{len(self._files):05d}.parquet"
        path = f"{self.directory}/{name}"
        self._files.append(StagedFile(name, 0, 0, ""))
        # Staging is scratch space read back soon: fast snappy, dictionaries only where they pay
        # (strings), since dictionary-encoding unique numbers costs ~4x the write time.
        options: dict[str, Any] = {
            "compression": "snappy",
            "use_dictionary": [
                f.name
                for f in schema
                if pa.types.is_string(f.type)
                or pa.types.is_large_string(f.type)
                or pa.types.is_string_view(f.type)
                or pa.types.is_dictionary(f.type)
            ],
        }
        if self.staging.local:
            return pq.ParquetWriter(path, schema, **options)
        self._handle = self.staging.fs.open(path, "wb")
        return pq.ParquetWriter(self._handle, schema, **options)

    def _close_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        last = self._files[-1]
        path = f"{self.directory}/{last.name}"
        size, checksum = footer_checksum(self.staging.fs, path)
        self._files[-1] = StagedFile(last.name, self._part_rows, size, checksum)
        self._part_rows = 0

    def _write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            assert self.schema is not None
            self._writer = self._open_part(self.schema)
        self._writer.write_batch(batch)
        self._part_rows += batch.num_rows
        if self._part_rows >= self.part_rows:
            self._close_part()

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

    def part_urls(self) -> list[str]:
        """Close the open part and return the URLs of every part written so far (uncommitted)."""
        self._settle()
        self._close_part()
        return [self.staging.url(f"{self.directory}/{f.name}") for f in self._files]

    def append(self, batch: pa.RecordBatch) -> None:
        """Stage one batch (cast to the schema of the first batch).

        Raises:
            StagingError: the batch's columns differ from the first batch's, or the writer is
                already committed or aborted.
        """
        self._check_open("append to")
        if self.schema is None:
            self.schema = batch.schema
        elif batch.schema != self.schema:
            try:
                if sorted(batch.schema.names) != sorted(self.schema.names):
                    raise ValueError("the column names differ")  # select() would drop columns
                batch = batch.select(self.schema.names).cast(self.schema)
            except (KeyError, ValueError, pa.ArrowException) as exc:
                raise StagingError(
                    f"Node '{self.node}' of pipeline '{self.pipeline}' (run {self.run_id}) "
                    f"produced a chunk with columns {_describe(batch.schema)} after chunks with "
                    f"{_describe(self.schema)}; every chunk of a node must have the same "
                    f"columns, of the same types or types that cast losslessly ({exc})"
                ) from exc
        self.rows += batch.num_rows
        if self._queue is None and self._writer is None and not self._files:
            self._write(batch)  # the first batch: many outputs have no other
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

    def commit(
        self, *, empty_schema: pa.Schema | None = None, extra: Mapping[str, Any] | None = None
    ) -> Manifest:
        """Close the parts and write the manifest last: from now on the output is visible.

        A node that produced nothing gets one empty part with `empty_schema`, when known.

        Raises:
            StagingError: the writer is already committed or aborted.
        """
        self._check_open("commit")
        self._settle()
        if self._writer is None and not self._files and empty_schema is not None:
            self.schema = empty_schema
            self._writer = self._open_part(empty_schema)
        self._close_part()
        schema = self.schema or empty_schema
        columns = tuple((f.name, str(f.type)) for f in schema) if schema is not None else ()
        return self._write_manifest(columns, dict(extra or {}))

    def _write_manifest(
        self,
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
            bytes=sum(f.bytes for f in self._files) if total_bytes is None else total_bytes,
            files=tuple(self._files),
            schema=columns,
            committed_at=datetime.now(UTC).isoformat(),
            extra=extra,
        )
        fs = self.staging.fs
        tmp = f"{self.directory}/.{MANIFEST}.{uuid.uuid4().hex}"
        with fs.open(tmp, "w") as fh:
            fh.write(manifest.to_json())
        fs.mv(tmp, f"{self.directory}/{MANIFEST}")
        self._state = "committed"
        return manifest

    def commit_reference(
        self,
        *,
        urls: Sequence[str],
        rows: int,
        sizes: Sequence[int],
        checksums: Sequence[str],
        select: Sequence[tuple[str, str | None]],
        extra: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Commit a reference to immutable source files instead of a copy of their data.

        `select` lists the columns read and the SQL type each is cast to (None: as stored).
        The files' sizes and footer checksums let a resume verify they did not change.

        Raises:
            StagingError: the writer already wrote parts, or is committed or aborted.
        """
        self._check_open("commit")
        if self._files:
            raise StagingError(f"Node '{self.node}' wrote parts; it cannot also be a reference")
        self.rows = rows
        self._files = [
            StagedFile(url, 0, size, checksum)
            for url, size, checksum in zip(urls, sizes, checksums, strict=True)
        ]
        details = {"reference": {"select": [list(pair) for pair in select]}, **dict(extra or {})}
        self.schema = None
        return self._write_manifest(
            tuple((c, t or "as stored") for c, t in select), details, total_bytes=0
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
        if self._state == "open":
            self._state = "aborted"
        fs = self.staging.fs
        if fs.exists(self.directory) and not fs.exists(f"{self.directory}/{MANIFEST}"):
            fs.rm(self.directory, recursive=True)
