"""The plan of a run: what runs, what is reused or skipped, which edges stream, where it stages."""

from __future__ import annotations

import pandera.polars as pdp
import polars as pl
import pyarrow as pa

import etlkit as ek
from connectors.files import ParquetSink
from etlkit.engine.plan import RunOptions, build_plan
from etlkit.testing import MemorySink, MemorySource


class Bill(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(nullable=False)
    amount: float


class Rate(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(nullable=False, unique=True)
    rate: float


class Double(ek.Transform[Bill, Bill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(pl.col("amount") * 2)


BILLS = pa.table({"invoice_id": [1, 2], "amount": [1.0, 2.0]})
RATES = pa.table({"invoice_id": [1, 2], "rate": [0.1, 0.2]})


class Billing(ek.Pipeline):
    bills = MemorySource(BILLS, schema=Bill, stage=False)
    rates = MemorySource(RATES, schema=Rate, stage=False)
    doubled = Double(bills, stage=False)
    count = ek.Sql("select count(*) as n from {doubled}", stage=False)
    joined = ek.Sql("select * from {doubled} d join {rates} r using (invoice_id)")
    out = MemorySink(doubled)
    report = MemorySink(count)


def test_a_fresh_run_plans_streaming_edges_staging_and_references() -> None:
    plan = build_plan(Billing.graph(), RunOptions())

    assert plan.runs == Billing.graph().order
    assert plan.reused == plan.skipped == frozenset()
    # a transform, its sink and a SQL node over one input take chunks as they come
    assert plan.channels == {"doubled", "count", "out", "report"}
    assert plan.streamed_sql == {"count"}
    assert plan.streams("bills", "doubled")
    assert plan.streams("doubled", "count")
    assert not plan.streams("doubled", "joined")  # two inputs: read from committed staging
    # read back by `joined`; a unique key is checked over staging; asked for (the default)
    assert plan.staged == {"doubled", "rates", "joined"}
    # nothing streams from `rates`: its files may be staged as they are, validated in one pass
    assert plan.refers_in_place == {"rates"}
    assert plan.references == {"bills", "rates"}
    assert plan.unique_keys["rates"] == (("invoice_id",),)
    assert plan.takes_out_repeats == frozenset()


def test_a_retry_reads_reused_outputs_from_staging_and_skips_done_sinks() -> None:
    options = RunOptions(reuse=frozenset({"bills", "doubled"}), skip=frozenset({"out"}))

    plan = build_plan(Billing.graph(), options)

    assert plan.runs == ("rates", "count", "joined", "report")
    assert plan.reused == {"bills", "doubled"}
    assert plan.skipped == {"out"}
    # a reused output is replayed from staging: a SQL node over it reads the staged files
    assert plan.channels == {"report"}
    assert plan.streamed_sql == frozenset()
    assert plan.references == {"rates"}


def test_drop_with_a_unique_key_makes_consumers_read_the_committed_output() -> None:
    class Dropping(ek.Pipeline):
        rates = MemorySource(RATES, schema=Rate)
        out = MemorySink(rates)

    plan = build_plan(Dropping.graph(), RunOptions(on_invalid="drop"))

    assert plan.takes_out_repeats == {"rates"}
    assert plan.channels == frozenset()  # rows may leave `rates` after its last chunk
    assert plan.staged == {"rates"}
    assert plan.references == frozenset()  # a file cannot stand for what the policy took out


def test_pools_and_timeouts_are_planned_and_the_plan_describes_itself() -> None:
    class Pooled(ek.Pipeline):
        bills = MemorySource(BILLS, schema=Bill, stage=False)
        out = MemorySink(bills).options(pool="db", timeout=5)

    plan = build_plan(Pooled.graph(), RunOptions(pools={"db": 1}))

    assert plan.pools == {"out": "db"}
    assert plan.timeouts == {"out": 5}
    assert plan.channels == frozenset()  # a pooled node reads its inputs' staging
    assert plan.staged == {"bills"}
    assert plan.describe().splitlines() == [
        "plan of pooled",
        "  bills: source, staged, reference in place",
        "  out: sink, pool db, timeout 5s, bills from staging",
    ]


class Invoice(pdp.DataFrameModel):
    """Bill's first column alone."""

    invoice_id: int = pdp.Field(nullable=False)


class PositiveBill(pdp.DataFrameModel):
    """Bill's columns, checked otherwise: a sink with it checks each chunk on arrival."""

    invoice_id: int = pdp.Field(gt=0)
    amount: float


def _adopting(**nodes: ek.Node) -> ek.Pipeline:
    return type("Adopting", (ek.Pipeline,), nodes)  # type: ignore[return-value]


def test_a_parquet_sink_reads_its_inputs_committed_staging_to_adopt_it() -> None:
    bills = MemorySource(BILLS, schema=Bill)
    doubled = Double(bills)
    graph = _adopting(bills=bills, doubled=doubled, out=ParquetSink("o.parquet", doubled)).graph()

    plan = build_plan(graph, RunOptions())

    assert plan.adopts == {"out"}
    assert plan.channels == {"doubled"}  # the sink reads the committed staging, not a channel
    assert plan.stage_as["doubled"].compression == "zstd"
    assert plan.stage_as["doubled"].file_type(pa.large_string()) == pa.string()
    assert "out: sink, adopts its input's staged file, doubled from staging" in plan.describe()
    assert "doubled: transform, staged, staged for its sink (zstd, one part)" in plan.describe()
    off = build_plan(graph, RunOptions(adopt_staged=False))
    assert off.adopts == frozenset()
    assert off.stage_as == {}
    assert off.channels == {"doubled", "out"}


def test_a_sink_adopts_only_an_input_staged_anyway_read_by_it_alone_and_checked() -> None:
    bills = MemorySource(BILLS, schema=Bill)
    doubled = Double(bills)
    unstaged = Double(bills, stage=False)
    cases = {
        "a source's output may be a reference": {"out": ParquetSink("o.parquet", bills)},
        "another consumer": {
            "doubled": doubled,
            "out": ParquetSink("o.parquet", doubled),
            "copy": MemorySink(doubled),
        },
        "not staged otherwise": {"unstaged": unstaged, "out": ParquetSink("o.parquet", unstaged)},
        "its model is checked on arrival": {
            "doubled": doubled,
            "out": ParquetSink("o.parquet", doubled, schema=PositiveBill),
        },
        "a sink that does not adopt": {"doubled": doubled, "out": MemorySink(doubled)},
    }
    for case, nodes in cases.items():
        plan = build_plan(_adopting(bills=bills, **nodes).graph(), RunOptions())
        assert plan.adopts == frozenset(), case
        assert plan.stage_as == {}, case
        assert "out" in plan.channels, case
    # unvalidated, nothing is checked on arrival
    checked = _adopting(bills=bills, **cases["its model is checked on arrival"]).graph()
    assert build_plan(checked, RunOptions(validate=False)).adopts == {"out"}
    # but a sink writing other columns than its input's model names would not find them
    other = _adopting(
        bills=bills, doubled=doubled, out=ParquetSink("o.parquet", doubled, schema=Invoice)
    )
    assert build_plan(other.graph(), RunOptions(validate=False)).adopts == frozenset()
