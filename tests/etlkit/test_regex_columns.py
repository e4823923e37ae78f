"""Models with regex columns on every path (a regex column stands for the columns it matches),
and failures found by the differential suite on the way."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import CsvSource, ParquetSource
from etlkit.checks.validation import ChunkValidator
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink, MemorySource


class Numbered(pdp.DataFrameModel):
    col: int = pdp.Field(alias=r"^col_\d+$", regex=True, ge=0)
    name: str


def run(settings: ek.Settings, **nodes: Any) -> ek.RunResult:
    pipeline = type("Regex", (ek.Pipeline,), dict(nodes))
    result: ek.RunResult = pipeline.run(settings=settings)
    return result


@pytest.mark.parametrize(
    "query", ["select * from {src}", "select * from {src} union all select * from {src}"]
)
def test_a_csv_source_with_a_regex_model_reads_every_column_the_pattern_matches(
    settings: ek.Settings, tmp_path: Path, query: str
) -> None:
    path = tmp_path / "numbered.csv"
    path.write_text("col_1,name,col_2,other\n1,a,2,x\n3,b,4,y\n")
    source = CsvSource(str(path), schema=Numbered)
    sql = ek.Sql(query)  # scanning its input twice, it reads the source's reference
    streamed, queried = MemorySink(source), MemorySink(sql)

    result = run(settings, src=source, sql=sql, out=streamed, queried=queried)

    assert result.state == "success", result.error
    assert streamed.table().to_pydict() == {"col_1": [1, 3], "col_2": [2, 4], "name": ["a", "b"]}
    assert queried.table().column_names == ["col_1", "col_2", "name"]
    assert sorted(queried.table().column("col_2").to_pylist()) == sorted(
        [2, 4] * query.count("{src}")
    )


def test_a_csv_source_with_a_regex_model_fails_a_matched_column_s_bad_value(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = tmp_path / "numbered.csv"
    path.write_text("col_1,name,col_2\n1,a,2\n3,b,-4\n")
    source = CsvSource(str(path), schema=Numbered)

    result = run(settings, src=source, out=MemorySink(source))

    assert isinstance(result.error, ek.DataValidationError), result.error
    assert "column 'col_2' failed greater_than_or_equal_to(0)" in str(result.error)


def test_a_parquet_source_with_a_regex_model_read_only_by_sql_gives_the_matched_columns(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = tmp_path / "numbered.parquet"
    pq.write_table(pa.table({"col_1": [1, 3], "name": ["a", "b"], "col_2": [2, 4]}), path)
    source = ParquetSource(str(path), schema=Numbered)
    sql = ek.Sql("select * from {src}")
    sink = MemorySink(sql)

    result = run(settings, src=source, sql=sql, out=sink)

    assert result.state == "success", result.error
    assert sink.table().to_pydict() == {"col_1": [1, 3], "col_2": [2, 4], "name": ["a", "b"]}
    manifest = Staging(settings.paths.staging_root).manifest("regex", result.run_id, "src")
    assert manifest is not None
    assert manifest.reference_select is not None  # read in place


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_empty_output_of_a_regex_model_has_the_columns_the_pattern_matches(
    settings: ek.Settings, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"numbered{suffix}"
    if suffix == ".csv":
        path.write_text("col_1,name,col_7\n")
        source: ek.Source = CsvSource(str(path), schema=Numbered)
    else:
        empty = {"col_1": pa.array([], pa.int64()), "name": pa.array([], pa.string())}
        pq.write_table(pa.table(empty | {"col_7": pa.array([], pa.int64())}), path)
        source = ParquetSource(str(path), schema=Numbered)
    sink = MemorySink(source)

    result = run(settings, src=source, out=sink)

    assert result.state == "success", result.error
    assert sink.table().num_rows == 0
    assert sink.table().column_names == ["col_1", "col_7", "name"]


def test_an_output_whose_rows_all_drop_keeps_the_columns_a_regex_column_matched(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = tmp_path / "numbered.parquet"
    pq.write_table(pa.table({"col_1": [-1], "name": ["a"], "col_2": [2]}), path)
    source = ParquetSource(str(path), schema=Numbered).expect(on_invalid="drop")
    sink = MemorySink(source)

    result = run(settings, src=source, out=sink)

    assert result.state == "success", result.error
    assert sink.table().column_names == ["col_1", "col_2", "name"]


class Stamped(pdp.DataFrameModel):
    at: pl.Datetime("ms", "UTC") = pdp.Field(unique=True)  # type: ignore[valid-type]


def test_a_zoned_timestamp_repeating_across_chunks_is_reported_with_its_value(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = tmp_path / "stamped.parquet"
    at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    table = pa.table({"at": pa.array([at, at], pa.timestamp("ms", tz="UTC"))})
    pq.write_table(table, path, row_group_size=1)
    source = ParquetSource(str(path), schema=Stamped, chunk_rows=1)

    result = run(settings, src=source, out=MemorySink(source))

    assert isinstance(result.error, ek.DataValidationError), result.error
    assert "column 'at' must be unique across all chunks" in str(result.error)
    assert "2020-01-01 00:00:00+00:00" in str(result.error)


class Spans(pdp.DataFrameModel):
    span: pl.Duration = pdp.Field()  # type: ignore[valid-type]

    @pdp.check("span")  # type: ignore[untyped-decorator]
    @classmethod
    def positive(cls, data: pdp.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("span") > dt.timedelta(0))


def test_a_custom_check_failing_a_duration_fails_the_chunk_instead_of_crashing() -> None:
    frame = pl.DataFrame({"span": [dt.timedelta(days=-1)]})
    with pytest.raises(pl.exceptions.InvalidOperationError):  # Pandera fails, naming no row
        Spans.validate(frame, lazy=True)

    report = ChunkValidator(Spans).check(frame)

    assert not report.ok
    assert report.failures["check"].to_list() == ["pandera_report"]


class Flags(pdp.DataFrameModel):
    flag: bool = pdp.Field(notin=["x", "y"])  # a mistyped check: Pandera fails any frame


def test_a_source_without_rows_is_still_judged_as_pandera_judges_an_empty_frame(
    settings: ek.Settings,
) -> None:
    empty = pa.table({"flag": pa.array([], pa.bool_())})
    with pytest.raises(pdp.errors.SchemaErrors):
        Flags.validate(pl.DataFrame(schema={"flag": pl.Boolean}), lazy=True)
    source = MemorySource(empty, schema=Flags)

    result = run(settings, src=source, out=MemorySink(source))

    assert isinstance(result.error, ek.DataValidationError), result.error


class CoercedAmounts(pdp.DataFrameModel):
    amount: float = pdp.Field(alias=r"^amount_\w+$", regex=True, coerce=True, ge=0)
    name: str


def test_rows_kept_from_a_failing_chunk_of_a_regex_model_are_coerced_as_pandera_coerces() -> None:
    frame = pl.DataFrame({"amount_a": [1, -2, 3], "name": ["x", "y", "z"], "amount_b": [4, 5, 6]})

    report = ChunkValidator(CoercedAmounts).check(frame)

    assert report.invalid is not None
    assert report.invalid.to_list() == [False, True, False]
    kept = report.data.filter(~report.invalid)
    assert kept.schema == pl.Schema(
        {"amount_a": pl.Float64, "name": pl.String, "amount_b": pl.Float64}
    )
    assert kept.to_dict(as_series=False) == {
        "amount_a": [1.0, 3.0],
        "name": ["x", "z"],
        "amount_b": [4.0, 6.0],
    }


def test_a_drop_policy_over_a_coerced_regex_model_gives_its_sink_one_type(
    settings: ek.Settings,
) -> None:
    clean = pa.table({"amount_a": [1, 2], "name": ["a", "b"]})
    dirty = pa.table({"amount_a": [3, -4], "name": ["c", "d"]})
    source = MemorySource(pa.concat_tables([clean, dirty]), schema=CoercedAmounts).expect(
        on_invalid="drop"
    )
    sink = MemorySink(source)

    result = run(settings, chunk_rows=2, src=source, out=sink)

    assert result.state == "success", result.error
    assert sink.table().schema.field("amount_a").type == pa.float64()
    assert sink.table().column("amount_a").to_pylist() == [1.0, 2.0, 3.0]
