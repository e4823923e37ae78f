"""Footer statistics prove a check only when the proof gives Pandera's verdict on the same rows.

Each case is a model and a table, written to Parquet with and without statistics, in one row
group or several; the run, streamed and referenced, must pass or fail exactly as
`Model.validate(df, lazy=True)` does.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pandera.errors
import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import ParquetSource
from etlkit.checks.validation import ChunkValidator
from etlkit.storage.parquet import parquet_statistics
from etlkit.testing import MemorySink


class Price(pdp.DataFrameModel):
    price: pl.Decimal(10, 2) = pdp.Field(lt=Decimal("0.30"))  # type: ignore[valid-type]


class WidePrice(pdp.DataFrameModel):
    price: pl.Decimal(38, 2) = pdp.Field(le=Decimal("222222222222222222222222222222.29"))  # type: ignore[valid-type]


class Quantity(pdp.DataFrameModel):
    qty: int = pdp.Field(nullable=True, ge=0, ignore_na=False)


class Noon(pdp.DataFrameModel):
    at: pl.Time = pdp.Field(le=dt.time(12, 0))


class Stamp(pdp.DataFrameModel):
    at: pl.Datetime("ns") = pdp.Field(le=dt.datetime(2020, 1, 1))  # type: ignore[valid-type]


class Elapsed(pdp.DataFrameModel):
    took: pl.Duration("ns") = pdp.Field(le=dt.timedelta(microseconds=1))  # type: ignore[valid-type]


class Small(pdp.DataFrameModel):
    n: pl.Int8 = pdp.Field(ge=-5)


class Short(pdp.DataFrameModel):
    n: pl.Int16 = pdp.Field(gt=-(2**15))


class Byte(pdp.DataFrameModel):
    n: pl.UInt8 = pdp.Field(le=254)


class Utc(pdp.DataFrameModel):
    at: pl.Datetime("us", "UTC") = pdp.Field(  # type: ignore[valid-type]
        ge=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )


class Huge(pdp.DataFrameModel):
    n: pl.UInt64 = pdp.Field(le=2**64 - 2)


class Widened(pdp.DataFrameModel):
    n: int = pdp.Field(gt=0, coerce=True)


class Count(pdp.DataFrameModel):
    n: int = pdp.Field(lt=2**31 - 1)


class Midnight(pdp.DataFrameModel):
    at: pl.Datetime("us") = pdp.Field(lt=dt.datetime(2020, 1, 1))  # type: ignore[valid-type]


class Measure(pdp.DataFrameModel):
    x: float = pdp.Field(gt=0.0, le=1e300)


class Day(pdp.DataFrameModel):
    on: pl.Date = pdp.Field(gt=dt.date(2020, 1, 1))


class Local(pdp.DataFrameModel):
    at: pl.Datetime("ns", "Europe/Paris") = pdp.Field(  # type: ignore[valid-type]
        lt=dt.datetime(2020, 1, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    )


class Milli(pdp.DataFrameModel):
    at: pl.Datetime("ms") = pdp.Field(le=dt.datetime(2020, 1, 1))  # type: ignore[valid-type]


class Name(pdp.DataFrameModel):
    name: str = pdp.Field(in_range={"min_value": "b", "max_value": "é"})


class Flag(pdp.DataFrameModel):
    on: bool = pdp.Field(eq=True)


class Code(pdp.DataFrameModel):
    code: str = pdp.Field(nullable=True, isin=["A", "B"], ignore_na=False)


class Required(pdp.DataFrameModel):
    n: int = pdp.Field(ge=0)


NOON_NS = 12 * 3600 * 10**9
NEW_YEAR_NS = 1_577_836_800 * 10**9

#: (model, column, Arrow type, values): each written to Parquet as it is.
CASES = {
    "decimal lt its own value": (
        Price,
        "price",
        pa.decimal128(10, 2),
        [Decimal("0.10"), Decimal("0.30")],
    ),
    "decimal below the bound": (
        Price,
        "price",
        pa.decimal128(10, 2),
        [Decimal("0.10"), Decimal("0.29")],
    ),
    "decimal of 32 digits one cent over": (
        WidePrice,
        "price",
        pa.decimal128(38, 2),
        [Decimal("1.00"), Decimal("222222222222222222222222222222.30")],
    ),
    "ignore_na=False over a null": (Quantity, "qty", pa.int64(), [1, None]),
    "ignore_na=False without nulls": (Quantity, "qty", pa.int64(), [1, 0]),
    "time64[ns] half a microsecond past": (
        Noon,
        "at",
        pa.time64("ns"),
        [0, NOON_NS + 500],
    ),
    "time64[ns] on the bound": (Noon, "at", pa.time64("ns"), [0, NOON_NS]),
    "timestamp[ns] half a microsecond past": (
        Stamp,
        "at",
        pa.timestamp("ns"),
        [0, NEW_YEAR_NS + 500],
    ),
    "duration[ns] past a microsecond": (Elapsed, "took", pa.duration("ns"), [0, 1_500]),
    "duration[ns] on the bound": (Elapsed, "took", pa.duration("ns"), [0, 1_000]),
    "int8 at its minimum": (Small, "n", pa.int8(), [-5, 127]),
    "int8 below the minimum": (Small, "n", pa.int8(), [-6, 0]),
    "int16 at its lowest": (Short, "n", pa.int16(), [-(2**15), 0]),
    "uint8 at its highest": (Byte, "n", pa.uint8(), [0, 255]),
    "uint8 on the bound": (Byte, "n", pa.uint8(), [0, 254]),
    "timestamp[us, UTC] a microsecond early": (
        Utc,
        "at",
        pa.timestamp("us", tz="UTC"),
        [NEW_YEAR_NS // 1000 - 1, NEW_YEAR_NS // 1000],
    ),
    "timestamp[us, UTC] on the bound": (
        Utc,
        "at",
        pa.timestamp("us", tz="UTC"),
        [NEW_YEAR_NS // 1000, NEW_YEAR_NS // 1000 + 1],
    ),
    "uint64 past the bound": (Huge, "n", pa.uint64(), [0, 2**64 - 1]),
    "uint64 on the bound": (Huge, "n", pa.uint64(), [0, 2**64 - 2]),
    "int32 coerced, at zero": (Widened, "n", pa.int32(), [0, 5]),
    "int32 coerced, above zero": (Widened, "n", pa.int32(), [1, 5]),
    "int32 read as int64, at the bound": (Count, "n", pa.int32(), [0, 2**31 - 1]),
    "int32 read as int64, below it": (Count, "n", pa.int32(), [0, 2**31 - 2]),
    "date read as datetime, on the bound": (
        Midnight,
        "at",
        pa.date32(),
        [dt.date(2019, 1, 1), dt.date(2020, 1, 1)],
    ),
    "date read as datetime, before it": (
        Midnight,
        "at",
        pa.date32(),
        [dt.date(2019, 1, 1), dt.date(2019, 12, 31)],
    ),
    "float NaN": (Measure, "x", pa.float64(), [1.0, float("nan")]),
    "float -0.0": (Measure, "x", pa.float64(), [-0.0, 1.0]),
    "float inf": (Measure, "x", pa.float64(), [1.0, float("inf")]),
    "date on the bound": (Day, "on", pa.date32(), [dt.date(2020, 1, 1), dt.date(2021, 1, 1)]),
    "date after the bound": (Day, "on", pa.date32(), [dt.date(2020, 1, 2)]),
    "timestamp[ns, tz] a nanosecond short of the bound": (
        Local,
        "at",
        pa.timestamp("ns", tz="Europe/Paris"),
        [0, NEW_YEAR_NS - 1],
    ),
    "timestamp[ns, tz] on the bound": (
        Local,
        "at",
        pa.timestamp("ns", tz="Europe/Paris"),
        [0, NEW_YEAR_NS],
    ),
    "timestamp[ms] a millisecond past": (
        Milli,
        "at",
        pa.timestamp("ms"),
        [0, NEW_YEAR_NS // 10**6 + 1],
    ),
    "string in range": (Name, "name", pa.string(), ["b", "c", "é"]),
    "large string past the range": (Name, "name", pa.large_string(), ["b", "f", "ê"]),
    "dictionary text below the range": (
        Name,
        "name",
        pa.dictionary(pa.int32(), pa.string()),
        ["a", "c"],
    ),
    "boolean not all true": (Flag, "on", pa.bool_(), [True, False]),
    "boolean all true": (Flag, "on", pa.bool_(), [True, True]),
    "isin with ignore_na=False over a null": (Code, "code", pa.string(), ["A", None]),
    "not nullable over a null": (Required, "n", pa.int64(), [1, None]),
}


def pandera_passes(model: type[pdp.DataFrameModel], table: pa.Table) -> bool:
    """Pandera's verdict on the rows as the source delivers them: cast to the model's dtypes
    where ParquetSource casts (wider integers, dates to datetimes, dictionaries to text)."""
    frame = pl.DataFrame(pl.from_arrow(table))
    for name, column in model.to_schema().columns.items():
        target = column.dtype.type
        if target != frame.schema[name] and target.is_numeric() == frame.schema[name].is_numeric():
            frame = frame.with_columns(pl.col(name).cast(target, strict=True))
    try:
        model.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors:
        return False
    return True


def pipelines(model: type[pdp.DataFrameModel]) -> dict[str, type[ek.Pipeline]]:
    """The same source read in place by a Sql node, and streamed to a sink in 1-row chunks."""
    params: dict[str, str] = {"path": ""}
    referenced = ParquetSource("{path}", schema=model)
    streamed = ParquetSource("{path}", schema=model, chunk_rows=1)
    return {
        "referenced": type(
            "Referenced",
            (ek.Pipeline,),
            {
                "params": params,
                "data": referenced,
                "total": (total := ek.Sql("select count(*) as n from {data}")),
                "out": MemorySink(total),
            },
        ),
        "streamed": type(
            "Streamed",
            (ek.Pipeline,),
            {"params": params, "data": streamed, "out": MemorySink(streamed)},
        ),
    }


@pytest.mark.parametrize("statistics", [True, False], ids=["statistics", "no-statistics"])
@pytest.mark.parametrize("group_rows", [1, 2], ids=["row-groups", "one-group"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_run_over_parquet_gives_panderas_verdict(
    settings: ek.Settings, tmp_path: Path, case: str, statistics: bool, group_rows: int
) -> None:
    model, column, kind, values = CASES[case]
    table = pa.table({column: pa.array(values, kind)})
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=group_rows, write_statistics=statistics)
    expected = pandera_passes(model, pq.read_table(path))

    for how, pipeline in pipelines(model).items():
        result = pipeline.run(settings=settings, params={"path": str(path)})

        assert (result.state == "success") is expected, (how, result.error)
        if not expected:
            assert isinstance(result.error, ek.DataValidationError), (how, result.error)


def test_temporal_extremes_are_the_integers_stored_to_the_nanosecond(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    at = pa.array([0, NOON_NS + 500], pa.time64("ns"))
    ts = pa.array([1, NEW_YEAR_NS + 500], pa.timestamp("ns", tz="UTC"))
    pq.write_table(pa.table({"at": at, "ts": ts}), path)

    stats = parquet_statistics([str(path)], ["at", "ts"])

    assert (stats["at"].minimum, stats["at"].maximum) == (0, NOON_NS + 500)
    assert stats["at"].kind == pa.time64("ns")
    assert (stats["ts"].minimum, stats["ts"].maximum) == (1, NEW_YEAR_NS + 500)
    assert stats["ts"].kind == pa.timestamp("ns", tz="UTC")


class Exact(pdp.DataFrameModel):
    price: pl.Decimal(10, 2) = pdp.Field(lt=Decimal("0.30"))  # type: ignore[valid-type]
    at: pl.Time = pdp.Field(le=dt.time(12, 0))
    n: pl.UInt64 = pdp.Field(le=2**64 - 2)
    qty: int = pdp.Field(nullable=True, ge=0, ignore_na=False)


EXACT = {
    "price": pa.array([Decimal("0.10"), Decimal("0.29")], pa.decimal128(10, 2)),
    "at": pa.array([0, NOON_NS], pa.time64("ns")),
    "n": pa.array([0, 2**64 - 2], pa.uint64()),
    "qty": pa.array([0, 1], pa.int64()),
}


@pytest.mark.parametrize("as_integer", [False, True], ids=["fixed-length", "integer"])
def test_extremes_on_the_bound_still_prove_the_checks(tmp_path: Path, as_integer: bool) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table(EXACT), path, row_group_size=1, store_decimal_as_integer=as_integer)

    proven = ChunkValidator(Exact).proven_checks(parquet_statistics([str(path)], list(EXACT)))

    assert proven == {
        ("price", "not_nullable"),
        ("price", "less_than(0.30)"),
        ("at", "not_nullable"),
        ("at", "less_than_or_equal_to(12:00:00)"),
        ("n", "not_nullable"),
        ("n", f"less_than_or_equal_to({2**64 - 2})"),
        ("qty", "greater_than_or_equal_to(0)"),
    }


def test_files_that_store_times_in_different_units_prove_no_range(tmp_path: Path) -> None:
    paths = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    # as integers, the nanoseconds of 1970 outnumber the milliseconds past the bound
    pq.write_table(pa.table({"at": pa.array([10**15], pa.timestamp("ns"))}), paths[0])
    late = pa.array([NEW_YEAR_NS // 10**6 + 1], pa.timestamp("ms"))
    pq.write_table(pa.table({"at": late}), paths[1])

    stats = parquet_statistics(paths, ["at"])

    assert stats["at"].kind is None
    assert ChunkValidator(Stamp).proven_checks(stats) == {("at", "not_nullable")}


def test_a_file_without_the_column_leaves_its_statistics_unknown(tmp_path: Path) -> None:
    paths = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    pq.write_table(pa.table({"n": [1], "id": [1]}), paths[0])
    pq.write_table(pa.table({"id": [2]}), paths[1])

    stats = parquet_statistics(paths, ["n"])

    assert (stats["n"].minimum, stats["n"].maximum, stats["n"].null_count) == (None, None, None)
    assert ChunkValidator(Required).proven_checks(stats) == set()
