"""A Parquet text column's dictionary pages, read without decoding its data pages.

`parquet_statistics` proves value checks (`isin`, `str_matches`, ...) of a text column from the
union of its dictionaries. Decoding the column (even as dictionary indices) reads and expands
every data page; the dictionaries alone are a few bytes per column chunk. This module reads
each chunk's dictionary page and walks the headers of its data pages (Thrift's compact
protocol), without reading their values, to make sure every one of them is dictionary-coded:
a writer that fell back to plain encoding mid-chunk has values its dictionary lacks.

Anything it does not know for sure (an unknown codec or page type, an encoding other than the
dictionary's, pages that do not add up to the chunk's size and value count, a malformed
header) makes `dictionary_values` answer None, and the caller decodes the column instead.
"""

from __future__ import annotations

import os
from typing import Any, Final

#: Parquet's page types (`PageType`).
_DATA_PAGE, _INDEX_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 1, 2, 3
#: Encodings of a dictionary page's values (PLAIN_DICTIONARY, PLAIN) and of data pages holding
#: dictionary indices (PLAIN_DICTIONARY, RLE_DICTIONARY).
_DICTIONARY_ENCODINGS: Final = frozenset({0, 2})
_INDEX_ENCODINGS: Final = frozenset({2, 8})
#: pyarrow's codec names for Parquet's (the legacy Hadoop-framed LZ4 is not one of them).
_CODECS: Final = {
    "SNAPPY": "snappy",
    "GZIP": "gzip",
    "BROTLI": "brotli",
    "ZSTD": "zstd",
    "LZ4_RAW": "lz4_raw",
}
#: A page header is read in a window of this many bytes first (statistics can make it longer).
_HEADER_WINDOW: Final = 256
_MAX_HEADER: Final = 1 << 24


class _Unreadable(Exception):
    """The chunk is not one this module reads for sure: the caller decodes it."""


def dictionary_values(path: str, footer: Any, column: str, *, limit: int) -> set[str | None] | None:
    """The union of the dictionaries of a text column in every row group of a local Parquet
    file (a superset of its non-null values); None when a chunk is not dictionary-coded
    throughout or cannot be read this way (see the module docstring). Stops once more than
    `limit` values are found (the set returned then holds more than `limit`).

    `footer`: the file's parsed footer (`pyarrow.parquet.FileMetaData`).
    """
    index = next(
        (i for i in range(footer.num_columns) if footer.schema.column(i).path == column), None
    )
    if index is None or footer.schema.column(index).physical_type != "BYTE_ARRAY":
        return None
    found: set[str | None] = set()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        for group in range(footer.num_row_groups):
            found.update(_chunk_dictionary(fd, footer.row_group(group).column(index)))
            if len(found) > limit:
                break
    except (_Unreadable, OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    return found


def _chunk_dictionary(fd: int, chunk: Any) -> list[str]:
    """One column chunk's dictionary, after checking that all its data pages use it."""
    import pyarrow as pa

    compression = chunk.compression
    if compression != "UNCOMPRESSED" and compression not in _CODECS:
        raise _Unreadable(compression)
    if not chunk.has_dictionary_page:
        raise _Unreadable("no dictionary page")
    # as parquet-cpp reads them: some writers leave a dictionary offset of 0
    start = chunk.data_page_offset
    if 0 < chunk.dictionary_page_offset < start:
        start = chunk.dictionary_page_offset
    end = start + chunk.total_compressed_size
    offset, values, rows = start, None, 0
    while offset < end:
        header, length = _page_header(fd, offset, end)
        body = offset + length
        size = header.get(3)
        if not isinstance(size, int) or size < 0 or body + size > end:
            raise _Unreadable("page size")
        kind = header.get(1)
        if kind == _DICTIONARY_PAGE and values is None and offset == start:
            page = header.get(7)
            if not isinstance(page, dict) or page.get(2) not in _DICTIONARY_ENCODINGS:
                raise _Unreadable("dictionary encoding")
            data = os.pread(fd, size, body)
            if compression != "UNCOMPRESSED":
                uncompressed = header.get(2)
                if not isinstance(uncompressed, int) or uncompressed < 0:
                    raise _Unreadable("page size")
                data = pa.decompress(
                    data, decompressed_size=uncompressed, codec=_CODECS[compression]
                ).to_pybytes()
            values = _plain_text(data, page.get(1))
        elif kind in (_DATA_PAGE, _DATA_PAGE_V2) and values is not None:
            page = header.get(5 if kind == _DATA_PAGE else 8)
            if not isinstance(page, dict) or page.get(4 if kind == _DATA_PAGE_V2 else 2) not in (
                _INDEX_ENCODINGS
            ):
                raise _Unreadable("a data page not dictionary-coded")
            counted = page.get(1)
            if not isinstance(counted, int):
                raise _Unreadable("value count")
            rows += counted
        elif kind != _INDEX_PAGE:
            raise _Unreadable(f"page type {kind}")
        offset = body + size
    if values is None or offset != end or rows != chunk.num_values:
        raise _Unreadable("pages do not add up to the chunk")
    return values


def _plain_text(data: bytes, count: object) -> list[str]:
    """A dictionary page's PLAIN byte arrays (4-byte little-endian length, then the bytes)."""
    if not isinstance(count, int) or count < 0:
        raise _Unreadable("value count")
    values, at = [], 0
    for _ in range(count):
        length = int.from_bytes(data[at : at + 4], "little")
        if at + 4 + length > len(data):
            raise _Unreadable("dictionary page")
        values.append(data[at + 4 : at + 4 + length].decode("utf-8"))
        at += 4 + length
    if at != len(data):
        raise _Unreadable("dictionary page")
    return values


def _page_header(fd: int, offset: int, end: int) -> tuple[dict[int, Any], int]:
    """The page header at `offset` (its fields by id) and its length in bytes."""
    window = _HEADER_WINDOW
    while True:
        data = os.pread(fd, min(window, end - offset), offset)
        reader = _Compact(data)
        try:
            return reader.struct(), reader.at
        except _Truncated:
            if window >= end - offset or window >= _MAX_HEADER:
                raise _Unreadable("page header") from None
            window *= 16


class _Truncated(Exception):
    """The header goes on past the bytes read."""


class _Compact:
    """A reader of Thrift's compact protocol over bytes: structs as dicts of field id to value
    (nested structs as dicts, lists and sets as lists, binary as bytes; no page header holds
    a map)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise _Truncated
        value = self.data[self.at]
        self.at += 1
        return value

    def varint(self) -> int:
        data, at = self.data, self.at  # locals: a page header has dozens of varints
        value, shift = 0, 0
        while at < len(data):
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.at = at
                return value
            shift += 7
            if shift > 70:
                raise _Unreadable("varint")
        raise _Truncated

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise _Truncated
        value = self.data[self.at : self.at + count]
        self.at += count
        return value

    def struct(self, depth: int = 0) -> dict[int, Any]:
        if depth > 16:
            raise _Unreadable("nesting")
        fields: dict[int, Any] = {}
        field = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == 0:  # STOP
                return fields
            delta = head >> 4
            field = field + delta if delta else self.zigzag()
            if kind in (1, 2):  # a boolean field carries its value in its type
                fields[field] = kind == 1
            else:
                fields[field] = self.value(kind, depth)

    def value(self, kind: int, depth: int) -> Any:
        if kind in (1, 2):  # a boolean element of a list: one byte
            return self.byte() == 1
        if kind == 3:
            return self.take(1)[0]
        if kind in (4, 5, 6):
            return self.zigzag()
        if kind == 7:
            return self.take(8)
        if kind == 8:
            return self.take(self.varint())
        if kind in (9, 10):
            head = self.byte()
            count = head >> 4 if head >> 4 != 15 else self.varint()
            return [self.value(head & 0x0F, depth + 1) for _ in range(count)]
        if kind == 12:
            return self.struct(depth + 1)
        raise _Unreadable(f"thrift type {kind}")
