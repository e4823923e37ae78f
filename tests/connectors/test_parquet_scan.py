"""A local Parquet file of plain column types is decoded by polars' reader: the same chunks,
values, types and origins as pyarrow's; other files keep pyarrow's reader."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.files import ParquetSource
from connectors.files import parquet as parquet_module
from etlkit.errors import ConnectorError
from etlkit.model.files import Origin
from tests.connectors.contract import make_context

CTX = make_context("src")


class Plain(pdp.DataFrameModel):
    id: int
    amount: float = pdp.Field(nullable=True)
    price: float
    day: pl.Date = pdp.Field(nullable=True)
    note: str = pdp.Field(nullable=True)
    paid: bool = pdp.Field(nullable=True)


def plain_file(path: Path, rows: int = 1000) -> Path:
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int32()),
            "amount": [None if i % 7 == 3 else i * 0.5 for i in range(rows)],
            "price": pa.array(
                [decimal.Decimal(i) / 100 for i in range(rows)], pa.decimal128(12, 2)
            ),
            "day": [
                None if i % 11 == 0 else dt.date(2025, 1, 1) + dt.timedelta(i) for i in range(rows)
            ],
            "note": [None if i % 5 == 0 else f"note {i} é" for i in range(rows)],
            "paid": [None if i % 13 == 0 else i % 2 == 0 for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=300)
    return path


def chunks(source: ParquetSource) -> list[tuple[pa.Schema, list[dict[str, object]]]]:
    return [(b.schema, b.to_pylist()) for b in source.read(CTX)]


def test_polars_and_pyarrow_read_a_plain_file_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = plain_file(tmp_path / "bills.parquet")
    source = ParquetSource(str(path), schema=Plain, chunk_rows=128)
    source.name = "src"
    calls: list[str] = []
    batches = parquet_module.polars_batches

    def spied(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls.append(str(args[0]))
        return batches(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(parquet_module, "polars_batches", spied)
    read = list(source.read(CTX))
    by_polars = [(b.schema, b.to_pylist()) for b in read]
    assert calls == [str(path)]
    monkeypatch.setattr(parquet_module, "polars_readable", lambda *_: False)
    by_pyarrow = chunks(source)

    assert [rows for _, rows in by_polars] != []
    assert all(len(rows) <= 128 for _, rows in by_polars)
    flat = [r for _, rows in by_polars for r in rows]
    assert flat == [r for _, rows in by_pyarrow for r in rows]
    assert {s.remove_metadata() for s, _ in by_polars} == {
        s.remove_metadata() for s, _ in by_pyarrow
    }
    # each chunk's origin names the file and its first row, as pyarrow's path gives them
    origins = [Origin.take(b)[0] for b in read]
    starts = [0]
    for _, rows in by_polars[:-1]:
        starts.append(starts[-1] + len(rows))
    assert [(o.file, o.first_row) for o in origins if o] == [(str(path), r) for r in starts]


def test_files_polars_does_not_read_alike_keep_pyarrows_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Stamped(pdp.DataFrameModel):
        id: int
        at: pl.Datetime(time_unit="us", time_zone="UTC")  # type: ignore[valid-type]

    path = tmp_path / "stamped.parquet"
    moments = [dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i) for i in range(10)]
    pq.write_table(pa.table({"id": range(10), "at": moments}), path)
    monkeypatch.setattr(
        parquet_module, "polars_batches", lambda *a, **k: pytest.fail("polars read it")
    )
    source = ParquetSource(str(path), schema=Stamped)
    source.name = "src"
    assert [r["at"] for b in source.read(CTX) for r in b.to_pylist()] == moments
    # a partition of row groups too (the Dask executor's), whatever the types
    plain = plain_file(tmp_path / "plain.parquet")
    split = ParquetSource(str(plain), schema=Plain, partition_rows=300)
    split.name = "src"
    parts = split.partitions(CTX)
    assert parts is not None
    assert len(parts) > 1
    assert sum(b.num_rows for b in split.read_partition(CTX, parts[1])) == 300


def test_a_damaged_data_page_fails_naming_the_file(tmp_path: Path) -> None:
    path = plain_file(tmp_path / "bills.parquet", rows=3000)
    chunk = pq.read_metadata(path).row_group(5).column(4)  # `note`, a text column
    data = bytearray(path.read_bytes())
    start = chunk.data_page_offset
    data[start : start + 64] = b"\x07" * 64  # its first data page's header
    path.write_bytes(bytes(data))
    source = ParquetSource(str(path), schema=Plain)
    source.name = "src"

    with pytest.raises(ConnectorError, match=r"ParquetSource 'src': .*bills\.parquet"):
        list(source.read(CTX))


def test_a_consumer_that_stops_early_stops_the_read(tmp_path: Path) -> None:
    path = plain_file(tmp_path / "bills.parquet", rows=5000)
    source = ParquetSource(str(path), schema=Plain, chunk_rows=100)
    source.name = "src"
    reader = source.read(CTX)
    first = next(reader)
    reader.close()  # as a cancelled run closes its source: nothing left running or held
    assert first.num_rows == 100
