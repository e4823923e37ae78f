"""`DaskExecutor`: the engine's `Executor` on a Dask cluster, and the cluster's life.

`DaskExecutor.connect` reaches a scheduler, or starts a `LocalCluster` on 127.0.0.1
(`cluster.start_client`); `run` hands each plan to the coordinator (`coordinator.DaskRun`),
which splits its streaming segments by partitions and supervises their tasks, and watches that
the cluster keeps workers (`watch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from etlkit.engine.distributed import cluster
from etlkit.engine.distributed.coordinator import DaskRun
from etlkit.engine.distributed.watch import NO_WORKERS_GRACE, WorkerWatch, worker_count

if TYPE_CHECKING:
    from etlkit.engine.events import Listener, RunResult
    from etlkit.engine.plan import Plan
    from etlkit.model.nodes import Context
    from etlkit.storage.staging import Staging


class DaskExecutor:
    """Runs plans on the Dask cluster of `client` (see the module docstring).

    `DaskExecutor.connect()` starts a `LocalCluster` on 127.0.0.1 (or connects to a
    scheduler's address); `close` (or leaving a `with` block) closes what it started. A run
    fails once the cluster has had no worker for `no_workers_grace` seconds (`watch`).
    """

    def __init__(
        self,
        client: Any,
        *,
        owned: Sequence[Any] = (),
        no_workers_grace: float = NO_WORKERS_GRACE,
    ) -> None:
        self.client = client
        self._owned = list(owned)
        self.no_workers_grace = no_workers_grace

    @classmethod
    def connect(
        cls,
        address: str | None = None,
        *,
        n_workers: int = 2,
        threads_per_worker: int = 1,
        dashboard: bool = False,
        no_workers_grace: float = NO_WORKERS_GRACE,
    ) -> DaskExecutor:
        """An executor on the scheduler at `address`, or (None) on a `LocalCluster` of
        `n_workers` processes on 127.0.0.1, without a dashboard unless asked."""
        client, owned = cluster.start_client(
            address, n_workers=n_workers, threads_per_worker=threads_per_worker, dashboard=dashboard
        )
        return cls(client, owned=owned, no_workers_grace=no_workers_grace)

    def close(self) -> None:
        """Close the client and the cluster this executor started (not one it was given)."""
        while self._owned:
            self._owned.pop().close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        plan: Plan,
        ctx: Context,
        *,
        staging: Staging,
        listeners: Sequence[Listener] = (),
    ) -> RunResult:
        """Run every node of the plan once; return the result (see `Executor.run`)."""
        client = self.client
        address = str(client.scheduler.address)
        watch = WorkerWatch(address, self.no_workers_grace, lambda: worker_count(client))
        return DaskRun(client, plan, ctx, staging, listeners, watch).execute()
