"""The filesystem a staging area lives on, and the file operations its writers and readers use.

`StagingRoot` resolves a root URL (a local directory, `s3://bucket/prefix`, ...) to an fsspec
filesystem and offers the few operations staging needs (exists, remove, an atomic rename,
makedirs, size, write bytes), as plain `os` calls on local disks. It knows nothing of the
layout of runs and nodes under the root: that is `staging.Staging`, which extends it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import fsspec

# fsspec protocols without real directories, whose makedirs would create a missing bucket
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az"})


def _plain_local_path(root: str) -> bool:
    """Whether `root` is a local path fsspec takes as it is, made absolute: no protocol, no
    chaining, no `~`, on a POSIX system (where fsspec only prefixes the working directory)."""
    return os.sep == "/" and ":" not in root and not root.startswith(("~", "./")) and root != "."


class StagingRoot:
    """The filesystem under one root URL (a local directory, `s3://bucket/prefix`, ...).

    On S3 the credentials and endpoint are `storage_options` (s3fs's: key, secret,
    endpoint_url, ...) or, without them, s3fs's defaults: the AWS_* environment variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), ~/.aws, instance roles. The
    bucket must exist: staging never creates one.
    """

    def __init__(self, root: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root_url = root
        if _plain_local_path(root) and not storage_options:
            # what fsspec resolves it to, without importing fsspec: local staging uses plain
            # os calls, and `fs` is made only if something asks for it
            cwd = os.getcwd()  # noqa: PTH109  (as fsspec's: a str, no Path round trip)
            self.root = (root if root.startswith("/") else f"{cwd}/{root}").rstrip("/")
            self.local = True
            self.protocols: tuple[str, ...] = ("file", "local")
            self.object_store = False
            return
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.fs, self.root = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        protocol = self.fs.protocol
        self.protocols = (protocol,) if isinstance(protocol, str) else protocol
        self.object_store = bool(_OBJECT_STORES.intersection(self.protocols))

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem of the root (a local root's is made on first use)."""
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem()

    def polars_storage_options(self) -> dict[str, str] | None:
        """Options for polars' own S3 reader (`pl.scan_parquet(urls, storage_options=...)`)
        reaching the same root as `self.fs`; None where polars needs none (local, memory).

        Credentials and endpoint given as `storage_options` are translated to polars' names;
        otherwise polars reads the same AWS_* variables as s3fs, and only `aws_allow_http` is
        added when the endpoint s3fs resolved is plain http (polars refuses http otherwise).
        """
        if "s3" not in self.protocols:
            return None
        given = dict(self.fs.storage_options)
        names = {
            "key": "aws_access_key_id",
            "secret": "aws_secret_access_key",
            "token": "aws_session_token",
            "endpoint_url": "aws_endpoint_url",
        }
        options = {theirs: str(given[ours]) for ours, theirs in names.items() if given.get(ours)}
        region = (given.get("client_kwargs") or {}).get("region_name")
        if region:
            options["aws_region"] = str(region)
        endpoint = options.get("aws_endpoint_url") or self.fs.connect().meta.endpoint_url
        if str(endpoint).startswith("http://"):
            options["aws_allow_http"] = "true"
        return options

    # -- file operations ----------------------------------------------------------------------
    # On local disks, plain os calls: a node's staging is a handful of them, and fsspec's (or
    # pathlib's) layers cost more than the calls themselves.

    def url(self, path: str) -> str:
        """A path on `self.fs` as a URL other engines understand (local: a plain path)."""
        if self.local:
            return path
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{path}"

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists."""
        return os.path.exists(path) if self.local else bool(self.fs.exists(path))  # noqa: PTH110

    def remove(self, path: str) -> None:
        """Remove a file or a directory tree if it exists."""
        if not self.local:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        elif os.path.isdir(path):  # noqa: PTH112
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.remove(path)  # noqa: PTH107

    def rename(self, source: str, target: str) -> None:
        """Move a file into place: atomic on local disks, a copy then a delete on object stores
        (where the target appears complete at once too)."""
        if self.local:
            os.replace(source, target)  # noqa: PTH105
        else:
            self.fs.mv(source, target)

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents (nothing on object stores, which have none)."""
        if self.local:
            os.makedirs(path, exist_ok=True)  # noqa: PTH103
        elif not self.object_store:
            self.fs.makedirs(path, exist_ok=True)

    def size(self, path: str) -> int:
        """A file's size in bytes."""
        return os.path.getsize(path) if self.local else int(self.fs.size(path))  # noqa: PTH202

    def write_bytes(self, path: str, data: pa.Buffer) -> None:
        """Write a file whole (on object stores: one upload)."""
        if self.local:  # plain system calls: a file object's set-up costs more than the write
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        else:
            with self.fs.open(path, "wb") as fh:
                fh.write(data.to_pybytes())
