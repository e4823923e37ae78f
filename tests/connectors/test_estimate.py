"""File sources estimate their rows for the progress display: Parquet from its footers (read
once: the counts `files` took are reused), CSV and NDJSON from file sizes and line lengths."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import ClassVar

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import CsvSource, NdjsonSource, ParquetSource
from etlkit.engine.execution import Event
from etlkit.testing import MemorySink


class Row(pdp.DataFrameModel):
    id: int = pdp.Field(nullable=False)
    name: str


class Keep(ek.Transform[Row, Row]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


class CountingParquet(ParquetSource):
    """A ParquetSource that counts how often its own estimate reads the footers."""

    calls: ClassVar[int] = 0

    def estimate(self, ctx: ek.Context) -> int | None:
        type(self).calls += 1
        return super().estimate(ctx)


class ParquetPipe(ek.Pipeline):
    params: ClassVar[dict[str, str]] = {"path": ""}
    rows = CountingParquet("{path}", schema=Row, chunk_rows=100)
    kept = Keep(rows)
    out = MemorySink(kept)


class CheckedParquetPipe(ParquetPipe):
    """Invalid rows quarantined: the source is streamed and staged, never referenced."""

    rows = CountingParquet("{path}", schema=Row, chunk_rows=100).expect(on_invalid="quarantine")
    kept = Keep(rows)
    out = MemorySink(kept)


class CsvPipe(ek.Pipeline):
    params: ClassVar[dict[str, str]] = {"path": ""}
    rows = CsvSource("{path}", schema=Row, chunk_rows=1000)
    kept = Keep(rows)
    out = MemorySink(kept)


class NdjsonPipe(ek.Pipeline):
    params: ClassVar[dict[str, str]] = {"path": ""}
    rows = NdjsonSource("{path}", schema=Row, chunk_rows=1000)
    kept = Keep(rows)
    out = MemorySink(kept)


def table(start: int, count: int) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table({"id": ids, "name": [f"patient number {i}" for i in ids]})


def expected_rows(pipeline: type[ek.Pipeline], settings: ek.Settings, path: Path) -> int | None:
    """The source's `expected_rows` while it read, as a listener sees it when it finishes."""
    seen: list[int | None] = []

    def listen(event: Event) -> None:
        if event.kind == "node_finished" and event.node == "rows":
            seen.append(event.result.nodes["rows"].expected_rows)

    result = pipeline.run(params={"path": str(path)}, settings=settings, listeners=[listen])
    result.raise_for_error()
    return seen[0]


@pytest.fixture
def parquet_files(tmp_path: Path) -> Path:
    folder = tmp_path / "parquet"
    folder.mkdir()
    for index, count in enumerate((1000, 250, 4321)):
        pq.write_table(table(index * 10_000, count), folder / f"part-{index}.parquet")
    return folder


def test_parquet_rows_expected_are_the_footer_counts_read_once(
    parquet_files: Path, settings: ek.Settings
) -> None:
    CountingParquet.calls = 0
    assert expected_rows(ParquetPipe, settings, parquet_files / "*.parquet") == 5571
    assert CountingParquet.calls == 0  # the counts `files` read for the reference are reused


def test_parquet_rows_expected_without_a_reference_are_read_from_the_footers(
    parquet_files: Path, settings: ek.Settings
) -> None:
    CountingParquet.calls = 0
    assert expected_rows(CheckedParquetPipe, settings, parquet_files / "*.parquet") == 5571
    assert CountingParquet.calls == 1


def write_csv(path: Path, start: int, count: int) -> None:
    lines = ["id,name", *(f"{i},patient number {i}" for i in range(start, start + count))]
    path.write_text("\n".join(lines) + "\n")


def test_csv_rows_expected_are_estimated_from_file_sizes(
    tmp_path: Path, settings: ek.Settings
) -> None:
    write_csv(tmp_path / "a.csv", 0, 20_000)
    write_csv(tmp_path / "b.csv", 100_000, 30_000)
    expected = expected_rows(CsvPipe, settings, tmp_path / "*.csv")
    assert expected is not None
    assert abs(expected - 50_000) <= 50_000 * 0.05


def test_a_small_csv_files_rows_are_expected_exactly(tmp_path: Path, settings: ek.Settings) -> None:
    (tmp_path / "one.csv").write_text("id,name\n1,a\n2,b\n3,c")  # no line end at the end
    assert expected_rows(CsvPipe, settings, tmp_path / "one.csv") == 3


def test_compressed_csv_files_expect_no_row_count(tmp_path: Path, settings: ek.Settings) -> None:
    with gzip.open(tmp_path / "a.csv.gz", "wt") as handle:
        handle.write("id,name\n1,a\n2,b\n")
    assert expected_rows(CsvPipe, settings, tmp_path / "a.csv.gz") is None


def test_ndjson_rows_expected_are_estimated_from_file_sizes(
    tmp_path: Path, settings: ek.Settings
) -> None:
    lines = (json.dumps({"id": i, "name": f"patient number {i}"}) for i in range(40_000))
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    expected = expected_rows(NdjsonPipe, settings, tmp_path / "rows.jsonl")
    assert expected is not None
    assert abs(expected - 40_000) <= 40_000 * 0.05
