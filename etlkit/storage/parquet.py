"""The Parquet file format: how etlkit reads Parquet files, its own staged parts and a source's
files staged as a reference alike.

It owns reading row groups in bounded windows (`parquet_batches`), the footer checksum that
tells a file changed (`footer_checksum`), what footers prove without reading a value
(`parquet_statistics`: extremes, null counts, dictionary values, as `ColumnStats`), and
`ParquetFormat` (`PARQUET`), the `storage.formats.FileFormat` a reference to Parquet files
uses. It imports only `etlkit.errors` and `dictionary_pages` (a text column's dictionary pages,
read alone): staging, the formats registry and the checks build on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from etlkit.errors import StagingError
from etlkit.storage.dictionary_pages import dictionary_values

if TYPE_CHECKING:
    import polars as pl
    import pyarrow.parquet as pq

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


@dataclass(frozen=True)
class ColumnStats:
    """A column's statistics over whole files: extremes (None when unknown), null count, and for
    dictionary-encoded text columns every value the dictionaries hold (None when not read).

    `kind` is the Arrow type the extremes are values of, None when the files disagree on it or it
    has no order statistics can be trusted with (floats, dictionaries). Temporal extremes
    (timestamps, times, dates, durations) are the integers Parquet stores, counted in `kind`'s
    unit: Python's `datetime` and `time` stop at microseconds.
    """

    minimum: Any
    maximum: Any
    null_count: int | None
    floating: bool
    values: frozenset[str] | None = None
    kind: pa.DataType | None = None


#: Arrow's text types, as `str(type)` spells them.
_TEXT_TYPES: Final = ("string", "large_string", "string_view")
#: Arrow's floating-point types, as `str(type)` spells them.
_FLOAT_TYPES: Final = ("float", "double", "halffloat")
#: Past this many distinct values a column's dictionaries are not worth collecting.
_MAX_DICTIONARY_VALUES: Final = 4096


def parquet_statistics(
    paths: Sequence[str],
    columns: Sequence[str],
    *,
    values_of: Sequence[str] = (),
    metadata: Sequence[Any] = (),
) -> dict[str, ColumnStats]:
    """Every row group's statistics of `columns` in these Parquet files, combined per column.

    A column missing statistics in any row group gets unknown extremes or null count. For the
    text columns in `values_of` that are dictionary-encoded in every row group, `values` is
    the union of the dictionaries: a superset of the values present, read from the dictionary
    pages alone where every data page uses them (else decoded as dictionaries, without
    materializing any string: a fraction of a full scan). `metadata`: the
    files' parsed footers (`pyarrow.parquet.FileMetaData`, in `paths` order) when the caller
    has them, so they are not parsed again.
    """
    import pyarrow.parquet as pq

    footers = list(metadata) or [pq.read_metadata(path) for path in paths]
    lows: dict[str, list[Any]] = {}
    highs: dict[str, list[Any]] = {}
    nulls: dict[str, int | None] = {}
    floating: dict[str, bool] = {}
    kinds: dict[str, list[pa.DataType | None]] = {}
    dictionary_coded = set(values_of)
    for footer in footers:
        types = {field.name: field.type for field in footer.schema.to_arrow_schema()}
        # (index, name, text, raw) of the wanted columns: a wide file's other columns are never
        # looked at (their statistics would be objects per column and row group)
        picked: list[tuple[int, str, bool, bool]] = []
        for index in range(footer.num_columns):
            column = footer.schema.column(index)
            name = column.path
            if name in columns:
                kind = str(types.get(name, ""))
                floating[name] = floating.get(name, False) or kind in _FLOAT_TYPES
                ordered = _ordered_kind(column, types.get(name))
                kinds.setdefault(name, []).append(ordered)
                raw = ordered is not None and _is_temporal(ordered)
                picked.append((index, name, kind in _TEXT_TYPES, raw))
                lows.setdefault(name, [])
                highs.setdefault(name, [])
                nulls.setdefault(name, 0)
        for group in range(footer.num_row_groups):
            row_group = footer.row_group(group)
            for index, name, text, raw in picked:
                chunk = row_group.column(index)
                if not (text and chunk.has_dictionary_page):
                    dictionary_coded.discard(name)
                stats = chunk.statistics
                low, high = _row_group_extremes(stats, raw)
                lows[name].append(low)
                highs[name].append(high)
                counted = nulls[name]
                if counted is not None:
                    has_count = stats is not None and stats.has_null_count
                    nulls[name] = counted + stats.null_count if has_count else None
    merged = {
        name: ColumnStats(
            *_extremes(lows[name], highs[name]),
            nulls[name],
            floating[name],
            kind=_same_kind(kinds[name]),
        )
        if len(kinds[name]) == len(footers)
        # a file without the column: its rows' values are unknown
        else ColumnStats(None, None, None, floating[name])
        for name in lows
    }
    # (a file without the column has no dictionary to read)
    complete = [c for c in values_of if c in merged and len(kinds[c]) == len(footers)]
    wanted = [c for c in complete if c in dictionary_coded]
    for name, values in _dictionary_values(paths, footers, wanted).items():
        merged[name] = replace(merged[name], values=values)
    return merged


def _ordered_kind(column: Any, kind: pa.DataType | None) -> pa.DataType | None:
    """The Arrow type a Parquet column's statistics are exact values of (see `ColumnStats`).

    None for floats (statistics leave NaN out), dictionaries (polars orders categories its own
    way), and temporal columns whose stored unit is not the Arrow type's (INT96 timestamps).
    """
    import pyarrow as pa

    if kind is None or pa.types.is_floating(kind) or pa.types.is_dictionary(kind):
        return None
    if not _is_temporal(kind):
        return kind
    physical = column.physical_type
    if pa.types.is_date(kind):
        return pa.date32() if physical == "INT32" else None
    if physical not in ("INT32", "INT64") or not (
        pa.types.is_timestamp(kind) or pa.types.is_time(kind) or pa.types.is_duration(kind)
    ):
        return None
    if pa.types.is_duration(kind):  # no Parquet type: the Arrow type's integers are stored
        return kind
    stored = json.loads(column.logical_type.to_json()).get("timeUnit")
    return kind if _UNITS.get(stored) == kind.unit else None


#: Parquet's time units, as Arrow spells them.
_UNITS: Final = {"milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns"}


def _is_temporal(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_temporal(kind))


def _row_group_extremes(stats: Any, raw: bool) -> tuple[Any, Any]:
    """A row group's minimum and maximum (None when unknown): temporal values as the integers
    stored, since Python's `datetime` and `time` would cut nanoseconds off."""
    if stats is None or not stats.has_min_max:
        return None, None
    try:
        return (stats.min_raw, stats.max_raw) if raw else (stats.min, stats.max)
    except ValueError:  # text cut inside a character by a writer that truncates statistics
        return None, None


def _same_kind(kinds: list[pa.DataType | None]) -> pa.DataType | None:
    """The type every file agrees on, else None."""
    first = kinds[0] if kinds else None
    if first is None or any(k is None or not k.equals(first) for k in kinds):
        return None
    return first


def _extremes(lows: list[Any], highs: list[Any]) -> tuple[Any, Any]:
    """The smallest low and largest high; both None when one is unknown or they do not compare."""
    if not lows or None in lows or None in highs:
        return None, None
    try:
        return min(lows), max(highs)
    except TypeError:
        return None, None


def _dictionary_values(
    paths: Sequence[str], footers: Sequence[Any], columns: list[str]
) -> dict[str, frozenset[str]]:
    """The union of each column's dictionaries; a column with too many values is left out.

    Each file's dictionary pages are read alone where they are known to cover the chunk's
    values (`dictionary_pages`); other columns are decoded as dictionaries, every data page.
    """
    import pyarrow.parquet as pq

    found: dict[str, set[str | None]] = {c: set() for c in columns}
    for path, footer in zip(paths, footers, strict=True):
        if not found:
            break
        names = []  # the columns whose dictionaries are decoded, below
        for name in list(found):
            pages = dictionary_values(path, footer, name, limit=_MAX_DICTIONARY_VALUES)
            if pages is None:
                names.append(name)
            elif len(found[name] | pages) > _MAX_DICTIONARY_VALUES:
                del found[name]
            else:
                found[name].update(pages)
        if not names:
            continue
        parquet = pq.ParquetFile(path, metadata=footer, read_dictionary=names)
        for batch in parquet_batches(parquet, batch_size=1 << 20, columns=names):
            for name in [n for n in names if n in found]:
                found[name].update(batch.column(name).dictionary.to_pylist())
                if len(found[name]) > _MAX_DICTIONARY_VALUES:
                    del found[name]
            if not any(n in found for n in names):
                break
    return {name: frozenset(v for v in values if v is not None) for name, values in found.items()}


@dataclass(frozen=True)
class ParquetFormat:
    """Parquet files as a `storage.formats.FileFormat`: they describe themselves (schema, row
    counts and statistics in their footers), so it has no options and no parsed schema."""

    @property
    def name(self) -> str:
        return "parquet"

    @property
    def schema(self) -> pa.Schema | None:
        return None  # each file's footer holds its own

    def to_json(self) -> dict[str, Any]:
        return {}

    def batches(
        self, urls: Sequence[str], *, columns: Sequence[str], batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        import fsspec
        import pyarrow.parquet as pq

        for url in urls:
            fs, path = fsspec.core.url_to_fs(url)
            with fs.open(path, "rb") as fh:
                yield from parquet_batches(
                    pq.ParquetFile(fh), batch_size=batch_size, columns=list(columns)
                )

    def frame(
        self, urls: Sequence[str], *, storage_options: Mapping[str, Any] | None = None
    ) -> pl.LazyFrame:
        import polars as pl

        return pl.scan_parquet(list(urls), storage_options=dict(storage_options or {}) or None)

    def scan(self, con: Any, urls: Sequence[str], name: str, *, union_by_name: bool = False) -> str:
        del con, name  # DuckDB reads Parquet itself: nothing to register
        files = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in urls) + "]"
        return f"read_parquet({files}{', union_by_name = true' if union_by_name else ''})"

    def duckdb_paths(self, urls: Sequence[str]) -> list[str]:
        return list(urls)

    def fingerprint(self, fs: Any, path: str) -> tuple[int, str]:
        return footer_checksum(fs, path)

    def readers_agree(self, metadata: Sequence[Any], columns: Sequence[str]) -> bool:
        """False when a column read is stored as INT96 (legacy nanosecond timestamps): polars
        reads nanoseconds, DuckDB microseconds, so only a copy reads the same everywhere."""
        for footer in metadata:
            schema = footer.schema
            for i in range(len(schema)):
                column = schema.column(i)
                if column.physical_type == "INT96" and column.path.split(".")[0] in columns:
                    return False
        return True

    def statistics(
        self,
        urls: Sequence[str],
        columns: Sequence[str],
        *,
        values_of: Sequence[str] = (),
        metadata: Sequence[Any] = (),
    ) -> Mapping[str, ColumnStats]:
        if any("://" in url for url in urls):
            return {}  # `parquet_statistics` opens local paths (footers, dictionaries)
        return parquet_statistics(urls, columns, values_of=values_of, metadata=metadata)


#: The Parquet format (it has no options).
PARQUET: Final = ParquetFormat()
