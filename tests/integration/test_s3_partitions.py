"""Partitions of one output written on S3 (moto's server) by writers that share nothing, then
committed as one output: read back, verified and queried like any staged output."""

from __future__ import annotations

import threading
from collections import Counter
from unittest import mock

import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.errors import StagingError
from etlkit.storage.partitions import FINISHED, read_finishes
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


def test_a_commit_on_s3_reads_each_finish_once_and_concurrently(
    s3_endpoint: str, s3_bucket: str
) -> None:
    root = f"s3://{s3_bucket}/staging"
    partitions = [f"p{i:02d}" for i in range(12)]
    for number, partition in enumerate(partitions):
        writer = Staging(root).partition_writer("report", "r1", "bills", partition)
        writer.append_many(rows(number * 100, 3))
        writer.finish()
    coordinator = Staging(root)
    reads: Counter[str] = Counter()
    lock = threading.Lock()
    # the first two reads meet here: read one after another, the first would wait alone
    together = threading.Barrier(2, timeout=20)
    cat_file = coordinator.fs.cat_file

    def counted(path: str, *args: object, **kwargs: object) -> object:
        with lock:
            reads[path.rsplit("/", 2)[-2] if path.endswith(FINISHED) else path] += 1
            first_two = sum(reads.values()) <= 2
        if first_two:
            together.wait()
        return cat_file(path, *args, **kwargs)

    with mock.patch.object(coordinator.fs, "cat_file", counted):
        run_dir = coordinator.run_dir("report", "r1")
        finishes = read_finishes(coordinator, run_dir, "bills", partitions)
        manifest = coordinator.commit_partitions(
            "report", "r1", "bills", partitions, finishes=finishes
        )

    assert reads == Counter(dict.fromkeys(partitions, 1))  # one GET per partition, no more
    assert manifest.rows == 36
    assert Staging(root).verify("report", "r1", "bills") == []
    batches = Staging(root).iter_batches("report", "r1", "bills", batch_size=100)
    expected = [i for n in range(12) for i in range(n * 100, n * 100 + 3)]
    assert [i for b in batches for i in b.column("id").to_pylist()] == expected


def test_a_commit_without_finishes_given_reads_them_once(s3_endpoint: str, s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/staging"
    for number, partition in enumerate(["p0", "p1", "p2"]):
        writer = Staging(root).partition_writer("report", "r1", "bills", partition)
        writer.append_many(rows(number * 100, 3))
        writer.finish()
    coordinator = Staging(root)
    with (
        mock.patch.object(coordinator.fs, "cat_file", wraps=coordinator.fs.cat_file) as cat_file,
        mock.patch.object(coordinator.fs, "open", wraps=coordinator.fs.open) as opened,
    ):
        manifest = coordinator.commit_partitions("report", "r1", "bills", ["p0", "p1", "p2"])
    finishes = [c.args[0] for c in [*cat_file.call_args_list, *opened.call_args_list]]
    assert sorted(p.rsplit("/", 2)[-2] for p in finishes if p.endswith(FINISHED)) == [
        "p0",
        "p1",
        "p2",
    ]
    assert manifest.rows == 9
