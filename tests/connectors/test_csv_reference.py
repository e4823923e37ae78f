"""A CSV source whose chunks all stream to their consumers is staged as a reference to its files
(sizes and fingerprints), not a copy: a resumed run, `etlkit query` and SQL or lazy nodes over
the staged output parse the files again, exactly as the source did."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import CsvSource
from connectors.files.csv_format import CsvLayout
from etlkit.runs.recording import retry_run
from etlkit.storage.formats import file_fingerprint
from etlkit.storage.querying import connect
from etlkit.storage.staging import Staging
from etlkit.storage.store import RunStore
from etlkit.testing import MemorySink

# pyarrow's rules, which every reader of the reference must repeat: `NA` and an empty field are
# null in a number or date column, while a string column keeps them as text
CSV = (
    "id,amount,note,day,extra\n"
    "1,10.5,NA,2024-01-05,x\n"
    "2,NA,,2024-01-06,y\n"
    '3,,"quoted, comma",2024-01-07,z\n'
    "4,7.25,plain,,w\n"
)
EXPECTED = [
    {"id": 1, "amount": 10.5, "note": "NA", "day": "2024-01-05"},
    {"id": 2, "amount": None, "note": "", "day": "2024-01-06"},
    {"id": 3, "amount": None, "note": "quoted, comma", "day": "2024-01-07"},
    {"id": 4, "amount": 7.25, "note": "plain", "day": None},
]


class Row(pdp.DataFrameModel):
    id: int = pdp.Field(nullable=False, ge=1)
    amount: float = pdp.Field(nullable=True, ge=0)
    note: str
    day: pl.Date = pdp.Field(nullable=True)


class UniqueRow(Row):
    id: int = pdp.Field(unique=True)


FAIL = {"on": False}


class Flaky(ek.Transform[Row, Row]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        if FAIL["on"]:
            raise ConnectionError("warehouse unreachable")
        return batch


class Totals(ek.Lazy[Any]):
    def query(self, ctx: ek.Context, rows: pl.LazyFrame) -> pl.LazyFrame:
        return rows.select(pl.len().alias("n"), pl.col("amount").sum().alias("s"))


class CsvPipe(ek.Pipeline):
    """Both consumers take the source's chunks from channels: it is staged as a reference."""

    params: ClassVar[dict[str, str]] = {"path": ""}
    rows = CsvSource("{path}", schema=Row, chunk_rows=2)
    passed = Flaky(rows)
    total = ek.Sql("select count(*) as n, sum(amount) as s, count(note) as notes from {rows}")
    out = MemorySink(passed)
    total_out = MemorySink(total)


class LazyPipe(CsvPipe):
    """The same, and a lazy node, which reads the staged output: a copy."""

    lazy = Totals(CsvPipe.rows)
    lazy_out = MemorySink(lazy)


class GrownPipe(LazyPipe):
    """`CsvPipe` grown a lazy node since its last attempt: a resume reads the reference."""

    name = "csv_pipe"


class UniquePipe(ek.Pipeline):
    params: ClassVar[dict[str, str]] = {"path": ""}
    rows = CsvSource("{path}", schema=UniqueRow, chunk_rows=2)
    out = MemorySink(rows)


@pytest.fixture(autouse=True)
def _succeed() -> Iterator[None]:
    FAIL["on"] = False
    yield
    FAIL["on"] = False


@pytest.fixture
def settings(tmp_path: Path) -> ek.Settings:
    cli = {"paths.state_dir": str(tmp_path / "state"), "run.timeout": 60}
    return ek.load_settings(tmp_path, env={}, cli=cli)


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "rows.csv"
    path.parent.mkdir()
    path.write_text(CSV)
    return path


def rows_of(table: pa.Table) -> list[dict[str, object]]:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    out = frame.select("id", "amount", "note", pl.col("day").cast(pl.String)).sort("id")
    return out.to_dicts()


def test_a_streamed_csv_source_is_staged_as_a_reference_to_its_files(
    settings: ek.Settings, csv_file: Path
) -> None:
    result = CsvPipe.run(settings=settings, params={"path": str(csv_file)})

    assert result.state == "success", result.error
    assert rows_of(CsvPipe.out.table()) == EXPECTED
    assert CsvPipe.total_out.table().to_pylist() == [{"n": 4, "s": 17.75, "notes": 4}]
    staging = Staging(settings.paths.staging_root)
    manifest = staging.manifest("csv_pipe", result.run_id, "rows")
    assert manifest is not None
    assert isinstance(manifest.reference_format, CsvLayout)
    assert [f.name for f in manifest.files] == [str(csv_file)]
    assert manifest.rows == 4
    assert manifest.bytes == csv_file.stat().st_size  # the files referenced
    committed = pq.ParquetFile(staging.output_path("csv_pipe", result.run_id, "rows"))
    assert committed.metadata.num_rows == 0  # no copy of the rows: the manifest only
    assert dict(manifest.schema)["day"] == "date32[day]"
    # read back, the staged output is what the source yielded
    back = pa.Table.from_batches(
        staging.iter_batches("csv_pipe", result.run_id, "rows", batch_size=2)
    )
    assert rows_of(back) == EXPECTED
    assert back.schema.field("day").type == pa.date32()


def failed_attempt(settings: ek.Settings, csv_file: Path) -> ek.RunResult:
    """A run of `CsvPipe` whose transform failed after the source committed its reference,
    with the SQL node's output discarded (if it committed), so a resume runs it again."""
    FAIL["on"] = True
    first = CsvPipe.run(settings=settings, params={"path": str(csv_file)})
    FAIL["on"] = False
    assert first.state == "failed"
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("csv_pipe", first.run_id, "rows") is not None
    staging.discard("csv_pipe", first.run_id, "total")
    return first


def test_a_resumed_run_parses_the_referenced_files_for_its_sql_and_python_consumers(
    settings: ek.Settings, csv_file: Path
) -> None:
    first = failed_attempt(settings, csv_file)

    again = CsvPipe.run(
        settings=settings, params={"path": str(csv_file)}, run_id=first.run_id, reuse={"rows"}
    )

    assert again.state == "success", again.error
    assert again.nodes["rows"].state == "reused"
    assert rows_of(CsvPipe.out.table()) == EXPECTED  # from staging, through the transform
    # the SQL node reads a view over the files parsed again, with the model's types
    assert CsvPipe.total_out.table().to_pylist() == [{"n": 4, "s": 17.75, "notes": 4}]


def test_a_lazy_consumer_reads_the_source_from_staging_so_it_is_copied(
    settings: ek.Settings, csv_file: Path
) -> None:
    result = LazyPipe.run(settings=settings, params={"path": str(csv_file)})

    assert result.state == "success", result.error
    assert LazyPipe.lazy_out.table().to_pylist() == [{"n": 4, "s": 17.75}]
    manifest = Staging(settings.paths.staging_root).manifest("lazy_pipe", result.run_id, "rows")
    assert manifest is not None
    assert manifest.reference_format is None
    assert manifest.bytes > 0


def test_a_lazy_node_of_a_resumed_run_scans_a_reference_parsed_again(
    settings: ek.Settings, csv_file: Path
) -> None:
    first = failed_attempt(settings, csv_file)

    again = GrownPipe.run(
        settings=settings, params={"path": str(csv_file)}, run_id=first.run_id, reuse={"rows"}
    )

    assert again.state == "success", again.error
    assert again.nodes["rows"].state == "reused"
    assert GrownPipe.lazy_out.table().to_pylist() == [{"n": 4, "s": 17.75}]


def test_retry_reuses_an_unchanged_file_and_reads_a_changed_one_again(
    settings: ek.Settings, csv_file: Path
) -> None:
    with RunStore(settings.paths.store) as store:
        FAIL["on"] = True
        first = CsvPipe.run(settings=settings, params={"path": str(csv_file)}, store=store)
        assert first.state == "failed"
        staging = Staging(settings.paths.staging_root)
        assert staging.manifest("csv_pipe", first.run_id, "rows") is not None
        assert staging.verify("csv_pipe", first.run_id, "rows") == []

        FAIL["on"] = False
        second = retry_run(CsvPipe, first.run_id, settings=settings, store=store)
        assert second.state == "success", second.error
        assert second.nodes["rows"].state == "reused"
        assert rows_of(CsvPipe.out.table()) == EXPECTED

        # appending a row: the resume sees the change and reads the file again
        FAIL["on"] = True
        third = CsvPipe.run(settings=settings, params={"path": str(csv_file)}, store=store)
        assert third.state == "failed"
        with csv_file.open("a") as handle:
            handle.write("5,1.0,new,2024-01-08,v\n")
        problems = staging.verify("csv_pipe", third.run_id, "rows")
        assert len(problems) == 1
        assert "changed since it was committed" in problems[0]
        assert str(csv_file) in problems[0]

        FAIL["on"] = False
        fourth = retry_run(CsvPipe, third.run_id, settings=settings, store=store)
        assert fourth.state == "success", fourth.error
        assert fourth.nodes["rows"].state == "done"
        assert [r["id"] for r in rows_of(CsvPipe.out.table())] == [1, 2, 3, 4, 5]


def test_query_views_parse_the_referenced_files_and_open_nothing_else(
    settings: ek.Settings, csv_file: Path
) -> None:
    first = CsvPipe.run(settings=settings, params={"path": str(csv_file)})
    second = CsvPipe.run(settings=settings, params={"path": str(csv_file)})
    assert first.state == second.state == "success"

    con = connect(Staging(settings.paths.staging_root), "csv_pipe", second.run_id)
    try:
        table = con.sql("select * from rows").to_arrow_table()
        assert rows_of(table) == EXPECTED
        assert table.schema.field("day").type == pa.date32()
        assert con.sql("select count(*), count(distinct run_id) from all_rows").fetchall() == [
            (8, 2)
        ]
        with pytest.raises(Exception, match=r"(?i)permission|disabled|external"):
            con.sql(f"select * from read_csv('{csv_file}')").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize(
    "ids", [list(range(1, 400)), [*range(200, 400), *range(1, 200)]], ids=["increasing", "shuffled"]
)
def test_a_unique_key_is_checked_across_chunks_of_a_reference(
    settings: ek.Settings, csv_file: Path, ids: list[int]
) -> None:
    csv_file.write_text("id,amount,note,day,extra\n" + "".join(f"{i},1.0,n,,x\n" for i in ids))

    result = UniquePipe.run(settings=settings, params={"path": str(csv_file)})

    assert result.state == "success", result.error
    manifest = Staging(settings.paths.staging_root).manifest("unique_pipe", result.run_id, "rows")
    assert manifest is not None
    assert isinstance(manifest.reference_format, CsvLayout)


def test_a_key_repeated_in_a_later_chunk_of_a_reference_fails_the_run(
    settings: ek.Settings, csv_file: Path
) -> None:
    rows = "".join(f"{i},1.0,n,,x\n" for i in [*range(2, 400), 2])  # blocks of >= 1 KiB
    csv_file.write_text("id,amount,note,day,extra\n" + rows)

    result = UniquePipe.run(settings=settings, params={"path": str(csv_file)})

    assert isinstance(result.error, ek.DataValidationError)
    assert "column 'id' must be unique across all chunks; 1 value(s) repeat" in str(result.error)
    assert result.nodes["rows"].chunks_out > 1
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("unique_pipe", result.run_id, "rows") is None


def test_bad_rows_in_a_referenced_csv_fail_the_run_and_commit_nothing(
    settings: ek.Settings, csv_file: Path
) -> None:
    csv_file.write_text(CSV + "0,-1.0,bad,2024-01-09,q\n")

    result = CsvPipe.run(settings=settings, params={"path": str(csv_file)})

    assert isinstance(result.error, ek.DataValidationError)
    assert "greater_than_or_equal_to(1)" in str(result.error)
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("csv_pipe", result.run_id, "rows") is None


def test_a_layout_round_trips_through_json_and_parses_headerless_latin1(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes("1;caf\xe9;2.5\n2;NA;\n".encode("latin1"))
    schema = pa.schema([("n", pa.int64()), ("w", pa.string()), ("f", pa.float64())])
    layout = CsvLayout(schema, ";", False, "latin1", ("n", "w", "f"))

    again = CsvLayout.from_json(layout.to_json())

    assert again == layout
    rows = pa.Table.from_batches(list(again.batches([str(path)], batch_size=10))).to_pylist()
    assert rows == [{"n": 1, "w": "café", "f": 2.5}, {"n": 2, "w": "NA", "f": None}]
    assert again.dataset([str(path)]).to_table().to_pylist() == rows


def test_a_fingerprint_changes_with_the_content_or_the_modification_time(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("file")
    path = tmp_path / "x.csv"
    path.write_text("a\n" + "1\n" * 100_000)
    size, first = file_fingerprint(fs, str(path))
    assert size == path.stat().st_size
    assert file_fingerprint(fs, str(path)) == (size, first)

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_fingerprint(fs, str(path))[1] != first  # touched

    path.write_text("a\n" + "1\n" * 99_999 + "2\n")  # same size, another last line
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_fingerprint(fs, str(path)) == (size, file_fingerprint(fs, str(path))[1])
    assert file_fingerprint(fs, str(path))[1] != first


def test_a_file_with_only_a_header_is_referenced_and_reads_back_empty(
    settings: ek.Settings, csv_file: Path
) -> None:
    csv_file.write_text("id,amount,note,day,extra\n")

    result = CsvPipe.run(settings=settings, params={"path": str(csv_file)})

    assert result.state == "success", result.error
    assert CsvPipe.total_out.table().to_pylist() == [{"n": 0, "s": None, "notes": 0}]
    staging = Staging(settings.paths.staging_root)
    manifest = staging.manifest("csv_pipe", result.run_id, "rows")
    assert manifest is not None
    assert isinstance(manifest.reference_format, CsvLayout)
    assert manifest.rows == 0
    con = connect(staging, "csv_pipe", result.run_id)
    try:
        assert con.sql("select count(*) from rows").fetchall() == [(0,)]
    finally:
        con.close()


def test_a_glob_of_files_is_referenced_in_the_order_the_source_reads_them(
    settings: ek.Settings, csv_file: Path
) -> None:
    second = csv_file.with_name("rows2.csv")
    second.write_text("id,amount,note,day,extra\n5,1.5,fifth,2024-02-01,u\n")

    result = CsvPipe.run(settings=settings, params={"path": str(csv_file.parent / "*.csv")})

    assert result.state == "success", result.error
    staging = Staging(settings.paths.staging_root)
    manifest = staging.manifest("csv_pipe", result.run_id, "rows")
    assert manifest is not None
    assert [f.name for f in manifest.files] == [str(csv_file), str(second)]
    assert manifest.rows == 5
    back = pa.Table.from_batches(
        staging.iter_batches("csv_pipe", result.run_id, "rows", batch_size=2)
    )
    assert back.column("id").to_pylist() == [1, 2, 3, 4, 5]
    assert staging.verify("csv_pipe", result.run_id, "rows") == []


def test_rows_longer_than_a_block_read_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    long = "y" * 1_000_000  # past four times the 64 KiB sample: the first block is too small
    path.write_text("n,w\n1,a\n" + f"2,{long}\n" + "3,c\n" * 10)
    layout = CsvLayout(pa.schema([("n", pa.int64()), ("w", pa.string())]))

    batches = list(layout.batches([str(path)], batch_size=1))

    table = pa.Table.from_batches(batches)
    assert table.column("n").to_pylist() == [1, 2, *[3] * 10]
    assert table.column("w")[1].as_py() == long


class Growing(CsvSource):
    """A file still being written: a row lands after the source has read it."""

    def read(self, ctx: ek.Context) -> Iterator[pa.RecordBatch]:
        yield from super().read(ctx)
        with open(ctx.render(self.path), "a") as handle:  # noqa: PTH123
            handle.write("9,1.0,late,2024-01-09,z\n")


class GrowingPipe(ek.Pipeline):
    params: ClassVar[dict[str, str]] = {"path": ""}
    rows = Growing("{path}", schema=Row, chunk_rows=2)
    out = MemorySink(rows)


def test_a_file_that_changes_while_it_is_read_fails_the_run_and_stages_nothing(
    settings: ek.Settings, csv_file: Path
) -> None:
    result = GrowingPipe.run(settings=settings, params={"path": str(csv_file)})

    assert result.state == "failed"
    assert "its files changed while it read them" in str(result.error)
    assert str(csv_file) in str(result.error)
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("growing_pipe", result.run_id, "rows") is None


def test_deleting_a_run_keeps_the_referenced_files(settings: ek.Settings, csv_file: Path) -> None:
    result = CsvPipe.run(settings=settings, params={"path": str(csv_file)})
    assert result.state == "success", result.error
    staging = Staging(settings.paths.staging_root)

    staging.delete_run("csv_pipe", result.run_id)

    assert staging.committed("csv_pipe", result.run_id) == []
    assert csv_file.read_text() == CSV


def test_query_leaves_out_a_reference_whose_files_changed_or_went_away(
    settings: ek.Settings, csv_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result = CsvPipe.run(settings=settings, params={"path": str(csv_file)})
    assert result.state == "success", result.error
    staging = Staging(settings.paths.staging_root)

    csv_file.rename(csv_file.with_suffix(".gone"))
    con = connect(staging, "csv_pipe", result.run_id)
    try:
        views = {row[0] for row in con.sql("select view_name from duckdb_views()").fetchall()}
        assert "rows" not in views
        assert "total" in views  # the other outputs are still there
    finally:
        con.close()
    assert "no view of rows" in caplog.text
    assert str(csv_file) in caplog.text
