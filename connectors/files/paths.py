"""Paths and files on fsspec filesystems, shared by every file source and sink.

`FileSource` and `FileSink` hold what every file connector takes (path, model, connection). A
path template resolves to the files it names (`resolve_files`: globs, directories, hidden
files skipped) on the filesystem its URL names, with a named connection's storage options. Sinks
write through `write_file` (or `place_file`, given how to make the file): a hidden temporary
object next to the target, moved into place only once complete.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import posixpath
import re
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from etlkit.connector import Context, Model, Node, Partition, Sink, Source, WriteResult, resolve
from etlkit.errors import ConfigError, ConnectorError

logger = logging.getLogger(__name__)


class FileSource(Source):
    """What every file source holds: its path template, model, chunk size and connection.

    `allow_empty=True` reads no rows, instead of failing, when a glob matches no file or a
    folder holds none. `each_day=True` renders the path once for each day of the run's data
    interval (`Context.days`: `{ds}`, `{ds_nodash}` and `{logical_date}` take each day in turn)
    and reads every day's files, day after day: a monthly run of `billing/{ds}/*.csv` reads the
    month's 28 to 31 folders. Its partitions (`partitions`) are one per file, in the order
    `read` reads them; `read_partition` reads one as `read` reads that file.

    Raises:
        ConfigError: `each_day=True` with a path that names no day field.
    """

    def __init__(
        self,
        path: str,
        *,
        schema: Model,
        chunk_rows: int | None = None,
        conn: str | None = None,
        allow_empty: bool = False,
        each_day: bool = False,
    ) -> None:
        super().__init__(schema=schema)
        if each_day and not _DAY_FIELDS.intersection(template_fields(path)):
            raise ConfigError(
                f"{type(self).__name__} for {path!r}: each_day=True renders the path once for "
                f"each day of the run's data interval, so it must name the day: put "
                f"{{ds}}, {{ds_nodash}} or {{logical_date}} in it."
            )
        self.path = path
        self.conn = conn
        self.model = schema
        self.chunk_rows = chunk_rows
        self.allow_empty = allow_empty
        self.each_day = each_day

    def _where(self) -> str:
        """The source as error messages name it: `CsvSource 'billing'`."""
        return f"{type(self).__name__} '{self.name or '(unnamed)'}'"

    def _days(self, ctx: Context) -> list[Context]:
        """The contexts the path is rendered in: each day of the interval, or the run's own."""
        return ctx.days() if self.each_day else [ctx]

    def _resolve(self, ctx: Context) -> _Files:
        """The files the path names for this run (see `resolve_files`)."""
        return resolve_files(
            self._where(), self.path, self._days(ctx), self.conn, allow_empty=self.allow_empty
        )

    def partitions(self, ctx: Context) -> Sequence[Partition] | None:
        """One partition per file `read` reads, in its order: `{"path": ...}`, the file's path
        on the source's filesystem, its id the file's name and folder and a digest of its path.
        """
        found = self._resolve(ctx)
        return [file_partition(path) for path in found.paths]

    def _partition_file(self, ctx: Context, partition: Partition) -> tuple[Any, str]:
        """The filesystem and path of a file partition of this source.

        Raises:
            ConnectorError: the partition names no file under the source's path.
        """
        path = partition.data.get("path")
        for day in self._days(ctx):
            fs, rendered = filesystem(self._where(), day.render(self.path), self.conn)
            magic = _GLOB_CHARS.search(rendered)
            root = rendered if magic is None else rendered[: magic.start()].rpartition("/")[0]
            if isinstance(path, str) and (path == root or path.startswith(root + "/")):
                return fs, path
        under = display(fs, rendered) if not self.each_day else f"{self.path} (on any day)"
        raise ConnectorError(
            f"{self._where()}: partition {partition.id!r} names no file under {under!r}; a "
            "source reads only the partitions it made."
        )

    def _line_estimate(self, ctx: Context, header_lines: int) -> int | None:
        """About how many rows files of one row per line hold: their total size times the
        lines per byte of the largest file's first and last 32 KiB (lines often grow along a
        file, as ids do), less `header_lines` per file; exact for one file of up to 64 KiB.

        None when no file matches, a file is compressed (its size says little of its lines)
        or the sample cannot be read (the read itself then says why).
        """
        found = self._resolve(ctx)
        if not found.paths or any(compression(path) is not None for path in found.paths):
            return None
        size, path = max(zip(found.sizes, found.paths, strict=True))
        try:
            with found.fs.open(path, "rb") as handle:
                whole = size <= 2 * _ESTIMATE_SAMPLE
                sample: bytes = handle.read() if whole else handle.read(_ESTIMATE_SAMPLE)
                if not whole:
                    handle.seek(size - _ESTIMATE_SAMPLE)
                    sample += handle.read(_ESTIMATE_SAMPLE)
        except OSError:
            return None
        lines = sample.count(b"\n")
        if whole and sample and not sample.endswith(b"\n"):
            lines += 1  # the whole file was read: its last line has no line end
        if not lines:
            return None
        rows = round(sum(found.sizes) * lines / len(sample))
        return max(rows - header_lines * len(found.paths), 0)


class FileSink(Sink):
    """What every file sink holds: its path template, input, model and connection."""

    string_views = True  # each casts its chunks to the file's plain types (`Conformer`)

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


#: Bytes read from each end of a file to estimate its rows (the whole file when it is small).
_ESTIMATE_SAMPLE: Final = 1 << 15
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


# file name endings read through a decompressing stream, and pyarrow's name of each codec
_COMPRESSIONS: Final[dict[str, str]] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bz2",
    ".zst": "zstd",
    ".zstd": "zstd",
}
# the first bytes of compressed files and archives, to name the format of a file whose name
# does not say it
_MAGIC: Final = (
    (re.compile(rb"\x1f\x8b"), "gzip-compressed (name it .gz to read it)"),
    (re.compile(rb"BZh[1-9]1AY&SY"), "bz2-compressed (name it .bz2 to read it)"),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd-compressed (name it .zst to read it)"),
    (re.compile(rb"PK\x03\x04"), "a zip archive (unzip it first)"),
)
# what to try next, by the errno of an OSError met reading or writing a file
_OS_HINTS: Final[dict[int, str]] = {
    errno.EACCES: "check the permissions of the file and its folders",
    errno.EPERM: "check the permissions and attributes (immutable, append-only) of the file "
    "and its folder",
    errno.EROFS: "the filesystem is mounted read-only; choose a writable location",
    errno.ENOSPC: "the disk is full; free some space or choose another location",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose another location",
    errno.ENOTDIR: "a folder of the path is a file; fix the path",
    errno.EEXIST: "a folder of the path is a file; fix the path",
    errno.EISDIR: "the path is a folder where a file is expected; fix the path",
    errno.ENOENT: "the file or one of its folders does not exist; fix the path",
}


def file_partition(path: str, row_groups: tuple[int, int] | None = None) -> Partition:
    """A partition of the file at `path` (or of its row groups `first` to `end - 1`), its id
    the file's folder and name made path-safe, the row groups, and a digest of the path:
    `month_01_part-0.parquet-3fa2c1d09b7e`, `big.parquet.rg4-7-0b1c2d3e4f5a`."""
    label = "/".join(path.rstrip("/").split("/")[-2:])
    if row_groups is None:
        return Partition.labelled(label, {"path": path})
    first, end = row_groups
    data = {"path": path, "row_groups": [first, end]}
    return Partition.labelled(f"{label}.rg{first}-{end - 1}", data)


def compression(path: str) -> str | None:
    """The codec a file's name says it is compressed with (`.csv.gz`: gzip), or None."""
    suffix = posixpath.splitext(path)[1].lower()
    return _COMPRESSIONS.get(suffix)


def compressed_looking(sample: bytes) -> str | None:
    """What a file starting with `sample` is, when its first bytes are those of a compressed
    file or an archive (`gzip-compressed (name it .gz to read it)`); None otherwise."""
    return next((name for magic, name in _MAGIC if magic.match(sample)), None)


def open_input(fs: Any, path: str) -> Any:
    """A file to read as bytes, decompressed as its name says (`.gz`, `.bz2`, `.zst`).

    A local file opens as an Arrow file, read into buffers without the GIL (not memory-mapped:
    a file truncated meanwhile would crash the run); a compressed one as an Arrow stream, which
    cannot seek. Remote files open through fsspec.
    """
    raw = pa.OSFile(path) if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")
    codec = compression(path)
    return raw if codec is None else pa.CompressedInputStream(raw, codec)


def open_lines(fs: Any, path: str) -> Any:
    """A file to read line by line as bytes, decompressed as its name says."""
    codec = compression(path)
    if codec is None:
        return fs.open(path, "rb")
    return io.BufferedReader(pa.CompressedInputStream(fs.open(path, "rb"), codec))


def os_error(where: str, action: str, fs: Any, path: str, exc: OSError) -> ConnectorError:
    """An OSError met reading or writing a file, as a `ConnectorError` naming the file users
    named (never a temporary object), why, and what to try next.

    `action` is what failed: `read`, `write`.
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno or 0)
    codec = compression(path) if action == "read" else None
    if hint is None and codec is not None:
        hint = f"check that the file is complete and {codec}-compressed, as its name says"
    return ConnectorError(
        f"{where}: cannot {action} {display(fs, path)!r}: {reason}"
        + (f"; {hint}." if hint else ".")
    )


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


def resolve_files(
    where: str,
    template: str,
    days: Sequence[Context],
    conn: str | None,
    *,
    allow_empty: bool = False,
) -> _Files:
    """Render `template` in each of `days` (a run's context, or one per day of its interval)
    and list the files each names, sorted, day after day (a file named twice once).

    Raises:
        ConnectorError: a path does not exist, or names no file (a glob matching none, a
            folder holding none) and `allow_empty` is off.
    """
    found = [_day_files(where, template, day, conn, allow_empty) for day in days]
    seen: set[str] = set()
    paths, sizes = [], []
    for files in found:
        for path, size in zip(files.paths, files.sizes, strict=True):
            if path not in seen:
                seen.add(path)
                paths.append(path)
                sizes.append(size)
    return _Files(found[0].fs, paths, sizes)


def _day_files(
    where: str, template: str, ctx: Context, conn: str | None, allow_empty: bool
) -> _Files:
    """The files `template` rendered in `ctx` names, sorted (see `resolve_files`)."""
    rendered = ctx.render(template)
    fs, path = filesystem(where, rendered, conn)
    shown = repr(rendered) if rendered == template else f"{rendered!r} (from {template!r})"
    magic = _GLOB_CHARS.search(path)
    try:
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
    except OSError as exc:  # a folder of the path is a file, permissions, credentials
        raise os_error(where, "read", fs, path, exc) from exc
    files = {p: i for p, i in found.items() if i["type"] == "file" and _visible(p, root)}
    if not files and not allow_empty:
        what = "no file matches" if magic is not None else "no file is in the folder"
        raise ConnectorError(
            f"{where}: {what} {shown} (names starting with '.' or '_' are skipped); check "
            "the path, the glob and the run's date, or pass allow_empty=True to read no rows."
        )
    paths = sorted(files)
    return _Files(fs, paths, [int(files[p].get("size") or 0) for p in paths])


#: The template fields naming the run's day, which `each_day` renders once per day.
_DAY_FIELDS: Final = frozenset({"ds", "ds_nodash", "logical_date"})


def template_fields(template: str) -> set[str]:
    """The names of `template`'s fields (`{ds}`, `{params[x]}` as `params`); none if malformed
    (rendering it says why)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return set()
    return {re.split(r"[.\[]", name, maxsplit=1)[0] for _, name, _, _ in parsed if name}


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
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
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

    Raises:
        ConnectorError: the target cannot be written (permissions, a read-only or full disk,
            a folder in its place); the message names the target, not the temporary object.
    """

    def make(fs: Any, temp: str) -> tuple[int, dict[str, Any]]:
        with fs.open(temp, "wb") as handle:
            return write(handle), {}

    return place_file(where, template, ctx, make, conn)


def place_file(
    where: str,
    template: str,
    ctx: Context,
    make: Callable[[Any, str], tuple[int, dict[str, Any]]],
    conn: str | None,
) -> WriteResult:
    """`make(fs, temp)` creates the temporary object next to the target (its rows, and facts
    for the result); it is then moved into place, as `write_file` does."""
    fs, path = filesystem(where, ctx.render(template), conn)
    temp = temp_path(path, ctx)
    committed = False
    try:
        prepare_parent(where, fs, path)
        if not object_store(fs) and fs.isdir(path):  # a move would put the file inside it
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        rows, facts = make(fs, temp)
        size = int(fs.size(temp))
        fs.mv(temp, path)
        committed = True
        if not object_store(fs) and fs.exists(temp):
            # a rename onto another name of the same file does nothing (POSIX): a hard link
            # to the file already in place (adopted by an earlier attempt) stays behind
            remove(fs, temp)
    except OSError as exc:  # permissions, a read-only or full disk: named by the target
        raise os_error(where, "write", fs, path, exc) from exc
    finally:
        if not committed:
            remove(fs, temp)
    logger.debug("%s: wrote %d rows (%d bytes) to %s", where, rows, size, display(fs, path))
    uri = str(fs.unstrip_protocol(path))
    return WriteResult(rows=rows, uri=uri, extra={"bytes": size, **facts})
