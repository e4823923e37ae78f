"""Hive-partitioned Parquet datasets: `ParquetDatasetSink`, replacing a dataset as a whole."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from connectors.files.columns import Conformer, did_you_mean
from connectors.files.paths import (
    FileSink,
    display,
    filesystem,
    object_store,
    os_error,
    prepare_parent,
    remove,
    temp_path,
    temporaries,
)
from etlkit.connector import Context, Model, Node, WriteResult
from etlkit.errors import ConnectorError, quoted

logger = logging.getLogger(__name__)


class ParquetDatasetSink(FileSink):
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
        super().__init__(path, input, schema=schema, conn=conn)
        if isinstance(partition_by, str):
            raise ConnectorError(
                f"ParquetDatasetSink for {path!r}: partition_by takes a list of column names; "
                f"write partition_by=[{partition_by!r}]."
            )
        unsafe = [c for c in partition_by if not c or "/" in c or "=" in c or c.startswith(".")]
        if unsafe or not partition_by:
            raise ConnectorError(
                f"ParquetDatasetSink for {path!r}: partition columns {quoted(partition_by)} "
                "must be non-empty names without '/', '=' or a leading '.'."
            )
        self.partition_by = list(partition_by)
        self.max_partitions = max_partitions

    def write(self, batches: Iterator[pa.RecordBatch], ctx: Context) -> WriteResult:
        where = self._where()
        conform = Conformer(where, self.input_model)
        counter = {"rows": 0}

        def conformed(first: pa.RecordBatch | None) -> Iterator[pa.RecordBatch]:
            if first is not None:
                counter["rows"] += first.num_rows
                yield first
            for batch in batches:
                batch = conform(batch)
                counter["rows"] += batch.num_rows
                yield batch

        fs, path = filesystem(where, ctx.render(self.path), self.conn)
        temp = temp_path(path, ctx)
        committed = False
        try:
            prepare_parent(where, fs, path)
            first = next(batches, None)
            first = conform(first) if first is not None else None
            schema = conform.schema
            if schema is not None:
                self._write_dataset(where, fs, temp, schema, conformed(first))
            if not object_store(fs):  # an empty input commits an empty directory
                fs.makedirs(temp, exist_ok=True)
            files = fs.find(temp, detail=True)
            size = sum(int(info.get("size") or 0) for info in files.values())
            self._commit(fs, temp, path, ctx)
            committed = True
        except OSError as exc:  # permissions, a read-only or full disk: named by the target
            raise os_error(where, "write", fs, path, exc) from exc
        finally:
            if not committed:
                remove(fs, temp)
        logger.debug(
            "%s: wrote %d rows in %d files to %s",
            where,
            counter["rows"],
            len(files),
            display(fs, path),
        )
        return WriteResult(
            rows=counter["rows"],
            uri=str(fs.unstrip_protocol(path)),
            extra={"bytes": size, "files": len(files)},
        )

    def discard_leftovers(self, ctx: Context) -> list[str]:
        """Remove what attempts of this run left; a kill between the commit's two moves left
        the previous dataset moved aside and none at `path`: it is moved back first."""
        fs, path = filesystem(self._where(), ctx.render(self.path), self.conn)
        aside = temporaries(fs, path, ctx, "old")
        if len(aside) == 1 and not fs.exists(path):
            _move(fs, aside[0], path)
            logger.info("%s: moved %s back into place", self._where(), display(fs, path))
        return super().discard_leftovers(ctx)

    def _write_dataset(
        self, where: str, fs: Any, temp: str, schema: pa.Schema, data: Iterator[pa.RecordBatch]
    ) -> None:
        missing = [c for c in self.partition_by if c not in schema.names]
        if missing:
            raise ConnectorError(
                f"{where}: partition column(s) {quoted(missing)} are not in the input; its "
                f"columns are {quoted(schema.names)}.{did_you_mean(missing, schema.names)}"
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
        old = temp_path(path, ctx, kind="old")
        _move(fs, path, old)
        try:
            _move(fs, temp, path)
        except BaseException:
            _move(fs, old, path)
            raise
        remove(fs, old)


def _move(fs: Any, source: str, target: str) -> None:
    """Move a directory tree: a rename where directories exist; on object stores a copy of each
    object, then a delete (fsspec's recursive move trips over S3's pseudo-directories)."""
    if not object_store(fs):
        fs.mv(source, target, recursive=True)
        return
    files = fs.find(source)
    if files:
        fs.copy(files, [target + name[len(source) :] for name in files])
    remove(fs, source)
