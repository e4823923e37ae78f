"""Faults on a real LocalCluster: a worker killed mid-partition, a partition breaking its
contract, a retry of the same run id, a class the workers cannot import."""

from __future__ import annotations

import os
import re
import signal
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import etlkit as ek
from etlkit.engine.distributed import DaskExecutor
from etlkit.engine.distributed.connections import seal
from etlkit.engine.distributed.coordinator import partitions_of
from etlkit.engine.distributed.imports import pickling_kept
from etlkit.engine.distributed.segments import adjusted, copies, layout
from etlkit.engine.distributed.spec import work_spec
from etlkit.engine.distributed.tasks import run_partition
from etlkit.engine.execution import RunOptions, new_run_id
from etlkit.engine.plan import build_plan
from etlkit.errors import DataValidationError, EtlkitError
from etlkit.storage.staging import Staging
from tests.distributed.conftest import run
from tests.distributed.jobs import Bills, BillsDying, write_bills

pytestmark = pytest.mark.slow


def test_a_worker_killed_mid_partition_reruns_it_elsewhere(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    ids = write_bills(tmp_path / "bills", files=4, rows=500)
    flag = tmp_path / "die"
    flag.touch()
    params = {
        "data_dir": str(tmp_path / "bills"),
        "out_dir": str(tmp_path / "out"),
        "flag": str(flag),
    }
    staging = Staging(str(tmp_path / "staging"))

    result = run(BillsDying, staging, params, executor=dask_executor)

    result.raise_for_error()
    assert not flag.exists()  # a worker did die
    written = pl.read_parquet(tmp_path / "out" / "bills.parquet")
    assert sorted(written["bill_id"].to_list()) == ids  # every row, exactly once
    summary = pl.read_parquet(tmp_path / "out" / "summary.parquet")
    assert summary["n"].to_list() == [len(ids)]
    taxed = result.nodes["taxed"]
    assert taxed.rows_out == len(ids)
    assert len(taxed.partitions) == 4
    # the staged output lists one attempt per partition: the dead one's parts are gone
    manifest = staging.manifest(BillsDying.name, result.run_id, "taxed")
    assert manifest is not None
    assert manifest.rows == len(ids)
    attempts = {f.name.split("/")[2] for f in manifest.files if "/" in f.name}
    assert attempts == {p.attempt for p in taxed.partitions}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_local_cluster_keeps_a_worker_whose_nanny_is_restarting_it() -> None:
    # SpecCluster closes a lost worker's nanny when no worker of its name is back within the
    # timeout; at 0 s the check comes before any restart, as a slow one (a loaded machine)
    # or a second death of the worker within 15 s makes it come
    with pickling_kept():  # importing dask registers tblib's reducers, as distributed does
        import dask

    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}),
        DaskExecutor.connect(n_workers=1) as executor,
    ):
        client = executor.client
        [before] = client.run(os.getpid).values()
        [died] = client.run(_die, on_error="return").values()  # returns once its comm closed
        after = client.submit(os.getpid, pure=False).result(timeout=180)

    assert isinstance(died, Exception)
    assert after != before  # the nanny restarted its worker, and the task ran there


def test_a_partition_breaking_its_contract_fails_the_run_and_a_retry_reuses_the_others(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    data = tmp_path / "bills"
    write_bills(data, files=3, rows=300, bad=2)
    params = {"data_dir": str(data), "out_dir": str(tmp_path / "out")}
    staging = Staging(str(tmp_path / "staging"))

    events: list[tuple[str, str]] = []
    failed = run(
        Bills,
        staging,
        params,
        executor=dask_executor,
        listeners=[lambda e: events.append((e.kind, e.node))],
    )

    assert failed.state == "failed"
    assert isinstance(failed.error, DataValidationError)
    ctx = ek.Context("bills", "r", datetime(2025, 3, 1, tzinfo=UTC), params=params)
    bad = Bills.bills.partitions(ctx)[2].id
    assert "'bills'" in str(failed.error)
    assert f"partition '{bad}'" in str(failed.error)
    assert failed.nodes["bills"].state == "failed"
    assert {n: s.state for n, s in failed.nodes.items() if n != "bills"} == dict.fromkeys(
        ["taxed", "total", "output", "summary"], "cancelled"
    )
    finished = [n for kind, n in events if kind == "node_finished"]
    assert sorted(finished) == sorted(Bills.graph().order)  # once each, as a local run reports
    assert staging.manifest(Bills.name, failed.run_id, "bills") is None  # nothing committed
    before = {p.partition: p.attempt for p in failed.nodes["bills"].partitions}
    assert bad not in before
    assert before

    ids = write_bills(data, files=3, rows=300)  # the bad file mended
    retried = run(Bills, staging, params, executor=dask_executor, run_id=failed.run_id)

    retried.raise_for_error()
    after = {p.partition: p.attempt for p in retried.nodes["bills"].partitions}
    assert len(after) == 3
    for partition, attempt in before.items():
        assert after[partition] == attempt  # finished before: reused, not recomputed
    assert after[bad] not in before.values()
    written = pl.read_parquet(tmp_path / "out" / "bills.parquet")
    assert sorted(written["bill_id"].to_list()) == ids


def test_a_class_the_workers_cannot_import_fails_before_anything_runs(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    module = types.ModuleType("etlkit_test_ghost_pipelines")  # in this process only
    sys.modules[module.__name__] = module
    try:
        exec(
            "import etlkit as ek\n"
            "from etlkit.testing import MemorySink, MemorySource\n"
            "class Ghost(ek.Pipeline):\n"
            "    source = MemorySource([])\n"
            "    sink = MemorySink(source)\n",
            module.__dict__,
        )
        ghost = module.__dict__["Ghost"]
        ghost.__module__ = module.__name__
        result = run(ghost, Staging(str(tmp_path / "staging")), {}, executor=dask_executor)
    finally:
        del sys.modules[module.__name__]
    assert result.state == "failed"
    assert isinstance(result.error, EtlkitError)
    message = str(result.error)
    assert "etlkit_test_ghost_pipelines.Ghost" in message
    assert re.search(r"on Dask worker tcp://127\.0\.0\.1:\d+: ", message), message
    assert "importable on every Dask worker" in message
    assert all(s.state == "cancelled" for s in result.nodes.values())  # nothing ran


def test_a_unique_key_repeating_across_partitions_fails_the_commit(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    data = tmp_path / "bills"
    write_bills(data, files=2, rows=200)
    (data / "bills-00.parquet").rename(data / "bills-02.parquet")
    write_bills(data, files=1, rows=200)  # bills-00 again: the ids of bills-02
    params = {"data_dir": str(data), "out_dir": str(tmp_path / "out")}
    staging = Staging(str(tmp_path / "staging"))

    result = run(Bills, staging, params, executor=dask_executor)

    assert isinstance(result.error, DataValidationError)  # each partition alone was valid
    assert "bill_id" in str(result.error)
    assert result.nodes["bills"].state == "failed"
    assert len(result.nodes["bills"].partitions) == 3
    assert staging.manifest(Bills.name, result.run_id, "bills") is None
    assert not (tmp_path / "out").exists()  # no sink ran


def test_a_retry_reuses_committed_nodes_and_skips_written_sinks(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    write_bills(tmp_path / "bills", files=2, rows=100)
    params = {"data_dir": str(tmp_path / "bills"), "out_dir": str(tmp_path / "out")}
    staging = Staging(str(tmp_path / "staging"))
    first = run(Bills, staging, params, executor=dask_executor)
    first.raise_for_error()
    (tmp_path / "out" / "summary.parquet").unlink()  # as if the run died before this sink
    events: list[tuple[str, str]] = []

    again = run(
        Bills,
        staging,
        params,
        executor=dask_executor,
        run_id=first.run_id,
        reuse=frozenset({"bills", "taxed", "total"}),
        skip=frozenset({"output"}),
        listeners=[lambda e: events.append((e.kind, e.node))],
    )

    again.raise_for_error()
    states = {n: s.state for n, s in again.nodes.items()}
    assert states == {
        "bills": "reused",
        "taxed": "reused",
        "total": "reused",
        "output": "skipped",
        "summary": "done",
    }
    assert again.nodes["taxed"].partitions == []  # nothing ran again
    assert ("node_finished", "output") in events
    assert ("node_started", "summary") in events
    assert pl.read_parquet(tmp_path / "out" / "summary.parquet")["n"].to_list() == [200]


def test_a_partition_run_again_after_it_finished_gives_its_first_answer(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    # as when the worker holding a finished task's result dies before it is gathered: Dask
    # runs the task again, and a second attempt must not replace the first one's finish
    write_bills(tmp_path / "bills", files=2, rows=100)
    params = {"data_dir": str(tmp_path / "bills"), "out_dir": str(tmp_path / "out")}
    staging = Staging(str(tmp_path / "staging"))
    ctx = ek.Context(Bills.name, new_run_id(), datetime(2025, 3, 1, tzinfo=UTC), params=params)
    plan = build_plan(Bills.graph(), RunOptions())
    cut = layout(plan)
    plan = adjusted(plan, cut.fields())
    [segment] = cut.segments
    staged = copies(plan, segment, segment[0] in plan.references)
    assert "taxed" in staged
    text = work_spec(plan, ctx, staging, cut.fields(), f"etlkit-test-{ctx.run_id}").to_json()
    [(pid, partition), _] = partitions_of(Bills.bills, ctx)

    first, again = (
        dask_executor.client.submit(
            run_partition,
            text,
            seal(plan.graph, {}),
            list(segment),
            partition,
            pid,
            staged,
            pure=False,
        ).result()
        for _ in range(2)
    )

    assert "failed" not in first
    assert again["nodes"]["taxed"]["attempt"] == first["nodes"]["taxed"]["attempt"]
    assert again["nodes"]["taxed"]["rows_out"] == first["nodes"]["taxed"]["rows_out"] == 100
    run_dir = staging.run_dir(Bills.name, ctx.run_id)
    attempts = [
        p for p in staging.fs.ls(f"{run_dir}/taxed.parts/{pid}") if "." not in p.rsplit("/", 1)[1]
    ]
    assert len(attempts) == 1  # one attempt's parts, not two
