"""One output staged from partitions written apart: a partition's writer, its finish, the commit.

A partitioned executor runs one node's chunks as several partitions, on different machines,
with no lock between them; a partition may also run again elsewhere (its worker died). So
every writer writes names of its own, and each step is a whole-file write that can be repeated.
In the run's directory:

- `<node>.parts/<partition>/<attempt>/part-NNNNN.parquet`: the parts of one attempt at a
  partition (`attempt`: a random token of its writer), so no two writers, of two partitions or
  of two attempts at one, ever write the same name. `<node>.parts/<partition>/.<attempt>.partial
  .parquet` is the part being written.
- `<node>.parts/<partition>/finished.json`: the partition's finish, a `Manifest` of the
  attempt's parts (rows, bytes, footer checksums), written whole at once. A rerun that finishes
  replaces it: it always lists the parts of one attempt, never a mix of two.

`read_finishes` reads the finishes of many partitions at once: concurrently on a remote store
(one GET each, `_READERS` at a time), since a node of a thousand partitions would otherwise
wait for a thousand round trips in series; the coordinator reads them once per commit and
hands them to `commit_partitions` (and to its dataset checks) rather than reading again.

`commit_partitions` then commits the node from its finished partitions: one manifest listing
every partition's parts in partition order, in the footer of `<node>.parquet`, written as
atomically as a `NodeWriter`'s commit, so readers do not know the difference. It removes what
the finishes do not list: attempts that crashed or were replaced, partitions not committed. A
writer still running after the commit (its worker thought dead) leaves files no manifest lists;
`Staging.discard` and `Staging.delete_run` remove them with the rest of `<node>.parts`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from etlkit.errors import StagingError
from etlkit.storage.manifest import Manifest, StagedFile
from etlkit.storage.writer import PartsWriter, _describe, _encode

if TYPE_CHECKING:
    from etlkit.storage.root import StagingRoot

#: A partition's finish, in its directory (a partition name cannot hold '/', so no clash).
FINISHED: Final = "finished.json"
#: The key of a finish's `extra` holding the partition's Arrow schema (IPC, base64): the
#: commit writes it into the committed file, which must have the output's columns.
_SCHEMA_KEY: Final = "arrow_schema"
#: How many finishes `read_finishes` reads at once from a remote store: each is one small GET
#: whose time is the round trip, so a few dozen in flight hide it without flooding the store.
_READERS: Final = 32


class PartitionWriter(PartsWriter):
    """Writes one partition of a node's output; `finish` records it for the node's commit.

    It appends like a `NodeWriter` (the same casts, part sizes, Parquet encoding and staging
    thread), under names of its own attempt (see the module docstring), and never commits the
    node: `Staging.commit_partitions` does, once every partition is finished.
    """

    def __init__(
        self,
        staging: StagingRoot,
        pipeline: str,
        run_id: str,
        node: str,
        run_dir: str,
        partition: str,
        part_rows: int,
    ) -> None:
        self.partition = partition
        self.attempt = uuid.uuid4().hex
        self.partition_dir = f"{run_dir}/{node}.parts/{partition}"
        super().__init__(
            staging,
            pipeline,
            run_id,
            node,
            run_dir,
            part_rows,
            parts=f"{node}.parts/{partition}/{self.attempt}",
            partial=f"{self.partition_dir}/.{self.attempt}.partial.parquet",
        )
        self._finished: Manifest | None = None
        staging.makedirs(self.partition_dir)

    def finish(
        self, *, empty_schema: pa.Schema | None = None, extra: Mapping[str, Any] | None = None
    ) -> Manifest:
        """Close the last part and record the partition as finished: the manifest of its parts
        (returned), written whole to `<node>.parts/<partition>/finished.json`, replacing an
        earlier attempt's. Finishing again returns the same manifest and writes nothing.

        `empty_schema`: the columns of a partition that produced nothing, when known.

        Raises:
            StagingError: the writer is aborted, or a part could not be written.
        """
        if self._finished is not None:
            return self._finished
        self._check_open("finish")
        self.part_urls()  # writes what is held, closes the last part
        schema = self.schema if self.schema is not None else empty_schema
        details: dict[str, Any] = {"partition": self.partition, "attempt": self.attempt}
        if schema is not None:
            details[_SCHEMA_KEY] = base64.b64encode(schema.serialize().to_pybytes()).decode()
        manifest = Manifest(
            pipeline=self.pipeline,
            run_id=self.run_id,
            node=self.node,
            rows=self.rows,
            bytes=sum(f.bytes for f in self._files),
            files=tuple(self._files),
            schema=_columns(schema),
            committed_at=datetime.now(UTC).isoformat(),
            extra={**dict(extra or {}), **details},
        )
        data = pa.py_buffer(manifest.to_json().encode())
        temp = f"{self.partition_dir}/.{self.attempt}.{FINISHED}"
        _write_whole(self.staging, f"{self.partition_dir}/{FINISHED}", data, temp)
        self._state = "finished"
        self._finished = manifest
        return manifest

    def abort(self) -> None:
        """Discard this attempt's parts (never another's, nor a finish); safe to call again."""
        if self._state == "finished":
            return  # its parts are listed by its finish
        super().abort()


def commit_partitions(
    staging: StagingRoot,
    pipeline: str,
    run_id: str,
    node: str,
    run_dir: str,
    partitions: Sequence[str],
    *,
    empty_schema: pa.Schema | None = None,
    extra: Mapping[str, Any] | None = None,
    finishes: Mapping[str, Manifest | None] | None = None,
) -> Manifest:
    """Commit a node from its finished partitions (see the module docstring); `partitions` in
    the order their rows are read back. `extra` goes into the manifest, as in `NodeWriter.commit`.
    `finishes`: the partitions' finishes as `read_finishes` returned them (they are not read
    again); None: read them here.

    Raises:
        StagingError: a partition is not finished (naming every such one), is named twice,
            was finished for another run or node, or has other columns than the first; the
            node is already committed. Nothing is committed then.
    """
    marker = f"{node}.parquet"
    path = f"{run_dir}/{marker}"
    if staging.exists(path):
        raise StagingError(
            f"Node '{node}' of run {run_id} is already committed in {staging.url(path)}; "
            "committed outputs are immutable"
        )
    if finishes is None:
        finishes = read_finishes(staging, run_dir, node, partitions)
    finished = _finished(staging, (pipeline, run_id, node), run_dir, partitions, finishes)
    schema = _common_schema(finished, empty_schema)
    files = [f for record in finished for f in record.files]
    rows = sum(record.rows for record in finished)
    if not files and schema is not None:  # an empty output keeps its columns for readers
        files = [StagedFile(marker, 0, 0, "")]
    manifest = Manifest(
        pipeline=pipeline,
        run_id=run_id,
        node=node,
        rows=rows,
        bytes=sum(f.bytes for f in files),
        files=tuple(files),
        schema=_columns(schema),
        committed_at=datetime.now(UTC).isoformat(),
        extra=dict(extra or {}),
    )
    data = _encode([], schema if schema is not None else pa.schema([]), manifest)
    _write_whole(staging, path, data, f"{run_dir}/.{node}.partial.parquet")
    _remove_leftovers(staging, f"{run_dir}/{node}.parts", finished)
    return manifest.with_marker_size(marker, data.size)


def read_finishes(
    staging: StagingRoot,
    run_dir: str,
    node: str,
    partitions: Sequence[str],
    *,
    strict: bool = True,
) -> dict[str, Manifest | None]:
    """The finish of each of `partitions` of `node` (None: not finished, or corrupt and not
    `strict`), each read once, the reads concurrent on a remote store (see the module docstring).

    Raises:
        StagingError: a finish is corrupt (naming it), if `strict`; the store could not be
            read.
    """
    paths = [f"{run_dir}/{node}.parts/{p}/{FINISHED}" for p in partitions]
    try:
        if staging.local or len(paths) < 2:
            texts = [_read_finish(staging, path) for path in paths]
        else:
            with ThreadPoolExecutor(min(_READERS, len(paths)), "etlkit-finishes") as pool:
                texts = list(pool.map(lambda path: _read_finish(staging, path), paths))
    except OSError as exc:
        raise StagingError(
            f"Cannot read the finishes of node '{node}' in {run_dir}: {exc}"
        ) from exc
    found: dict[str, Manifest | None] = {}
    for partition, path, text in zip(partitions, paths, texts, strict=True):
        try:
            found[partition] = None if text is None else Manifest.from_json(text.decode())
        except (ValueError, KeyError, TypeError) as exc:
            if not strict:
                found[partition] = None
                continue
            raise StagingError(f"Partition finish {staging.url(path)} is corrupt: {exc}") from exc
    return found


def _read_finish(staging: StagingRoot, path: str) -> bytes | None:
    """A finish's bytes, in one read (None: there is none)."""
    try:
        return bytes(staging.fs.cat_file(path))
    except FileNotFoundError:
        return None


def _finished(
    staging: StagingRoot,
    output: tuple[str, str, str],
    run_dir: str,
    partitions: Sequence[str],
    finishes: Mapping[str, Manifest | None],
) -> list[Manifest]:
    """The finishes of `partitions` of `output` (pipeline, run id, node), in order, from
    `finishes` (as `read_finishes` returns them); raises naming every partition not finished."""
    pipeline, run_id, node = output
    repeated = sorted(p for p, n in Counter(partitions).items() if n > 1)
    if repeated:
        raise StagingError(f"Cannot commit node '{node}': partitions named twice: {repeated}")
    records, missing = [], []
    for partition in partitions:
        record = finishes.get(partition)
        if record is None:
            missing.append(partition)
            continue
        if (record.pipeline, record.run_id, record.node) != output:
            path = f"{run_dir}/{node}.parts/{partition}/{FINISHED}"
            raise StagingError(
                f"{staging.url(path)} was finished for node '{record.node}' of run "
                f"{record.run_id} of '{record.pipeline}'"
            )
        records.append(record)
    if missing:
        raise StagingError(
            f"Cannot commit node '{node}' of pipeline '{pipeline}' (run {run_id}): "
            f"{len(missing)} of its {len(partitions)} partitions are not finished: "
            f"{', '.join(missing)}; run them (again) before the commit"
        )
    return records


def _common_schema(
    finished: Sequence[Manifest], empty_schema: pa.Schema | None
) -> pa.Schema | None:
    """The output's columns: the first partition's with rows (or with columns), which every
    other partition with rows must have too (a commit cannot cast parts already written)."""
    first: Manifest | None = None
    schema = empty_schema
    for record in sorted(finished, key=lambda r: r.rows == 0):  # stable: partition order
        text = record.extra.get(_SCHEMA_KEY)
        if text is None:
            continue
        theirs = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
        if first is None:
            first, schema = record, theirs
        elif record.rows and not theirs.equals(schema):
            assert schema is not None
            raise StagingError(
                f"Cannot commit node '{record.node}' (run {record.run_id}): partition "
                f"'{record.extra['partition']}' has columns {_describe(theirs)}, partition "
                f"'{first.extra['partition']}' {_describe(schema)}; every partition of a node "
                "must produce the same columns, of the same types"
            )
    return schema


def _columns(schema: pa.Schema | None) -> tuple[tuple[str, str], ...]:
    return tuple((f.name, str(f.type)) for f in schema) if schema is not None else ()


def _write_whole(staging: StagingRoot, path: str, data: pa.Buffer, temp: str) -> None:
    """Write a file that appears complete or not at all (replacing one that exists)."""
    if staging.object_store:
        staging.write_bytes(path, data)  # one upload
    else:
        staging.write_bytes(temp, data)
        staging.rename(temp, path)


def _listdir(staging: StagingRoot, path: str) -> list[str]:
    """The names in a directory ([] if it does not exist), fresh from the store: other
    machines wrote there."""
    if staging.local:
        try:
            return os.listdir(path)  # noqa: PTH208
        except FileNotFoundError:
            return []
    with contextlib.suppress(FileNotFoundError):
        entries = staging.fs.ls(path, detail=False, refresh=True)
        return [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]
    return []


def _remove_leftovers(staging: StagingRoot, parts: str, finished: Sequence[Manifest]) -> None:
    """Remove all under `<node>.parts` that the committed manifest does not list: the
    finishes, earlier or crashed attempts, partitions not committed."""
    kept = {str(r.extra["partition"]): str(r.extra["attempt"]) for r in finished}
    for name in _listdir(staging, parts):
        if name not in kept:
            staging.remove(f"{parts}/{name}")
            continue
        for entry in _listdir(staging, f"{parts}/{name}"):
            if entry != kept[name]:
                staging.remove(f"{parts}/{name}/{entry}")
