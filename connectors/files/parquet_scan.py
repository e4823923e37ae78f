"""How `ParquetSource` decodes a file: a whole local one by polars, row groups by pyarrow.

polars' Parquet decoder spends about half pyarrow's CPU on the columns a chunked job reads
(integers, decimals, dates, text), and the per-chunk path is bound by that decode. It runs in
polars' streaming engine (`collect_batches`), which pushes back: the batches a consumer has
not taken yet are bounded, not the file; dropping the reader stops the query.

`polars_readable` tells which files take this path: a local file whose columns to read all
have stored types polars reads to the same values and an Arrow type `ParquetSource`'s casts
know (other files, and partitions of row groups, keep pyarrow's reader). `polars_batches`
yields the batches, each no longer than `chunk_rows`; a failure mid-file is a
`ConnectorError` naming the file.

A partition of a big file (for a partitioned executor) is a run of its row groups:
`group_rows` reads their sizes from the footer, `spans` cuts them into runs of at most so many
rows, and `group_batches` reads one run with pyarrow, in bounded windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from etlkit.errors import ConnectorError


def polars_readable(stored: pa.Schema, columns: Sequence[str]) -> bool:
    """Whether each of `columns` of a file of schema `stored` is of a type polars reads as
    pyarrow does (same values; text as views, which the source's casts turn into text)."""
    return bool(columns) and all(_plain(stored.field(name).type) for name in columns)


def _plain(kind: pa.DataType) -> bool:
    t = pa.types
    if t.is_decimal(kind):
        return isinstance(kind, pa.Decimal128Type)  # polars has no 256-bit decimals
    return bool(
        t.is_integer(kind)
        or t.is_float32(kind)
        or t.is_float64(kind)
        or t.is_boolean(kind)
        or t.is_date32(kind)
        or t.is_string(kind)
        or t.is_large_string(kind)
        or t.is_string_view(kind)
    )


def polars_batches(
    path: str, columns: Sequence[str], chunk_rows: int, where: str, shown: str
) -> Iterator[pa.RecordBatch]:
    """The record batches of `columns` of the local Parquet file `path`, in its order, none
    longer than `chunk_rows` (`where` and `shown` name the source and file in errors).

    Raises:
        ConnectorError: the file cannot be decoded (a damaged page, say).
    """
    import polars as pl

    # a literal file path: no glob, no `key=value` folders read as columns
    frame = pl.scan_parquet(path, glob=False, hive_partitioning=False).select(list(columns))
    reader: Any = None
    try:
        reader = pa.RecordBatchReader.from_stream(frame.collect_batches(chunk_size=chunk_rows))
        for batch in reader:
            if batch.num_rows <= chunk_rows:
                yield batch
                continue
            for start in range(0, batch.num_rows, chunk_rows):
                yield batch.slice(start, chunk_rows)
    except (pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise ConnectorError(
            f"{where}: file {shown} cannot be read: {exc}; check that it is complete and not "
            "being written to."
        ) from exc
    finally:
        if reader is not None:
            reader.close()  # stops the query when the consumer stops early


#: A row-group partition's groups are read in windows of about this many batches, as whole
#: files are (see `etlkit.connector.parquet_batches`).
_WINDOW_BATCHES: Final = 16


def group_rows(fs: Any, path: str) -> list[int] | None:
    """The rows of each of a file's row groups, from its footer; None when it cannot be read."""
    try:
        with fs.open(path, "rb") as handle:
            metadata = pq.read_metadata(handle)
    except (pa.ArrowInvalid, OSError):
        return None
    return [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]


def spans(counts: list[int], most: int) -> list[tuple[int, int]]:
    """Consecutive row groups (first, end) of at most `most` rows each (or one larger group)."""
    found: list[tuple[int, int]] = []
    first, held = 0, 0
    for group, rows in enumerate(counts):
        if group > first and held + rows > most:
            found.append((first, group))
            first, held = group, 0
        held += rows
    if counts:
        found.append((first, len(counts)))
    return found


def group_batches(
    parquet: pq.ParquetFile,
    groups: range,
    batch_size: int,
    columns: list[str],
    convert: Callable[[pa.RecordBatch, int], pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """The batches of row groups `groups` only, converted (`convert(batch, first_row)`, rows
    counted from the file's start). `parquet_batches` reads a whole file; here windows of
    consecutive groups of at least `_WINDOW_BATCHES` batches are read by one `iter_batches`
    each, so memory stays bounded as it does there."""
    metadata = parquet.metadata
    row = sum(metadata.row_group(g).num_rows for g in range(groups.start))
    windows: list[list[int]] = [[]]
    held = 0
    for group in groups:
        if held >= batch_size * _WINDOW_BATCHES:
            windows.append([])
            held = 0
        windows[-1].append(group)
        held += metadata.row_group(group).num_rows
    for window in windows:
        for batch in parquet.iter_batches(
            batch_size=batch_size, row_groups=window, columns=columns
        ):
            yield convert(batch, row)
            row += batch.num_rows
