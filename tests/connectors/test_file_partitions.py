"""File sources split into partitions: one per file, Parquet files also by row groups; read
partition by partition, they yield what `read` yields."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import fsspec
import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from connectors.files import CsvSource, NdjsonSource, ParquetDatasetSink, ParquetSource
from connectors.files.parquet import PARTITION_ROWS
from connectors.files.paths import FileSource
from etlkit.errors import ConfigError, ConnectorError
from etlkit.model.nodes import Partition
from tests.connectors.contract import (
    ContractModel,
    assert_partitions_read_as_read,
    contract_table,
    make_context,
)

CTX = make_context("src")


def write_csv(table: pa.Table, path: Path) -> None:
    pacsv.write_csv(table, path)


def write_ndjson(table: pa.Table, path: Path) -> None:
    buffer = io.BytesIO()
    pl.from_arrow(table).write_ndjson(buffer)  # type: ignore[union-attr]
    path.write_bytes(buffer.getvalue())


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, row_group_size=70)


FORMATS = {
    "csv": (CsvSource, write_csv),
    "ndjson": (NdjsonSource, write_ndjson),
    "parquet": (ParquetSource, write_parquet),
}


def three_files(tmp_path: Path, kind: str) -> Path:
    """Three files of `kind` under `tmp_path/in`, one in a folder, one with a space in its name."""
    _, write = FORMATS[kind]
    folder = tmp_path / "in"
    (folder / "2025-02").mkdir(parents=True)
    write(contract_table(250), folder / f"a.{kind}")
    write(contract_table(0), folder / f"b b.{kind}")
    write(contract_table(130, offset=250), folder / "2025-02" / f"c.{kind}")
    return folder


def source(kind: str, path: Path | str, **options: int) -> FileSource:
    cls, _ = FORMATS[kind]
    made = cls(str(path), schema=ContractModel, chunk_rows=64, **options)
    made.name = "src"
    return made


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_each_file_of_a_folder_is_a_partition_read_as_read(tmp_path: Path, kind: str) -> None:
    parts = assert_partitions_read_as_read(source(kind, three_files(tmp_path, kind)), CTX)
    assert [Path(str(part.data["path"])).name for part in parts] == [
        f"c.{kind}",  # 2025-02/c sorts before a
        f"a.{kind}",
        f"b b.{kind}",
    ]
    assert parts[0].id.startswith(f"2025-02_c.{kind}-")
    assert parts[2].id.startswith(f"in_b_b.{kind}-")


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_each_file_of_a_glob_is_a_partition_read_as_read(tmp_path: Path, kind: str) -> None:
    folder = three_files(tmp_path, kind)
    parts = assert_partitions_read_as_read(source(kind, folder / f"*.{kind}"), CTX)
    assert len(parts) == 2


def test_a_file_on_another_filesystem_is_a_partition() -> None:
    url = "memory://partitions/one.csv"
    out = pa.BufferOutputStream()
    pacsv.write_csv(contract_table(90), out)
    fs = fsspec.filesystem("memory")
    fs.pipe(url, out.getvalue().to_pybytes())
    try:
        [part] = assert_partitions_read_as_read(source("csv", url), CTX)
    finally:
        fs.rm(url)
    assert part.data == {"path": "/partitions/one.csv"}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_partition_ids_are_the_same_in_every_run(tmp_path: Path, kind: str) -> None:
    folder = three_files(tmp_path, kind)
    first = source(kind, folder).partitions(CTX)
    later = dataclasses.replace(CTX, run_id="20250102T000000Z-def456")
    again = source(kind, folder).partitions(later)
    assert first is not None
    assert again is not None
    assert [p.id for p in again] == [p.id for p in first]


def test_no_file_with_allow_empty_is_no_partition(tmp_path: Path) -> None:
    made = source("csv", tmp_path / "*.csv", allow_empty=True)
    assert made.partitions(CTX) == []
    assert list(made.read(CTX)) == []


def test_parquet_partition_rows_splits_a_file_by_row_groups(tmp_path: Path) -> None:
    pq.write_table(contract_table(1_000), tmp_path / "big.parquet", row_group_size=100)
    pq.write_table(contract_table(150, offset=1_000), tmp_path / "small.parquet")
    made = source("parquet", tmp_path, partition_rows=250)
    parts = assert_partitions_read_as_read(made, CTX)
    assert [p.data.get("row_groups") for p in parts] == [
        [0, 2],
        [2, 4],
        [4, 6],
        [6, 8],
        [8, 10],
        None,  # 150 rows: the whole file
    ]
    assert re.search(r"_big\.parquet\.rg2-3-[0-9a-f]{12}$", parts[1].id), parts[1].id


def test_a_row_group_larger_than_partition_rows_is_a_partition_of_its_own(
    tmp_path: Path,
) -> None:
    with pq.ParquetWriter(tmp_path / "uneven.parquet", contract_table(0).schema) as writer:
        for offset, rows in ((0, 30), (30, 500), (530, 40), (570, 40)):
            writer.write_table(contract_table(rows, offset=offset), row_group_size=rows)
    parts = assert_partitions_read_as_read(source("parquet", tmp_path, partition_rows=100), CTX)
    assert [p.data["row_groups"] for p in parts] == [[0, 1], [1, 2], [2, 4]]


def test_a_hive_dataset_splits_by_file_with_partition_columns_filled(tmp_path: Path) -> None:
    class Monthly(ContractModel):
        month: str

    table = contract_table(200).append_column(
        "month", pa.array([f"2025-0{1 + i % 3}" for i in range(200)])
    )
    sink = ParquetDatasetSink(str(tmp_path / "lake"), "upstream", partition_by=["month"])
    sink.name = "lake"
    sink.write(iter(table.to_batches(max_chunksize=50)), make_context("lake"))
    made = ParquetSource(str(tmp_path / "lake"), schema=Monthly, chunk_rows=32)
    made.name = "src"
    parts = assert_partitions_read_as_read(made, CTX)
    assert len(parts) == 3
    assert parts[0].id.startswith("month_2025-01_part-0.parquet-")


def test_parquet_partition_rows_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"partition_rows must be at least 1 .* got -1"):
        ParquetSource("x.parquet", schema=ContractModel, partition_rows=-1)


@pytest.mark.parametrize("rows", [0, None])
def test_parquet_partition_rows_none_or_0_is_one_partition_per_file(
    tmp_path: Path, rows: int | None
) -> None:
    pq.write_table(contract_table(300), tmp_path / "f.parquet", row_group_size=100)
    made = ParquetSource(str(tmp_path), schema=ContractModel, partition_rows=rows)
    made.name = "src"
    [part] = assert_partitions_read_as_read(made, CTX)
    assert "row_groups" not in part.data


def test_by_default_a_parquet_file_of_more_rows_than_partition_rows_is_split(
    tmp_path: Path,
) -> None:
    # one big file (the reshape job's lineitem, say) spreads over a cluster unchanged
    groups = PARTITION_ROWS // 1_000_000 + 2
    table = pa.table({"id": pa.array([1] * (groups * 1_000_000), pa.int8())})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=1_000_000)
    made = ParquetSource(str(tmp_path / "big.parquet"), schema=ContractModel)
    parts = made.partitions(CTX)
    assert parts is not None
    assert [p.data["row_groups"] for p in parts] == [
        [0, PARTITION_ROWS // 1_000_000],
        [PARTITION_ROWS // 1_000_000, groups],
    ]
    assert made.partition_rows == PARTITION_ROWS == 4_000_000


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_a_partition_of_another_path_is_refused(tmp_path: Path, kind: str) -> None:
    folder = three_files(tmp_path, kind)
    elsewhere = Partition.labelled("x", {"path": str(tmp_path / f"other.{kind}")})
    with pytest.raises(ConnectorError, match=r"partition 'x-\w+' names no file under"):
        list(source(kind, folder / f"*.{kind}").read_partition(CTX, elsewhere))


def test_row_groups_a_file_no_longer_has_are_an_error(tmp_path: Path) -> None:
    pq.write_table(contract_table(300), tmp_path / "f.parquet", row_group_size=100)
    made = source("parquet", tmp_path, partition_rows=100)
    parts = made.partitions(CTX)
    assert parts is not None
    pq.write_table(contract_table(100), tmp_path / "f.parquet")  # rewritten meanwhile
    with pytest.raises(ConnectorError, match=r"has 1 row groups, not the 2 to 2 .* changed"):
        list(made.read_partition(CTX, parts[2]))


def test_an_empty_parquet_file_is_one_partition_whose_read_says_why(tmp_path: Path) -> None:
    (tmp_path / "empty.parquet").write_bytes(b"")
    made = source("parquet", tmp_path, partition_rows=10)
    [part] = made.partitions(CTX) or []
    with pytest.raises(ConnectorError, match=r"empty\.parquet' is empty \(0 bytes\)"):
        list(made.read_partition(CTX, part))


class Numbered(pdp.DataFrameModel):
    col: int = pdp.Field(alias=r"^col_\d+$", regex=True, ge=0)
    name: str


def test_a_csv_file_of_no_rows_under_a_regex_model_gives_its_columns(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("col_1,col_2,name\n1,2,x\n")
    (tmp_path / "b.csv").write_text("col_1,col_2,name\n")
    made = CsvSource(str(tmp_path), schema=Numbered)
    made.name = "src"
    parts = assert_partitions_read_as_read(made, CTX)
    [empty] = list(made.read_partition(CTX, parts[1]))
    assert empty.num_rows == 0
    assert empty.schema.names == ["col_1", "col_2", "name"]
