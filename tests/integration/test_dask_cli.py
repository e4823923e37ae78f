"""`etlkit run --executor dask` as a user runs it: a child process starting a LocalCluster on
127.0.0.1 for a pipeline over several files; the run store records the executor and which
worker ran which partition, and `etlkit show` prints them."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etlkit.storage.store import RunStore
from tests.integration.cli import etlkit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PIPELINE = '''
import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import ParquetSink, ParquetSource


class Bill(pdp.DataFrameModel):
    bill_id: int = pdp.Field(nullable=False, unique=True)
    amount: float = pdp.Field(ge=0)


class TaxedBill(Bill):
    taxed: float


class AddTax(ek.Transform[Bill, TaxedBill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(taxed=pl.col("amount") * 2.0)


class Bills(ek.Pipeline):
    """Bills of several files, one partition each, taxed and written."""

    params = {"data_dir": "bills", "out_dir": "out"}
    bills = ParquetSource("{data_dir}/*.parquet", schema=Bill)
    taxed = AddTax(bills)
    output = ParquetSink("{out_dir}/bills.parquet", taxed)
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with the pipeline, three files of bills and a LocalCluster of two workers."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "bills.py").write_text(PIPELINE)
    (tmp_path / "bills").mkdir()
    for part in range(3):
        ids = list(range(part * 10, part * 10 + 4))
        table = pa.table({"bill_id": ids, "amount": [float(i) for i in ids]})
        pq.write_table(table, tmp_path / "bills" / f"part-{part}.parquet")
    (tmp_path / "etlkit.toml").write_text("[dask]\nworkers = 2\n")
    return tmp_path


def test_a_run_on_a_local_cluster_records_and_shows_its_partitions(project: Path) -> None:
    ran = etlkit("run", "bills", "--executor", "dask", "--progress", "none", cwd=project)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    written = pq.read_table(project / "out" / "bills.parquet").sort_by("bill_id")
    assert written.column("bill_id").to_pylist() == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]
    assert written.column("taxed").to_pylist() == [2.0 * i for i in written["bill_id"].to_pylist()]

    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        record = store.runs(limit=1)[0]
        partitions = store.node_partitions(record.run_id)
    assert record.state == "success"
    assert re.fullmatch(
        r"dask LocalCluster tcp://127\.0\.0\.1:\d+ \(2 workers\)", record.executor or ""
    )
    assert len(partitions["bills"]) == 3
    assert sum(p.rows for p in partitions["bills"]) == 12
    assert all(p.worker.startswith("tcp://127.0.0.1:") for p in partitions["bills"])

    shown = etlkit("show", record.run_id, cwd=project)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"executor   {record.executor}" in lines
    rows = [line.split() for line in lines if line.startswith("bills ") and "tcp://" in line]
    assert sorted((r[1], r[2], r[3]) for r in rows) == sorted(
        (p.partition, p.worker, str(p.rows)) for p in partitions["bills"]
    )


def test_an_unreachable_scheduler_fails_the_run_naming_the_address(project: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"  # nothing listens there
    ran = etlkit(
        "run",
        "bills",
        "--scheduler-address",
        address,
        "--progress",
        "none",
        cwd=project,
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
    )
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert (
        f"The Dask scheduler at {address} (dask.address, from cli --scheduler-address)"
        in ran.stderr
    )
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        record = store.runs(limit=1)[0]
    assert record.state == "failed"
    assert address in (record.error or "")


def test_a_backfill_passes_the_executor_to_its_workers(project: Path) -> None:
    source = (project / "pipelines" / "bills.py").read_text()
    scheduled = source.replace(
        '    params = {"data_dir": "bills", "out_dir": "out"}',
        '    schedule = "@daily"\n    params = {"data_dir": "bills", "out_dir": "out"}',
    )
    (project / "pipelines" / "bills.py").write_text(scheduled)
    ran = etlkit(
        "backfill", "bills", "--start", "2025-01-01", "--end", "2025-01-01", "--executor", "dask",
        cwd=project,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        [record] = store.runs()
        partitions = store.node_partitions(record.run_id)
    assert (record.trigger, record.state) == ("backfill", "success")
    assert (record.executor or "").startswith("dask LocalCluster tcp://127.0.0.1:")
    assert sum(p.rows for p in partitions["bills"]) == 12
