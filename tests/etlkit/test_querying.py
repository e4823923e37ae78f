"""DuckDB views over staged runs: run resolution, views, read-only connection, results, shell."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etlkit.errors import QueryError
from etlkit.storage.querying import (
    connect,
    latest_run,
    query,
    resolve_run,
    shell,
    view_names,
    write_result,
)
from etlkit.storage.staging import Staging

PIPELINE = "shop"
R1 = "20250101T000000Z-aaaaaa"
R2 = "20250102T000000Z-bbbbbb"
R3 = "20250103T000000Z-cccccc"  # failed: nothing committed


def stage(
    staging: Staging, run_id: str, node: str, table: pa.Table | None, *, commit: bool = True
) -> None:
    writer = staging.writer(PIPELINE, run_id, node)
    if table is not None:
        for batch in table.to_batches():
            writer.append(batch)
    if commit:
        writer.commit()


def build(staging: Staging) -> Staging:
    """R1 and R2 committed (R2's orders gained a column), R3 only partly written."""
    stage(staging, R1, "orders", pa.table({"id": [1, 2], "amount": [10.0, 20.0]}))
    stage(staging, R1, "customers", pa.table({"customer": ["ann"]}))
    stage(staging, R2, "orders", pa.table({"id": [3], "amount": [30.0], "note": ["new"]}))
    rejects = {"id": [4], "amount": [-1.0], "_check": ["ge"], "_column": ["amount"]}
    stage(staging, R2, "orders.rejects", pa.table({**rejects, "_reason": ["negative"]}))
    failures = {
        "column": ["amount"],
        "check": ["greater_than_or_equal_to(0)"],
        "failure_case": ["-1.0"],
        "index": [0],
        "chunk": [0],
    }
    stage(staging, R2, "orders.failures", pa.table(failures))
    stage(staging, R2, "empty", None)  # committed, but no parts and no schema
    stage(staging, R2, "pending", pa.table({"x": [1]}), commit=False)
    stage(staging, R3, "orders", pa.table({"id": [9], "amount": [9.0]}), commit=False)
    return staging


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    return build(Staging(str(tmp_path / "staging")))


@pytest.fixture
def con(staging: Staging) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(staging, PIPELINE)
    yield connection
    connection.close()


# -- runs ------------------------------------------------------------------------------------


def test_committed_lists_committed_outputs_and_companions_only(staging: Staging) -> None:
    assert staging.committed(PIPELINE, R2) == [
        "empty",
        "orders",
        "orders.failures",
        "orders.rejects",
    ]
    assert staging.committed(PIPELINE, R3) == []
    assert staging.committed(PIPELINE, "20990101T000000Z-ffffff") == []


def test_latest_run_is_the_newest_run_with_a_committed_output(staging: Staging) -> None:
    assert latest_run(staging, PIPELINE) == R2
    assert latest_run(staging, "other") is None


def test_resolve_run_accepts_latest_a_full_id_or_a_unique_prefix(staging: Staging) -> None:
    assert resolve_run(staging, PIPELINE, "latest") == R2
    assert resolve_run(staging, PIPELINE, R1) == R1
    assert resolve_run(staging, PIPELINE, "20250101") == R1


def test_unknown_run_error_lists_the_recent_runs(staging: Staging) -> None:
    with pytest.raises(QueryError, match=rf"matches no run.*newest first: {R2}, {R1}"):
        resolve_run(staging, PIPELINE, "2024")


def test_ambiguous_prefix_error_lists_the_matches(staging: Staging) -> None:
    with pytest.raises(QueryError, match=rf"ambiguous.*{R2}, {R1}"):
        resolve_run(staging, PIPELINE, "202501")


def test_run_without_committed_output_is_not_resolved(staging: Staging) -> None:
    with pytest.raises(QueryError, match=rf"'{R3}'.*has no committed output.*{R2}"):
        resolve_run(staging, PIPELINE, R3)


def test_pipeline_without_committed_runs_says_to_run_it(tmp_path: Path) -> None:
    with pytest.raises(QueryError, match=r"No committed run of pipeline 'shop'.*etlkit run"):
        connect(Staging(str(tmp_path / "nothing")), PIPELINE)


# -- views -----------------------------------------------------------------------------------


def test_views_cover_nodes_companions_and_all_runs(con: duckdb.DuckDBPyConnection) -> None:
    assert view_names(con) == [
        "all_customers",
        "all_orders",
        "all_orders_failures",
        "all_orders_rejects",
        "orders",
        "orders_failures",
        "orders_rejects",
    ]


def test_node_views_read_the_chosen_run(staging: Staging) -> None:
    latest = connect(staging, PIPELINE)
    first = connect(staging, PIPELINE, "20250101")
    try:
        assert latest.sql("select id, note from orders").fetchall() == [(3, "new")]
        assert first.sql("select id, amount from orders order by id").fetchall() == [
            (1, 10.0),
            (2, 20.0),
        ]
        assert first.sql("select * from customers").fetchall() == [("ann",)]
    finally:
        latest.close()
        first.close()


def test_all_view_spans_every_committed_run_with_schema_drift(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rows = con.sql("select * from all_orders order by id").fetchall()
    assert con.sql("select * from all_orders").columns == ["run_id", "id", "amount", "note"]
    assert rows == [(R1, 1, 10.0, None), (R1, 2, 20.0, None), (R2, 3, 30.0, "new")]
    counts = con.sql("select run_id, count(*) from all_orders group by all order by 1")
    assert counts.fetchall() == [(R1, 2), (R2, 1)]


def test_companion_views_hold_rejects_and_failures(con: duckdb.DuckDBPyConnection) -> None:
    assert con.sql("select id, _check, _column, _reason from orders_rejects").fetchall() == [
        (4, "ge", "amount", "negative")
    ]
    failures = con.sql(  # column, check and index are keywords: quote them
        'select "column", "check", failure_case, "index", chunk from orders_failures'
    )
    assert failures.fetchall() == [("amount", "greater_than_or_equal_to(0)", "-1.0", 0, 0)]
    assert con.sql("select run_id from all_orders_rejects").fetchall() == [(R2,)]


def test_connect_passes_threads_memory_limit_and_temp_directory(
    staging: Staging, tmp_path: Path
) -> None:
    spill = str(tmp_path / "spill")
    con = connect(staging, PIPELINE, threads=1, memory_limit="256MB", temp_directory=spill)
    try:
        assert con.sql("select current_setting('threads')").fetchall() == [(1,)]
        limit = con.sql("select current_setting('memory_limit')").fetchall()[0][0]
        assert limit.startswith("244")  # 256 MB in MiB
        assert con.sql("select current_setting('temp_directory')").fetchall() == [(spill,)]
    finally:
        con.close()


def test_connect_rejects_a_bad_setting_with_a_query_error(staging: Staging) -> None:
    with pytest.raises(QueryError, match="Cannot open a DuckDB connection"):
        connect(staging, PIPELINE, memory_limit="lots")


def test_clashing_view_names_keep_the_nodes_own_output(
    staging: Staging, caplog: pytest.LogCaptureFixture
) -> None:
    stage(staging, R2, "orders_rejects", pa.table({"mine": [True]}))
    with caplog.at_level(logging.WARNING, logger="etlkit.storage.views"):
        con = connect(staging, PIPELINE)
    try:
        assert con.sql("select * from orders_rejects").fetchall() == [(True,)]
    finally:
        con.close()
    assert "two staged outputs map to view orders_rejects" in caplog.text


# -- read-only -------------------------------------------------------------------------------


def test_copy_to_a_file_outside_staging_fails(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
        con.execute(f"COPY (SELECT * FROM orders) TO '{target}'")
    assert not target.exists()


def test_creating_a_table_in_an_attached_file_fails(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    target = tmp_path / "scratch.duckdb"
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"ATTACH '{target}' AS scratch")
    with pytest.raises(duckdb.CatalogException):
        con.execute("CREATE TABLE scratch.t AS SELECT 1")
    assert not target.exists()


def test_other_files_cannot_be_read_and_settings_are_locked(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    other = tmp_path / "other.csv"
    other.write_text("a\n1\n")
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_csv('{other}')")
    with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
        con.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.PermissionException):
        con.execute("LOAD httpfs")


def test_query_refuses_copy_so_staged_parts_stay_intact(staging: Staging) -> None:
    (part,) = staging.files(PIPELINE, R2, "orders")
    sql = f"COPY (SELECT 1 AS id) TO '{part}' (USE_TMP_FILE false)"
    with pytest.raises(QueryError, match="COPY statements are refused"):
        query(sql, staging, PIPELINE)
    assert staging.verify(PIPELINE, R2, "orders") == []


# -- query -----------------------------------------------------------------------------------


def test_query_returns_polars_by_default(staging: Staging) -> None:
    frame = query("select id, amount from all_orders order by id", staging, PIPELINE)
    assert isinstance(frame, pl.DataFrame)
    assert frame.to_dict(as_series=False) == {"id": [1, 2, 3], "amount": [10.0, 20.0, 30.0]}


def test_query_returns_arrow_on_request_and_runs_every_statement(staging: Staging) -> None:
    table = query(
        "create temp table t as select 7 as x; select x from t", staging, PIPELINE, as_="arrow"
    )
    assert isinstance(table, pa.Table)
    assert table.to_pydict() == {"x": [7]}


def test_sql_error_names_the_available_views(staging: Staging) -> None:
    with pytest.raises(QueryError, match=r"(?s)ordres.*\nAvailable views: all_customers, .*orders"):
        query("select * from ordres", staging, PIPELINE)


# -- results ---------------------------------------------------------------------------------

RESULT = pa.table({"id": [1, 22], "name": ["a,b", None]})


def test_table_format_aligns_columns_and_counts_rows() -> None:
    assert write_result(RESULT, "table", None) == (
        "id | name\n---+-----\n 1 | a,b\n22 | NULL\n(2 rows)\n"
    )


def test_csv_and_json_are_returned_as_text_without_output() -> None:
    assert write_result(RESULT, "csv", None) == 'id,name\n1,"a,b"\n22,\n'
    text = write_result(RESULT, "json", None)
    assert text is not None
    assert json.loads(text) == [{"id": 1, "name": "a,b"}, {"id": 22, "name": None}]


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "parquet"])
def test_each_format_is_written_to_the_output_file_atomically(fmt: str, tmp_path: Path) -> None:
    target = tmp_path / f"result.{fmt}"
    target.write_text("old")
    assert write_result(RESULT, fmt, str(target)) is None  # type: ignore[arg-type]  # parametrized
    if fmt == "parquet":
        assert pq.read_table(target).equals(RESULT)
    else:
        assert target.read_text() == write_result(RESULT, fmt, None)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_parquet_needs_an_output_file() -> None:
    with pytest.raises(QueryError, match="parquet format needs an output file"):
        write_result(RESULT, "parquet", None)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.csv"
    target.write_text("old")
    nested = pa.table({"xs": [[1, 2]]})
    with pytest.raises(QueryError, match="Cannot write the result as csv"):
        write_result(nested, "csv", str(target))
    with pytest.raises(QueryError, match="Cannot write the result to"):
        write_result(RESULT, "parquet", str(tmp_path / "missing" / "result.parquet"))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]


# -- shell -----------------------------------------------------------------------------------


def run_shell(con: duckdb.DuckDBPyConnection, *lines: str, max_rows: int = 100) -> str:
    script = iter(lines)
    prompts: list[str] = []

    def input_fn(prompt: str) -> str:
        prompts.append(prompt)
        try:
            return next(script)
        except StopIteration:
            raise EOFError from None

    output = io.StringIO()
    shell(con, input_fn=input_fn, output=output, max_rows=max_rows)
    return output.getvalue()


def test_shell_runs_multiline_sql_lists_tables_and_survives_errors(
    con: duckdb.DuckDBPyConnection,
) -> None:
    out = run_shell(
        con,
        ".tables",
        "select id, note",
        "  from orders;",
        "select * from nope;",
        "copy orders to 'x.csv';",
        "select count(*) as n from all_orders;",
    )
    assert "all_orders\nall_orders_failures\n" in out
    assert "id | note\n---+-----\n 3 | new\n(1 row)\n" in out
    assert "Error: Catalog Error: Table with name nope does not exist!" in out
    assert "Available views: all_customers" in out
    assert "Error: COPY statements are refused" in out
    assert "n\n-\n3\n(1 row)\n" in out


def test_shell_quits_on_dot_quit_and_caps_rows(con: duckdb.DuckDBPyConnection) -> None:
    out = run_shell(con, "select * from range(5);", ".quit", "select 'never';", max_rows=2)
    assert "range\n-----\n    0\n    1\n(first 2 rows shown" in out
    assert "never" not in out


# -- non-local staging -----------------------------------------------------------------------


def test_memory_filesystem_staging_is_queried_through_a_registered_filesystem() -> None:
    root = f"memory://etlkit-test-{uuid.uuid4().hex}/staging"
    staging = build(Staging(root))
    try:
        assert not staging.local
        frame = query("select run_id, id from all_orders order by id", staging, PIPELINE)
        assert frame.rows() == [(R1, 1), (R1, 2), (R2, 3)]
        assert query("select _reason from orders_rejects", staging, PIPELINE).item() == "negative"
    finally:
        fsspec.filesystem("memory").rm(staging.root.rsplit("/", 1)[0], recursive=True)


def test_public_query_and_connect_take_a_staging_root_url(tmp_path: Path) -> None:
    import etlkit as ek
    from etlkit.testing import MemorySource

    class Tiny(ek.Pipeline):
        numbers = MemorySource(pa.table({"x": [1, 2, 3]}))

    settings = ek.load_settings(tmp_path, env={}, cli={"paths.state_dir": str(tmp_path)})
    result = Tiny.run(settings=settings)
    assert result.state == "success", result.error

    frame = ek.query("select sum(x) as s from numbers", settings.paths.staging_root, "tiny")
    assert frame.to_dicts() == [{"s": 6}]
    con = ek.connect(settings.paths.staging_root, "tiny", result.run_id)
    try:
        assert con.sql("select count(*) from all_numbers").fetchall() == [(3,)]
    finally:
        con.close()


def test_views_read_a_referenced_source_as_its_node_yields_it(tmp_path: Path) -> None:
    source = tmp_path / "export.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array([1, 2], pa.int32()),
                "amount": [1.5, 2.5],
                "undeclared": ["x", "y"],
                "run_id": ["not", "ours"],
            }
        ),
        source,
    )
    staging = Staging(str(tmp_path / "staging"))
    for run_id in (R1, R2):
        staging.writer(PIPELINE, run_id, "bills").commit_reference(
            urls=[str(source)],
            rows=2,
            sizes=[source.stat().st_size],
            checksums=[""],
            select=[("id", "BIGINT"), ("amount", None), ("run_id", None)],
        )

    with connect(staging, PIPELINE) as con:
        bills = con.sql("select * from bills")
        assert bills.columns == ["id", "amount", "run_id"]  # the source's projection
        assert [str(t) for t in bills.types] == ["BIGINT", "DOUBLE", "VARCHAR"]
        every = con.sql("select * from all_bills order by run_id, id")
        assert every.columns == ["run_id", "id", "amount"]
        assert every.fetchall() == [(R1, 1, 1.5), (R1, 2, 2.5), (R2, 1, 1.5), (R2, 2, 2.5)]
