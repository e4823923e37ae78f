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

import contextlib
import json
import os
import queue
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from etlkit.errors import StagingError
from etlkit.storage.formats import FileFormat, file_format
from etlkit.storage.parquet import PARQUET, footer_checksum, parquet_batches

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
    def reference_format(self) -> FileFormat | None:
        """For a reference to a source's own files: the format they are read in (None for
        staged parts). References staged before formats were named hold a `csv` layout, or
        nothing for Parquet files.

        Raises:
            StagingError: no installed package provides the format.
        """
        reference = self.extra.get("reference")
        if not isinstance(reference, Mapping):
            return None
        if reference.get("csv") is not None:
            return file_format("csv", reference["csv"])
        return file_format(str(reference.get("format", "parquet")), reference.get("options"))

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
        reference = manifest.reference_format
        if reference is not None and select is not None:
            urls = [f.name for f in manifest.files]
            columns = [c for c, _ in select]
            yield from reference.batches(urls, columns=columns, batch_size=batch_size)
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
        read_as = manifest.reference_format or PARQUET
        problems = []
        for staged in manifest.files:
            if staged.name == f"{node}.parquet":
                continue  # the committed file itself: read whole above, manifest included
            path = staged.name if reference else f"{run_dir}/{staged.name}"
            shown = path if reference else self.url(path)
            try:
                if reference:
                    fs, local = fsspec.core.url_to_fs(path)
                    size, checksum = read_as.fingerprint(fs, local)
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
        reference: dict[str, Any] = {
            "select": [list(pair) for pair in select],
            "format": read_as.name,
            "options": read_as.to_json(),
        }
        stored = {c: "as stored" for c, _ in select}
        if read_as.schema is not None:
            stored = {f.name: str(f.type) for f in read_as.schema}
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
