"""A run whose cluster lost every worker fails after the grace, keeping what committed; the
watch that decides it, on its own clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etlkit.cli.exit_codes import exit_code
from etlkit.engine.distributed import DaskExecutor
from etlkit.engine.distributed.imports import pickling_kept
from etlkit.engine.distributed.watch import POLL, WorkerWatch, worker_count
from etlkit.engine.events import Event
from etlkit.errors import RunTimeoutError
from etlkit.storage.staging import Staging
from tests.distributed.conftest import run
from tests.distributed.jobs import Bills, write_bills
from tests.integration.waiting import wait_for


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_fails_only_after_the_grace_without_workers_and_a_worker_resets_it() -> None:
    clock, workers, asked = _Clock(), [2], []

    def count() -> int:
        asked.append(clock.now)
        return workers[0]

    watch = WorkerWatch("tcp://10.0.0.5:8786", 5.0, count, clock=clock)
    assert watch.check("r1", "bills") is None  # workers: nothing to say
    workers[0] = 0
    clock.now += POLL / 2
    assert watch.check("r1", "bills") is None
    assert asked == [100.0]  # within a poll, the scheduler is not asked again
    clock.now += POLL / 2
    assert watch.check("r1", "bills") is None  # none since now
    clock.now += 4.0
    assert watch.check("r1", "bills") is None  # 4 s without: within the grace
    workers[0] = 1
    clock.now += POLL
    assert watch.check("r1", "bills") is None  # a worker came back: the wait starts again
    workers[0] = 0
    for _ in range(5):
        clock.now += POLL
        assert watch.check("r1", "bills") is None  # 4 s without, again
    clock.now += POLL

    error = watch.check("r1", "bills")

    assert isinstance(error, RunTimeoutError)
    message = str(error)
    assert "Run r1 of pipeline 'bills'" in message
    assert "cluster at tcp://10.0.0.5:8786 has had no workers for 5s" in message
    assert "`dask worker tcp://10.0.0.5:8786`" in message
    assert "--executor local" in message
    assert "etlkit retry r1" in message
    assert exit_code(error) == 1


@pytest.fixture
def shrinking() -> Iterator[tuple[Any, Any]]:
    """A LocalCluster of one worker process on 127.0.0.1 and its client, for a test that
    closes the worker."""
    with pickling_kept():
        from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


@pytest.mark.slow
def test_a_run_whose_cluster_lost_every_worker_fails_and_a_retry_resumes(
    shrinking: tuple[Any, Any], dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    cluster, client = shrinking
    ids = write_bills(tmp_path / "bills", files=3, rows=100)
    params = {"data_dir": str(tmp_path / "bills"), "out_dir": str(tmp_path / "out")}
    staging = Staging(str(tmp_path / "staging"))
    executor = DaskExecutor(client, no_workers_grace=0.5)

    def close_every_worker(event: Event) -> None:
        # the partitioned segment committed: its sinks and SQL are next, with no worker left
        if event.kind == "node_finished" and event.node == "taxed":
            cluster.scale(0)  # the cluster starts none again
            client.retire_workers(list(client.scheduler_info(n_workers=-1)["workers"]))
            # the scheduler forgets a closed worker on its own loop: wait for it, bounded
            wait_for(lambda: worker_count(client) == 0, what="no workers left", timeout=60)

    # the run's own timeout bounds the test should the watch not fire (a different message)
    failed = run(
        Bills,
        staging,
        params,
        executor=executor,
        listeners=[close_every_worker],
        run_timeout=60.0,
    )

    assert failed.state == "failed"
    assert isinstance(failed.error, RunTimeoutError)
    address = client.scheduler.address
    assert f"the Dask cluster at {address} has had no workers for" in str(failed.error)
    states = {n: s.state for n, s in failed.nodes.items()}
    assert states == {
        "bills": "done",
        "taxed": "done",
        "total": "cancelled",
        "output": "cancelled",
        "summary": "cancelled",
    }
    committed = {n for n in states if staging.manifest(Bills.name, failed.run_id, n) is not None}
    assert "taxed" in committed
    assert not (tmp_path / "out").exists()  # no sink ran

    retried = run(
        Bills,
        staging,
        params,
        executor=dask_executor,
        run_id=failed.run_id,
        reuse=frozenset(committed),
    )

    retried.raise_for_error()
    assert retried.nodes["taxed"].state == "reused"
    import pyarrow.parquet as pq

    written = pq.read_table(tmp_path / "out" / "bills.parquet")
    assert sorted(written.column("bill_id").to_pylist()) == sorted(ids)
