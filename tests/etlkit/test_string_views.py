"""Text leaves polars as Arrow string views; every consumer sees the values and types it saw.

A transform's strings reach the staging writer, channels and sinks that read views without
the copy `large_string` costs; a sink that does not read views gets `large_string`, as before,
and the staged output, `etlkit query` and the files sinks write hold the same values and types.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import duckdb
import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import etlkit as ek
from connectors.duckdb import DuckDBTableSink
from connectors.files import ParquetSink
from etlkit.engine.database import RunDatabase
from etlkit.engine.events import NodeStats
from etlkit.engine.plan import RunOptions, build_plan
from etlkit.engine.steps.context import StepContext
from etlkit.engine.steps.stage import stage_chunks
from etlkit.model.nodes import Context
from etlkit.model.schema import from_polars, plain_strings
from etlkit.storage.querying import query
from etlkit.storage.staging import Staging
from etlkit.storage.store import new_run_id
from etlkit.testing import MemorySink, MemorySource


class Patient(pdp.DataFrameModel):
    id: int = pdp.Field(nullable=False)
    name: str = pdp.Field(nullable=True)


class Named(pdp.DataFrameModel):
    id: int = pdp.Field(nullable=False)
    name: str = pdp.Field(nullable=True)
    shout: str = pdp.Field(nullable=True, str_length={"min_value": 1})


class Shout(ek.Transform[Patient, Named]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(shout=pl.col("name").str.to_uppercase() + "!")


PATIENTS = pa.table(
    {
        "id": list(range(1, 8)),
        "name": ["ann", "bob", None, "a name longer than twelve bytes", "é", "", "eve"],
    }
)
EXPECTED = [
    (1, "ann", "ANN!"),
    (2, "bob", "BOB!"),
    (3, None, None),
    (4, "a name longer than twelve bytes", "A NAME LONGER THAN TWELVE BYTES!"),
    (5, "é", "É!"),
    (6, "", "!"),
    (7, "eve", "EVE!"),
]


class Shouting(ek.Pipeline):
    params: ClassVar[Mapping[str, str]] = {"out": "out"}
    patients = MemorySource(PATIENTS, schema=Patient, chunk_rows=3)
    shouted: ek.Node = Shout(patients)
    counted = ek.Sql("select count(shout) as n, max(length(shout)) as longest from {shouted}")
    file = ParquetSink("{out}/shouted.parquet", shouted)
    table = DuckDBTableSink("{out}/shouted.duckdb", "shouted", shouted)
    memory = MemorySink(shouted)
    counts = MemorySink(counted)


def rows(table: pa.Table) -> list[tuple[object, ...]]:
    return sorted(zip(*table.select(["id", "name", "shout"]).to_pydict().values(), strict=True))


def test_from_polars_exports_plain_text_as_views_and_other_text_as_before() -> None:
    plain = pl.DataFrame({"id": [1], "name": ["ann"]})
    assert from_polars(plain)[0].schema.types == [pa.int64(), pa.string_view()]
    nested = pl.DataFrame({"name": ["ann"], "tags": [["a", "b"]]})
    assert from_polars(nested)[0].schema.types == [pa.large_string(), nested.to_arrow()[1].type]
    coded = pl.DataFrame({"name": ["ann"], "code": pl.Series(["a"], dtype=pl.Categorical)})
    assert from_polars(coded)[0].schema == coded.to_arrow().schema
    raw = pl.DataFrame({"name": ["ann"], "blob": [b"x"]})
    assert from_polars(raw)[0].schema == raw.to_arrow().schema
    batch = from_polars(plain)[0]
    assert plain_strings(batch).schema == plain.to_arrow().schema
    assert plain_strings(batch).to_pylist() == batch.to_pylist()


def test_a_transforms_strings_are_staged_and_sent_as_views(tmp_path: Path) -> None:
    plan = build_plan(Shouting.graph(), RunOptions(chunk_rows=2))
    ctx = Context(pipeline=plan.pipeline, run_id=new_run_id(), logical_date=datetime.now(UTC))
    staging = Staging(str(tmp_path / "staging"))
    step = StepContext(
        plan=plan,
        name="shouted",
        node=plan.graph.nodes["shouted"],
        ctx=ctx.for_node("shouted"),
        stats=NodeStats("shouted", "transform"),
        staging=staging,
        database=RunDatabase(staging, plan.pipeline, ctx.run_id, plan.options, lambda: False),
        cancelled=lambda: False,
        progress=lambda: None,
        output_schemas={},
    )
    sent: list[pa.RecordBatch] = []
    frame = pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", "c"], "shout": ["A", "B", "C"]})
    output = stage_chunks(step, [frame], writer=None, guard=None, sends=[sent.append])
    assert [b.num_rows for b in sent] == [2, 1]
    assert {b.schema.field("shout").type for b in sent} == {pa.string_view()}
    assert output.first_schema is not None
    assert output.first_schema.field("name").type == pa.string_view()


def test_every_consumer_sees_the_values_and_types_it_saw_before(
    settings: ek.Settings, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = Shouting.run(settings=settings, params={"out": str(out)})
    assert result.state == "success", result.error
    # a sink writing files: its file's own types, not views
    written = pq.read_table(out / "shouted.parquet")
    assert written.schema.field("shout").type == pa.string()
    assert rows(written) == EXPECTED
    # a sink that does not read views gets large_string, as polars exported text before
    received = Shouting.memory.table()
    assert received.schema.field("shout").type == pa.large_string()
    assert rows(received) == EXPECTED
    # DuckDB: a table loaded from the chunks, and SQL scanning them as they stream
    with duckdb.connect(str(out / "shouted.duckdb"), read_only=True) as con:
        types = con.sql("select typeof(name), typeof(shout) from shouted limit 1").fetchall()
        loaded = con.sql("select id, name, shout from shouted order by id").fetchall()
    assert types == [("VARCHAR", "VARCHAR")]
    assert loaded == EXPECTED
    assert Shouting.counts.table().to_pylist() == [{"n": 6, "longest": 32}]
    # the staged output: Parquet strings, read as text by DuckDB (`etlkit query`) and polars
    staging = Staging(settings.paths.staging_root)
    files = staging.files("shouting", result.run_id, "shouted")
    parquet = pq.ParquetFile(files[0].removeprefix("file://"))
    logical = {parquet.schema.column(i).logical_type.type for i in (1, 2)}
    assert logical == {"STRING"}
    found = query("select * from shouted", staging, "shouting", result.run_id)
    assert found.schema["shout"] == pl.String
    assert sorted(found.select("id", "name", "shout").rows()) == EXPECTED
    assert pl.read_parquet(files).schema["shout"] == pl.String


class Whisper(ek.Transform[Named, Named]):
    fail = True

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        if Whisper.fail:
            raise ConnectionError("warehouse unreachable")
        return batch.with_columns(pl.col("shout").str.to_lowercase())


class Resumable(ek.Pipeline):
    patients = MemorySource(PATIENTS, schema=Patient, chunk_rows=3)
    shouted: ek.Node = Shout(patients)
    whispered: ek.Node = Whisper(shouted)
    loud = MemorySink(shouted)
    quiet = MemorySink(whispered)


def test_a_resumed_run_replays_staged_views_as_it_streamed_them(settings: ek.Settings) -> None:
    """The staged copy holds views: replayed to a sink that does not take them, they are
    `large_string` again; a transform reads them as text; the output is the first run's."""
    Whisper.fail = True
    first = Resumable.run(settings=settings)
    assert first.state == "failed"
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("resumable", first.run_id, "shouted") is not None
    Whisper.fail = False
    second = Resumable.run(settings=settings, run_id=first.run_id, reuse={"patients", "shouted"})
    assert second.state == "success", second.error
    assert second.nodes["shouted"].state == "reused"
    loud = Resumable.loud.table()
    assert loud.schema.field("shout").type == pa.large_string()
    assert rows(loud) == EXPECTED
    quiet = Resumable.quiet.table()
    assert quiet.schema.field("shout").type == pa.large_string()
    whispered = [(i, n, None if s is None else s.lower()) for i, n, s in EXPECTED]
    assert rows(quiet) == whispered
