"""The worker plugin putting a pipelines folder on a local cluster's workers' `sys.path`.

Kept apart from `cluster`: defining a `WorkerPlugin` imports `distributed`, which only a run
on Dask may load (see `tests/test_start_cost.py`), and without its side effect on how
exceptions pickle (`imports.pickling_kept`).
"""

from __future__ import annotations

import sys
from typing import Any

from etlkit.engine.distributed.imports import pickling_kept

with pickling_kept():
    from distributed import WorkerPlugin


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
