"""Partitions of one output written on S3 (moto's server) by writers that share nothing, then
committed as one output: read back, verified and queried like any staged output."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.errors import StagingError
from etlkit.storage.staging import Staging


def rows(first: int, count: int) -> list[pa.RecordBatch]:
    table = pa.table({"id": pa.array(range(first, first + count), pa.int64())})
    table = table.append_column("name", pa.array([f"n{i}" for i in range(first, first + count)]))
    return table.to_batches(max_chunksize=4)


def test_partitions_staged_on_s3_commit_as_one_output(s3_endpoint: str, s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/staging"
    firsts = {"p0": 0, "p1": 100, "p2": 200}

    def run(partition: str) -> None:
        # a Staging of its own, as on another machine; part_rows=5: several parts each
        writer = Staging(root).partition_writer("report", "r1", "bills", partition, part_rows=5)
        writer.append_many(rows(firsts[partition], 10))
        writer.finish()

    crashed = Staging(root).partition_writer("report", "r1", "bills", "p1", part_rows=5)
    crashed.append_many(rows(100, 10))
    crashed.part_urls()  # parts uploaded, never finished: its worker died
    threads = [threading.Thread(target=run, args=(p,)) for p in firsts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    coordinator = Staging(root)
    with pytest.raises(StagingError, match="not finished: p3"):
        coordinator.commit_partitions("report", "r1", "bills", ["p0", "p1", "p2", "p3"])
    assert coordinator.manifest("report", "r1", "bills") is None
    manifest = coordinator.commit_partitions("report", "r1", "bills", ["p0", "p1", "p2"])

    staging = Staging(root)
    assert staging.manifest("report", "r1", "bills") == manifest
    assert staging.verify("report", "r1", "bills") == []
    batches = staging.iter_batches("report", "r1", "bills", batch_size=100)
    expected = [*range(10), *range(100, 110), *range(200, 210)]
    assert [i for b in batches for i in b.column("id").to_pylist()] == expected
    run_dir = staging.run_dir("report", "r1")
    listed = {f"{run_dir}/{f.name}" for f in manifest.files} | {f"{run_dir}/bills.parquet"}
    staging.fs.invalidate_cache()
    assert set(staging.fs.find(run_dir)) == listed  # the crashed attempt's parts are gone
    frame = ek.query("select count(*) as n, sum(id) as s from bills", root, "report", "r1")
    assert frame.to_dicts() == [{"n": 30, "s": sum(expected)}]
