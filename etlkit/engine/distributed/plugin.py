"""Worker plugins making a pipeline's module importable on a cluster's workers.

`PipelinesPath` puts a folder of this machine on its workers' `sys.path`. `PipelinesUpload`
carries the pipeline's code, zipped (`pack`), to workers on other machines, unpacks it in each
worker's local directory and puts that first on its `sys.path`. Both run again on every worker
that joins later (a worker restarted after a crash included).

Not distributed's `UploadDirectory`: it unpacks in the nanny's process and puts the folder on
the nanny's `sys.path`, so running workers cannot import from it; and it skips every file
with `tests` or `docs` anywhere in its absolute path, a whole project kept under such a folder.

Kept apart from `cluster`: defining a `WorkerPlugin` imports `distributed`, which only a run
on Dask may load (see `tests/test_start_cost.py`), and without its side effect on how
exceptions pickle (`imports.pickling_kept`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Final

from etlkit.engine.distributed.imports import pickling_kept
from etlkit.errors import EtlkitError

with pickling_kept():
    from distributed import WorkerPlugin

#: The most a pipeline's files may weigh (before zipping) to travel to workers elsewhere:
#: every worker gets a copy, and the scheduler keeps one for workers that join later.
UPLOAD_LIMIT: Final = 64 * 1024 * 1024
#: Folders never packed: caches, virtualenvs, version control, and hidden ones.
_SKIPPED: Final = frozenset({"__pycache__", "node_modules", "venv", "site-packages"})
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


class PipelinesPath(WorkerPlugin):
    """Appends a folder to `sys.path` on every worker, those started later too (a worker
    restarted after a crash runs its plugins again). The folder must be readable there: a
    worker of the coordinator's own machine."""

    idempotent = True

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def setup(self, worker: Any) -> None:
        if self.folder not in sys.path:
            sys.path.append(self.folder)


class PipelinesUpload(WorkerPlugin):
    """Unpacks `data` (a zip made by `pack`) on every worker and puts it first on its
    `sys.path`: in `<local directory>/etlkit-pipelines/<label>/<digest>`, so an edited version
    shipped again (same `label`, another digest) takes the place of the one before it."""

    def __init__(self, label: str, data: bytes) -> None:
        self.label = _UNSAFE.sub("_", label).strip("._") or "pipelines"
        self.data = data
        self.digest = hashlib.sha256(data).hexdigest()[:16]

    def setup(self, worker: Any) -> None:
        versions = Path(worker.local_directory) / "etlkit-pipelines" / self.label
        target = versions / self.digest
        if not target.is_dir():
            unpacking = versions / f".{self.digest}-{os.getpid()}"
            shutil.rmtree(unpacking, ignore_errors=True)
            with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
                archive.extractall(unpacking)  # names with `..` or a root are made safe
            unpacking.replace(target)
        older = [e for e in sys.path if Path(e).parent == versions and e != str(target)]
        for entry in older:
            sys.path.remove(entry)
        if str(target) not in sys.path:
            sys.path.insert(0, str(target))


def pack(root: Path, names: list[str], pipeline: str) -> bytes:
    """A zip of `names` in `root` (files, or folders with all they hold but caches, hidden
    files and folders, and compiled files), paths relative to `root`.

    Raises:
        EtlkitError: it would be over `UPLOAD_LIMIT` (naming the biggest files and the fix).
    """
    files: list[tuple[Path, str]] = []
    for name in names:
        start = root / name
        if start.is_file() and _kept(name, folder=False):
            files.append((start, name))
        if not start.is_dir() or not _kept(name, folder=True):
            continue
        for folder, dirs, found in os.walk(start):
            dirs[:] = sorted(d for d in dirs if _kept(d, folder=True))
            for file in sorted(f for f in found if _kept(f, folder=False)):
                path = Path(folder) / file
                files.append((path, str(path.relative_to(root))))
    total = sum(path.stat().st_size for path, _ in files)
    if total > UPLOAD_LIMIT:
        biggest = sorted(files, key=lambda f: -f[0].stat().st_size)[:3]
        raise EtlkitError(
            f"Pipeline '{pipeline}': its code in {root} ({', '.join(names)}) is "
            f"{total / 2**20:.0f} MiB, over the {UPLOAD_LIMIT // 2**20} MiB that is uploaded "
            f"to Dask workers on other machines (biggest: {', '.join(n for _, n in biggest)}). "
            "Keep data out of the pipelines folder, or install the package that defines the "
            "pipeline on the workers."
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in files:
            archive.write(path, name)
    return buffer.getvalue()


def _kept(name: str, *, folder: bool) -> bool:
    """Whether `pack` packs a file or folder of this name."""
    if name.startswith("."):
        return False
    return name not in _SKIPPED if folder else not name.endswith((".pyc", ".pyo"))
