"""The graph of a pipeline: input resolution, every check before data moves, order, rendering."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.errors import PipelineDefinitionError
from etlkit.model.graph import build_graph, render_text
from etlkit.testing import MemorySink, MemorySource

TABLE = pa.table({"invoice_id": [1, 2], "amount": [10.0, 20.0]})


class Bill(pdp.DataFrameModel):
    invoice_id: int
    amount: float


class TaxedBill(Bill):
    tax: float


class Patient(pdp.DataFrameModel):
    patient_id: int
    name: str


class TextBill(pdp.DataFrameModel):
    invoice_id: str
    amount: float


class Copy(ek.Transform):  # type: ignore[type-arg]  # untyped on purpose: no models
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


class AddTax(ek.Transform[Bill, TaxedBill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(tax=pl.col("amount") * 0.2)


class KeepPatients(ek.Transform[Patient, Patient]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


class First(ek.Lazy):  # type: ignore[type-arg]  # untyped on purpose
    def query(self, ctx: ek.Context, *frames: pl.LazyFrame) -> pl.LazyFrame:
        return frames[0]


def problems_of(pipeline: type[ek.Pipeline]) -> list[str]:
    with pytest.raises(PipelineDefinitionError) as info:
        pipeline.graph()
    assert info.value.pipeline == pipeline.name
    return info.value.problems


# -- cycles ----------------------------------------------------------------------------------


def test_cycle_error_lists_the_cycle() -> None:
    class Loop(ek.Pipeline):
        a = Copy("b")
        b = Copy("a")

    with pytest.raises(
        PipelineDefinitionError, match=r"Pipeline 'loop' is invalid: cycle: a -> b -> a"
    ):
        Loop.graph()


def test_cycle_through_sql_is_found() -> None:
    class SqlLoop(ek.Pipeline):
        bills = MemorySource(TABLE)
        merged = Copy(bills, "totals")
        totals = ek.Sql("select * from {merged}")

    assert problems_of(SqlLoop) == ["cycle: merged -> totals -> merged"]


def test_node_reading_itself_is_a_cycle() -> None:
    class SelfLoop(ek.Pipeline):
        again = Copy("again")

    assert problems_of(SelfLoop) == ["cycle: again -> again"]


# -- unknown and foreign inputs --------------------------------------------------------------


def test_unknown_input_name_suggests_the_closest_node() -> None:
    class Typo(ek.Pipeline):
        billing = MemorySource(TABLE)
        monthly = Copy("biling")

    with pytest.raises(
        PipelineDefinitionError,
        match=r"node 'monthly' has unknown input 'biling'\. Did you mean 'billing'\?",
    ):
        Typo.graph()


def test_inline_node_is_not_a_node_of_the_pipeline() -> None:
    class Inline(ek.Pipeline):
        monthly = Copy(MemorySource(TABLE))

    with pytest.raises(
        PipelineDefinitionError,
        match=r"node 'monthly' reads from <MemorySource \(unnamed\)>, "
        r"which is not a node of this pipeline",
    ):
        Inline.graph()


def test_reused_attribute_name_leaves_the_first_node_out_of_the_pipeline() -> None:
    class Reused(ek.Pipeline):
        billing = MemorySource(TABLE)
        monthly = Copy(billing)
        billing = MemorySource(TABLE)  # overwrites the node `monthly` reads from

    with pytest.raises(PipelineDefinitionError, match=r"was its attribute name reused\?"):
        Reused.graph()


def test_same_node_object_under_two_names_is_refused() -> None:
    class Twice(ek.Pipeline):
        billing = MemorySource(TABLE)
        again = billing
        out = MemorySink(billing)

    with pytest.raises(
        PipelineDefinitionError,
        match=r"the same node object is declared as both 'billing' and 'again'",
    ):
        Twice.graph()


def test_node_object_borrowed_from_another_pipeline_under_another_name_is_refused() -> None:
    class Lender(ek.Pipeline):
        billing = MemorySource(TABLE)
        out = MemorySink(billing)

    class Borrower(ek.Pipeline):
        bills = Lender.billing
        out = MemorySink(bills)

    with pytest.raises(
        PipelineDefinitionError, match=r"node 'bills' is the node already named 'billing'"
    ):
        Borrower.graph()


def test_reserved_template_name_cannot_name_a_node() -> None:
    class Reserved(ek.Pipeline):
        ds = MemorySource(TABLE)

    with pytest.raises(PipelineDefinitionError, match=r"node name 'ds' is reserved for templates"):
        Reserved.graph()


# -- roles -----------------------------------------------------------------------------------


def test_transform_without_inputs_is_refused() -> None:
    class Orphan(ek.Pipeline):
        monthly = Copy()

    with pytest.raises(PipelineDefinitionError, match=r"transform node 'monthly' has no inputs"):
        Orphan.graph()


def test_lazy_without_inputs_is_refused() -> None:
    class Orphan(ek.Pipeline):
        joined = First()

    with pytest.raises(PipelineDefinitionError, match=r"lazy node 'joined' has no inputs"):
        Orphan.graph()


def test_reading_from_a_sink_is_refused() -> None:
    class AfterSink(ek.Pipeline):
        billing = MemorySource(TABLE)
        out = MemorySink(billing)
        again = Copy(out)

    with pytest.raises(
        PipelineDefinitionError,
        match=r"node 'again' reads from sink 'out', which has no output; to run after it",
    ):
        AfterSink.graph()


# -- schemas on edges ------------------------------------------------------------------------


def test_missing_columns_on_an_edge_name_pipeline_nodes_and_columns() -> None:
    class Mismatch(ek.Pipeline):
        billing = MemorySource(TABLE, schema=Bill)
        patients = KeepPatients(billing)

    with pytest.raises(
        PipelineDefinitionError,
        match=re.escape(
            "Pipeline 'mismatch' is invalid: edge 'billing' -> 'patients' (Bill -> Patient): "
            "missing column(s) 'patient_id' and 'name'; Bill has 'amount' and 'invoice_id'"
        ),
    ):
        Mismatch.graph()


def test_wrong_dtype_on_an_edge_names_the_column_and_types() -> None:
    class WrongType(ek.Pipeline):
        billing = MemorySource(TABLE, schema=TextBill)
        taxed = AddTax(billing)

    with pytest.raises(
        PipelineDefinitionError,
        match=re.escape(
            "edge 'billing' -> 'taxed' (TextBill -> Bill): "
            "column 'invoice_id' is String in TextBill but Bill expects Int64"
        ),
    ):
        WrongType.graph()


def test_sink_schema_is_checked_against_its_input() -> None:
    class SinkMismatch(ek.Pipeline):
        billing = MemorySource(TABLE, schema=Bill)
        out = MemorySink(billing, schema=TaxedBill)

    assert problems_of(SinkMismatch) == [
        "edge 'billing' -> 'out' (Bill -> TaxedBill): missing column(s) 'tax'; "
        "Bill has 'amount' and 'invoice_id'"
    ]


def test_compatible_edges_with_extra_columns_pass() -> None:
    class Compatible(ek.Pipeline):
        billing = MemorySource(TABLE, schema=Bill)
        taxed = AddTax(billing)
        out = MemorySink(taxed, schema=Bill)  # TaxedBill has every Bill column, and `tax`

    assert Compatible.graph().order == ("billing", "taxed", "out")


def test_untyped_nodes_skip_the_edge_check() -> None:
    class Untyped(ek.Pipeline):
        billing = MemorySource(TABLE)
        patients = KeepPatients(billing)
        out = MemorySink(patients)

    assert Untyped.graph().inputs["patients"] == ("billing",)


# -- every problem at once -------------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    class Broken(ek.Pipeline):
        billing = MemorySource(TABLE, schema=Bill)
        twin = billing
        patients = KeepPatients(billing)
        orphan = Copy()
        typo = Copy("bilings")
        out = MemorySink(billing)
        after_sink = Copy(out)
        a = Copy("b")
        b = Copy("a")
        totals = ek.Sql("select * from {montly}")

    with pytest.raises(PipelineDefinitionError) as info:
        Broken.graph()
    problems = info.value.problems
    expected = [
        "the same node object is declared as both 'billing' and 'twin'",
        "node 'typo' has unknown input 'bilings'",
        "transform node 'orphan' has no inputs",
        "node 'after_sink' reads from sink 'out'",
        "SQL of node 'totals' refers to {montly}",
        "cycle: a -> b -> a",
        "edge 'billing' -> 'patients' (Bill -> Patient): missing column(s)",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert len(problems) == len(expected)
    assert str(info.value).startswith(f"Pipeline 'broken' is invalid ({len(expected)} problems):")


def test_pipeline_without_nodes_is_an_error() -> None:
    class Empty(ek.Pipeline):
        schedule = "@daily"

    with pytest.raises(
        PipelineDefinitionError, match=r"Pipeline 'empty' is invalid: pipeline has no nodes"
    ):
        Empty.graph()


def test_build_graph_refuses_an_empty_mapping() -> None:
    with pytest.raises(PipelineDefinitionError, match="pipeline has no nodes"):
        build_graph("nothing", {})


# -- SQL template names ----------------------------------------------------------------------


def test_unknown_sql_name_suggests_the_closest_node() -> None:
    class SqlTypo(ek.Pipeline):
        billing = MemorySource(TABLE)
        monthly = Copy(billing)
        totals = ek.Sql("select * from {monthy}")

    with pytest.raises(
        PipelineDefinitionError,
        match=r"SQL of node 'totals' refers to \{monthy\}, which is neither a node, a built-in "
        r"template name nor a declared param\. Did you mean 'monthly'\?",
    ):
        SqlTypo.graph()


def test_unknown_sql_name_suggests_the_closest_param() -> None:
    class ParamTypo(ek.Pipeline):
        params: ClassVar[Mapping[str, str]] = {"region": "eu"}
        billing = MemorySource(TABLE)
        totals = ek.Sql("select * from {billing} where region = '{regoin}'")

    with pytest.raises(PipelineDefinitionError, match=r"\{regoin\}.*Did you mean 'region'\?"):
        ParamTypo.graph()


def test_sql_may_use_declared_params_and_built_in_names() -> None:
    class Templated(ek.Pipeline):
        params: ClassVar[Mapping[str, str]] = {"region": "eu"}
        billing = MemorySource(TABLE)
        totals = ek.Sql(
            "select '{ds}' as day, '{run_id}' as run, * from {billing} "
            "where region = '{region}' and '{ds_nodash}' <> '{pipeline}'"
        )

    graph = Templated.graph()
    assert graph.inputs["totals"] == ("billing",)


def test_sql_reads_nodes_declared_after_it() -> None:
    class Forward(ek.Pipeline):
        totals = ek.Sql("select * from {billing}")
        billing = MemorySource(TABLE)

    graph = Forward.graph()
    assert graph.order == ("billing", "totals")
    assert graph.consumers["billing"] == ("totals",)


# -- order and traversal ---------------------------------------------------------------------


def test_declaration_order_is_kept_when_it_is_already_topological() -> None:
    class TwoChains(ek.Pipeline):
        billing = MemorySource(TABLE)
        monthly = Copy(billing)
        insurance = MemorySource(TABLE)
        claims = Copy(insurance)

    graph = TwoChains.graph()
    assert graph.order == ("billing", "monthly", "insurance", "claims")
    assert list(graph.nodes) == list(graph.order)


def test_topological_order_ties_follow_declaration_order() -> None:
    class Ties(ek.Pipeline):
        joined = ek.Sql("select * from {late} union all select * from {early}")
        early = MemorySource(TABLE)
        late = MemorySource(TABLE)
        out = MemorySink("joined")

    assert Ties.graph().order == ("early", "late", "joined", "out")


def test_repeated_input_is_one_edge() -> None:
    class Repeated(ek.Pipeline):
        billing = MemorySource(TABLE)
        doubled = Copy(billing, "billing")

    graph = Repeated.graph()
    assert graph.inputs["doubled"] == ("billing",)
    assert graph.consumers["billing"] == ("doubled",)


class Diamond(ek.Pipeline):
    billing = MemorySource(TABLE, stage=False)
    insurance = MemorySource(TABLE, stage=False)
    left = Copy(billing, stage=False)
    right = Copy(billing)
    joined = ek.Sql("select * from {left} union all select * from {right}")
    covered = First(insurance)
    out = MemorySink(joined)


def test_upstream_of_collects_every_ancestor_but_the_nodes_themselves() -> None:
    graph = Diamond.graph()
    assert graph.upstream_of({"joined"}) == {"billing", "left", "right"}
    assert graph.upstream_of({"out", "covered"}) == {
        "billing",
        "left",
        "right",
        "joined",
        "insurance",
    }
    assert graph.upstream_of({"billing"}) == set()


def test_downstream_of_collects_every_descendant_but_the_nodes_themselves() -> None:
    graph = Diamond.graph()
    assert graph.downstream_of({"billing"}) == {"left", "right", "joined", "out"}
    assert graph.downstream_of({"left", "insurance"}) == {"joined", "out", "covered"}
    assert graph.downstream_of({"out"}) == set()


@pytest.mark.parametrize(
    ("name", "staged"),
    [
        ("billing", False),  # stage=False, read by streaming transforms only
        ("left", True),  # stage=False, but read by a Sql node
        ("insurance", True),  # stage=False, but read by a Lazy node
        ("right", True),  # staged by default
        ("joined", True),
        ("covered", True),
        ("out", False),  # sinks have no output
    ],
)
def test_needs_staging_when_asked_or_read_by_a_blocking_node(name: str, staged: bool) -> None:
    assert Diamond.graph().needs_staging(name) is staged


def test_graph_is_built_once_per_class() -> None:
    assert Diamond.graph() is Diamond.graph()


# -- rendering -------------------------------------------------------------------------------


def test_render_text_shows_every_node_with_kind_inputs_and_consumers() -> None:
    class Rendered(ek.Pipeline):
        billing = MemorySource(TABLE, schema=Bill)
        taxed = AddTax(billing)
        totals = ek.Sql("select sum(tax) as tax from {taxed}")
        out = MemorySink(totals, schema=None)

    text = render_text(Rendered.graph())
    header, *lines = text.splitlines()
    assert header == "rendered (4 nodes)"
    assert len(lines) == 4
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows["billing"][:3] == ["billing", "source", "MemorySource"]
    assert rows["taxed"][:3] == ["taxed", "transform", "AddTax"]
    assert rows["totals"][:3] == ["totals", "sql", "Sql"]
    assert rows["out"][:3] == ["out", "sink", "MemorySink"]
    assert rows["billing"][3:] == ["Bill", "<-", "(none)", "->", "taxed"]
    assert rows["taxed"][3:] == ["TaxedBill", "<-", "billing", "->", "totals"]
    assert rows["totals"][3:] == ["untyped", "<-", "taxed", "->", "out"]
    assert rows["out"][3:] == ["untyped", "<-", "totals", "->", "(none)"]


def test_render_text_lists_every_input_and_consumer() -> None:
    text = render_text(Diamond.graph())
    line = next(line for line in text.splitlines() if line.strip().startswith("joined"))
    assert "<- left, right" in line
    assert line.rstrip().endswith("-> out")
    line = next(line for line in text.splitlines() if line.strip().startswith("billing"))
    assert "-> left, right" in line
