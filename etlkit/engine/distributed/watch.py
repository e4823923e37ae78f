"""Whether a run's Dask cluster still has workers: the coordinator's own check.

A run waits for its tasks. With every worker gone (closed, their machines lost, a cluster
scaled to nothing) the tasks never run, and a run without a timeout would wait forever.
Distributed's `distributed.scheduler.no-workers-timeout` fails such tasks, but it is a setting
of the scheduler: a user's scheduler has its own (none by default), which a client cannot
change. So the coordinator asks the scheduler how many workers it has, at most once every
`POLL` seconds while it waits for tasks, and `WorkerWatch.check` gives the run's error once
the cluster has had none for the grace (`NO_WORKERS_GRACE` unless the executor is given
another): a `RunTimeoutError` naming the scheduler's address and what to do. A worker that
joins within the grace (a nanny restarting it, an autoscaler) resets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from etlkit.errors import RunTimeoutError

#: Seconds a run waits for a worker once its cluster has none, before it fails: long enough
#: for a nanny to restart a dead worker or an autoscaler to start one.
NO_WORKERS_GRACE: Final = 60.0
#: Seconds between two questions to the scheduler (each one round trip) while waiting.
POLL: Final = 1.0


def worker_count(client: Any) -> int:
    """How many workers the client's scheduler has now (0 if it cannot be asked: no task
    runs on a cluster whose scheduler is unreachable either)."""
    try:
        info = client.scheduler_info(n_workers=0)  # the count, without each worker's details
    except OSError:  # distributed's CommClosedError and timeouts among them
        return 0
    count = info.get("n_workers")
    return int(count) if count is not None else len(info.get("workers", ()))


class WorkerWatch:
    """Tells a run waiting for tasks that the cluster at `address` has had no worker for
    `grace` seconds; `count` gives its workers now (`worker_count`) and `clock` the time
    (monotonic seconds: a test gives its own)."""

    def __init__(
        self,
        address: str,
        grace: float,
        count: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.grace = grace
        self._count = count
        self._clock = clock
        self._asked: float | None = None  # when the scheduler was last asked
        self._none_since: float | None = None  # when it was first seen without workers

    def check(self, run_id: str, pipeline: str) -> RunTimeoutError | None:
        """The run's error if its cluster has had no worker for the grace; None otherwise
        (and between two polls, without asking the scheduler)."""
        now = self._clock()
        if self._asked is not None and now - self._asked < POLL:
            return None
        self._asked = now
        if self._count() > 0:
            self._none_since = None
            return None
        if self._none_since is None:
            self._none_since = now
        waited = now - self._none_since
        if waited < self.grace:
            return None
        return RunTimeoutError(
            f"Run {run_id} of pipeline '{pipeline}' stopped: the Dask cluster at "
            f"{self.address} has had no workers for {waited:.0f}s (the grace is "
            f"{self.grace:g}s), so its tasks cannot run. Start workers for it (`dask worker "
            f"{self.address}`) or run with `--executor local`; `etlkit retry {run_id}` "
            "then reuses what committed."
        )
