"""Params reach SQL as bound values, never as SQL text, and a run's DuckDB reads only its inputs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pandera.polars as pdp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import ParquetSource
from etlkit.model.nodes import Context, bind_sql
from etlkit.testing import MemorySink, MemorySource


class Row(pdp.DataFrameModel):
    a: int


def ctx(**params: str) -> Context:
    return Context("report", "r1", datetime(2025, 3, 1, tzinfo=UTC), node="q", params=params)


def injection(target: Path) -> str:
    return f"0; COPY (select 1) TO '{target}'; select 1"


@pytest.fixture
def settings(tmp_path: Path) -> ek.Settings:
    cli = {"paths.state_dir": str(tmp_path / "state"), "run.timeout": 30}
    return ek.load_settings(tmp_path, env={}, cli=cli)


def test_a_param_field_becomes_a_bound_parameter_and_an_input_a_quoted_identifier() -> None:
    bound = bind_sql("select a from {rows} where a >= {flt}", ctx(flt="2"), {"rows": "rows"})
    assert bound.text == 'select a from "rows" where a >= $flt'
    assert bound.params == {"flt": "2"}


def test_every_form_of_a_param_field_is_bound() -> None:
    bound = bind_sql("select {params[flt]}, {flt!r}, {flt:>3}, {ds}", ctx(flt="2"))
    assert bound.text == "select $flt, $flt_1, $flt_2, $ds"
    assert bound.params == {"flt": "2", "flt_1": "'2'", "flt_2": "  2", "ds": "2025-03-01"}


def test_a_string_literal_with_fields_becomes_one_bound_value() -> None:
    template = "select '{ds}', date '{ds}', 'it''s {who}''s', '%{who}%', 'plain {{x}}'"
    bound = bind_sql(template, ctx(who="o'brien"))
    assert bound.text == ("select $ds, CAST($ds AS DATE), $literal_1, $literal_2, 'plain {x}'")
    assert bound.params == {
        "ds": "2025-03-01",
        "literal_1": "it's o'brien's",
        "literal_2": "%o'brien%",
    }


def test_values_can_be_written_as_constants_for_a_driver_that_cannot_bind_them() -> None:
    bound = bind_sql("select {a}, '{b}'", ctx(a="1", b="2"), constant=lambda v: f"<{v}>")
    assert bound.text == "select <1>, <2>"


def test_fields_in_comments_are_left_out() -> None:
    bound = bind_sql("select 1 -- {flt}\n/* {flt} */", ctx(flt="x"))
    assert bound.text == "select 1 -- \n/*  */"
    assert bound.params == {}


def test_a_quoted_identifier_takes_only_a_plain_name() -> None:
    bound = bind_sql('select * from "sales_{region}"', ctx(region="north_2"))
    assert bound.text == 'select * from "sales_north_2"'
    with pytest.raises(ek.ConfigError, match=r"in a quoted identifier; there a value may hold"):
        bind_sql('select * from "sales_{region}"', ctx(region='x"; drop table t; --'))


def test_an_unknown_field_is_a_config_error_naming_the_params() -> None:
    with pytest.raises(ek.ConfigError, match=r"uses \{nope\}.*params: 'flt'"):
        bind_sql("select {nope}", ctx(flt="1"))


def test_an_injected_param_writes_nothing_from_a_sql_node_over_staged_inputs(
    settings: ek.Settings, tmp_path: Path
) -> None:
    target = tmp_path / "x.csv"

    class Injected(ek.Pipeline):
        params: ClassVar[dict[str, str]] = {"flt": "0"}
        rows = MemorySource(pa.table({"a": [1, 2, 3]}), schema=Row)
        more = MemorySource(pa.table({"a": [4]}), schema=Row)
        picked = ek.Sql("select a from {rows} where a >= {flt} union all select a from {more}")
        out = MemorySink(picked)

    result = Injected.run(date="2025-03-01", settings=settings, params={"flt": "2"})
    assert result.state == "success", result.error
    assert sorted(r["a"] for r in Injected.out.table().to_pylist()) == [2, 3, 4]

    result = Injected.run(date="2025-03-01", settings=settings, params={"flt": injection(target)})
    assert result.state == "failed"
    assert isinstance(result.error, ek.NodeError)
    assert "Could not convert string" in str(result.error)
    assert not target.exists()


def test_an_injected_param_writes_nothing_from_a_sql_node_over_a_streamed_input(
    settings: ek.Settings, tmp_path: Path
) -> None:
    target = tmp_path / "x.csv"

    class Streamed(ek.Pipeline):
        params: ClassVar[dict[str, str]] = {"flt": "0"}
        rows = MemorySource(pa.table({"a": list(range(100))}), schema=Row, chunk_rows=10)
        picked = ek.Sql("select count(*) as n from {rows} where a >= {flt}")
        out = MemorySink(picked)

    result = Streamed.run(date="2025-03-01", settings=settings, params={"flt": "90"})
    assert result.state == "success", result.error
    assert Streamed.out.table().to_pylist() == [{"n": 10}]
    assert result.nodes["picked"].rows_in == 100  # it streamed

    result = Streamed.run(date="2025-03-01", settings=settings, params={"flt": injection(target)})
    assert result.state == "failed"
    assert not target.exists()


DISABLED = "file system operations are disabled by configuration"
LOCKED = "the configuration has been locked"


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("COPY (select 1 as a) TO '{target}'", DISABLED),
        ("select * from read_csv('/etc/passwd')", DISABLED),
        ("ATTACH '{target}' AS other", DISABLED),
        ("SET enable_external_access = true", LOCKED),
        ("SET allowed_directories = ['/']", LOCKED),
    ],
)
def test_a_sql_node_cannot_touch_files_beyond_its_inputs(
    settings: ek.Settings, tmp_path: Path, statement: str, message: str
) -> None:
    target = tmp_path / "stolen.csv"
    query = statement.replace("{target}", str(target))

    class Escaping(ek.Pipeline):
        rows = MemorySource(pa.table({"a": [1]}), schema=Row)
        more = MemorySource(pa.table({"a": [2]}), schema=Row)
        picked = ek.Sql(query + "; select a from {rows} union all select a from {more}")
        out = MemorySink(picked)

    result = Escaping.run(date="2025-03-01", settings=settings)

    assert result.state == "failed"
    assert isinstance(result.error, ek.NodeError)
    assert result.error.node == "picked"
    assert message in str(result.error)
    if message == DISABLED:
        assert "A SQL node reads only its inputs (the nodes named in braces)" in str(result.error)
    assert not target.exists()


def test_a_dataset_sql_assertion_cannot_read_other_files(settings: ek.Settings) -> None:
    secret = "select * from {output} where (select count(*) from read_text('/etc/passwd')) < 0"

    class Asserting(ek.Pipeline):
        rows = MemorySource(pa.table({"a": [1]}), schema=Row).expect(sql=[secret])
        out = MemorySink(rows)

    result = Asserting.run(date="2025-03-01", settings=settings)

    assert result.state == "failed"
    assert isinstance(result.error, ek.DataValidationError)
    assert "could not run" in str(result.error)
    assert DISABLED in str(result.error)


def test_a_sql_node_reads_a_parquet_source_in_place_but_not_the_file_beside_it(
    settings: ek.Settings, tmp_path: Path
) -> None:
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "rows.parquet")
    pq.write_table(pa.table({"a": [99]}), tmp_path / "secret.parquet")

    class InPlace(ek.Pipeline):
        rows = ParquetSource(str(tmp_path / "rows.parquet"), schema=Row)
        total = ek.Sql("select sum(a) as a from {rows}")
        out = MemorySink(total)

    class Beside(InPlace):
        total = ek.Sql(
            f"select a from {{rows}} union all select a from '{tmp_path / 'secret.parquet'}'"
        )

    result = InPlace.run(date="2025-03-01", settings=settings)
    assert result.state == "success", result.error
    assert InPlace.out.table().to_pylist() == [{"a": 3}]
    assert result.nodes["total"].chunks_in == 0  # read in place, not streamed

    result = Beside.run(date="2025-03-01", settings=settings)
    assert result.state == "failed"
    assert f'Cannot access file "{tmp_path / "secret.parquet"}"' in str(result.error)


@pytest.mark.parametrize(
    "template", ["select * from sales_{region}", "select * from {region}_sales", "select {a}{a}"]
)
def test_a_param_glued_to_a_name_says_to_quote_the_name(template: str) -> None:
    with pytest.raises(ek.ConfigError, match=r"as part of a name; .*double quotes"):
        bind_sql(template, ctx(region="north", a="1"))
