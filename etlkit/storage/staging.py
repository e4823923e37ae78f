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
- `<node>.parts/<partition>/...`: an output written as partitions, apart (`partitions`: each
  partition's attempts and finish, until `commit_partitions` commits the node as above).

One file for a typical node: creating files and directories is what a node's staging costs most
on local disks (a new directory and the first file in it each cost more than writing a small part).
Runs staged by etlkit before this layout (`<node>/part-NNNNN.parquet` and `<node>/_manifest.json`)
are still read, resumed and deleted.

The pieces: `root` (the filesystem and its file operations), `paths` (which names are safe),
`manifest` (what a committed output holds, and its JSON), `writer` (writing one node's output),
`partitions` (writing it as partitions, on several machines, and committing them as one);
this module is the layout of runs and nodes under the root: paths, a node's writer, listing,
reading back, verifying and removing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa

from etlkit.errors import StagingError
from etlkit.storage.manifest import LEGACY_MANIFEST, MANIFEST_KEY, Manifest, StagedFile
from etlkit.storage.parquet import PARQUET, footer_checksum, parquet_batches
from etlkit.storage.partitions import PartitionWriter, commit_partitions
from etlkit.storage.paths import check_path_part, is_safe_name
from etlkit.storage.root import StagingRoot
from etlkit.storage.writer import NodeWriter, conform_chunk

__all__ = [
    "LEGACY_MANIFEST",
    "MANIFEST_KEY",
    "Manifest",
    "NodeWriter",
    "PartitionWriter",
    "StagedFile",
    "Staging",
    "check_path_part",
    "conform_chunk",
    "is_safe_name",
]


class Staging(StagingRoot):
    """The staging area under one root URL (a local directory, `s3://bucket/prefix`, ...).

    On S3 the credentials and endpoint are `storage_options` (s3fs's: key, secret,
    endpoint_url, ...) or, without them, s3fs's defaults: the AWS_* environment variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), ~/.aws, instance roles. The
    bucket must exist: staging never creates one.
    """

    def __init__(self, root: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(root, storage_options=storage_options)
        # run directories this object created, with the nodes it gave a writer there: a node's
        # first writer in such a directory has no leftovers or commit to look for
        self._created: dict[str, set[str] | None] = {}
        self._run_dirs: dict[tuple[str, str], str] = {}  # checked names, joined
        self._lock = threading.Lock()

    # -- layout -------------------------------------------------------------------------------

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

    def _remove_legacy(self, run_dir: str, node: str) -> None:
        """Remove a node's directory of the older layout, if any (only a directory: a file
        `<run dir>/<node>` is another node's commit, as in a node named `x.parquet`)."""
        path = f"{run_dir}/{node}"
        if os.path.isdir(path) if self.local else self.fs.isdir(path):  # noqa: PTH112
            self.remove(path)

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
            if self.exists(committed):
                raise StagingError(
                    f"Node '{node}' of run {run_id} is already committed in "
                    f"{self.url(committed)}; committed outputs are immutable"
                )
        try:
            self.remove(f"{run_dir}/{node}.parts")
            self._remove_legacy(run_dir, node)
            self._prepare(run_dir)
        except OSError as exc:
            raise StagingError(f"Cannot prepare staging directory {run_dir}: {exc}") from exc
        return NodeWriter(self, pipeline, run_id, node, run_dir, part_rows)

    def _prepare(self, run_dir: str) -> None:
        """Create the run directory (on object stores: check that the bucket exists)."""
        if not self.object_store:
            self.makedirs(run_dir)
        elif not self.fs.exists(self.root.split("/", 1)[0]):
            raise StagingError(
                f"Cannot stage under {self.root_url}: its bucket does not exist, or these "
                "credentials cannot see it (staging never creates buckets); create it, or "
                "check AWS_ENDPOINT_URL and the credentials"
            )

    def partition_writer(
        self, pipeline: str, run_id: str, node: str, partition: str, *, part_rows: int = 8_388_608
    ) -> PartitionWriter:
        """A writer for one partition of a node's output, written apart from the others (on
        another machine, say); `commit_partitions` commits the node once all are finished.
        Each writer writes names of its own: a partition run again does not add to an
        earlier attempt's parts, and its finish replaces the earlier one's.

        Raises:
            StagingError: the node is already committed in this run, a name is not path-safe,
                or the root is unusable.
        """
        run_dir = self.run_dir(pipeline, run_id)
        marker = self.output_path(pipeline, run_id, node)
        check_path_part("partition", partition)
        if self.exists(marker):
            raise StagingError(
                f"Node '{node}' of run {run_id} is already committed in {self.url(marker)}; "
                "committed outputs are immutable"
            )
        try:
            self._prepare(run_dir)
            return PartitionWriter(self, pipeline, run_id, node, run_dir, partition, part_rows)
        except OSError as exc:
            raise StagingError(f"Cannot prepare staging directory {run_dir}: {exc}") from exc

    def commit_partitions(
        self,
        pipeline: str,
        run_id: str,
        node: str,
        partitions: Sequence[str],
        *,
        empty_schema: pa.Schema | None = None,
        extra: Mapping[str, Any] | None = None,
        finishes: Mapping[str, Manifest | None] | None = None,
    ) -> Manifest:
        """Commit a node's output from its finished partitions, in the order given, as
        atomically as `NodeWriter.commit`; remove parts no finish lists. `finishes`: as
        `partitions.read_finishes` gave them, not read again (None: read them here).

        Raises:
            StagingError: a partition is not finished (each named), is named twice, or has
                other columns; the node is already committed. Nothing is committed then.
        """
        run_dir = self.run_dir(pipeline, run_id)
        self.output_path(pipeline, run_id, node)  # checks the node's name
        for partition in partitions:
            check_path_part("partition", partition)
        try:
            return commit_partitions(
                self,
                pipeline,
                run_id,
                node,
                run_dir,
                partitions,
                empty_schema=empty_schema,
                extra=extra,
                finishes=finishes,
            )
        except OSError as exc:
            raise StagingError(f"Cannot commit node '{node}' in {run_dir}: {exc}") from exc

    # -- reading ------------------------------------------------------------------------------

    def manifest(self, pipeline: str, run_id: str, node: str) -> Manifest | None:
        """The node's manifest if its output is committed, else None.

        Raises:
            StagingError: the committed file is damaged or not an etlkit output.
        """
        import pyarrow.parquet as pq  # here, as below: a run that stages nothing never loads it

        path = self.output_path(pipeline, run_id, node)
        try:
            if self.local:
                metadata = pq.read_metadata(path)
            else:
                with self.fs.open(path, "rb") as fh:
                    metadata = pq.read_metadata(fh)
            size = self.size(path)
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
                if is_safe_name(base) and self.exists(f"{run_dir}/{base}/{LEGACY_MANIFEST}"):
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
        import pyarrow.parquet as pq

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
                    import fsspec  # here: a run over local staging alone never loads it

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
        self.remove(self.output_path(pipeline, run_id, node))
        self.remove(f"{run_dir}/{node}/{LEGACY_MANIFEST}")
        self.remove(f"{run_dir}/{node}.parts")
        self.remove(f"{run_dir}/.{node}.partial.parquet")
        self._remove_legacy(run_dir, node)

    def delete_run(self, pipeline: str, run_id: str) -> None:
        """Remove everything a run staged (commits first, so nothing looks committed)."""
        base = self.run_dir(pipeline, run_id)
        with self._lock:
            self._created.pop(base, None)
        if not self.fs.exists(base):
            return
        for name in self.committed(pipeline, run_id):
            self.remove(self.output_path(pipeline, run_id, name))
            self.remove(f"{base}/{name}/{LEGACY_MANIFEST}")
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
