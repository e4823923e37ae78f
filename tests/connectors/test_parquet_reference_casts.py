"""A Parquet source read only by SQL nodes is validated in the types its consumers read.

Its files are referenced in place only when each column's cast to the model keeps every value
(by the types, or checked over the values), so polars (validating), DuckDB (the SQL consumers)
and pyarrow (a resumed run) read equal values. A file a cast would change (`timestamp[ns]` to
µs, a narrower decimal, int64 beyond 2**53 to float) is streamed instead, and the streamed path
rejects the value as it does for any consumer; Pandera rejects such a file's dtype too.
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import ParquetSource
from etlkit.model.schema import Model
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink

MIDNIGHT = dt.datetime(2020, 1, 1)
NS_PAST_MIDNIGHT = pa.scalar(MIDNIGHT, pa.timestamp("ns")).value + 500  # 00:00:00.0000005


class Stamp(pdp.DataFrameModel):
    v: pl.Datetime("us") = pdp.Field(le=MIDNIGHT)  # type: ignore[valid-type]


class Price(pdp.DataFrameModel):
    v: pl.Decimal(10, 2) = pdp.Field(le=decimal.Decimal("1.00"))  # type: ignore[valid-type]


class Amount(pdp.DataFrameModel):
    v: float


class Moment(pdp.DataFrameModel):
    v: pl.Datetime("ns")  # type: ignore[valid-type]


class Count(pdp.DataFrameModel):
    v: pl.Int32 = pdp.Field(ge=0)


LOSSY: dict[str, tuple[type[pdp.DataFrameModel], pa.Array]] = {
    "timestamp-ns-to-us": (Stamp, pa.array([NS_PAST_MIDNIGHT], pa.timestamp("ns"))),
    "decimal-narrowed": (Price, pa.array([decimal.Decimal("1.004")], pa.decimal128(12, 3))),
    "int64-past-2**53-to-float": (Amount, pa.array([2**53 + 1], pa.int64())),
    "int64-narrowed-to-int32": (Count, pa.array([2**31], pa.int64())),
    "date-past-2262-to-datetime-ns": (Moment, pa.array([dt.date(2262, 4, 12)])),
}


Read = tuple[type[ek.Pipeline], MemorySink]


def pipelines(model: Model, path: Path) -> tuple[Read, Read]:
    """The same file read only by a SQL node (referenced) and by a sink (streamed), each with
    the sink that receives what its consumer read."""

    class ReadBySql(ek.Pipeline):
        src = ParquetSource(str(path), schema=model)
        listed = ek.Sql("select v from {src}")
        out = MemorySink(listed)

    class ReadStreamed(ek.Pipeline):
        src = ParquetSource(str(path), schema=model)
        out = MemorySink(src)

    return (ReadBySql, ReadBySql.out), (ReadStreamed, ReadStreamed.out)


def reference_select(settings: ek.Settings, pipeline: str, result: ek.RunResult) -> Any:
    manifest = Staging(settings.paths.staging_root).manifest(pipeline, result.run_id, "src")
    assert manifest is not None
    return manifest.reference_select


@pytest.mark.parametrize("case", sorted(LOSSY))
def test_a_lossy_cast_fails_a_sql_only_consumer_as_it_fails_the_streamed_path(
    settings: ek.Settings, tmp_path: Path, case: str
) -> None:
    model, values = LOSSY[case]
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({"v": values}), path)
    with pytest.raises(pdp.errors.SchemaErrors):  # Pandera: the file's dtype is not the model's
        model.validate(pl.read_parquet(path), lazy=True)
    (by_sql, sql_out), (streamed, _) = pipelines(model, path)

    referenced = by_sql.run(settings=settings)
    direct = streamed.run(settings=settings)

    assert direct.state == "failed"
    assert referenced.state == "failed", sql_out.table().to_pylist()
    cause = str(referenced.nodes["src"].error).split(" failed: ", 1)[1]
    assert cause == str(direct.nodes["src"].error).split(" failed: ", 1)[1]
    assert "row 1, column 'v': cannot cast" in cause
    assert referenced.nodes["listed"].state != "done"


KEPT: dict[str, tuple[pl.DataType, pa.Array]] = {
    "int32-to-int64": (pl.Int64(), pa.array([-(2**31), 7], pa.int32())),
    "uint32-to-float64": (pl.Float64(), pa.array([2**32 - 1, 0], pa.uint32())),
    "float32-to-float64": (pl.Float64(), pa.array([0.1, -2.5], pa.float32())),
    "decimal-widened": (
        pl.Decimal(12, 3),
        pa.array([decimal.Decimal("-99999999.99"), decimal.Decimal("0.01")], pa.decimal128(10, 2)),
    ),
    "date-to-datetime-ms": (pl.Datetime("ms"), pa.array([dt.date(1, 1, 1), dt.date(9999, 12, 31)])),
    "whole-microseconds-in-ns-to-us": (
        pl.Datetime("us"),
        pa.array([NS_PAST_MIDNIGHT - 500 + 1000, None], pa.timestamp("ns")),
    ),
    "int64-within-int32": (pl.Int32(), pa.array([-(2**31), 2**31 - 1], pa.int64())),
    "uint64-within-2**53-to-float64": (pl.Float64(), pa.array([2**53, 0], pa.uint64())),
    "int64-within-2**53-to-float64": (pl.Float64(), pa.array([-(2**53), 2**53], pa.int64())),
    "decimal-narrowed-without-a-digit-lost": (
        pl.Decimal(10, 2),
        pa.array([decimal.Decimal("1.000"), decimal.Decimal("-2.500")], pa.decimal128(12, 3)),
    ),
    "date-to-datetime-us": (pl.Datetime("us"), pa.array([dt.date(1, 1, 1), dt.date(9999, 12, 31)])),
    "zoned-ns-to-another-zone": (
        pl.Datetime("ns", "Europe/Paris"),
        pa.array([NS_PAST_MIDNIGHT], pa.timestamp("ns", "UTC")),
    ),
}


@pytest.mark.parametrize("case", sorted(KEPT))
def test_a_cast_keeping_every_value_stays_referenced_and_sql_reads_the_streamed_values(
    settings: ek.Settings, tmp_path: Path, case: str
) -> None:
    dtype, values = KEPT[case]
    fields = {"__annotations__": {"v": dtype}, "v": pdp.Field(nullable=True)}
    wide = type("Wide", (pdp.DataFrameModel,), fields)
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({"v": values}), path)
    (by_sql, sql_out), (streamed, streamed_out) = pipelines(wide, path)

    referenced = by_sql.run(settings=settings)
    direct = streamed.run(settings=settings)

    assert referenced.state == "success", referenced.error
    assert direct.state == "success", direct.error
    assert reference_select(settings, "read_by_sql", referenced) is not None
    expected = pl.from_arrow(streamed_out.table()).get_column("v")  # type: ignore[union-attr]
    got = pl.from_arrow(sql_out.table()).get_column("v")  # type: ignore[union-attr]
    assert got.cast(expected.dtype).to_list() == expected.to_list()


class Nanos(pdp.DataFrameModel):
    v: pl.Datetime("ns")  # type: ignore[valid-type]


def test_an_int96_file_is_copied_so_sql_reads_its_nanoseconds(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = tmp_path / "v.parquet"
    values = pa.array([NS_PAST_MIDNIGHT], pa.timestamp("ns"))
    pq.write_table(pa.table({"v": values}), path, use_deprecated_int96_timestamps=True)
    (by_sql, sql_out), _ = pipelines(Nanos, path)

    result = by_sql.run(settings=settings)

    assert result.state == "success", result.error
    assert sql_out.table().column("v").cast(pa.int64()).to_pylist() == [NS_PAST_MIDNIGHT]
    assert reference_select(settings, "read_by_sql", result) is None  # a copy, not the file


class Single(pdp.DataFrameModel):
    v: pl.Float32 = pdp.Field(nullable=True)


def test_a_float64_file_under_a_float32_model_is_copied_so_sql_reads_the_streamed_floats(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({"v": pa.array([0.1, 1e300], pa.float64())}), path)
    (by_sql, sql_out), (streamed, streamed_out) = pipelines(Single, path)

    referenced = by_sql.run(settings=settings)
    direct = streamed.run(settings=settings)

    assert referenced.state == "success", referenced.error
    assert direct.state == "success", direct.error
    assert reference_select(settings, "read_by_sql", referenced) is None  # a copy
    assert sql_out.table().column("v").to_pylist() == streamed_out.table().column("v").to_pylist()
