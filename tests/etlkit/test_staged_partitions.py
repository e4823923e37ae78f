"""One output staged from partitions written apart: partition writers, finishes, the commit."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from etlkit.engine.plan import RunOptions, build_plan
from etlkit.engine.steps.stage import ChunkWriter, stage_chunks
from etlkit.errors import StagingError
from etlkit.storage.querying import query
from etlkit.storage.staging import Manifest, PartitionWriter, Staging
from tests.etlkit.test_steps import Doubling, step_for

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def batch(*ids: int) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array(ids, pa.int64()), pa.array([f"n{i}" for i in ids], pa.string())], schema=SCHEMA
    )


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    return Staging(str(tmp_path / "staging"))


def listing(staging: Staging, run_id: str = "r1") -> list[str]:
    """What a run's staging directory holds, parts directories' contents included."""
    root = Path(staging.run_dir("report", run_id))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def ids(staging: Staging, node: str = "bills") -> list[int]:
    batches = staging.iter_batches("report", "r1", node, batch_size=1000)
    return [i for b in batches for i in b.column("id").to_pylist()]


def write_partition(
    staging: Staging, partition: str, first: int, count: int, *, part_rows: int = 3
) -> Manifest:
    writer = staging.partition_writer("report", "r1", "bills", partition, part_rows=part_rows)
    for start in range(first, first + count, 2):
        writer.append(batch(*range(start, min(start + 2, first + count))))
    return writer.finish()


def test_partitions_written_on_threads_commit_as_one_output_in_partition_order(
    staging: Staging,
) -> None:
    # part_rows=3 with chunks of 2 rows: each partition writes several parts, on its own thread
    sizes = {"p0": 7, "p1": 5, "p2": 9}
    firsts = {"p0": 0, "p1": 100, "p2": 200}
    barrier = threading.Barrier(len(sizes))

    def run(partition: str) -> None:
        barrier.wait()  # every writer is open at once, none has finished
        write_partition(staging, partition, firsts[partition], sizes[partition])

    threads = [threading.Thread(target=run, args=(p,)) for p in ("p2", "p0", "p1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert staging.manifest("report", "r1", "bills") is None  # finished, not committed

    manifest = staging.commit_partitions(
        "report", "r1", "bills", ["p0", "p1", "p2"], extra={"kind": "source"}
    )

    expected = [*range(7), *range(100, 105), *range(200, 209)]
    assert ids(staging) == expected
    assert manifest.rows == 21
    assert manifest.schema == (("id", "int64"), ("name", "string"))
    assert manifest.extra == {"kind": "source"}
    # parts close at the first chunk past part_rows rows
    parts = [(f.name.split("/")[1], f.rows) for f in manifest.files]
    assert parts == [("p0", 4), ("p0", 3), ("p1", 4), ("p1", 1), ("p2", 4), ("p2", 4), ("p2", 1)]
    assert staging.manifest("report", "r1", "bills") == manifest
    assert staging.verify("report", "r1", "bills") == []
    assert staging.committed("report", "r1") == ["bills"]
    # the committed layout holds the listed parts and the commit, nothing else
    assert listing(staging) == sorted([f.name for f in manifest.files] + ["bills.parquet"])
    frame = query("select sum(id) as s, count(*) as n from bills", staging, "report", "r1")
    assert frame.to_dicts() == [{"s": sum(expected), "n": 21}]


def test_a_partition_output_reads_like_a_single_writers(staging: Staging) -> None:
    single = staging.writer("report", "r1", "whole", part_rows=3)
    single.append_many([batch(1, 2), batch(3, 4), batch(5)])
    whole = single.commit()
    writer = staging.partition_writer("report", "r1", "bills", "only", part_rows=3)
    writer.append_many([batch(1, 2), batch(3, 4), batch(5)])
    writer.finish()
    parted = staging.commit_partitions("report", "r1", "bills", ["only"])

    assert (parted.rows, parted.schema) == (whole.rows, whole.schema)
    assert [f.rows for f in parted.files] == [4, 1]  # the same part sizes
    assert [f.rows for f in whole.files] == [4, 1]
    assert ids(staging) == ids(staging, "whole")
    sql = (
        "select (select list(id order by id) from bills) = (select list(id order by id) from whole)"
    )
    assert query(sql, staging, "report", "r1").item() is True


def test_a_partition_rerun_after_a_crash_mid_write_stages_its_rows_once(staging: Staging) -> None:
    write_partition(staging, "p0", 0, 4)
    crashed = staging.partition_writer("report", "r1", "bills", "p1", part_rows=2)
    crashed.append_many([batch(10, 11), batch(12, 13), batch(14)])  # parts written, no finish
    crashed.part_urls()
    crashed._write(batch(15))  # and a part left half-written (the `.partial` file)
    assert any(name.endswith(".partial.parquet") for name in listing(staging))

    rerun = staging.partition_writer("report", "r1", "bills", "p1", part_rows=2)
    assert rerun.attempt != crashed.attempt
    rerun.append_many([batch(10, 11), batch(12, 13), batch(14, 15)])
    rerun.finish()
    manifest = staging.commit_partitions("report", "r1", "bills", ["p0", "p1"])

    assert ids(staging) == [0, 1, 2, 3, 10, 11, 12, 13, 14, 15]
    assert staging.verify("report", "r1", "bills") == []
    assert listing(staging) == sorted([f.name for f in manifest.files] + ["bills.parquet"])
    assert not any(crashed.attempt in name for name in listing(staging))


def test_a_partition_finished_twice_keeps_one_attempts_rows(staging: Staging) -> None:
    # a worker thought dead finishes after the partition's rerun did: its finish replaces the
    # rerun's whole, so the commit lists one attempt's parts, never both
    first = staging.partition_writer("report", "r1", "bills", "p0", part_rows=2)
    second = staging.partition_writer("report", "r1", "bills", "p0", part_rows=2)
    for writer in (first, second):
        writer.append_many([batch(1, 2), batch(3)])
    assert second.finish() == second.finish()  # finishing again writes nothing new
    first.finish()
    manifest = staging.commit_partitions("report", "r1", "bills", ["p0"])

    assert ids(staging) == [1, 2, 3]
    assert all(first.attempt in f.name for f in manifest.files)
    assert not any(second.attempt in name for name in listing(staging))


def test_a_damaged_partitioned_output_is_found_and_discarded_like_any(staging: Staging) -> None:
    # what a resume does with a committed output: verify it, discard it if damaged
    manifest = write_partition(staging, "p0", 0, 5, part_rows=2)
    write_partition(staging, "p1", 10, 2)
    staging.commit_partitions("report", "r1", "bills", ["p0", "p1"])
    part = Path(staging.run_dir("report", "r1")) / manifest.files[1].name
    part.write_bytes(part.read_bytes()[:-10])

    problems = staging.verify("report", "r1", "bills")
    assert len(problems) == 1
    assert manifest.files[1].name in problems[0]
    staging.discard("report", "r1", "bills")
    assert listing(staging) == []


def test_committing_with_a_missing_partition_fails_and_commits_nothing(staging: Staging) -> None:
    write_partition(staging, "p0", 0, 3)
    unfinished = staging.partition_writer("report", "r1", "bills", "p2")
    unfinished.append(batch(20, 21))
    before = listing(staging)

    with pytest.raises(StagingError, match=r"2 of its 3 partitions are not finished: p1, p2"):
        staging.commit_partitions("report", "r1", "bills", ["p0", "p1", "p2"])

    assert staging.manifest("report", "r1", "bills") is None
    assert staging.committed("report", "r1") == []
    assert listing(staging) == before  # nothing removed: the finished partition is kept
    write_partition(staging, "p1", 10, 1)
    unfinished.finish()
    staging.commit_partitions("report", "r1", "bills", ["p0", "p1", "p2"])
    assert ids(staging) == [0, 1, 2, 10, 20, 21]


def test_a_committed_node_is_immutable_to_partition_writers(staging: Staging) -> None:
    write_partition(staging, "p0", 0, 2)
    staging.commit_partitions("report", "r1", "bills", ["p0"])

    with pytest.raises(StagingError, match="already committed"):
        staging.commit_partitions("report", "r1", "bills", ["p0"])
    with pytest.raises(StagingError, match="already committed"):
        staging.partition_writer("report", "r1", "bills", "p1")
    with pytest.raises(StagingError, match="already committed"):
        staging.writer("report", "r1", "bills")
    assert ids(staging) == [0, 1]


def test_partitions_with_other_columns_are_not_committed(staging: Staging) -> None:
    write_partition(staging, "p0", 0, 2)
    other = staging.partition_writer("report", "r1", "bills", "p1")
    other.append(pa.record_batch({"id": pa.array([5], pa.int32()), "name": ["x"]}))
    other.finish()

    with pytest.raises(StagingError, match=r"partition 'p1' has columns \[id: int32"):
        staging.commit_partitions("report", "r1", "bills", ["p0", "p1"])
    assert staging.manifest("report", "r1", "bills") is None


def test_partitions_named_twice_or_unsafe_are_refused(staging: Staging) -> None:
    write_partition(staging, "p0", 0, 2)
    with pytest.raises(StagingError, match="named twice"):
        staging.commit_partitions("report", "r1", "bills", ["p0", "p0"])
    with pytest.raises(StagingError, match="not safe"):
        staging.partition_writer("report", "r1", "bills", "../p1")
    with pytest.raises(StagingError, match="not safe"):
        staging.commit_partitions("report", "r1", "bills", ["p0", "a/b"])


def test_empty_partitions_commit_an_empty_output_with_its_columns(staging: Staging) -> None:
    for partition in ("p0", "p1"):
        staging.partition_writer("report", "r1", "bills", partition).finish(empty_schema=SCHEMA)

    manifest = staging.commit_partitions("report", "r1", "bills", ["p0", "p1"])

    assert (manifest.rows, [f.name for f in manifest.files]) == (0, ["bills.parquet"])
    assert manifest.schema == (("id", "int64"), ("name", "string"))
    assert query("select count(*) as n from bills", staging, "report", "r1").item() == 0
    assert listing(staging) == ["bills.parquet"]


def test_an_empty_partition_among_others_adds_no_part(staging: Staging) -> None:
    staging.partition_writer("report", "r1", "bills", "p0").finish()
    write_partition(staging, "p1", 5, 2)

    manifest = staging.commit_partitions("report", "r1", "bills", ["p0", "p1"])

    assert ids(staging) == [5, 6]
    assert manifest.schema == (("id", "int64"), ("name", "string"))


def test_an_aborted_partition_leaves_no_parts_and_cannot_finish(staging: Staging) -> None:
    writer = staging.partition_writer("report", "r1", "bills", "p0", part_rows=1)
    writer.append_many([batch(1), batch(2), batch(3)])
    writer.abort()
    assert listing(staging) == []
    with pytest.raises(StagingError, match="already aborted"):
        writer.finish()


def test_a_partition_finish_records_its_parts_rows_bytes_and_checksums(staging: Staging) -> None:
    finished = write_partition(staging, "p0", 0, 5, part_rows=2)
    path = Path(staging.run_dir("report", "r1")) / "bills.parts" / "p0" / "finished.json"
    record = Manifest.from_json(path.read_text())

    assert record == finished
    assert record.rows == 5
    assert [f.rows for f in record.files] == [2, 2, 1]
    assert all(f.bytes > 0 and f.checksum for f in record.files)
    assert json.loads(path.read_text())["extra"]["partition"] == "p0"


def test_the_stage_step_writes_to_a_partition_writer(tmp_path: Path) -> None:
    plan = build_plan(Doubling.graph(), RunOptions(chunk_rows=2))
    step = step_for(plan, "doubled", tmp_path, [])
    staging = step.staging
    frames = [pl.DataFrame({"invoice_id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]})]
    writers: list[PartitionWriter] = []
    for partition, frame in [
        ("a", frames[0]),
        ("b", frames[0].with_columns(pl.col("amount") * 10)),
    ]:
        writer = staging.partition_writer(plan.pipeline, step.run_id, "doubled", partition)
        chunk_writer: ChunkWriter = writer  # the stage step writes to it unchanged
        stage_chunks(step, [frame], writer=chunk_writer, guard=None)
        writer.finish()
        writers.append(writer)

    manifest = staging.commit_partitions(plan.pipeline, step.run_id, "doubled", ["a", "b"])

    assert manifest.rows == 6
    back = pl.concat(
        pl.DataFrame(b)
        for b in staging.iter_batches(plan.pipeline, step.run_id, "doubled", batch_size=10)
    )
    assert back["amount"].to_list() == [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]
    assert (step.stats.rows_out, step.stats.chunks_out) == (6, 4)


def test_a_finish_that_cannot_be_read_fails_naming_the_node(staging: Staging) -> None:
    from etlkit.storage.partitions import FINISHED, read_finishes

    write_partition(staging, "p0", 0, 3)
    run_dir = staging.run_dir("report", "r1")
    (Path(run_dir) / "bills.parts" / "p1" / FINISHED).mkdir(parents=True)  # not a file

    with pytest.raises(StagingError, match=r"Cannot read the finishes of node 'bills' in .*r1"):
        read_finishes(staging, run_dir, "bills", ["p0", "p1"])
    with pytest.raises(StagingError, match=r"node 'bills'"):
        staging.commit_partitions("report", "r1", "bills", ["p0", "p1"])
    assert staging.manifest("report", "r1", "bills") is None
