"""Run-keyed Parquet staging: writers, atomic commit, manifests, reading back, path safety."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etlkit.errors import StagingError
from etlkit.storage import writer as writer_module
from etlkit.storage.parquet import parquet_batches
from etlkit.storage.staging import (
    LEGACY_MANIFEST,
    MANIFEST_KEY,
    Manifest,
    StagedFile,
    Staging,
    check_path_part,
)

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def batch(*ids: int) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array(ids, pa.int64()), pa.array([f"n{i}" for i in ids], pa.string())], schema=SCHEMA
    )


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    return Staging(str(tmp_path / "staging"))


def run_path(staging: Staging, run_id: str = "r1") -> Path:
    return Path(staging.run_dir("report", run_id))


def listing(staging: Staging, run_id: str = "r1") -> list[str]:
    """What a run's staging directory holds, parts directories' contents included."""
    root = run_path(staging, run_id)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def commit_rows(staging: Staging, *ids: int, run_id: str = "r1", node: str = "bills") -> Manifest:
    writer = staging.writer("report", run_id, node)
    writer.append(batch(*ids))
    return writer.commit()


# -- writing and committing ------------------------------------------------------------------


def test_commit_writes_a_manifest_with_rows_files_bytes_and_schema(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1, 2))
    writer.append(batch(3))
    manifest = writer.commit(extra={"kind": "source"})

    output = run_path(staging) / "bills.parquet"
    assert manifest.pipeline == "report"
    assert manifest.run_id == "r1"
    assert manifest.node == "bills"
    assert manifest.rows == 3
    (staged,) = manifest.files
    assert staged == StagedFile("bills.parquet", 3, output.stat().st_size, "")
    assert manifest.bytes == output.stat().st_size > 0
    assert manifest.schema == (("id", "int64"), ("name", "string"))
    assert manifest.extra == {"kind": "source"}
    assert staging.manifest("report", "r1", "bills") == manifest
    assert listing(staging) == ["bills.parquet"]  # one file: the data, its manifest in the footer
    footer = pq.read_metadata(output).metadata[MANIFEST_KEY.encode()]
    assert Manifest.from_json(footer.decode()).with_marker_size("bills.parquet", 0) == (
        manifest.with_marker_size("bills.parquet", 0)
    )
    assert pq.read_table(output).to_pydict() == {"id": [1, 2, 3], "name": ["n1", "n2", "n3"]}


def test_manifest_json_round_trips() -> None:
    manifest = Manifest(
        pipeline="report",
        run_id="r1",
        node="bills",
        rows=3,
        bytes=100,
        files=(StagedFile("part-00000.parquet", 3, 100),),
        schema=(("id", "int64"),),
        committed_at="2025-03-01T02:00:00+00:00",
        extra={"chunks": 2},
    )
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_files_are_listed_only_after_commit(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1))
    assert staging.manifest("report", "r1", "bills") is None
    with pytest.raises(
        StagingError, match=r"Node 'bills' of pipeline 'report' has no committed output in run r1"
    ):
        staging.files("report", "r1", "bills")

    writer.commit()
    files = staging.files("report", "r1", "bills")
    assert files == [str(run_path(staging) / "bills.parquet")]
    assert pq.read_table(files[0]).num_rows == 1


def test_aborted_writer_leaves_nothing(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills", part_rows=1)
    writer.append(batch(1))
    writer.append(batch(2))  # one part closed, one open
    writer.abort()
    writer.abort()  # safe twice

    assert listing(staging) == []
    assert staging.manifest("report", "r1", "bills") is None
    with pytest.raises(StagingError, match="has no committed output"):
        staging.files("report", "r1", "bills")


def test_abort_after_commit_keeps_the_committed_output(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1))
    writer.commit()
    writer.abort()
    manifest = staging.manifest("report", "r1", "bills")
    assert manifest is not None
    assert manifest.rows == 1


def test_second_writer_for_an_uncommitted_node_clears_leftovers(staging: Staging) -> None:
    interrupted = staging.writer("report", "r1", "bills", part_rows=1)
    interrupted.append(batch(1))
    interrupted.append(batch(2))
    interrupted.part_urls()  # two closed parts on disk, never committed: the process "died"
    (run_path(staging) / ".bills.partial.parquet").write_bytes(b"PAR1 half a part")
    assert len(listing(staging)) == 3

    manifest = commit_rows(staging, 7)

    assert manifest.rows == 1
    assert listing(staging) == ["bills.parquet"]
    table = pa.Table.from_batches(
        list(staging.iter_batches("report", "r1", "bills", batch_size=10))
    )
    assert table.column("id").to_pylist() == [7]


def test_committing_twice_is_refused(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1))
    first = writer.commit()

    with pytest.raises(StagingError, match=r"Cannot commit node 'bills'.*already committed"):
        writer.commit()
    with pytest.raises(StagingError, match=r"Cannot append to node 'bills'.*already committed"):
        writer.append(batch(2))
    assert staging.manifest("report", "r1", "bills") == first


def test_commit_after_abort_is_refused(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1))
    writer.abort()
    with pytest.raises(StagingError, match=r"Cannot commit node 'bills'.*already aborted"):
        writer.commit()
    assert listing(staging) == []


def test_a_committed_node_gets_no_new_writer(staging: Staging) -> None:
    commit_rows(staging, 1)
    with pytest.raises(
        StagingError, match=r"Node 'bills' of run r1 is already committed in .*immutable"
    ):
        staging.writer("report", "r1", "bills")


# -- reading back ----------------------------------------------------------------------------


def test_iter_batches_round_trips_every_row_in_order(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills", part_rows=3)
    for ids in [(1, 2), (3, 4), (5,)]:
        writer.append(batch(*ids))
    writer.commit()

    batches = list(staging.iter_batches("report", "r1", "bills", batch_size=2))

    assert all(b.num_rows <= 2 for b in batches)
    table = pa.Table.from_batches(batches)
    assert table.schema == SCHEMA
    assert table.to_pydict() == {
        "id": [1, 2, 3, 4, 5],
        "name": ["n1", "n2", "n3", "n4", "n5"],
    }


def test_iter_batches_of_an_uncommitted_node_is_refused(staging: Staging) -> None:
    with pytest.raises(StagingError, match=r"Node 'bills' has no committed output in run r1"):
        list(staging.iter_batches("report", "r1", "bills", batch_size=2))


def test_damaged_or_foreign_committed_files_are_reported(staging: Staging) -> None:
    commit_rows(staging, 1)
    output = run_path(staging) / "bills.parquet"
    output.write_bytes(output.read_bytes()[:-100])  # truncated
    with pytest.raises(StagingError, match=r"bills\.parquet is damaged \(not a complete Parquet"):
        staging.manifest("report", "r1", "bills")

    pq.write_table(pa.table({"x": [1]}), output)  # some other Parquet file
    with pytest.raises(StagingError, match=r"bills\.parquet is not a staged etlkit output"):
        staging.manifest("report", "r1", "bills")
    (problem,) = staging.verify("report", "r1", "bills")
    assert "not a staged etlkit output" in problem

    table = pa.table({"x": [1]}).replace_schema_metadata({MANIFEST_KEY: "{not json"})
    pq.write_table(table, output)
    with pytest.raises(StagingError, match=r"Manifest in .*bills\.parquet is corrupt"):
        staging.manifest("report", "r1", "bills")


# -- empty outputs and schemas ---------------------------------------------------------------


def test_empty_output_with_empty_schema_writes_one_empty_part(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    manifest = writer.commit(empty_schema=SCHEMA)

    assert manifest.rows == 0
    assert [f.name for f in manifest.files] == ["bills.parquet"]
    assert manifest.files[0].rows == 0
    assert manifest.schema == (("id", "int64"), ("name", "string"))
    (path,) = staging.files("report", "r1", "bills")
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.schema == SCHEMA


def test_empty_output_without_a_schema_commits_no_files(staging: Staging) -> None:
    manifest = staging.writer("report", "r1", "bills").commit()
    assert manifest.rows == 0
    assert manifest.files == ()
    assert manifest.schema == ()
    assert staging.files("report", "r1", "bills") == []
    assert staging.committed("report", "r1") == ["bills"]  # committed, with nothing to read
    assert staging.manifest("report", "r1", "bills") == manifest


def test_empty_schema_is_ignored_once_rows_were_written(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1))
    manifest = writer.commit(empty_schema=pa.schema([("other", pa.float64())]))
    assert manifest.schema == (("id", "int64"), ("name", "string"))
    assert len(manifest.files) == 1


def test_chunks_with_castable_types_are_cast_to_the_first_schema(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1))
    writer.append(pa.record_batch({"name": ["n2"], "id": pa.array([2], pa.int32())}))
    manifest = writer.commit()

    assert manifest.schema == (("id", "int64"), ("name", "string"))
    table = pa.Table.from_batches(list(staging.iter_batches("report", "r1", "bills", batch_size=8)))
    assert table.schema == SCHEMA
    assert table.column("id").to_pylist() == [1, 2]


@pytest.mark.parametrize(
    "chunk",
    [
        pa.record_batch({"id": ["x"], "name": ["n"]}),  # text that is not a number
        pa.record_batch({"id": [1.5], "name": ["n"]}),  # a float that would be truncated
        pa.record_batch({"id": [1]}),  # a column missing
        pa.record_batch({"id": [1], "name": ["n"], "extra": [True]}),  # a column too many
        pa.record_batch({"ident": [1], "name": ["n"]}),  # a column renamed
    ],
    ids=["text", "fraction", "missing", "extra", "renamed"],
)
def test_chunks_that_do_not_fit_the_first_schema_raise_naming_the_node(
    staging: Staging, chunk: pa.RecordBatch
) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1))
    with pytest.raises(
        StagingError,
        match=r"Node 'bills' of pipeline 'report' \(run r1\) produced a chunk with columns "
        r".* after chunks with \[id: int64, name: string\]; every chunk of a node must have "
        r"the same columns",
    ):
        writer.append(chunk)
    writer.abort()


# -- path safety -----------------------------------------------------------------------------


UNSAFE = ["../x", "a/b", "", ".hidden", "..", "x..y", "/abs", "a\\b", "x" * 129]


@pytest.mark.parametrize("name", UNSAFE)
def test_path_unsafe_names_are_rejected(staging: Staging, name: str) -> None:
    message = re.escape(f"{name!r} is not safe in a staging path")
    for pipeline, run_id, node in [(name, "r1", "n"), ("p", name, "n"), ("p", "r1", name)]:
        with pytest.raises(StagingError, match=message):
            staging.writer(pipeline, run_id, node)
    assert not Path(staging.root).exists()


@pytest.mark.parametrize("kind", ["pipeline name", "run id", "node name"])
def test_unsafe_name_error_says_what_the_value_is(kind: str) -> None:
    with pytest.raises(StagingError, match=rf"^{kind} '\.\./x' is not safe in a staging path"):
        check_path_part(kind, "../x")


@pytest.mark.parametrize("name", ["monthly_report", "20250301T020000Z-7f3a2c", "v1.2", "A-b_3"])
def test_ordinary_names_are_accepted(name: str) -> None:
    assert check_path_part("node name", name) == name


def test_runs_refuses_an_unsafe_pipeline_name(staging: Staging) -> None:
    with pytest.raises(StagingError, match="not safe in a staging path"):
        staging.runs("../etc")


# -- parts, concurrency, runs ----------------------------------------------------------------


def test_parts_roll_over_when_part_rows_is_reached(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills", part_rows=2)
    for i in range(5):
        writer.append(batch(i))
    manifest = writer.commit()

    assert [(f.name, f.rows) for f in manifest.files] == [
        ("bills.parts/part-00000.parquet", 2),
        ("bills.parts/part-00001.parquet", 2),
        ("bills.parquet", 1),
    ]
    assert [len(f.checksum) for f in manifest.files] == [8, 8, 0]  # the last holds the manifest
    assert manifest.rows == 5
    assert manifest.bytes == sum(f.bytes for f in manifest.files)
    files = staging.files("report", "r1", "bills")
    assert [pq.read_metadata(f).num_rows for f in files] == [2, 2, 1]
    rows = [b.num_rows for b in staging.iter_batches("report", "r1", "bills", batch_size=10)]
    assert sum(rows) == 5


def test_an_output_of_exactly_part_rows_is_one_file(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills", part_rows=2)
    writer.append(batch(1))
    writer.append(batch(2))
    manifest = writer.commit()
    assert [(f.name, f.rows) for f in manifest.files] == [("bills.parquet", 2)]
    assert listing(staging) == ["bills.parquet"]


def test_parts_read_before_the_commit_stay_where_they_were_read(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1, 2))
    urls = writer.part_urls()  # e.g. for whole-output checks in DuckDB, before the commit
    assert urls == [str(run_path(staging) / "bills.parts/part-00000.parquet")]
    assert staging.manifest("report", "r1", "bills") is None
    manifest = writer.commit()

    assert [(f.name, f.rows) for f in manifest.files] == [("bills.parts/part-00000.parquet", 2)]
    assert listing(staging) == ["bills.parquet", "bills.parts/part-00000.parquet"]
    assert staging.files("report", "r1", "bills") == urls
    assert pq.read_metadata(run_path(staging) / "bills.parquet").num_rows == 0
    assert staging.verify("report", "r1", "bills") == []


def test_batches_after_the_first_are_written_in_order_by_the_staging_thread(
    staging: Staging,
) -> None:
    writer = staging.writer("report", "r1", "bills", part_rows=7)
    for i in range(100):  # more than the queue holds: append waits for the thread
        writer.append(batch(2 * i, 2 * i + 1))
    assert writer._thread is not None
    assert writer._thread.name == "etlkit-stage-bills"
    manifest = writer.commit()

    assert writer._thread is None  # joined by the commit
    assert manifest.rows == 200
    assert [f.rows for f in manifest.files] == [8] * 25
    read = pa.Table.from_batches(staging.iter_batches("report", "r1", "bills", batch_size=64))
    assert read.column("id").to_pylist() == list(range(200))


def test_a_single_batch_is_written_without_a_staging_thread(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1, 2, 3))
    assert writer._thread is None
    assert writer.commit().rows == 3


def test_a_write_failing_in_the_staging_thread_is_raised_by_commit(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills", part_rows=1)
    writer.append(batch(1))  # held in memory
    writer.append(batch(2))  # too many rows to hold: both written at once
    shutil.rmtree(run_path(staging))  # the full part cannot be moved to bills.parts/
    writer.append(batch(3))

    with pytest.raises(OSError, match=r"\.bills\.partial\.parquet"):
        writer.commit()
    writer.abort()
    assert staging.manifest("report", "r1", "bills") is None
    assert listing(staging) == []


def test_abort_stops_the_staging_thread_and_removes_the_parts(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills", part_rows=1)
    for i in range(10):
        writer.append(batch(i))
    writer.abort()
    assert writer._thread is None
    assert listing(staging) == []


RUNS = [("r1", 100), ("r2", 200)]


def test_two_runs_write_concurrently_without_touching_each_other(staging: Staging) -> None:
    together = threading.Barrier(2, timeout=10)  # a failing thread breaks it for the other

    def run(run_id: str, base: int) -> Manifest:
        writer = staging.writer("report", run_id, "bills", part_rows=2)
        together.wait()  # both writers exist (and cleared their directories) before any append
        for i in range(6):
            writer.append(batch(base + i))
            if i == 2:
                together.wait()  # both are half way: their parts interleave
        together.wait()
        return writer.commit()

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {run_id: pool.submit(run, run_id, base) for run_id, base in RUNS}
        manifests = {run_id: future.result(timeout=20) for run_id, future in futures.items()}

    assert staging.runs("report") == ["r1", "r2"]
    for run_id, base in RUNS:
        assert manifests[run_id].rows == 6
        assert len(manifests[run_id].files) == 3
        ids = [
            i
            for b in staging.iter_batches("report", run_id, "bills", batch_size=10)
            for i in b.column("id").to_pylist()
        ]
        assert ids == list(range(base, base + 6))


def test_committing_one_node_leaves_other_nodes_of_the_run_alone(staging: Staging) -> None:
    pending = staging.writer("report", "r1", "claims")
    pending.append(batch(9))
    commit_rows(staging, 1, node="bills")
    commit_rows(staging, 2, run_id="r2", node="claims")
    pending.abort()
    assert staging.manifest("report", "r1", "bills") is not None
    assert staging.manifest("report", "r1", "claims") is None
    assert staging.manifest("report", "r2", "claims") is not None


def test_runs_are_listed_oldest_first(staging: Staging) -> None:
    for run_id in ["20250302T020000Z-bbbbbb", "20250301T020000Z-aaaaaa", "20250303T020000Z-0"]:
        commit_rows(staging, 1, run_id=run_id)
    commit_rows(staging, 1, run_id="20240101T000000Z-ffffff")
    staging.writer("other", "20200101T000000Z-000000", "bills").abort()

    assert staging.runs("report") == [
        "20240101T000000Z-ffffff",
        "20250301T020000Z-aaaaaa",
        "20250302T020000Z-bbbbbb",
        "20250303T020000Z-0",
    ]


def test_runs_of_an_unknown_pipeline_is_empty(staging: Staging) -> None:
    assert staging.runs("never_ran") == []


def test_local_urls_are_plain_paths(staging: Staging, tmp_path: Path) -> None:
    assert staging.local
    path = staging.output_path("report", "r1", "bills")
    assert path == f"{tmp_path}/staging/report/r1/bills.parquet"
    assert staging.url(path) == path


def test_memory_filesystem_urls_carry_the_protocol() -> None:
    staging = Staging("memory://etlkit-test-staging-urls")
    try:
        assert not staging.local
        writer = staging.writer("report", "r1", "bills")
        writer.append(batch(1, 2))
        writer.commit()
        (url,) = staging.files("report", "r1", "bills")
        assert url.startswith("memory://")
        rows = [b.num_rows for b in staging.iter_batches("report", "r1", "bills", batch_size=8)]
        assert rows == [2]
    finally:
        staging.fs.rm(staging.root, recursive=True)


def test_verify_detects_a_rewritten_or_missing_part(tmp_path: Path) -> None:
    staging = Staging(str(tmp_path / "staging"))
    writer = staging.writer("report", "r1", "bills", part_rows=3)
    writer.append(pa.record_batch({"x": [1, 2, 3]}))
    writer.append(pa.record_batch({"x": [4]}))
    writer.commit()
    assert staging.verify("report", "r1", "bills") == []

    part = tmp_path / "staging/report/r1/bills.parts/part-00000.parquet"
    pq.write_table(pa.table({"x": [9, 9, 9]}), part)
    (problem,) = staging.verify("report", "r1", "bills")
    assert "changed since it was committed" in problem

    part.unlink()
    (problem,) = staging.verify("report", "r1", "bills")
    assert "part-00000.parquet" in problem

    (tmp_path / "staging/report/r1/bills.parquet").unlink()
    (problem,) = staging.verify("report", "r1", "bills")
    assert "no committed output" in problem


def test_verify_refuses_an_output_committed_for_another_node_or_run(staging: Staging) -> None:
    commit_rows(staging, 1, run_id="r1")
    run_path(staging, "r2").mkdir()
    shutil.copy(run_path(staging, "r1") / "bills.parquet", run_path(staging, "r2"))
    (problem,) = staging.verify("report", "r2", "bills")
    assert "was committed for node 'bills' of run r1" in problem


def test_a_node_named_like_another_nodes_file_does_not_touch_it(staging: Staging) -> None:
    commit_rows(staging, 1, node="bills")
    commit_rows(staging, 2, node="bills.parquet")  # its leftovers' cleanup spares bills.parquet
    commit_rows(staging, 3, node="bills.parts")
    assert staging.committed("report", "r1") == ["bills", "bills.parquet", "bills.parts"]
    for node, ids in [("bills", [1]), ("bills.parquet", [2]), ("bills.parts", [3])]:
        read = staging.iter_batches("report", "r1", node, batch_size=8)
        assert pa.Table.from_batches(read).column("id").to_pylist() == ids
    staging.discard("report", "r1", "bills.parquet")
    assert staging.committed("report", "r1") == ["bills", "bills.parts"]


def test_discard_and_delete_run_remove_committed_outputs_and_leftovers(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills", part_rows=1)
    writer.append_many([batch(1), batch(2)])
    writer.commit()
    commit_rows(staging, 3, node="claims")
    left = staging.writer("report", "r1", "left", part_rows=1)  # never committed nor aborted
    left.append_many([batch(4), batch(5), batch(6)])
    left._settle()

    staging.discard("report", "r1", "bills")
    assert staging.committed("report", "r1") == ["claims"]
    assert listing(staging) == [
        ".left.partial.parquet",
        "claims.parquet",
        "left.parts/part-00000.parquet",
        "left.parts/part-00001.parquet",
    ]
    staging.discard("report", "r1", "left")
    assert listing(staging) == ["claims.parquet"]

    staging.delete_run("report", "r1")
    assert not run_path(staging).exists()
    assert staging.runs("report") == []
    staging.delete_run("report", "r1")  # nothing left: no error


def write_legacy_output(staging: Staging, node: str = "bills") -> Path:
    """A committed output as etlkit staged it before markers: a directory per node."""
    directory = run_path(staging) / node
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([batch(1, 2)]), directory / "part-00000.parquet")
    size = (directory / "part-00000.parquet").stat().st_size
    manifest = {
        "bytes": size,
        "committed_at": "2026-11-01T00:00:00+00:00",
        "extra": {"kind": "source"},
        "files": [{"bytes": size, "checksum": "", "name": "part-00000.parquet", "rows": 2}],
        "format_version": 1,
        "node": node,
        "pipeline": "report",
        "rows": 2,
        "run_id": "r1",
        "schema": [["id", "int64"], ["name", "string"]],
    }
    (directory / LEGACY_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return directory


def test_outputs_of_the_directory_layout_are_still_read_resumed_and_deleted(
    staging: Staging,
) -> None:
    directory = write_legacy_output(staging)
    commit_rows(staging, 3, node="claims")

    manifest = staging.manifest("report", "r1", "bills")
    assert manifest is not None
    assert [f.name for f in manifest.files] == ["bills/part-00000.parquet"]
    assert staging.files("report", "r1", "bills") == [str(directory / "part-00000.parquet")]
    read = staging.iter_batches("report", "r1", "bills", batch_size=8)
    assert pa.Table.from_batches(read).column("id").to_pylist() == [1, 2]
    assert staging.verify("report", "r1", "bills") == []
    assert staging.committed("report", "r1") == ["bills", "claims"]
    with pytest.raises(StagingError, match=r"already committed in .*_manifest\.json"):
        staging.writer("report", "r1", "bills")

    staging.discard("report", "r1", "bills")
    assert not directory.exists()
    write_legacy_output(staging)
    staging.delete_run("report", "r1")
    assert not run_path(staging).exists()


def test_uncommitted_leftovers_of_the_directory_layout_are_cleared(staging: Staging) -> None:
    directory = write_legacy_output(staging)
    (directory / LEGACY_MANIFEST).unlink()  # it never committed
    assert staging.manifest("report", "r1", "bills") is None
    commit_rows(staging, 5)
    assert listing(staging) == ["bills.parquet"]


@pytest.mark.parametrize("batch_size", [1, 3, 7, 100])
def test_parquet_batches_reads_a_many_group_file_in_order(tmp_path: Path, batch_size: int) -> None:
    path = tmp_path / "groups.parquet"
    table = pa.table({"n": list(range(250)), "s": [str(i) for i in range(250)]})
    pq.write_table(table, path, row_group_size=4)  # 63 row groups: several windows

    batches = list(parquet_batches(pq.ParquetFile(path), batch_size=batch_size, columns=["n"]))

    assert all(b.num_rows <= batch_size for b in batches)
    assert pa.Table.from_batches(batches).column("n").to_pylist() == list(range(250))
    assert batches[0].schema.names == ["n"]


def _reopen(path: Path, opened: list[str] | None = None) -> Callable[[], Iterator[pq.ParquetFile]]:
    @contextlib.contextmanager
    def reopen() -> Iterator[pq.ParquetFile]:
        if opened is not None:
            opened.append(threading.current_thread().name)
        with path.open("rb") as handle:
            yield pq.ParquetFile(handle)

    return reopen  # type: ignore[return-value]


@pytest.mark.parametrize("batch_size", [1, 3, 7, 100])
def test_a_second_reader_gives_the_same_batches_in_the_same_order(
    tmp_path: Path, batch_size: int
) -> None:
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"n": list(range(250))}), path, row_group_size=4)
    opened: list[str] = []
    firsts: list[int] = []

    def convert(batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        firsts.append(first_row)
        return batch

    alone = list(parquet_batches(pq.ParquetFile(path), batch_size=batch_size))
    helped = list(
        parquet_batches(
            pq.ParquetFile(path),
            batch_size=batch_size,
            reopen=_reopen(path, opened),
            convert=convert,
        )
    )

    assert [b.num_rows for b in helped] == [b.num_rows for b in alone]
    assert pa.Table.from_batches(helped).equals(pa.Table.from_batches(alone))
    assert sorted(firsts) == [b.column("n")[0].as_py() for b in helped]  # rows from the start
    assert opened == (["etlkit-parquet-reader"] if batch_size < 100 else [])  # one window: alone


def test_a_failure_in_a_window_read_by_the_second_reader_reaches_the_consumer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"n": list(range(250))}), path, row_group_size=4)

    def convert(batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        if first_row <= 220 < first_row + batch.num_rows:  # a window of the second reader
            raise ValueError(
                f"bad value at row {220 - first_row + 1} of the batch from {first_row}"
            )
        return batch

    batches = parquet_batches(
        pq.ParquetFile(path), batch_size=5, reopen=_reopen(path), convert=convert
    )
    seen: list[pa.RecordBatch] = []
    with pytest.raises(ValueError, match="bad value at row 1 of the batch from 220"):
        seen.extend(batches)  # keeps what came before the failure
    assert sum(b.num_rows for b in seen) == 220  # every row before it, nothing after
    assert not [t for t in threading.enumerate() if t.name == "etlkit-parquet-reader"]


def test_a_consumer_stopping_early_stops_the_second_reader(tmp_path: Path) -> None:
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"n": list(range(2_000))}), path, row_group_size=10)
    batches = parquet_batches(pq.ParquetFile(path), batch_size=5, reopen=_reopen(path))

    first = [next(batches) for _ in range(30)]  # into the second reader's first window
    batches.close()

    assert [b.column("n")[0].as_py() for b in first] == list(range(0, 150, 5))
    assert not [t for t in threading.enumerate() if t.name == "etlkit-parquet-reader"]


def test_a_second_reader_that_cannot_open_the_file_fails_the_read(tmp_path: Path) -> None:
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"n": list(range(250))}), path, row_group_size=4)
    gone = tmp_path / "gone.parquet"

    with pytest.raises(FileNotFoundError):
        list(parquet_batches(pq.ParquetFile(path), batch_size=5, reopen=_reopen(gone)))


def test_parquet_batches_of_a_file_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"n": pa.array([], pa.int64())}), path)

    assert list(parquet_batches(pq.ParquetFile(path), batch_size=10)) == []


# -- small outputs, and a run directory's first writers --------------------------------------


def test_a_small_output_is_held_in_memory_and_written_by_the_commit(staging: Staging) -> None:
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1, 2))
    writer.append(batch(3))
    assert listing(staging) == []  # nothing written yet
    assert writer._thread is None
    manifest = writer.commit()
    assert listing(staging) == ["bills.parquet"]
    assert [(f.name, f.rows) for f in manifest.files] == [("bills.parquet", 3)]
    assert pq.ParquetFile(run_path(staging) / "bills.parquet").metadata.num_row_groups == 2


def test_an_output_outgrowing_memory_is_written_to_a_file_at_once(
    staging: Staging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("etlkit.storage.writer._HELD_BYTES", batch(1, 2).get_total_buffer_size())
    writer = staging.writer("report", "r1", "bills")
    writer.append(batch(1, 2))
    assert listing(staging) == []
    writer.append(batch(3, 4))  # the held batch and this one go to the part being written
    assert listing(staging) == [".bills.partial.parquet"]
    writer.append(batch(5))  # through the staging thread
    assert writer._thread is not None
    manifest = writer.commit()
    assert listing(staging) == ["bills.parquet"]
    assert manifest.rows == 5
    read = pa.Table.from_batches(staging.iter_batches("report", "r1", "bills", batch_size=8))
    assert read.column("id").to_pylist() == [1, 2, 3, 4, 5]


def test_a_run_directory_made_elsewhere_is_checked_for_leftovers(staging: Staging) -> None:
    crashed = Staging(staging.root_url).writer("report", "r1", "bills", part_rows=1)
    crashed.append_many([batch(1), batch(2), batch(3)])
    crashed._settle()  # a process that died here left two parts and a partial file
    assert len(listing(staging)) == 3

    commit_rows(staging, 7)  # another Staging: the directory is not its own
    assert listing(staging) == ["bills.parquet"]
    with pytest.raises(StagingError, match="already committed"):
        Staging(staging.root_url).writer("report", "r1", "bills")


def test_a_deleted_run_directory_is_made_again(staging: Staging) -> None:
    commit_rows(staging, 1)
    staging.delete_run("report", "r1")
    commit_rows(staging, 2)
    read = pa.Table.from_batches(staging.iter_batches("report", "r1", "bills", batch_size=8))
    assert read.column("id").to_pylist() == [2]


def test_an_unwritable_staging_root_is_a_staging_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory", encoding="utf-8")
    staging = Staging(str(tmp_path / "file" / "staging"))
    with pytest.raises(StagingError, match=r"Cannot prepare staging directory .*file/staging"):
        staging.writer("report", "r1", "bills")


@pytest.mark.parametrize("rows", [10, 200_000])  # held and written at commit, or on its thread
def test_encode_as_stages_in_a_sinks_codec_and_types(staging: Staging, rows: int) -> None:
    writer = staging.writer("p", "r1", "n")
    writer.encode_as("zstd", lambda s: pa.schema([f.with_type(pa.string()) for f in s]))
    text = pa.array([f"value {i}" for i in range(rows)], pa.large_string())
    table = pa.table({"text": text})
    writer.append_many(table.to_batches(max_chunksize=max(1, rows // 4)))
    manifest = writer.commit()

    (url,) = staging.files("p", "r1", "n")
    metadata = pq.read_metadata(url.removeprefix("file://"))
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert metadata.schema.to_arrow_schema().field("text").type == pa.string()
    assert manifest.schema == (("text", "string"),)
    back = pa.Table.from_batches(staging.iter_batches("p", "r1", "n", batch_size=1 << 16))
    assert back.column("text").to_pylist() == text.to_pylist()
    again = staging.writer("p", "r2", "n")
    again.append(table.to_batches()[0])
    with pytest.raises(StagingError, match="chosen before its first batch"):
        again.encode_as("zstd")


def test_small_chunks_are_gathered_into_row_groups(
    staging: Staging, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a filtered stream's chunks are small: each its own row group would cost per-group work
    # for a few rows; the staging thread gathers them (a part still closes at `part_rows`)
    monkeypatch.setattr(writer_module, "_GROUP_ROWS", 300)
    monkeypatch.setattr(writer_module, "_HELD_BYTES", 0)  # written as it comes, not held
    writer = staging.writer("report", "r1", "bills", part_rows=1000)
    ids = list(range(1500))
    for start in range(0, 1500, 100):
        writer.append(batch(*ids[start : start + 100]))
    manifest = writer.commit()

    files = [run_path(staging) / f.name for f in manifest.files]
    groups = [
        [
            pq.read_metadata(f).row_group(g).num_rows
            for g in range(pq.read_metadata(f).num_row_groups)
        ]
        for f in files
    ]
    assert groups == [[300, 300, 300, 100], [300, 200]]  # 1000 rows a part, then the rest
    read = [
        i
        for b in staging.iter_batches("report", "r1", "bills", batch_size=64)
        for i in b.column("id").to_pylist()
    ]
    assert read == ids


def test_a_restarted_writer_drops_the_row_group_it_was_gathering(
    staging: Staging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "_GROUP_ROWS", 300)
    monkeypatch.setattr(writer_module, "_HELD_BYTES", 0)
    writer = staging.writer("report", "r1", "bills")
    writer.append_many([batch(1, 2), batch(3)])
    writer.restart()
    writer.append(batch(7, 8))
    writer.commit()
    read = [
        i
        for b in staging.iter_batches("report", "r1", "bills", batch_size=64)
        for i in b.column("id").to_pylist()
    ]
    assert read == [7, 8]
