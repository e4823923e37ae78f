"""A SQL node over one streamed input scans its chunks as they come (DuckDB reads an Arrow
stream), unless its query would scan the input twice; the input still commits first."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink, MemorySource

ROWS = 1_000
CHUNK = 50  # 20 chunks: more than a channel holds


class Row(pdp.DataFrameModel):
    k: int = pdp.Field(nullable=False)
    v: float


def table(rows: int = ROWS) -> pa.Table:
    return pa.table(
        {
            "k": pa.array(range(rows), pa.int64()),
            "v": pa.array([float(i % 7) for i in range(rows)]),
        },
        schema=pa.schema({"k": pa.int64(), "v": pa.float64()}),
    )


class Double(ek.Transform[Row, Row]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(pl.col("v") * 2)


@pytest.fixture
def settings(tmp_path: Path) -> ek.Settings:
    """A deadlock fails the run (its timeout) instead of hanging the test."""
    cli = {"paths.state_dir": str(tmp_path / "state"), "run.timeout": 30}
    return ek.load_settings(tmp_path, env={}, cli=cli)


def run(pipeline: type[ek.Pipeline], settings: ek.Settings, **kwargs: object) -> ek.RunResult:
    return pipeline.run(date="2025-03-01", settings=settings, **kwargs)  # type: ignore[arg-type]


def test_a_sql_node_reads_its_input_while_the_input_still_produces(
    settings: ek.Settings,
) -> None:
    produced: list[int] = []
    sql_started_after: list[int] = []

    class Watched(MemorySource):
        def read(self, ctx: ek.Context) -> Iterator[pa.RecordBatch]:
            for batch in super().read(ctx):
                produced.append(batch.num_rows)
                yield batch

    def listen(event: ek.Event) -> None:
        if event.kind == "node_started" and event.node == "total":
            sql_started_after.append(len(produced))

    class Streamed(ek.Pipeline):
        rows = Watched(table(), schema=Row, chunk_rows=CHUNK)
        doubled = Double(rows)
        total = ek.Sql("select count(*) as n, sum(v) as s from {doubled}")
        out = MemorySink(total)

    result = run(Streamed, settings, listeners=[listen])

    assert result.state == "success", result.error
    assert Streamed.out.table().to_pylist() == [
        {"n": ROWS, "s": 2 * sum(i % 7 for i in range(ROWS))}
    ]
    assert result.nodes["total"].rows_in == ROWS
    assert result.nodes["total"].chunks_in > 0  # it read the chunks, not the staged output
    assert sql_started_after[0] < ROWS // CHUNK  # before the source was done
    # the input is staged as well: for resume and `etlkit query`
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("streamed", result.run_id, "doubled") is not None


def test_one_worker_and_one_chunk_channels_stream_into_a_query(tmp_path: Path) -> None:
    cli = {
        "paths.state_dir": str(tmp_path / "state"),
        "run.timeout": 30,
        "run.max_workers": 1,
        "run.channel_depth": 1,
    }
    settings = ek.load_settings(tmp_path, env={}, cli=cli)

    class Narrow(ek.Pipeline):
        rows = MemorySource(table(), schema=Row, chunk_rows=CHUNK)
        doubled = Double(rows)
        total = ek.Sql("select count(*) as n from {doubled}")
        first = ek.Sql("select k, v from {doubled} where k < 10")
        then = Double(first)
        out = MemorySink(total)
        out_then = MemorySink(then)

    result = run(Narrow, settings)

    assert result.state == "success", result.error
    assert Narrow.out.table().to_pylist() == [{"n": ROWS}]
    assert Narrow.out_then.table().num_rows == 10


def test_a_query_scanning_its_input_twice_reads_it_from_staging(
    settings: ek.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    class SelfJoin(ek.Pipeline):
        rows = MemorySource(table(), schema=Row, chunk_rows=CHUNK)
        pairs = ek.Sql(
            "select count(*) as n from {rows} a join {rows} b on a.k = b.k + 1 "
            "where a.v >= (select avg(v) from {rows})"
        )
        out = MemorySink(pairs)

    with caplog.at_level(logging.INFO, logger="etlkit.engine.steps.queries"):
        result = run(SelfJoin, settings)

    assert result.state == "success", result.error
    expected = pl.from_arrow(table())
    assert isinstance(expected, pl.DataFrame)
    joined = expected.join(expected.with_columns(pl.col("k") + 1), on="k")
    want = joined.filter(pl.col("v") >= expected["v"].mean()).height
    assert SelfJoin.out.table().to_pylist() == [{"n": want}]
    assert "node pairs: its query scans input rows 3 times: reading it from staging" in (
        caplog.text
    )


def test_a_query_that_stops_early_still_waits_for_its_input_to_commit(
    settings: ek.Settings,
) -> None:
    class Limited(ek.Pipeline):
        rows = MemorySource(table(), schema=Row, chunk_rows=CHUNK)
        doubled = Double(rows)
        first = ek.Sql("select k from {doubled} limit 3")
        out = MemorySink(first)

    result = run(Limited, settings)

    assert result.state == "success", result.error
    assert Limited.out.table().num_rows == 3
    assert result.nodes["doubled"].rows_out == ROWS  # not stopped by the consumer
    assert result.nodes["first"].rows_in == ROWS


def test_an_input_failing_mid_stream_fails_the_run_with_its_own_error(
    settings: ek.Settings,
) -> None:
    class Breaks(ek.Transform[Row, Row]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            if batch["k"].max() >= ROWS // 2:  # type: ignore[operator]
                raise ValueError("bad row")
            return batch

    class Failing(ek.Pipeline):
        rows = MemorySource(table(), schema=Row, chunk_rows=CHUNK)
        broken = Breaks(rows)
        total = ek.Sql("select count(*) as n from {broken}")
        out = MemorySink(total)

    result = run(Failing, settings)

    assert result.state == "failed"
    assert isinstance(result.error, ek.NodeError)
    assert result.error.node == "broken"
    assert "ValueError: bad row" in str(result.error)
    assert result.nodes["total"].state == "cancelled"
    assert not Failing.out.committed
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("failing", result.run_id, "total") is None


def test_an_input_failing_its_dataset_check_after_the_stream_keeps_the_query_from_committing(
    settings: ek.Settings,
) -> None:
    repeated = pa.concat_tables([table(), table().slice(0, 1)])  # k = 0 twice, in the last chunk

    class Duplicates(ek.Pipeline):
        rows = MemorySource(repeated, schema=Row, chunk_rows=CHUNK).expect(unique="k")
        total = ek.Sql("select count(*) as n from {rows}")
        out = MemorySink(total)

    result = run(Duplicates, settings)

    assert result.state == "failed"
    assert "rows" in str(result.error)
    assert "unique" in str(result.error)
    assert result.nodes["total"].state in ("cancelled", "pending")
    assert not Duplicates.out.committed
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("duplicates", result.run_id, "total") is None


def test_chunks_of_another_integer_width_are_cast_to_the_first_chunks_types(
    settings: ek.Settings,
) -> None:
    class Widening(ek.Source):
        def read(self, ctx: ek.Context) -> Iterator[pa.RecordBatch]:
            for start in range(0, ROWS, CHUNK):
                width = pa.int32() if start == 0 else pa.int64()
                yield pa.record_batch({"k": pa.array(range(start, start + CHUNK), width)})

    class Widened(ek.Pipeline):
        rows = Widening()
        total = ek.Sql("select count(*) as n, sum(k) as s, typeof(any_value(k)) as t from {rows}")
        out = MemorySink(total)

    result = run(Widened, settings)

    assert result.state == "success", result.error
    assert Widened.out.table().to_pylist() == [{"n": ROWS, "s": sum(range(ROWS)), "t": "INTEGER"}]
    assert result.nodes["total"].rows_in == ROWS


def test_an_empty_input_is_read_from_its_staged_schema(settings: ek.Settings) -> None:
    class Empty(ek.Pipeline):
        rows = MemorySource(table(0), schema=Row)
        total = ek.Sql("select count(*) as n, sum(v) as s from {rows}")
        out = MemorySink(total)

    result = run(Empty, settings)

    assert result.state == "success", result.error
    assert Empty.out.table().to_pylist() == [{"n": 0, "s": None}]


def test_a_resumed_query_reads_its_reused_input_from_staging(settings: ek.Settings) -> None:
    class Resumed(ek.Pipeline):
        params: ClassVar[dict[str, str]] = {"times": "1"}
        rows = MemorySource(table(), schema=Row, chunk_rows=CHUNK)
        total = ek.Sql("select count(*) * cast('{times}' as integer) as n from {rows}")
        out = MemorySink(total)

    first = run(Resumed, settings, params={"times": "one"})  # the query fails
    assert first.state == "failed"
    assert first.nodes["total"].rows_in == ROWS
    second = run(Resumed, settings, run_id=first.run_id, reuse={"rows"})

    assert second.state == "success", second.error
    assert second.nodes["rows"].state == "reused"
    assert second.nodes["total"].chunks_in == 0  # the staged output, not a replayed stream
    assert second.nodes["total"].rows_in == ROWS  # as the staged output counts them
    assert Resumed.out.table().to_pylist() == [{"n": ROWS}]
    assert Resumed.rows.reads == 1


@pytest.mark.parametrize("validate", [True, False])
def test_a_parquet_source_read_only_by_sql_is_still_referenced_not_streamed(
    tmp_path: Path, validate: bool
) -> None:
    import pyarrow.parquet as pq

    from connectors.files import ParquetSource

    settings = ek.load_settings(
        tmp_path, env={}, cli={"paths.state_dir": str(tmp_path / "state"), "run.validate": validate}
    )
    path = f"{tmp_path}/rows.parquet"
    pq.write_table(table(), path)

    class Referenced(ek.Pipeline):
        rows = ParquetSource(path, schema=Row)
        total = ek.Sql("select count(*) as n from {rows}")
        out = MemorySink(total)

    result = run(Referenced, settings)

    assert result.state == "success", result.error
    assert Referenced.out.table().to_pylist() == [{"n": ROWS}]
    manifest = Staging(settings.paths.staging_root).manifest("referenced", result.run_id, "rows")
    assert manifest is not None
    assert manifest.reference_select is not None
    assert result.nodes["total"].chunks_in == 0  # no stream: DuckDB read the staged reference


def test_a_wrong_query_over_a_streamed_input_fails_with_duckdbs_message(
    settings: ek.Settings,
) -> None:
    class Wrong(ek.Pipeline):
        rows = MemorySource(table(), schema=Row, chunk_rows=CHUNK)
        total = ek.Sql("select sum(nope) as n from {rows}")
        out = MemorySink(total)

    result = run(Wrong, settings)

    assert result.state == "failed"
    assert isinstance(result.error, ek.NodeError)
    assert result.error.node == "total"
    assert '"nope" not found' in str(result.error)
    assert not Wrong.out.committed
