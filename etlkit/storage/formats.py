"""File formats behind one protocol: what etlkit needs to know of a source's files to stage a
verified reference to them instead of a copy, and to read that reference back.

A format (`FileFormat`) reads batches of the files exactly as the source parsed them, gives
DuckDB a relation over them (SQL nodes, dataset checks, `etlkit query`) and polars a lazy
frame, fingerprints each file so a resume detects a change, and says what its metadata proves
(footer statistics) or nothing. `file_format(name, options)` resolves a format by the name a
manifest records: the built-in `parquet` (`storage.parquet`), else the `etlkit.formats`
entry-point group (connectors.files declares `csv`), read on use. Only this module and
`storage.parquet` know any format's layout; staging, checks, the engine and querying call the
protocol. It imports `etlkit.errors` and `storage.parquet` only.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Final, Protocol

from etlkit.errors import StagingError, quoted
from etlkit.storage.parquet import PARQUET, ColumnStats

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

#: The entry-point group naming third-party formats: `csv = "connectors.files:CsvLayout.from_json"`,
#: a callable from the format's options (`FileFormat.to_json`) to the format.
ENTRY_POINT_GROUP: Final = "etlkit.formats"
#: Where formats etlkit knows of come from, for the error naming a missing one.
_PROVIDERS: Final = {"csv": "etlkit's file connectors (pip install etlkit-framework)"}


class FileFormat(Protocol):
    """How a source's files are read, wherever a reference to them is read.

    `schema` is the columns and types the format's options parse the files into (CSV), or None
    when the files describe themselves (Parquet footers: schema, row counts, statistics), so
    that their row count is known without reading them and a reference trusts them unread.
    """

    @property
    def name(self) -> str:
        """The name a manifest records and `file_format` resolves."""
        ...

    @property
    def schema(self) -> pa.Schema | None:
        """The columns read, in order, with their types; None: as each file stores them."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The format's options as JSON values, from which its factory builds it again."""
        ...

    def batches(
        self, urls: Sequence[str], *, columns: Sequence[str], batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        """The files' record batches in order, as the source read them, about `batch_size`
        rows each, of `columns` (a format whose options fix the columns may ignore it)."""
        ...

    def frame(
        self, urls: Sequence[str], *, storage_options: Mapping[str, Any] | None = None
    ) -> pl.LazyFrame:
        """A polars lazy frame over the files, read as the source read them."""
        ...

    def scan(self, con: Any, urls: Sequence[str], name: str, *, union_by_name: bool = False) -> str:
        """What DuckDB connection `con` reads the files from, for a FROM clause: a table
        function, or a dataset registered on `con` as `name`. `union_by_name`: files may differ
        in their columns, matched by name."""
        ...

    def duckdb_paths(self, urls: Sequence[str]) -> list[str]:
        """The files DuckDB itself opens for `scan` (its `allowed_paths`); [] when another
        reader parses them for it."""
        ...

    def fingerprint(self, fs: Any, path: str) -> tuple[int, str]:
        """A file's byte size and a checksum that changes when the file does, as hex."""
        ...

    def readers_agree(self, metadata: Sequence[Any], columns: Sequence[str]) -> bool:
        """Whether polars, DuckDB and pyarrow read these columns of the files to the same values
        (`metadata`: what the source parsed of them, such as Parquet footers)."""
        ...

    def statistics(
        self,
        urls: Sequence[str],
        columns: Sequence[str],
        *,
        values_of: Sequence[str] = (),
        metadata: Sequence[Any] = (),
    ) -> Mapping[str, ColumnStats]:
        """What the files' metadata proves of `columns` for every row (extremes, null counts;
        the dictionary values of `values_of`), without reading a value; {} when nothing."""
        ...


def file_format(name: str, options: Mapping[str, Any] | None = None) -> FileFormat:
    """The format a manifest names, built from its options: `parquet`, or one an installed
    package declares in the `etlkit.formats` entry-point group.

    Raises:
        StagingError: no installed package declares the format, or its options are invalid.
    """
    if name == "parquet":
        return PARQUET
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = sorted({"parquet", *entry_points(group=ENTRY_POINT_GROUP).names})
        provider = _PROVIDERS.get(name, "the package that provides it")
        raise StagingError(
            f"No file format is installed under the name '{name}', which a staged reference "
            f"to a source's files is read in. Installed: {quoted(known)}. Install {provider} "
            f'(a package declares a format in its [project.entry-points."{ENTRY_POINT_GROUP}"] '
            "table)."
        )
    entry = next(iter(found))
    try:
        factory: Callable[[Mapping[str, Any]], FileFormat] = entry.load()
        return factory(dict(options or {}))
    except (ImportError, AttributeError) as exc:
        raise StagingError(
            f"File format {name!r} ({entry.value}) cannot be loaded: {exc}; reinstall the "
            "package that provides it"
        ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise StagingError(f"Options of file format {name!r} are invalid: {exc}") from exc


#: Bytes at each end of a file that `file_fingerprint` covers.
_FINGERPRINT_BYTES: Final = 65_536


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
