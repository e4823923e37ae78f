"""Paths and files on fsspec filesystems, shared by every file source and sink.

`FileSource` and `FileSink` hold what every file connector takes (path, model, connection). A
path template resolves to the files it names (`resolve_files`: globs, directories, hidden
files skipped) on the filesystem its URL names, with a named connection's storage options. Sinks
write through `write_file`: a hidden temporary object next to the target, moved into place only
once complete.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fsspec.core import url_to_fs

from etlkit.connections import resolve
from etlkit.errors import ConnectorError
from etlkit.nodes import Context, Node, Sink, Source, WriteResult
from etlkit.schema import Model

logger = logging.getLogger(__name__)


class FileSource(Source):
    """What every file source holds: its path template, model, chunk size and connection."""

    def __init__(
        self,
        path: str,
        *,
        schema: Model,
        chunk_rows: int | None = None,
        conn: str | None = None,
    ) -> None:
        super().__init__(schema=schema)
        self.path = path
        self.conn = conn
        self.model = schema
        self.chunk_rows = chunk_rows

    def _where(self) -> str:
        """The source as error messages name it: `CsvSource 'billing'`."""
        return f"{type(self).__name__} '{self.name or '(unnamed)'}'"


class FileSink(Sink):
    """What every file sink holds: its path template, input, model and connection."""

    def __init__(
        self, path: str, input: Node | str, *, schema: Model | None = None, conn: str | None = None
    ) -> None:
        super().__init__(input, schema=schema)
        self.path = path
        self.conn = conn

    def _where(self) -> str:
        """The sink as error messages name it: `ParquetSink 'report'`."""
        return f"{type(self).__name__} '{self.name or '(unnamed)'}'"

    def discard_leftovers(self, ctx: Context) -> list[str]:
        """Remove the hidden temporary objects attempts of this run left next to the target."""
        fs, path = filesystem(self._where(), ctx.render(self.path), self.conn)
        return [display(fs, found) for found in discard_temporaries(fs, path, ctx)]


_GLOB_CHARS: Final = re.compile(r"[*?\[]")
# fsspec protocols without real directories, whose makedirs would create a missing bucket
_OBJECT_STORES: Final = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az"})
# connection kind -> the path schemes reachable through it
_SCHEMES: Final[dict[str, frozenset[str]]] = {
    "s3": frozenset({"s3", "s3a"}),
    "http": frozenset({"http", "https"}),
    "https": frozenset({"http", "https"}),
    "file": frozenset({"file", "local"}),
}


@dataclass(frozen=True)
class _Files:
    """The files a source path resolved to, on one filesystem."""

    fs: Any
    paths: list[str]
    sizes: list[int]


def display(fs: Any, path: str) -> str:
    """A path as users wrote it: plain for local files, a URL elsewhere."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else str(fs.unstrip_protocol(path))


def filesystem(where: str, url: str, conn: str | None) -> tuple[Any, str]:
    """The filesystem and path of a rendered URL, with the named connection's storage options.

    Raises:
        ConfigError: the connection is not defined (`ConnectionNotFoundError`) or unusable.
        ConnectorError: the path's scheme is not one the connection reaches.
    """
    options: dict[str, Any] = {}
    if conn is not None:
        options = _storage_options(where, url, conn)
    fs, path = url_to_fs(url, **options)
    return fs, str(path)


def _storage_options(where: str, url: str, conn: str) -> dict[str, Any]:
    connection = resolve(conn)
    scheme = url.partition("://")[0].lower() if "://" in url else "file"
    schemes = _SCHEMES.get(connection.kind, frozenset())
    if scheme not in schemes:
        wanted = " or ".join(f"{s}://" for s in sorted(schemes)) or "no file paths"
        raise ConnectorError(
            f"{where}: path {url!r} cannot be reached through connection '{connection.name}', "
            f"a {connection.kind} connection ({connection.source}), which takes {wanted}; fix "
            "the path or the conn= name."
        )
    return connection.storage_options()


def object_store(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return bool(_OBJECT_STORES.intersection(protocols))


def prepare_parent(where: str, fs: Any, path: str) -> None:
    """Create the target's directory; on object stores (no directories) check the bucket."""
    if not object_store(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return
    bucket = path.split("/", 1)[0]
    if not fs.exists(bucket):
        raise ConnectorError(
            f"{where}: bucket {bucket!r} of {display(fs, path)!r} does not exist, or these "
            "credentials cannot see it; create it first (sinks never create buckets), or "
            "check the connection's endpoint and credentials."
        )


def _visible(path: str, root: str) -> bool:
    relative = path[len(root) :] if path.startswith(root) else posixpath.basename(path)
    return not any(part.startswith((".", "_")) for part in relative.split("/") if part)


def resolve_files(where: str, template: str, ctx: Context, conn: str | None) -> _Files:
    """Render `template` and list the files it names, sorted; raise when there are none."""
    rendered = ctx.render(template)
    fs, path = filesystem(where, rendered, conn)
    shown = repr(rendered) if rendered == template else f"{rendered!r} (from {template!r})"
    magic = _GLOB_CHARS.search(path)
    if magic is not None:
        root, found = path[: magic.start()].rpartition("/")[0], fs.glob(path, detail=True)
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError as exc:
            raise ConnectorError(f"{where}: file {shown} does not exist.") from exc
        if info["type"] != "directory":
            return _Files(fs, [path], [int(info.get("size") or 0)])
        root, found = path, fs.find(path, detail=True)
    files = {p: i for p, i in found.items() if i["type"] == "file" and _visible(p, root)}
    if not files and magic is not None:
        raise ConnectorError(
            f"{where}: no file matches {shown}; check the path, the glob and the run's date."
        )
    paths = sorted(files)
    return _Files(fs, paths, [int(files[p].get("size") or 0) for p in paths])


#: The kinds of temporary object a sink makes next to its target: what it writes before the
#: commit, and (datasets) the previous version moved aside during it.
TEMP_KINDS: Final = ("tmp", "old")


def temp_path(path: str, ctx: Context, kind: str = "tmp") -> str:
    """A hidden name next to `path` that says which run made it: `.name.tmp-<run_id>-<hex>`."""
    parent, name = posixpath.split(path)
    return posixpath.join(parent, f".{name}.{kind}-{ctx.run_id}-{secrets.token_hex(4)}")


def temporaries(fs: Any, path: str, ctx: Context, kind: str) -> list[str]:
    """The temporary objects of `kind` that attempts of this run made next to `path`."""
    parent, name = posixpath.split(path)
    prefix = f".{name}.{kind}-{ctx.run_id}-"
    try:
        listed = fs.ls(parent, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(p for p in listed if posixpath.basename(p.rstrip("/")).startswith(prefix))


def discard_temporaries(fs: Any, path: str, ctx: Context) -> list[str]:
    """Remove every temporary object this run's attempts left next to `path`; their paths."""
    found = [p for kind in TEMP_KINDS for p in temporaries(fs, path, ctx, kind)]
    for leftover in found:
        remove(fs, leftover)
    return found


def remove(fs: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def write_file(
    where: str,
    template: str,
    ctx: Context,
    write: Callable[[Any], int],
    conn: str | None,
) -> WriteResult:
    """Run `write(handle)` on a temporary object next to the target, then move it into place.

    On any exception (including `RunCancelledError` from the batches) the temporary object is
    deleted and the exception propagates: the target keeps its previous content.
    """
    fs, path = filesystem(where, ctx.render(template), conn)
    temp = temp_path(path, ctx)
    prepare_parent(where, fs, path)
    committed = False
    try:
        with fs.open(temp, "wb") as handle:
            rows = write(handle)
        size = int(fs.size(temp))
        fs.mv(temp, path)
        committed = True
    finally:
        if not committed:
            remove(fs, temp)
    logger.debug("%s: wrote %d rows (%d bytes) to %s", where, rows, size, display(fs, path))
    return WriteResult(rows=rows, uri=str(fs.unstrip_protocol(path)), extra={"bytes": size})
