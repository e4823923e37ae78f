"""File connectors: the shared contract, then errors users read and atomic commits."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from connectors.files import (
    CsvSink,
    CsvSource,
    NdjsonSink,
    NdjsonSource,
    ParquetDatasetSink,
    ParquetSink,
    ParquetSource,
    csv_blocks,
    delimited,
)
from etlkit.errors import ConnectorError, RunCancelledError
from etlkit.model.nodes import Sink, Source
from etlkit.model.schema import arrow_schema
from tests.connectors.contract import (
    ContractModel,
    MakeSink,
    MakeSource,
    Model,
    ReadCommitted,
    SinkContract,
    SourceContract,
    contract_table,
    make_context,
)

CTX = make_context("n")


class Bill(pdp.DataFrameModel):
    id: int
    amount: float = pdp.Field(nullable=True)


class Stamped(pdp.DataFrameModel):
    id: int
    billed_at: pl.Datetime


class Narrow(pdp.DataFrameModel):
    id: pl.Int32


def read_all(source: Source) -> list[pa.RecordBatch]:
    source.name = "src"
    return list(source.read(CTX))


def rows_of(source: Source) -> pa.Table:
    source.name = "src"
    batches = list(source.read(CTX))
    schema = pa.schema([f.with_nullable(True) for f in arrow_schema(source.output_model)])
    return pa.Table.from_batches(batches, schema=schema)


def write_ndjson(table: pa.Table, path: Path) -> None:
    buffer = io.BytesIO()
    pl.from_arrow(table).write_ndjson(buffer)  # type: ignore[union-attr]
    path.write_bytes(buffer.getvalue())


def hidden(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob(".*")]


# ---------------------------------------------------------------- the contract


class TestCsvSourceContract(SourceContract):
    @pytest.fixture
    def make_source(self, tmp_path: Path) -> MakeSource:
        def make(table: pa.Table, model: Model, *, chunk_rows: int | None = None) -> Source:
            (tmp_path / "in").mkdir(exist_ok=True)
            pacsv.write_csv(table, tmp_path / "in" / "data.csv")
            return CsvSource(str(tmp_path / "in" / "*.csv"), schema=model, chunk_rows=chunk_rows)

        return make


class TestParquetSourceContract(SourceContract):
    @pytest.fixture
    def make_source(self, tmp_path: Path) -> MakeSource:
        def make(table: pa.Table, model: Model, *, chunk_rows: int | None = None) -> Source:
            pq.write_table(table, tmp_path / "data.parquet")
            return ParquetSource(
                str(tmp_path / "data.parquet"), schema=model, chunk_rows=chunk_rows
            )

        return make


class TestNdjsonSourceContract(SourceContract):
    @pytest.fixture
    def make_source(self, tmp_path: Path) -> MakeSource:
        def make(table: pa.Table, model: Model, *, chunk_rows: int | None = None) -> Source:
            write_ndjson(table, tmp_path / "data.jsonl")
            return NdjsonSource(str(tmp_path / "data.jsonl"), schema=model, chunk_rows=chunk_rows)

        return make


class TestCsvSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self, tmp_path: Path) -> MakeSink:
        def make(model: Model | None) -> tuple[Sink, ReadCommitted]:
            target = tmp_path / "out" / "data.csv"
            types = {f.name: f.type for f in arrow_schema(ContractModel)}

            def read() -> pa.Table | None:
                if not target.exists():
                    return None
                options = pacsv.ConvertOptions(column_types=types)
                return pacsv.read_csv(target, convert_options=options)

            return CsvSink(str(target), "upstream", schema=model), read

        return make


class TestParquetSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self, tmp_path: Path) -> MakeSink:
        def make(model: Model | None) -> tuple[Sink, ReadCommitted]:
            target = tmp_path / "out" / "data.parquet"
            sink = ParquetSink(str(target), "upstream", schema=model)
            return sink, lambda: pq.read_table(target) if target.exists() else None

        return make


class TestNdjsonSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self, tmp_path: Path) -> MakeSink:
        def make(model: Model | None) -> tuple[Sink, ReadCommitted]:
            target = tmp_path / "out" / "data.jsonl"
            schema = arrow_schema(ContractModel)

            def read() -> pa.Table | None:
                if not target.exists():
                    return None
                if target.stat().st_size == 0:
                    return schema.empty_table()
                options = pajson.ParseOptions(explicit_schema=schema)
                return pajson.read_json(target, parse_options=options)

            return NdjsonSink(str(target), "upstream", schema=model), read

        return make


class TestParquetDatasetSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self, tmp_path: Path) -> MakeSink:
        def make(model: Model | None) -> tuple[Sink, ReadCommitted]:
            target = tmp_path / "out" / "dataset"
            hive = pads.partitioning(pa.schema([("paid", pa.bool_())]), flavor="hive")

            def read() -> pa.Table | None:
                if not target.exists():
                    return None
                return pads.dataset(target, format="parquet", partitioning=hive).to_table()

            sink = ParquetDatasetSink(str(target), "upstream", partition_by=["paid"], schema=model)
            return sink, read

        return make


# ---------------------------------------------------------------- resolving paths


def test_missing_glob_names_the_rendered_path_and_template(tmp_path: Path) -> None:
    source = CsvSource(str(tmp_path / "billing" / "{ds}" / "*.csv"), schema=Bill)
    with pytest.raises(
        ConnectorError,
        match=r"no file matches '.*billing/2025-01-01/\*\.csv' "
        r"\(from '.*billing/\{ds\}/\*\.csv'\)",
    ):
        read_all(source)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    source = ParquetSource(str(tmp_path / "nope.parquet"), schema=Bill)
    with pytest.raises(
        ConnectorError, match=r"ParquetSource 'src': file '.*nope\.parquet' does not"
    ):
        read_all(source)


def test_glob_reads_files_in_sorted_order_and_skips_hidden_ones(tmp_path: Path) -> None:
    for name, first in [("b.csv", 10), ("a.csv", 0), ("c.csv", 20), (".a.csv.tmp-x", 99)]:
        (tmp_path / name).write_text(
            "id,amount\n" + "".join(f"{first + i},1.5\n" for i in range(3))
        )
    table = rows_of(CsvSource(str(tmp_path / "*.csv"), schema=Bill))
    assert table.column("id").to_pylist() == [0, 1, 2, 10, 11, 12, 20, 21, 22]


def test_template_fills_the_date_before_globbing(tmp_path: Path) -> None:
    (tmp_path / "2025-01-01").mkdir()
    (tmp_path / "2025-01-01" / "part.csv").write_text("id,amount\n1,2.5\n")
    (tmp_path / "2025-01-02").mkdir()
    (tmp_path / "2025-01-02" / "part.csv").write_text("id,amount\n2,2.5\n")
    table = rows_of(CsvSource(str(tmp_path / "{ds}" / "*.csv"), schema=Bill))
    assert table.column("id").to_pylist() == [1]


def test_sources_and_sinks_work_on_any_fsspec_filesystem() -> None:
    root = f"memory://etlkit-test-{uuid.uuid4().hex}"
    sink = ParquetSink(root + "/{ds}/out.parquet", "upstream", schema=ContractModel)
    sink.name = "snk"
    result = sink.write(iter(contract_table(50).to_batches(max_chunksize=20)), CTX)
    assert result.uri.startswith("memory://")
    assert result.uri.endswith("/2025-01-01/out.parquet")
    source = ParquetSource(root + "/*/out.parquet", schema=ContractModel, chunk_rows=20)
    assert rows_of(source).num_rows == 50
    csv_sink = CsvSink(root + "/out.csv", "upstream", schema=ContractModel)
    csv_sink.write(iter(contract_table(5).to_batches()), CTX)
    assert rows_of(CsvSource(root + "/out.csv", schema=ContractModel)).num_rows == 5


# ---------------------------------------------------------------- CSV


def test_csv_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ConnectorError, match=r"file '.*empty\.csv' is empty \(0 bytes\)"):
        read_all(CsvSource(str(tmp_path / "empty.csv"), schema=Bill))


def test_csv_header_only_yields_no_rows(tmp_path: Path) -> None:
    (tmp_path / "header.csv").write_text("id,amount\n")
    assert rows_of(CsvSource(str(tmp_path / "header.csv"), schema=Bill)).num_rows == 0


def test_csv_ragged_row_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("id,amount\n1,2.0\n2,3.0\n3,4.0,oops\n4,5.0\n")
    with pytest.raises(
        ConnectorError,
        match=r"file '.*r\.csv', line 4: wrong number of fields "
        r"\(Expected 2 columns, got 3: 3,4\.0,oops\)",
    ):
        read_all(CsvSource(str(tmp_path / "r.csv"), schema=Bill))


def test_csv_bad_value_deep_in_a_large_file_names_line_column_and_value(tmp_path: Path) -> None:
    body = [b"%d,%d.25\n" % (i, i) for i in range(400_000)]
    body[299_999] = b"299999,12,5x\n".replace(b",5x", b"x")  # line 300001: amount '12x'
    (tmp_path / "big.csv").write_bytes(b"id,amount\n" + b"".join(body))
    source = CsvSource(str(tmp_path / "big.csv"), schema=Bill, chunk_rows=5_000)
    source.name = "src"
    seen: list[int] = []

    def drain() -> None:
        seen.extend(batch.num_rows for batch in source.read(CTX))

    with pytest.raises(
        ConnectorError,
        match=r"CsvSource 'src': file '.*big\.csv', line 300001, column 'amount': cannot parse "
        r"'12x' as double",
    ):
        drain()
    assert len(seen) > 10  # streamed: the chunks before the bad block arrived
    assert 250_000 < sum(seen) < 300_000


def test_csv_invalid_utf8_names_line_and_byte_offset(tmp_path: Path) -> None:
    class Named(pdp.DataFrameModel):
        id: int
        name: str

    lines = [b"id,name\n", *[b"%d,name %d\n" % (i, i) for i in range(10_000)]]
    lines[5_001] = b"5000,caf\xe9\n"  # latin-1, not UTF-8, on line 5002
    (tmp_path / "u.csv").write_bytes(b"".join(lines))
    offset = sum(len(line) for line in lines[:5_001]) + len(b"5000,caf")
    with pytest.raises(
        ConnectorError,
        match=rf"file '.*u\.csv', line 5002 \(byte offset {offset}\) is not valid UTF-8.*"
        r"encoding='latin1'",
    ):
        read_all(CsvSource(str(tmp_path / "u.csv"), schema=Named, chunk_rows=500))
    latin = rows_of(CsvSource(str(tmp_path / "u.csv"), schema=Named, encoding="latin1"))
    assert latin.column("name")[5_000].as_py() == "café"


def test_csv_missing_column_names_header_and_suggests(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("id,amount_eur\n1,2.5\n")
    with pytest.raises(
        ConnectorError,
        match=r"file '.*m\.csv' has no column\(s\) 'amount' declared by Bill; its columns "
        r"are 'id' and 'amount_eur'\. Did you mean 'amount_eur' for 'amount'\?",
    ):
        read_all(CsvSource(str(tmp_path / "m.csv"), schema=Bill))


def test_csv_parses_space_and_iso_timestamps(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,billed_at\n1,2025-01-03 10:00:00\n2,2025-01-03T10:00:00\n")
    table = rows_of(CsvSource(str(tmp_path / "t.csv"), schema=Stamped))
    assert table.column("billed_at").to_pylist() == [datetime(2025, 1, 3, 10)] * 2


def test_csv_without_header_takes_model_columns_in_order(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("1;2.5\n2;\n")
    source = CsvSource(str(tmp_path / "h.csv"), schema=Bill, header=False, delimiter=";")
    assert rows_of(source).to_pylist() == [{"id": 1, "amount": 2.5}, {"id": 2, "amount": None}]


def test_csv_row_longer_than_the_block_is_read(tmp_path: Path) -> None:
    class Named(pdp.DataFrameModel):
        id: int
        name: str

    lines = [b"%d,short\n" % i for i in range(2_000)]
    lines[1_500] = b"1500," + b"x" * 100_000 + b"\n"
    (tmp_path / "long.csv").write_bytes(b"id,name\n" + b"".join(lines))
    table = rows_of(CsvSource(str(tmp_path / "long.csv"), schema=Named, chunk_rows=100))
    assert table.column("id").to_pylist() == list(range(2_000))
    assert len(table.column("name")[1_500].as_py()) == 100_000


# CsvSource parses a file's blocks on a pool of threads; on any doubt (a parse error, a quoted
# value that may span two blocks) it reads the file again serially, as pyarrow alone would.


class Billed(pdp.DataFrameModel):
    id: int
    name: str
    amount: float = pdp.Field(nullable=True)
    billed_at: pl.Datetime


def billed_csv(rows: int, newline: str = "\n", spanning: range = range(0)) -> str:
    """A CSV of `Billed` rows with quoting, escaped quotes, empty strings, nulls and Unicode;
    the rows in `spanning` have a name spanning three lines."""
    lines = ["id,name,amount,billed_at,extra"]
    for i in range(rows):
        name = ["plain", '"with, comma"', '"say ""hi"""', "", "café ☕"][i % 5]
        name = f'"multi{newline}line {i}{newline}value"' if i in spanning else name
        amount = "" if i % 7 == 3 else f"{i * 1.25}"
        lines.append(f"{i},{name},{amount},2025-01-03 10:{i % 60:02d}:00,x{i}")
    return newline.join(lines) + newline


def serial_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delimited, "_workers", lambda: 1)


def threaded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Parse blocks on 3 threads whatever the machine; returns the sizes of the blocks parsed."""
    sizes: list[int] = []
    parse_block = csv_blocks.parse_block

    def counted(data: pa.Buffer, *args: Any) -> list[pa.RecordBatch]:
        sizes.append(data.size)
        return parse_block(data, *args)

    monkeypatch.setattr(delimited, "_workers", lambda: 3)
    monkeypatch.setattr(delimited, "parse_block", counted)
    return sizes


def parallel_only(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """As `threaded`, and a serial read fails the test."""

    def refused(*args: Any) -> NoReturn:
        raise AssertionError("the file was read serially")

    monkeypatch.setattr(CsvSource, "_serial_batches", refused)
    return threaded(monkeypatch)


def broken_at(
    path: Path, line: int, old: str, new: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[CsvSource, list[pa.RecordBatch] | str]:
    """A 20,000-row CSV with `old` replaced by `new` on file line `line`, its source, and what
    the serial reader makes of it."""
    lines = billed_csv(20_000).splitlines(keepends=True)
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("".join(lines))
    source = CsvSource(str(path), schema=Billed, chunk_rows=500)
    with monkeypatch.context() as serial:
        serial_only(serial)
        return source, outcome(source)


def outcome(source: CsvSource) -> list[pa.RecordBatch] | str:
    """The batches a source yields, or the message of the error it raises."""
    try:
        return read_all(source)
    except ConnectorError as exc:
        return str(exc)


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"a\nb\nc", 4),
        (b"a\r\nb\r\n", 6),
        (b"a\rb\rc", 4),  # a lone CR ends a line too
        (b"a\n" + b"x" * 300_000, 2),  # a last row longer than the first look at the end
        (b"x" * 300_000 + b"\n" + b"y" * 100_000, 300_001),
        (b"no line end", 0),
        (b"", 0),
    ],
)
def test_csv_blocks_end_after_their_last_line_end(data: bytes, end: int) -> None:
    assert csv_blocks.line_ends_at(pa.py_buffer(data)) == end


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_parallel_blocks_are_the_serial_batches_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: str
) -> None:
    (tmp_path / "b.csv").write_bytes(billed_csv(5_000, newline).encode())
    with monkeypatch.context() as serial:
        serial_only(serial)
        expected = read_all(CsvSource(str(tmp_path / "b.csv"), schema=Billed, chunk_rows=100))
    blocks = parallel_only(monkeypatch)
    batches = read_all(CsvSource(str(tmp_path / "b.csv"), schema=Billed, chunk_rows=100))
    assert len(blocks) > 20
    assert [b.num_rows for b in batches] == [b.num_rows for b in expected]
    assert all(got.equals(want) for got, want in zip(batches, expected, strict=True))
    assert pa.Table.from_batches(batches).column("id").to_pylist() == list(range(5_000))


def test_csv_parallel_reader_stops_when_the_consumer_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "b.csv").write_text(billed_csv(5_000))
    parallel_only(monkeypatch)
    source = CsvSource(str(tmp_path / "b.csv"), schema=Billed, chunk_rows=100)
    source.name = "src"
    batches = source.read(CTX)
    assert next(batches).column("id")[0].as_py() == 0
    batches.close()  # cancels the blocks in flight and joins the pool's threads


@pytest.mark.parametrize(
    "spanning",
    [range(0, 40, 3), range(199, 239, 3), range(2_500, 2_540, 3), range(0, 5_000, 7)],
    ids=["in-first-blocks", "across-a-block-end", "within-blocks", "serial-reader-fails"],
)
def test_csv_quoted_line_ends_read_as_serially_wherever_they_fall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spanning: range
) -> None:
    (tmp_path / "q.csv").write_text(billed_csv(5_000, spanning=spanning))
    source = CsvSource(str(tmp_path / "q.csv"), schema=Billed, chunk_rows=100)
    with monkeypatch.context() as serial:
        serial_only(serial)
        expected = outcome(source)
    threaded(monkeypatch)
    got = outcome(source)
    if isinstance(expected, str):  # pyarrow's serial reader fails: the same message
        assert got == expected
        assert "out of sync" in expected
    else:
        assert not isinstance(got, str), got
        assert len(got) == len(expected)
        assert all(a.equals(b) for a, b in zip(got, expected, strict=True))


def test_csv_parallel_ragged_row_deep_in_the_file_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, expected = broken_at(tmp_path / "r.csv", 15_001, ",x", ",oops,x", monkeypatch)
    blocks = threaded(monkeypatch)
    seen: list[int] = []

    def drain() -> None:
        for batch in source.read(CTX):
            seen.extend(batch.column("id").to_pylist())

    with pytest.raises(ConnectorError) as raised:
        drain()
    assert str(raised.value) == expected
    assert re.search(
        r"CsvSource 'src': file '.*r\.csv', line 15001: wrong number of fields \(Expected 5 "
        r"columns, got 6: 14999,.*,oops,x14999\)\. Check the delimiter",
        expected,
    )
    assert len(blocks) > 20  # parsed in parallel up to the bad block, then read serially
    assert 10_000 < len(seen) < 15_000
    assert seen == list(range(len(seen)))  # the blocks before the bad one, each once, in order


def test_csv_parallel_bad_value_deep_in_the_file_names_row_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, expected = broken_at(
        tmp_path / "v.csv", 17_322, ",2025-01-03 ", ",2025-13-03 ", monkeypatch
    )
    blocks = threaded(monkeypatch)
    assert outcome(source) == expected
    assert len(blocks) > 20
    assert re.search(
        r"CsvSource 'src': file '.*v\.csv', line 17322, column 'billed_at': cannot parse "
        r"'2025-13-03 10:40:00' as timestamp\[us\]",
        expected,
    )


# ---------------------------------------------------------------- Parquet


def test_parquet_missing_column_names_file_and_suggests(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1], "amt": [1.0]}), tmp_path / "p.parquet")
    with pytest.raises(
        ConnectorError,
        match=r"'.*p\.parquet' has no column\(s\) 'amount'.*"
        r"Did you mean 'amt' for 'amount'\?",
    ):
        read_all(ParquetSource(str(tmp_path / "p.parquet"), schema=Bill))


def test_parquet_uncastable_type_names_file_column_and_types(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["1"], "amount": [1.0]}), tmp_path / "p.parquet")
    with pytest.raises(
        ConnectorError,
        match=r"file '.*p\.parquet', column 'id' is string but "
        r"Bill declares int64, and there is no safe cast",
    ):
        read_all(ParquetSource(str(tmp_path / "p.parquet"), schema=Bill))


def test_parquet_safe_casts_apply_and_bad_values_are_named(tmp_path: Path) -> None:
    ids = pa.array([1, 2], pa.int32())
    pq.write_table(
        pa.table({"id": ids, "amount": pa.array([1, 2], pa.int16())}), tmp_path / "a.parquet"
    )
    assert rows_of(ParquetSource(str(tmp_path / "a.parquet"), schema=Bill)).to_pylist() == [
        {"id": 1, "amount": 1.0},
        {"id": 2, "amount": 2.0},
    ]
    pq.write_table(pa.table({"id": [1, 2, 2**40, 3]}), tmp_path / "b.parquet")
    with pytest.raises(
        ConnectorError,
        match=r"file '.*b\.parquet', row 3, column 'id': cannot "
        r"cast 1099511627776 from int64 to int32",
    ):
        read_all(ParquetSource(str(tmp_path / "b.parquet"), schema=Narrow))


def test_a_large_parquet_file_reads_in_order_and_names_a_bad_row_of_a_later_window(
    tmp_path: Path,
) -> None:
    # 300 rows in row groups of 10, chunks of 10: windows of 40 rows, every other one read
    # (and cast) by a second reader on a thread of its own
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"id": pa.array(range(300), pa.int64())}), path, row_group_size=10)
    source = ParquetSource(str(path), schema=Narrow, chunk_rows=10)
    batches = read_all(source)
    assert [b.num_rows for b in batches] == [10] * 30
    assert pa.Table.from_batches(batches).column("id").to_pylist() == list(range(300))
    assert batches[0].schema.field("id").type == pa.int32()

    ids = list(range(300))
    ids[215] = 2**40  # in rows 200-239: the second reader's
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64())}), path, row_group_size=10)
    with pytest.raises(
        ConnectorError,
        match=r"file '.*big\.parquet', row 216, column 'id': cannot cast 1099511627776",
    ):
        read_all(ParquetSource(str(path), schema=Narrow, chunk_rows=10))


def test_parquet_empty_or_corrupt_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "e.parquet").write_bytes(b"")
    with pytest.raises(ConnectorError, match=r"file '.*e\.parquet' is empty"):
        read_all(ParquetSource(str(tmp_path / "e.parquet"), schema=Bill))
    (tmp_path / "c.parquet").write_bytes(b"id,amount\n1,2\n")
    with pytest.raises(ConnectorError, match=r"file '.*c\.parquet' is not a Parquet file"):
        read_all(ParquetSource(str(tmp_path / "c.parquet"), schema=Bill))


# ---------------------------------------------------------------- NDJSON


def test_ndjson_bad_value_names_line_and_column(tmp_path: Path) -> None:
    lines = [b'{"id": %d, "amount": 1.5}\n' % i for i in range(3_000)]
    lines[2_500] = b'{"id": "zz", "amount": 1.5}\n'
    lines.insert(10, b"\n")  # blank lines are skipped but counted: the bad one is line 2502
    (tmp_path / "n.jsonl").write_bytes(b"".join(lines))
    source = NdjsonSource(str(tmp_path / "n.jsonl"), schema=Bill, chunk_rows=1_000)
    with pytest.raises(
        ConnectorError,
        match=r"file '.*n\.jsonl', line 2502, column 'id': cannot "
        r"convert 'zz' to int64",
    ):
        read_all(source)


def test_ndjson_invalid_json_and_utf8_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "j.jsonl").write_bytes(b'{"id": 1}\n{"id": 2,\n{"id": 3}\n')
    with pytest.raises(ConnectorError, match=r"file '.*j\.jsonl', line 2 is not valid JSON"):
        read_all(NdjsonSource(str(tmp_path / "j.jsonl"), schema=Bill))
    (tmp_path / "u.jsonl").write_bytes(b'{"id": 1}\n{"id": 2, "x": "caf\xe9"}\n')
    with pytest.raises(
        ConnectorError,
        match=r"file '.*u\.jsonl', line 2 \(byte offset 29\) "
        r"is not valid UTF-8",
    ):
        read_all(NdjsonSource(str(tmp_path / "u.jsonl"), schema=Bill))


def test_ndjson_chunks_hold_chunk_rows_objects(tmp_path: Path) -> None:
    write_ndjson(contract_table(250), tmp_path / "d.jsonl")
    source = NdjsonSource(str(tmp_path / "d.jsonl"), schema=ContractModel, chunk_rows=100)
    source.name = "src"
    assert [b.num_rows for b in source.read(CTX)] == [100, 100, 50]


# ---------------------------------------------------------------- sinks


def _cancelled(table: pa.Table) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches(max_chunksize=10)[:2]
    raise RunCancelledError("cancelled")


@pytest.mark.parametrize("sink_class", [CsvSink, ParquetSink, NdjsonSink])
def test_sink_renders_path_replaces_target_and_leaves_no_temp_files(
    tmp_path: Path, sink_class: type[CsvSink | ParquetSink | NdjsonSink]
) -> None:
    sink = sink_class(str(tmp_path / "{ds}" / "out.file"), "upstream", schema=ContractModel)
    sink.name = "snk"
    first = sink.write(iter(contract_table(30).to_batches()), CTX)
    target = tmp_path / "2025-01-01" / "out.file"
    assert first.uri == target.as_uri()
    assert first.extra["bytes"] == target.stat().st_size > 0
    before = target.read_bytes()
    with pytest.raises(RunCancelledError):
        sink.write(_cancelled(contract_table(30, offset=100)), CTX)
    assert target.read_bytes() == before
    assert hidden(tmp_path) == []
    second = sink.write(iter(contract_table(5, offset=100).to_batches()), CTX)
    assert second.rows == 5
    assert target.read_bytes() != before
    assert hidden(tmp_path) == []


def test_csv_sink_empty_input_writes_the_header(tmp_path: Path) -> None:
    sink = CsvSink(str(tmp_path / "e.csv"), "upstream", schema=Bill)
    sink.name = "snk"
    assert sink.write(iter([]), CTX).rows == 0
    assert (tmp_path / "e.csv").read_text() == '"id","amount"\n'
    assert rows_of(CsvSource(str(tmp_path / "e.csv"), schema=Bill)).num_rows == 0


def test_parquet_sink_writes_plain_string_types(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path / "p.parquet"), "upstream", schema=ContractModel)
    sink.name = "snk"
    sink.write(iter(contract_table(3).to_batches()), CTX)
    assert pq.read_schema(tmp_path / "p.parquet").field("name").type == pa.string()
    empty = ParquetSink(str(tmp_path / "e.parquet"), "upstream", schema=ContractModel)
    empty.name = "snk"
    empty.write(iter([]), CTX)
    schema = pq.read_schema(tmp_path / "e.parquet")
    assert schema.names == ["id", "name", "amount", "billed_at", "paid"]
    assert schema.field("name").type == pa.string()


def test_sink_without_model_accepts_string_and_large_string_batches(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path / "p.parquet"), "upstream")
    sink.name = "snk"
    large = pa.record_batch({"id": [1], "s": pa.array(["a"], pa.large_string())})
    plain = pa.record_batch({"id": [2], "s": pa.array(["b"], pa.string())})
    assert sink.write(iter([large, plain]), CTX).rows == 2
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema.field("s").type == pa.string()
    assert table.column("s").to_pylist() == ["a", "b"]


def test_sink_names_a_missing_input_column(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path / "p.parquet"), "upstream", schema=Bill)
    sink.name = "snk"
    batch = pa.record_batch({"id": [1], "amount_eur": [1.0]})
    with pytest.raises(
        ConnectorError,
        match=r"ParquetSink 'snk': a batch lacks column\(s\) "
        r"'amount' declared by Bill.*Did you mean 'amount_eur'",
    ):
        sink.write(iter([batch]), CTX)
    assert not (tmp_path / "p.parquet").exists()
    assert hidden(tmp_path) == []


# ---------------------------------------------------------------- partitioned datasets


def test_dataset_sink_writes_hive_partitions_with_safe_names(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2, 3, 4], "ward": ["a/b", "..", None, "a/b"]})
    sink = ParquetDatasetSink(str(tmp_path / "ds"), "upstream", partition_by=["ward"])
    sink.name = "snk"
    result = sink.write(iter(table.to_batches(max_chunksize=2)), CTX)
    assert result.rows == 4
    assert result.extra["files"] == 3
    dirs = sorted(p.name for p in (tmp_path / "ds").iterdir())
    assert dirs == ["ward=..", "ward=__HIVE_DEFAULT_PARTITION__", "ward=a%2Fb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]

    class Ward(pdp.DataFrameModel):
        id: int
        ward: str = pdp.Field(nullable=True)

    back = rows_of(ParquetSource(str(tmp_path / "ds"), schema=Ward))
    assert sorted(back.to_pylist(), key=lambda r: r["id"]) == table.to_pylist()


def test_dataset_sink_replaces_an_existing_dataset(tmp_path: Path) -> None:
    sink = ParquetDatasetSink(str(tmp_path / "ds"), "upstream", partition_by=["paid"])
    sink.name = "snk"
    sink.write(iter(contract_table(10).to_batches()), CTX)
    with pytest.raises(RunCancelledError):
        sink.write(_cancelled(contract_table(30, offset=100)), CTX)
    assert pads.dataset(tmp_path / "ds", partitioning="hive").count_rows() == 10
    sink.write(iter(contract_table(3, offset=50).to_batches()), CTX)
    table = pads.dataset(tmp_path / "ds", partitioning="hive").to_table()
    assert sorted(table.column("id").to_pylist()) == [50, 51, 52]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_dataset_sink_rejects_bad_partition_columns(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match=r"partition_by takes a list"):
        ParquetDatasetSink(str(tmp_path), "upstream", partition_by="paid")
    with pytest.raises(ConnectorError, match=r"without '/'"):
        ParquetDatasetSink(str(tmp_path), "upstream", partition_by=["../x"])
    sink = ParquetDatasetSink(str(tmp_path / "ds"), "upstream", partition_by=["payd"])
    sink.name = "snk"
    with pytest.raises(
        ConnectorError,
        match=r"partition column\(s\) 'payd' are not in the "
        r"input.*Did you mean 'paid'",
    ):
        sink.write(iter(contract_table(3).to_batches()), CTX)
    assert not (tmp_path / "ds").exists()
