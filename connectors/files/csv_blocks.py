"""A CSV file read in blocks that end at a line end outside quotes, so several blocks can be
parsed at once; a block that cannot be cut safely is read again as one (`Rewinding`)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any, Final, cast

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from connectors.files.paths import compression, open_input

#: Bytes read first from a file: enough to tell its first line and typical row length.
SAMPLE_BYTES: Final = 65_536
_QUOTE_CHAR: Final = ord('"')  # pyarrow's default quote character, which CsvSource keeps
_LINE_END: Final = re.compile(rb"[\r\n]")


class ReadSeriallyError(Exception):
    """The parallel reader cannot vouch for a block: the file is read serially instead."""


def read_up_to(handle: Any, size: int) -> pa.Buffer:
    """`size` bytes from the handle, fewer only at the end of the file."""
    if isinstance(handle, pa.NativeFile):
        return handle.read_buffer(size)
    data = handle.read(size)
    while 0 < len(data) < size and (more := handle.read(size - len(data))):
        data += more
    return pa.py_buffer(bytes(data))


def open_file(fs: Any, path: str) -> Any:
    """A file to read (see `open_input`); a compressed one rewinds by opening it again."""
    return Rewinding(fs, path) if compression(path) is not None else open_input(fs, path)


class Rewinding:
    """A compressed file's decompressed bytes, whose `seek(0)` opens the file again: the
    serial reader rewinds to read a file again with larger blocks, a stream cannot seek."""

    def __init__(self, fs: Any, path: str) -> None:
        self._fs, self._path = fs, path
        self._stream = open_input(fs, path)
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = bytes(self._stream.read(None if size < 0 else size))
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < 0:
            raise io.UnsupportedOperation("a compressed file seeks from its start or onwards")
        if target < self._position:
            self._stream.close()
            self._stream, self._position = open_input(self._fs, self._path), 0
        while self._position < target and self.read(min(target - self._position, 1 << 20)):
            pass
        return self._position

    def tell(self) -> int:
        return self._position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(self._stream.closed)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> Rewinding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def line_ends_at(data: pa.Buffer) -> int:
    """Where the last line of `data` ends (after an LF, or a lone CR); 0 without a line end.
    Looks at the end first: blocks are large and their rows short."""
    window = SAMPLE_BYTES
    while True:
        start = max(0, data.size - window)
        tail = data[start:].to_pybytes()
        newline = tail.rfind(b"\n")
        cut = max(newline, tail.rfind(b"\r", newline + 1)) + 1  # a lone CR ends a line too
        if cut or not start:
            return start + cut if cut else 0
        window *= 4


def odd_quotes(data: pa.Buffer) -> bool:
    """Whether a block holds an odd number of quote characters: its last line end may then be
    inside a quoted value (or a stray quote makes it look so), which only the serial reader,
    cutting after the last complete row, reads right."""
    codes = pa.Array.from_buffers(pa.uint8(), data.size, [None, data])
    series = cast("pl.Series", pl.from_arrow(codes))
    return bool((series == _QUOTE_CHAR).sum() % 2)


def blocks(handle: Any, block: int) -> Iterator[tuple[pa.Buffer, bool]]:
    """A file cut where pyarrow's serial reader cuts it, as (bytes, is the last block).

    That reader reads `block` bytes at a time and parses up to the last complete row: block k
    ends after the last line end before byte (k+1) * block, so its rows are the serial
    reader's k-th batch. Quoted line ends are left to `odd_quotes`; a block without a line
    end (a row longer than a block) is left to the serial reader.
    """
    start, end = 0, block
    while True:
        handle.seek(start)
        data = read_up_to(handle, end - start)
        if data.size < end - start:
            if data.size:
                yield data, True
            return
        cut = line_ends_at(data)
        if not cut:
            raise ReadSeriallyError(f"no line end in {data.size} bytes from byte {start}")
        yield data[:cut], False
        start, end = start + cut, end + block


def parse_block(data: pa.Buffer, last: bool, options: tuple[Any, Any, Any]) -> list[pa.RecordBatch]:
    """One block's batch (none when it has no rows); runs on a pool thread."""
    if not last and odd_quotes(data):
        raise ReadSeriallyError("a quoted value may span two blocks")
    try:
        return list(pacsv.open_csv(pa.BufferReader(data), *options))
    except pa.ArrowException as exc:  # the serial reader names the line and column
        raise ReadSeriallyError(str(exc).split("\n", 1)[0]) from exc
