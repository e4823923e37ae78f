"""The `LocalCluster` a `DaskExecutor` starts: one whose nannies keep their workers.

A nanny restarts its worker process when it dies (killed, out of memory). Distributed's
`SpecCluster` also watches for lost workers: `distributed.deploy.lost-worker-timeout` (15 s)
after a worker leaves the scheduler, it closes that worker's nanny for good unless a worker of
the same name came back by then. A restart slower than that (a loaded machine spawning a
process), or a second death of the same worker within it, so loses a nanny that was
restarting its worker: the cluster shrinks for good, and once every worker went that way a
run waits forever for a worker. That check is for clusters whose workers are jobs of a
resource manager; on one machine the nanny is the one to restart its worker, so this cluster
leaves it to the nanny.

Kept apart from `cluster`, which imports `distributed` only when a cluster starts (see
`tests/test_start_cost.py`).
"""

from __future__ import annotations

from typing import Any

from etlkit.engine.distributed.imports import pickling_kept

with pickling_kept():
    from distributed import LocalCluster
    from distributed.deploy.cluster import Cluster


class KeepingCluster(LocalCluster):
    """A `LocalCluster` that never closes a nanny whose worker left (see the module
    docstring): its nanny restarts it."""

    def _update_worker_status(self, op: str, msg: Any) -> None:
        if op == "remove":  # the view of the workers only, not SpecCluster's closing
            Cluster._update_worker_status(self, op, msg)
            return
        super()._update_worker_status(op, msg)  # type: ignore[no-untyped-call]
