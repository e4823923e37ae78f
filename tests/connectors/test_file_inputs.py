"""File connectors against the inputs users have: compressed files, OS errors, empty folders,
and where each invalid row came from (file and line) when validation fails."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import CsvSink, CsvSource, NdjsonSource, ParquetSink, ParquetSource
from etlkit.cli import exit_code
from etlkit.errors import ConnectorError
from etlkit.model.nodes import Origin, Sink, Source
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink
from tests.connectors.contract import make_context

CTX = make_context("n")


class Bill(pdp.DataFrameModel):
    id: int
    amount: float = pdp.Field(nullable=True)


class Priced(pdp.DataFrameModel):
    id: int
    amount: float = pdp.Field(ge=0)


def read_all(source: Source) -> pa.Table:
    source.name = "src"
    batches = list(source.read(CTX))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def write(sink: Sink, table: pa.Table) -> str:
    sink.name = "snk"
    return sink.write(iter(table.to_batches(max_chunksize=1_000)), CTX).uri


def compress(data: bytes, path: Path, codec: str) -> Path:
    with pa.CompressedOutputStream(str(path), codec) as stream:
        stream.write(data)
    return path


CSV = b"id,amount\n" + b"".join(b"%d,%d.5\n" % (i, i) for i in range(3_000))
NDJSON = b"".join(b'{"id": %d, "amount": %d.5}\n' % (i, i) for i in range(3_000))
SUFFIXES = {"gzip": ".gz", "bz2": ".bz2", "zstd": ".zst"}


# ---------------------------------------------------------------- compressed files (item 13)


@pytest.mark.parametrize("codec", sorted(SUFFIXES))
def test_compressed_csv_and_ndjson_are_read_by_their_extension(tmp_path: Path, codec: str) -> None:
    csv = compress(CSV, tmp_path / f"billing.csv{SUFFIXES[codec]}", codec)
    ndjson = compress(NDJSON, tmp_path / f"billing.jsonl{SUFFIXES[codec]}", codec)
    for source in (
        CsvSource(str(csv), schema=Bill, chunk_rows=500),
        NdjsonSource(str(ndjson), schema=Bill, chunk_rows=500),
    ):
        table = read_all(source)
        assert table.column("id").to_pylist() == list(range(3_000))
        assert table.column("amount")[2_999].as_py() == 2_999.5


def test_a_compressed_csv_row_longer_than_the_block_is_read_again_from_the_start(
    tmp_path: Path,
) -> None:
    class Named(pdp.DataFrameModel):
        id: int
        name: str

    lines = [b"%d,short\n" % i for i in range(2_000)]
    lines[1_500] = b"1500," + b"x" * 100_000 + b"\n"
    path = compress(b"id,name\n" + b"".join(lines), tmp_path / "long.csv.gz", "gzip")
    table = read_all(CsvSource(str(path), schema=Named, chunk_rows=100))
    assert table.column("id").to_pylist() == list(range(2_000))
    assert len(table.column("name")[1_500].as_py()) == 100_000


def test_a_bad_value_in_a_compressed_csv_names_the_file_and_line(tmp_path: Path) -> None:
    path = compress(CSV.replace(b"\n2000,", b"\nzz,"), tmp_path / "billing.csv.gz", "gzip")
    with pytest.raises(
        ConnectorError, match=r"file '.*billing\.csv\.gz', line 2002, column 'id': cannot parse"
    ):
        read_all(CsvSource(str(path), schema=Bill, chunk_rows=500))


def test_a_pipeline_reads_a_gzip_csv_into_sql_and_a_sink(
    tmp_path: Path, settings: ek.Settings
) -> None:
    path = compress(CSV, tmp_path / "billing.csv.gz", "gzip")

    class Gzipped(ek.Pipeline):
        billing = CsvSource(str(path), schema=Bill)
        total = ek.Sql("select count(*) as n, sum(amount) as amount from {billing}")
        out = MemorySink(total)

    result = Gzipped.run(settings=settings)

    assert result.state == "success", result.error
    assert Gzipped.out.table().to_pylist() == [{"n": 3_000, "amount": 4_500_000.0}]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("billing.csv", "gzip", r"is gzip-compressed \(name it \.gz to read it\), not CSV text"),
        ("billing.csv", "bz2", r"is bz2-compressed \(name it \.bz2 to read it\), not CSV text"),
        ("billing.jsonl", "zstd", r"is zstd-compressed \(name it \.zst to read it\), not NDJSON"),
    ],
)
def test_a_compressed_file_named_as_plain_text_is_named_with_its_format(
    tmp_path: Path, name: str, data: str, expected: str
) -> None:
    path = compress(CSV if name.endswith(".csv") else NDJSON, tmp_path / name, data)
    source_class = CsvSource if name.endswith(".csv") else NdjsonSource
    with pytest.raises(ConnectorError, match=rf"'src': file '.*{name}' {expected}"):
        read_all(source_class(str(path), schema=Bill))


@pytest.mark.parametrize("source_class", [CsvSource, NdjsonSource])
def test_a_truncated_or_mislabelled_compressed_file_is_a_connector_error_naming_it(
    tmp_path: Path, source_class: type[CsvSource] | type[NdjsonSource]
) -> None:
    data = CSV if source_class is CsvSource else NDJSON
    whole = compress(data, tmp_path / "whole.gz", "gzip").read_bytes()
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "plain.bz2").write_bytes(data)
    with pytest.raises(
        ConnectorError,
        match=r"cannot read '.*cut\.gz': .*; check that the file is complete and "
        r"gzip-compressed, as its name says\.",
    ):
        read_all(source_class(str(tmp_path / "cut.gz"), schema=Bill))
    with pytest.raises(ConnectorError, match=r"cannot read '.*plain\.bz2': .*bz2"):
        read_all(source_class(str(tmp_path / "plain.bz2"), schema=Bill))


def test_binary_garbage_named_csv_is_a_connector_error_naming_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.files import delimited

    monkeypatch.setattr(delimited, "_workers", lambda: 2)  # the parallel reader, on any machine
    (tmp_path / "garbage.csv").write_bytes(bytes(range(128, 256)) * 40 + b"\n" + b"\x00" * 99)
    with pytest.raises(
        ConnectorError,
        match=r"file '.*garbage\.csv', line 1 \(byte offset 0\) is not valid UTF-8 "
        r"\(bytes b'\\x80'\)",
    ):
        read_all(CsvSource(str(tmp_path / "garbage.csv"), schema=Bill))


# ---------------------------------------------------------------- OS errors (item 14)


def test_a_source_path_under_a_file_is_a_connector_error_naming_the_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "billing.csv").write_bytes(CSV)
    with pytest.raises(
        ConnectorError,
        match=r"cannot read '.*billing\.csv/2025\.csv': Not a directory; a folder of the "
        r"path is a file",
    ):
        read_all(CsvSource(str(tmp_path / "billing.csv" / "2025.csv"), schema=Bill))


@pytest.mark.parametrize("sink_class", [CsvSink, ParquetSink])
def test_a_sink_under_a_file_or_onto_a_folder_is_a_connector_error_naming_the_target(
    tmp_path: Path, sink_class: type[CsvSink] | type[ParquetSink]
) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "out.csv").mkdir()
    table = pa.table({"id": [1, 2], "amount": [1.0, 2.0]})
    with pytest.raises(
        ConnectorError,
        match=r"'snk': cannot write '.*a_file/out\.csv': .*; a folder of the path is a file",
    ):
        write(sink_class(str(tmp_path / "a_file" / "out.csv"), "x"), table)
    with pytest.raises(
        ConnectorError,
        match=r"'snk': cannot write '.*/out\.csv': Is a directory; the path is a folder",
    ):
        write(sink_class(str(tmp_path / "out.csv"), "x"), table)
    assert list((tmp_path / "out.csv").iterdir()) == []  # nothing moved into the folder


def _privileged(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"{' '.join(command)} is not permitted here: {done.stderr.strip()}")


@pytest.fixture
def immutable_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder no one can create files in, not even root (`chattr +i`)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    _privileged(["chattr", "+i", str(folder)])
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: writing more fills the disk."""
    folder = tmp_path / "small"
    folder.mkdir()
    _privileged(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)])
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_sink_into_a_folder_it_may_not_write_names_the_target_not_a_temp_file(
    immutable_folder: Path, settings: ek.Settings
) -> None:
    class Locked(ek.Pipeline):
        billing = ek.testing.MemorySource(pa.table({"id": [1], "amount": [2.0]}), schema=Bill)
        out = CsvSink(str(immutable_folder / "out.csv"), billing)

    result = Locked.run(settings=settings)

    assert result.state == "failed"
    assert result.error is not None
    message = str(result.error)
    assert f"CsvSink 'out': cannot write '{immutable_folder / 'out.csv'}': " in message
    assert "Operation not permitted; check the permissions" in message
    assert ".tmp-" not in message
    assert exit_code(result.error) == 5
    assert list(immutable_folder.iterdir()) == []


@pytest.mark.parametrize("sink_class", [CsvSink, ParquetSink])
def test_a_full_disk_is_a_connector_error_naming_the_target(
    full_disk: Path, sink_class: type[CsvSink] | type[ParquetSink]
) -> None:
    table = pa.table({"id": list(range(200_000)), "amount": [0.5] * 200_000})
    sink = (
        ParquetSink(str(full_disk / "out.data"), "x", compression="none")
        if sink_class is ParquetSink
        else CsvSink(str(full_disk / "out.data"), "x")
    )
    with pytest.raises(
        ConnectorError,
        match=r"cannot write '.*small/out\.data': No space left on device; the disk is full",
    ):
        write(sink, table)
    assert list(full_disk.iterdir()) == []  # the partial temporary file is gone


# ---------------------------------------------------------------- empty inputs (item 16)


@pytest.mark.parametrize("source_class", [CsvSource, ParquetSource, NdjsonSource])
def test_an_empty_folder_is_an_error_like_a_glob_matching_nothing(
    tmp_path: Path, source_class: type[CsvSource] | type[ParquetSource] | type[NdjsonSource]
) -> None:
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "_SUCCESS").write_text("")  # skipped, like hidden files
    with pytest.raises(
        ConnectorError,
        match=r"'src': no file is in the folder '.*billing' \(names starting with '\.' or '_' "
        r"are skipped\); check the path, the glob and the run's date, or pass "
        r"allow_empty=True to read no rows\.",
    ):
        read_all(source_class(str(tmp_path / "billing"), schema=Bill))
    with pytest.raises(ConnectorError, match=r"'src': no file matches '.*billing/\*\.csv'"):
        read_all(source_class(str(tmp_path / "billing" / "*.csv"), schema=Bill))


@pytest.mark.parametrize("source_class", [CsvSource, ParquetSource, NdjsonSource])
def test_allow_empty_reads_no_rows_from_an_empty_folder_or_an_unmatched_glob(
    tmp_path: Path, source_class: type[CsvSource] | type[ParquetSource] | type[NdjsonSource]
) -> None:
    (tmp_path / "billing").mkdir()
    for path in (tmp_path / "billing", tmp_path / "billing" / "*.csv"):
        assert read_all(source_class(str(path), schema=Bill, allow_empty=True)).num_rows == 0


def test_allow_empty_source_runs_with_zero_rows_in_a_pipeline(
    tmp_path: Path, settings: ek.Settings
) -> None:
    class Quiet(ek.Pipeline):
        billing = CsvSource(str(tmp_path / "{ds}" / "*.csv"), schema=Bill, allow_empty=True)
        out = MemorySink(billing)

    result = Quiet.run(settings=settings)

    assert result.state == "success", result.error
    assert Quiet.out.table().num_rows == 0


# ---------------------------------------------------------------- file and line of rejects (19)


def staged(settings: ek.Settings, pipeline: str, run_id: str, node: str) -> pl.DataFrame:
    return pl.read_parquet(Staging(settings.paths.staging_root).files(pipeline, run_id, node))


def test_quarantined_csv_rows_name_their_file_row_and_line_whatever_the_chunks(
    tmp_path: Path, settings: ek.Settings
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,amount\n1,1.0\n2,-2.0\n3,3.0\n4,4.0\n5,-5.0\n")
    (tmp_path / "in" / "b.csv").write_text("id,amount\n6,6.0\n7,7.0\n8,-8.0\n")

    verdicts = []
    for chunk_rows in (1, 2, 3, 100):

        class Located(ek.Pipeline):
            billing = CsvSource(
                str(tmp_path / "in" / "*.csv"), schema=Priced, chunk_rows=chunk_rows
            ).expect(on_invalid="quarantine")
            out = MemorySink(billing)

        result = Located.run(settings=settings)
        assert result.state == "success", result.error
        rejects = staged(settings, "located", result.run_id, "billing.rejects")
        failures = staged(settings, "located", result.run_id, "billing.failures")
        verdicts.append(
            (
                rejects.select("id", "_file", "_row", "_line").rows(),
                failures.select("file", "row", "line").rows(),
            )
        )
        staged_output = pq.read_schema(
            Staging(settings.paths.staging_root).files("located", result.run_id, "billing")[0]
        )
        assert b"etlkit.origin" not in (staged_output.metadata or {})

    a, b = str(tmp_path / "in" / "a.csv"), str(tmp_path / "in" / "b.csv")
    expected = [(2, a, 2, 3), (5, a, 5, 6), (8, b, 3, 4)]
    assert verdicts[0] == (expected, [row[1:] for row in expected])
    assert all(verdict == verdicts[0] for verdict in verdicts)


def test_a_validation_error_names_the_file_and_lines_of_the_failing_rows(
    tmp_path: Path, settings: ek.Settings
) -> None:
    rows = "".join(f"{i},{-1.0 if i in (700, 703) else 1.0}\n" for i in range(1_000))
    (tmp_path / "billing.csv").write_text("id,amount\n" + rows)

    class Fails(ek.Pipeline):
        billing = CsvSource(str(tmp_path / "billing.csv"), schema=Priced, chunk_rows=250)
        out = MemorySink(billing)

    result = Fails.run(settings=settings)

    assert isinstance(result.error, ek.DataValidationError)
    assert (
        f"broke schema Priced on chunk 3 (file '{tmp_path / 'billing.csv'}', lines 702, 705): "
        "column 'amount' failed greater_than_or_equal_to(0) on 2 rows"
    ) in str(result.error)
    failures = staged(settings, "fails", result.run_id, "billing.failures")
    assert failures.select("row", "line").rows() == [(701, 702), (704, 705)]


def test_ndjson_rejects_name_lines_across_blank_lines_and_parquet_rejects_name_rows(
    tmp_path: Path, settings: ek.Settings
) -> None:
    (tmp_path / "e.jsonl").write_text(
        '{"id": 1, "amount": 1}\n\n{"id": 2, "amount": -2}\n\n\n{"id": 3, "amount": -3}\n'
    )
    pq.write_table(
        pa.table({"id": [1, 2, 3, 4], "amount": [1.0, -2.0, 3.0, -4.0]}), tmp_path / "p.parquet"
    )

    class Mixed(ek.Pipeline):
        events = NdjsonSource(str(tmp_path / "e.jsonl"), schema=Priced, chunk_rows=2).expect(
            on_invalid="quarantine"
        )
        parts = ParquetSource(str(tmp_path / "p.parquet"), schema=Priced, chunk_rows=3).expect(
            on_invalid="quarantine"
        )
        out = MemorySink(events)
        out2 = MemorySink(parts)

    result = Mixed.run(settings=settings)

    assert result.state == "success", result.error
    events = staged(settings, "mixed", result.run_id, "events.rejects")
    assert events.select("id", "_row", "_line").rows() == [(2, 2, 3), (3, 3, 6)]
    parts = staged(settings, "mixed", result.run_id, "parts.rejects")
    assert parts.select("id", "_file", "_row", "_line").rows() == [
        (2, str(tmp_path / "p.parquet"), 2, None),
        (4, str(tmp_path / "p.parquet"), 4, None),
    ]


def test_an_origin_travels_as_metadata_and_resolves_lines_across_gaps() -> None:
    origin = Origin.of_lines("e.jsonl", 10, [4, 5, 9, 10, 14])
    batch = origin.attach(pa.record_batch({"id": [1, 2, 3, 4, 5]}))

    taken, plain = Origin.take(batch)

    assert taken == origin
    assert plain.schema.metadata is None
    assert [origin.line(i) for i in range(5)] == [4, 5, 9, 10, 14]
    assert [origin.row(i) for i in range(5)] == [11, 12, 13, 14, 15]
    assert Origin.take(plain) == (None, plain)


class UniquePriced(pdp.DataFrameModel):
    id: int = pdp.Field(unique=True)
    amount: float = pdp.Field(ge=0)


def test_csv_rows_repeating_a_key_across_chunks_are_quarantined_beside_located_rejects(
    tmp_path: Path, settings: ek.Settings
) -> None:
    # A negative amount is quarantined from its chunk with its file and line; the key 5 repeats
    # across chunks and is taken out after the last chunk, from staging, without a location.
    ids = [*range(1_000), 5]
    rows = "".join(f"{i},{-1.0 if n == 1 else 1.0}\n" for n, i in enumerate(ids))
    (tmp_path / "billing.csv").write_text("id,amount\n" + rows)

    class Repeats(ek.Pipeline):
        billing = CsvSource(
            str(tmp_path / "billing.csv"), schema=UniquePriced, chunk_rows=100
        ).expect(on_invalid="quarantine")
        out = MemorySink(billing)

    result = Repeats.run(settings=settings)
    assert result.state == "success", result.error
    assert result.nodes["billing"].chunks_out > 1
    rejects = staged(settings, "repeats", result.run_id, "billing.rejects")
    file = str(tmp_path / "billing.csv")
    assert sorted(rejects.select("id", "_file", "_line").rows(), key=str) == [
        (1, file, 3),
        (5, None, None),
        (5, None, None),
    ]
    failures = staged(settings, "repeats", result.run_id, "billing.failures")
    assert set(failures.columns) >= {"file", "row", "line"}
