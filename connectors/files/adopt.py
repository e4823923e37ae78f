"""A file sink adopting its input's staged Parquet file instead of encoding the rows again.

`refusal` says why a staged output cannot stand for the file a sink would write (not one
file, another codec, other columns or types); `adopt_file` puts it in place as the sink's
file, as atomically as `paths.write_file`: a hard link to the staged file under a hidden
temporary name next to the target when both are on one local filesystem, else a copy (a
streamed one to or from a remote filesystem), then a move into place. A hard link shares the
staged file's bytes: the staging never changes a committed file, and a sink replaces its file
by moving a new one into place, so neither sees the other change.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import TYPE_CHECKING, Any, Final

from fsspec.implementations.local import LocalFileSystem

from connectors.files.paths import place_file

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.connector import Context, StagedParquet, WriteResult

#: Bytes per read and write of a streamed copy.
_COPY_BLOCK: Final = 8 << 20
#: What a failed hard link means "not here" by (another device, a filesystem without links,
#: too many links): a copy is made instead.
_NO_LINK: Final = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES})


def _describe(schema: pa.Schema) -> str:
    return "[" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "]"


def refusal(staged: StagedParquet, compression: str, schema: pa.Schema) -> str | None:
    """Why `staged` is not the file a sink writing `schema` with `compression` would write."""
    if len(staged.paths) != 1:
        return f"it is {len(staged.paths)} files and the sink writes one"
    codec = compression.upper()
    if staged.compressions != {codec}:
        found = ", ".join(sorted(staged.compressions)) or "nothing (no row group)"
        return f"it is compressed with {found}, the sink's file with {codec}"
    if not staged.schema.equals(schema):
        return (
            f"its columns are {_describe(staged.schema)}, the sink's file has {_describe(schema)}"
        )
    return None


def adopt_file(
    where: str, template: str, ctx: Context, staged: StagedParquet, conn: str | None
) -> WriteResult:
    """Put the staged file in place as the target (see the module docstring); the result's
    `extra["adopted"]` says how: "hard link", "copy" or "streamed copy".

    Raises:
        ConnectorError: the target cannot be written; the message names it.
    """
    (source,) = staged.paths

    def make(fs: Any, temp: str) -> tuple[int, dict[str, Any]]:
        return staged.rows, {"adopted": _place(staged, source, fs, temp)}

    return place_file(where, template, ctx, make, conn)


def _place(staged: StagedParquet, source: str, fs: Any, temp: str) -> str:
    """Make `temp` on `fs` a copy of the staged `source`, as cheaply as the two allow."""
    if staged.local and isinstance(fs, LocalFileSystem):
        try:
            os.link(source, temp)
            return "hard link"
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        shutil.copyfile(source, temp)
        return "copy"
    with staged.fs.open(source, "rb") as reader, fs.open(temp, "wb") as writer:
        shutil.copyfileobj(reader, writer, _COPY_BLOCK)
    return "streamed copy"
