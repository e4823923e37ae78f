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
#: A column chunk up to this size is read in one piece, headers and all.
_WHOLE_CHUNK: Final = 1 << 20


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
    except (_Unreadable, OSError, ValueError):  # ValueError: pyarrow's codecs, UTF-8
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
    if chunk.file_path:  # a `_metadata` file's chunk lives in another file
        raise _Unreadable("the chunk is in another file")
    # as parquet-cpp reads them: some writers leave a dictionary offset of 0
    start = chunk.data_page_offset
    if 0 < chunk.dictionary_page_offset < start:
        start = chunk.dictionary_page_offset
    end = start + chunk.total_compressed_size
    pages = _Pages(fd, start, end)
    offset, values, rows = start, None, 0
    while offset < end:
        header, length = pages.header(offset)
        body = offset + length
        size = header.get(3)
        if not isinstance(size, int) or size < 0 or body + size > end:
            raise _Unreadable("page size")
        kind = header.get(1)
        if kind == _DICTIONARY_PAGE and values is None and offset == start:
            page = header.get(7)
            if not isinstance(page, dict) or page.get(2) not in _DICTIONARY_ENCODINGS:
                raise _Unreadable("dictionary encoding")
            data = pages.read(body, size)
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


class _Pages:
    """A column chunk's bytes: read whole when small (one read for all its pages), else a
    page header at a time."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self.fd, self.start, self.end = fd, start, end
        self.whole = os.pread(fd, end - start, start) if end - start <= _WHOLE_CHUNK else None
        if self.whole is not None and len(self.whole) != end - start:
            raise _Unreadable("the file is shorter than its footer says")

    def read(self, offset: int, size: int) -> bytes:
        if self.whole is not None:
            return self.whole[offset - self.start : offset - self.start + size]
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise _Unreadable("the file is shorter than its footer says")
        return data

    def header(self, offset: int) -> tuple[dict[int, Any], int]:
        """The page header at `offset` (its fields by id) and its length in bytes."""
        if self.whole is not None:
            try:
                header, at = _struct(self.whole, offset - self.start)
                return header, at - (offset - self.start)
            except _Truncated:
                raise _Unreadable("page header") from None
        window = _HEADER_WINDOW
        while True:
            data = os.pread(self.fd, min(window, self.end - offset), offset)
            try:
                return _struct(data, 0)
            except _Truncated:
                if window >= self.end - offset or window >= _MAX_HEADER:
                    raise _Unreadable("page header") from None
                window *= 16


class _Truncated(Exception):
    """The header goes on past the bytes read."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """A ULEB128 integer at `at`, and the position after it."""
    value, shift = 0, 0
    while True:
        if at >= len(data):
            raise _Truncated
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 70:
            raise _Unreadable("varint")


def _struct(data: bytes, at: int, depth: int = 0) -> tuple[dict[int, Any], int]:
    """A Thrift struct in the compact protocol at `at` (its fields by id: nested structs as
    dicts, lists and sets as lists, binary and doubles as bytes), and the position after it.
    No page header holds a map."""
    if depth > 16:
        raise _Unreadable("nesting")
    fields: dict[int, Any] = {}
    field = 0
    while True:
        if at >= len(data):
            raise _Truncated
        head = data[at]
        at += 1
        kind = head & 0x0F
        if kind == 0:  # STOP
            return fields, at
        if head >> 4:
            field += head >> 4
        else:
            raw, at = _varint(data, at)
            field = (raw >> 1) ^ -(raw & 1)
        if kind in (1, 2):  # a boolean field carries its value in its type
            fields[field] = kind == 1
        else:
            fields[field], at = _value(data, at, kind, depth)


def _value(data: bytes, at: int, kind: int, depth: int) -> tuple[Any, int]:
    """One value of Thrift compact type `kind` at `at`, and the position after it."""
    if kind in (4, 5, 6):  # i16, i32, i64: zigzag varints
        raw, at = _varint(data, at)
        return (raw >> 1) ^ -(raw & 1), at
    if kind == 12:
        return _struct(data, at, depth + 1)
    if kind == 8:  # binary: a varint length, then the bytes
        length, at = _varint(data, at)
        if at + length > len(data):
            raise _Truncated
        return data[at : at + length], at + length
    if kind == 7:  # double: 8 bytes
        if at + 8 > len(data):
            raise _Truncated
        return data[at : at + 8], at + 8
    if kind in (1, 2, 3):  # a list's boolean, or a byte
        if at >= len(data):
            raise _Truncated
        return data[at], at + 1
    if kind in (9, 10):  # list, set: the size (15: a varint follows) and the element type
        if at >= len(data):
            raise _Truncated
        head = data[at]
        at += 1
        count = head >> 4
        if count == 15:
            count, at = _varint(data, at)
        items = []
        for _ in range(count):
            item, at = _value(data, at, head & 0x0F, depth + 1)
            items.append(item)
        return items, at
    raise _Unreadable(f"thrift type {kind}")
