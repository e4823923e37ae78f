"""Steps called directly, without a thread or a channel; the local executor over a plan."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.engine.database import RunDatabase
from etlkit.engine.events import Event, NodeStats
from etlkit.engine.local import LocalExecutor
from etlkit.engine.plan import Plan, RunOptions, build_plan
from etlkit.engine.steps.context import StepContext
from etlkit.engine.steps.inputs import arrivals
from etlkit.engine.steps.sources import read_source
from etlkit.engine.steps.stage import stage_chunks
from etlkit.engine.steps.transforms import transform
from etlkit.model.chunks import Chunk
from etlkit.model.nodes import Context
from etlkit.model.schema import to_polars
from etlkit.storage.staging import Staging
from etlkit.storage.store import new_run_id
from etlkit.testing import MemorySink, MemorySource


class Bill(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(nullable=False)
    amount: float


class Double(ek.Transform[Bill, Bill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(pl.col("amount") * 2)


BILLS = pa.table({"invoice_id": [1, 2, 3, 4, 5], "amount": [1.0, 2.0, 3.0, 4.0, 5.0]})


class Doubling(ek.Pipeline):
    bills = MemorySource(BILLS, schema=Bill, chunk_rows=2)
    doubled = Double(bills)
    out = MemorySink(doubled)


def step_for(plan: Plan, name: str, tmp_path: Path, progress: list[str]) -> StepContext:
    ctx = Context(pipeline=plan.pipeline, run_id=new_run_id(), logical_date=datetime.now(UTC))
    staging = Staging(str(tmp_path / "staging"))
    return StepContext(
        plan=plan,
        name=name,
        node=plan.graph.nodes[name],
        ctx=ctx.for_node(name),
        stats=NodeStats(name, plan.graph.nodes[name].kind),
        staging=staging,
        database=RunDatabase(staging, plan.pipeline, ctx.run_id, plan.options, lambda: False),
        cancelled=lambda: False,
        progress=lambda: progress.append(name),
        output_schemas={},
    )


def test_a_source_step_and_a_transform_step_run_on_the_calling_thread(tmp_path: Path) -> None:
    plan = build_plan(Doubling.graph(), RunOptions())
    progress: list[str] = []
    source = step_for(plan, "bills", tmp_path, progress)
    step = step_for(plan, "doubled", tmp_path, progress)
    before = threading.active_count()

    batches = list(read_source(Doubling.bills, source.ctx, source.stats))
    frames = list(transform(step, Doubling.doubled, arrivals(step, iter(batches))))

    assert threading.active_count() == before
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert source.stats.rows_in == 5
    assert pl.concat(frames)["amount"].to_list() == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert (step.stats.chunks_in, step.stats.rows_in) == (3, 5)


def test_the_stage_step_guards_slices_and_sends_every_chunk_without_committing(
    tmp_path: Path,
) -> None:
    plan = build_plan(Doubling.graph(), RunOptions(chunk_rows=2))
    progress: list[str] = []
    step = step_for(plan, "doubled", tmp_path, progress)
    sent: list[pa.RecordBatch] = []
    frame = pl.DataFrame({"invoice_id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]})

    output = stage_chunks(step, [frame], writer=None, guard=None, sends=[sent.append])

    assert [b.num_rows for b in sent] == [2, 1]
    assert (step.stats.rows_out, step.stats.chunks_out) == (3, 2)
    assert progress == ["doubled", "doubled"]
    assert output.first_schema is not None
    assert output.first_schema.names == ["invoice_id", "amount"]
    assert step.staging.committed(plan.pipeline, step.run_id) == []  # nothing committed


def test_the_local_executor_runs_a_plan(tmp_path: Path) -> None:
    plan = build_plan(Doubling.graph(), RunOptions())
    ctx = Context(pipeline=plan.pipeline, run_id=new_run_id(), logical_date=datetime.now(UTC))
    kinds: list[str] = []

    def listen(event: Event) -> None:
        kinds.append(event.kind)

    result = LocalExecutor().run(
        plan, ctx, staging=Staging(str(tmp_path / "staging")), listeners=[listen]
    )

    assert result.state == "success", result.error
    assert Doubling.out.table().column("amount").to_pylist() == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert {n: s.state for n, s in result.nodes.items()} == {
        "bills": "done",
        "doubled": "done",
        "out": "done",
    }
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"


def _split(batch: pa.RecordBatch, rows: int, max_bytes: int) -> list[pa.RecordBatch]:
    return [b for piece in Chunk(batch=batch).split(rows, max_bytes) for b in piece.batches()]


def test_chunks_are_split_by_rows_and_by_bytes() -> None:
    batch = pa.record_batch({"x": list(range(100))})
    assert [b.num_rows for b in _split(batch, 30, 1 << 30)] == [30, 30, 30, 10]
    by_bytes = list(_split(batch, 1000, batch.nbytes // 4))
    assert len(by_bytes) >= 4
    assert sum(b.num_rows for b in by_bytes) == 100
    assert list(_split(pa.record_batch({"x": pa.array([], pa.int64())}), 10, 10)) == []


def test_a_chunk_in_both_forms_is_split_alike() -> None:
    frame = pl.DataFrame({"x": list(range(100)), "s": [str(i) for i in range(100)]})
    batch = frame.to_arrow().to_batches()[0]
    pieces = list(Chunk(batch=batch, frame=frame).split(30, 1 << 30))
    assert [(p.batch.num_rows if p.batch else 0) for p in pieces] == [30, 30, 30, 10]
    assert all(p.frame is not None for p in pieces)
    assert [p.polars().rows() for p in pieces] == [pl.from_arrow(p.batch).rows() for p in pieces]
    by_bytes = list(Chunk(frame=frame).split(1000, frame.estimated_size() // 4))
    assert len(by_bytes) >= 4
    assert pl.concat([p.polars() for p in by_bytes]).equals(frame)


def test_a_frame_goes_to_polars_consumers_as_it_is(tmp_path: Path) -> None:
    plan = build_plan(Doubling.graph(), RunOptions(chunk_rows=10))
    step = step_for(plan, "doubled", tmp_path, [])
    frame = pl.DataFrame({"invoice_id": [1, 2], "amount": [2.0, 4.0]})
    frames: list[pl.DataFrame] = []
    batches: list[pa.RecordBatch] = []
    stage_chunks(step, [frame], None, None, frame_sends=[frames.append])
    assert len(frames) == 1
    assert frames[0] is frame  # not exported to Arrow and back
    stage_chunks(step, [frame], None, None, [batches.append], [frames.append])
    assert [b.to_pylist() for b in batches] == [frame.to_dicts()]
    assert frames[1] is frame


def test_a_transform_takes_the_frame_its_sources_guard_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's chunks are checked in polars (a memory source proves nothing from
    statistics): the transform gets those frames, not record batches to convert again."""
    import etlkit.engine.steps.transforms as transforms

    converted: list[int] = []

    def counted(batch: pa.RecordBatch) -> pl.DataFrame:
        converted.append(batch.num_rows)
        return to_polars(batch)

    monkeypatch.setattr(transforms, "to_polars", counted)
    settings = ek.load_settings(tmp_path, env={}, cli={"paths.state_dir": str(tmp_path / "s")})
    result = Doubling.run(settings=settings)
    assert result.state == "success", result.error
    assert result.nodes["doubled"].chunks_in == 3
    assert converted == []
    assert Doubling.out.table().to_pydict() == {
        "invoice_id": [1, 2, 3, 4, 5],
        "amount": [2.0, 4.0, 6.0, 8.0, 10.0],
    }
