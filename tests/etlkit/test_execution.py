"""One run of a pipeline: streaming, fan-out and fan-in, blocking nodes, failure, resume."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.engine.execution import RunOptions, execute, new_run_id
from etlkit.errors import StagingError
from etlkit.model.nodes import Context
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink, MemorySource


class Bill(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(nullable=False)
    patient_id: int
    amount: float = pdp.Field(ge=0)


class TaxedBill(Bill):
    taxed: float


class AddTax(ek.Transform[Bill, TaxedBill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(taxed=pl.col("amount") * 1.1)


class FailOn(ek.Transform[Bill, Bill]):
    """Raises on the n-th chunk it receives."""

    def __init__(self, *inputs: ek.Source, chunk: int) -> None:
        super().__init__(*inputs)
        self.chunk = chunk
        self.seen = 0

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        self.seen += 1
        if self.seen == self.chunk:
            raise ValueError("amount overflow")
        return batch


def run(pipeline: type[ek.Pipeline], settings: ek.Settings, **kwargs: object) -> ek.RunResult:
    return pipeline.run(date="2025-03-01", settings=settings, **kwargs)  # type: ignore[arg-type]


def etlkit_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("etlkit-")]


def test_linear_pipeline_streams_every_row_in_chunks(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class Linear(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill, chunk_rows=3)
        taxed = AddTax(bills)
        out = MemorySink(taxed, schema=TaxedBill)

    result = run(Linear, settings)

    assert result.state == "success", result.error
    table = Linear.out.table()
    assert table.num_rows == 10
    assert table.column("taxed").to_pylist()[0] == pytest.approx(11.0)
    assert result.nodes["bills"].chunks_out == 4
    assert result.nodes["taxed"].rows_in == 10
    assert result.nodes["out"].write is not None
    assert result.nodes["out"].write.rows == 10


def test_fan_out_feeds_every_consumer_all_rows(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class FanOut(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill, chunk_rows=4)
        left = MemorySink(bills)
        right = MemorySink(bills)

    assert run(FanOut, settings).state == "success"
    assert FanOut.left.table().num_rows == FanOut.right.table().num_rows == 10


def test_fan_in_transform_is_a_union_of_its_inputs(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class FanIn(ek.Pipeline):
        first = MemorySource(billing_table, schema=Bill, chunk_rows=4)
        second = MemorySource(billing_table, schema=Bill, chunk_rows=4)
        both = AddTax(first, second)
        out = MemorySink(both)

    assert run(FanIn, settings).state == "success"
    ids = FanIn.out.table().column("invoice_id").to_pylist()
    assert sorted(ids) == sorted(list(range(1, 11)) * 2)


def test_independent_branches_run_concurrently(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    barrier = threading.Barrier(2, timeout=10)

    class Meet(ek.Transform[Bill, Bill]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            barrier.wait()  # only passes when the other branch is inside process too
            return batch

    class Branches(ek.Pipeline):
        billing = MemorySource(billing_table, schema=Bill)
        insurance = MemorySource(billing_table, schema=Bill)
        billing_clean = Meet(billing)
        insurance_clean = Meet(insurance)
        joined = ek.Sql(
            "select b.invoice_id, b.amount, i.amount as covered "
            "from {billing_clean} b join {insurance_clean} i using (invoice_id) order by 1"
        )
        report = MemorySink(joined)

    result = run(Branches, settings)

    assert result.state == "success", result.error
    assert Branches.report.table().column("invoice_id").to_pylist() == list(range(1, 11))


def test_sql_and_lazy_nodes_join_and_aggregate_staged_inputs(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class PerPatient(ek.Lazy[None]):
        def query(self, ctx: ek.Context, *frames: pl.LazyFrame) -> pl.LazyFrame:
            (bills,) = frames
            return bills.group_by("patient_id").agg(pl.col("amount").sum()).sort("patient_id")

    class Blocking(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill, chunk_rows=3)
        per_patient = PerPatient(bills)
        total = ek.Sql("select sum(amount) as total, '{ds}' as ds from {per_patient}")
        out = MemorySink(total)
        per_patient_out = MemorySink(per_patient)

    result = run(Blocking, settings)

    assert result.state == "success", result.error
    assert Blocking.out.table().to_pylist() == [{"total": 550.0, "ds": "2025-03-01"}]
    assert Blocking.per_patient_out.table().column("amount").to_pylist() == [
        70.0,
        90.0,
        110.0,
        130.0,
        150.0,
    ]


def test_sql_node_runs_out_of_core_under_a_small_memory_limit(tmp_path: Path) -> None:
    rows = 1_500_000
    table = pa.table({"k": pa.array(range(rows)), "v": pa.array(range(rows), pa.float64())})
    settings = ek.load_settings(
        tmp_path,
        env={},
        cli={
            "paths.state_dir": str(tmp_path / "state"),
            "duckdb.memory_limit": "40MB",
            "duckdb.threads": 1,
        },
    )

    class Spill(ek.Pipeline):
        data = MemorySource(table, chunk_rows=250_000)
        ordered = ek.Sql("select k, v from {data} order by v desc")
        counted = ek.Sql("select count(*) as n, max(k) as top from {ordered}")
        out = MemorySink(counted)

    result = run(Spill, settings)

    assert result.state == "success", result.error
    assert Spill.out.table().to_pylist() == [{"n": rows, "top": rows - 1}]
    assert result.nodes["ordered"].chunks_out > 1  # streamed out in chunks, not one table


def test_failure_on_a_chunk_cancels_the_run_and_names_node_and_chunk(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class Failing(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill, chunk_rows=2)
        checked = FailOn(bills, chunk=3)
        out = MemorySink(checked)

    result = run(Failing, settings)

    assert result.state == "failed"
    error = result.error
    assert isinstance(error, ek.NodeError)
    assert (error.pipeline, error.node, error.chunk) == ("failing", "checked", 3)
    assert "Node 'checked' in pipeline 'failing'" in str(error)
    assert "chunk 3: ValueError: amount overflow" in str(error)
    assert isinstance(error.__cause__, ValueError)
    assert not Failing.out.committed  # the sink committed nothing
    assert result.nodes["out"].state == "cancelled"
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("failing", result.run_id, "checked") is None
    assert etlkit_threads() == []


def test_failure_stops_an_endless_source_promptly(settings: ek.Settings) -> None:
    produced = 0

    def endless() -> Iterator[pa.RecordBatch]:
        nonlocal produced
        for i in range(1_000_000):
            produced += 1
            yield pa.record_batch({"invoice_id": [i], "patient_id": [i], "amount": [1.0]})

    class Endless(ek.Pipeline):
        bills = MemorySource(endless, schema=Bill)
        checked = FailOn(bills, chunk=5)
        out = MemorySink(checked)

    result = run(Endless, settings)

    assert result.state == "failed"
    assert produced < 1000  # bounded by channel depth, not by the source's length
    assert etlkit_threads() == []


def test_sink_failure_leaves_no_output_and_reports_the_sink(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class Broken(ek.Sink):
        def write(self, batches: Iterator[pa.RecordBatch], ctx: ek.Context) -> ek.WriteResult:
            for _ in batches:
                raise OSError("disk full")
            raise AssertionError("unreachable")

    class SinkFails(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill)
        out = Broken(bills)

    result = run(SinkFails, settings)

    assert isinstance(result.error, ek.NodeError)
    assert result.error.node == "out"
    assert "OSError: disk full" in str(result.error)


def test_source_yielding_wrong_type_is_a_clear_error(settings: ek.Settings) -> None:
    class BadSource(ek.Source):
        def read(self, ctx: ek.Context) -> Iterator[pa.RecordBatch]:
            yield pa.table({"a": [1]})  # type: ignore[misc]  # a Table, not a RecordBatch

    class Bad(ek.Pipeline):
        src = BadSource()
        out = MemorySink(src)

    result = run(Bad, settings)
    assert result.error is not None
    assert "yielded Table; sources yield pyarrow.RecordBatch" in str(result.error)


def test_transform_returning_wrong_type_is_a_clear_error(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class Wrong(ek.Transform[Bill, Bill]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            return batch.lazy()  # type: ignore[return-value]  # the mistake under test

    class WrongPipe(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill)
        wrong = Wrong(bills)

    result = run(WrongPipe, settings)
    assert "returned LazyFrame; transforms return a polars DataFrame" in str(result.error)


def test_a_polars_panic_fails_its_node_with_the_cause(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class Panics(ek.Transform[Bill, Bill]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            # a datetime past the years Python shows: polars panics (a BaseException)
            pl.Series([2**62]).cast(pl.Datetime("ms")).to_list()
            return batch

    class PanicPipe(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill)
        panics = Panics(bills)
        out = MemorySink(panics)

    result = run(PanicPipe, settings)

    assert isinstance(result.error, ek.NodeError), result.error
    assert result.error.node == "panics"
    assert "Node 'panics' in pipeline 'panic_pipe'" in str(result.error)
    assert "PanicException: `NaiveDateTime + TimeDelta` overflowed" in str(result.error)
    assert result.nodes["panics"].state == "failed"


def test_empty_source_stages_an_empty_output_with_its_schema(settings: ek.Settings) -> None:
    empty = pa.table(
        {
            "invoice_id": pa.array([], pa.int64()),
            "patient_id": pa.array([], pa.int64()),
            "amount": pa.array([], pa.float64()),
        }
    )

    class Empty(ek.Pipeline):
        bills = MemorySource(empty, schema=Bill)
        taxed = AddTax(bills)
        counted = ek.Sql("select count(*) as n, sum(taxed) as s from {taxed}")
        out = MemorySink(counted)

    result = run(Empty, settings)

    assert result.state == "success", result.error
    assert Empty.out.table().to_pylist() == [{"n": 0, "s": None}]


def test_resume_reuses_committed_outputs_without_reading_the_source_again(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    fail = {"on": True}

    class Flaky(ek.Transform[Bill, Bill]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            if fail["on"]:
                raise ConnectionError("warehouse unreachable")
            return batch

    class Resumable(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill, chunk_rows=4)
        ordered = ek.Sql("select * from {bills} order by invoice_id")  # waits for bills' commit
        flaky = Flaky(ordered)
        total = ek.Sql("select sum(amount) as total from {bills}")
        out = MemorySink(flaky)
        total_out = MemorySink(total)
        raw_out = MemorySink(bills)

    first = run(Resumable, settings)
    assert first.state == "failed"
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("resumable", first.run_id, "bills") is not None
    assert Resumable.bills.reads == 1

    fail["on"] = False
    committed = {
        name
        for name in Resumable.nodes
        if staging.manifest("resumable", first.run_id, name) is not None
    }
    assert "bills" in committed
    assert "flaky" not in committed
    second = run(Resumable, settings, run_id=first.run_id, reuse=committed)

    assert second.state == "success", second.error
    assert Resumable.bills.reads == 1  # not read again
    assert second.nodes["bills"].state == "reused"
    assert Resumable.out.table().num_rows == 10
    assert Resumable.raw_out.table().num_rows == 10  # replayed from staging
    assert Resumable.total_out.table().to_pylist() == [{"total": 550.0}]


def test_rerunning_a_run_id_without_reusing_its_committed_outputs_fails_before_running(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class Twice(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill, chunk_rows=4)
        taxed = AddTax(bills)
        out = MemorySink(taxed)

    first = run(Twice, settings)
    assert first.state == "success", first.error

    with pytest.raises(
        StagingError,
        match=rf"Run {first.run_id} of pipeline 'twice' already "
        r"committed 'taxed'.*immutable.*`reuse`.*etlkit retry",
    ):
        run(Twice, settings, run_id=first.run_id, reuse={"bills"})
    assert Twice.bills.reads == 1  # nothing ran

    again = run(Twice, settings, run_id=first.run_id, reuse={"bills", "taxed"})
    assert again.state == "success", again.error
    assert Twice.out.table().num_rows == 10


def test_run_ids_are_sortable_and_path_safe() -> None:
    ids = [new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(i.replace("-", "").replace("T", "").replace("Z", "").isalnum() for i in ids)


def test_execute_reports_progress_events_in_order(tmp_path: Path, billing_table: pa.Table) -> None:
    class Events(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill, chunk_rows=5)
        out = MemorySink(bills)

    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def listen(event: ek.Event) -> None:
        with lock:
            seen.append((event.kind, event.node))

    ctx = Context(
        pipeline="events", run_id=new_run_id(), logical_date=datetime(2025, 3, 1, tzinfo=UTC)
    )
    result = execute(
        Events.graph(),
        ctx,
        staging=Staging(str(tmp_path / "staging")),
        options=RunOptions(validate=False),
        listeners=[listen],
    )

    assert result.state == "success"
    assert seen[0] == ("run_started", "")
    assert seen[-1] == ("run_finished", "")
    assert ("node_finished", "bills") in seen
    assert seen.index(("node_started", "bills")) < seen.index(("node_finished", "bills"))


MEMORY_SCRIPT = """
import resource, sys
from pathlib import Path
import polars as pl, pyarrow as pa, pyarrow.compute as pc
import etlkit as ek
from etlkit.testing import MemorySource

batches, state = int(sys.argv[1]), sys.argv[2]
base = pa.array(range(131072), pa.int64())          # 1 MiB per batch

def generate():
    for i in range(batches):
        yield pa.record_batch([pc.add(base, i)], names=["x"])

class Plus(ek.Transform[None, None]):
    def process(self, batch, ctx):
        return batch.with_columns(y=pl.col("x") + 1)

class Count(ek.Sink):
    def write(self, stream, ctx):
        return ek.WriteResult(sum(b.num_rows for b in stream), "count")

class Big(ek.Pipeline):
    src = MemorySource(generate, stage=False)
    plus = Plus(src, stage=False)
    out = Count(plus)

settings = ek.load_settings(Path(state), env={}, cli={"run.channel_depth": 2})
result = Big.run(settings=settings)
result.raise_for_error()
peak_pool = pa.default_memory_pool().max_memory()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(result.nodes["out"].write.rows, peak_pool, rss)
"""


def _stream(batches: int, tmp_path: Path) -> tuple[int, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(batches), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows, pool, rss = (int(x) for x in out.stdout.split())
    return rows, pool, rss


@pytest.mark.slow
def test_memory_is_bounded_by_channels_not_by_input_size(tmp_path: Path) -> None:
    """Streams 64 MiB and then 512 MiB through source -> transform -> sink.

    The bound: 2 channels of depth 2 holding 1 MiB chunks, plus the chunks in flight in each of
    the three workers: well under 16 MiB of Arrow memory whatever the input size.
    """
    bound = 16 * 2**20
    small_rows, small_pool, small_rss = _stream(64, tmp_path)
    large_rows, large_pool, large_rss = _stream(512, tmp_path)

    assert small_rows == 64 * 131072
    assert large_rows == 512 * 131072
    assert small_pool < bound
    assert large_pool < bound  # 8x the input, the same bound: memory is set by the channels
    assert large_rss - small_rss < 64 * 2**20  # nor does the process's resident memory


def test_the_run_log_is_on_disk_once_a_warning_is_logged(tmp_path: Path) -> None:
    import logging

    from etlkit.engine import runlog

    log = logging.getLogger("etlkit.test_runlog")
    with runlog.capture(str(tmp_path), "pipe", "run-1") as path:
        for i in range(3):
            log.info("step %d", i, extra={"run_id": "run-1"})
        log.warning("careful", extra={"run_id": "run-1"})

        lines = path.read_text().splitlines()  # read while the run is still going

    assert [json.loads(line)["message"] for line in lines] == [
        "step 0",
        "step 1",
        "step 2",
        "careful",
    ]


def test_node_lifecycle_lines_go_to_the_run_log_and_to_logging_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from etlkit.engine import runlog

    log = logging.getLogger("etlkit.test_lifecycle")
    with caplog.at_level(logging.DEBUG, logger="etlkit.test_lifecycle"):
        with runlog.capture(str(tmp_path), "pipe", "run-1") as path:
            runlog.note("run-1", "numbers", "node numbers started", logger=log)
            runlog.note("run-2", "numbers", "node numbers started", logger=log)  # not captured
        runlog.note("run-1", "numbers", "node numbers done", logger=log)  # capture is over

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["level"], x["logger"], x["node"], x["message"]) for x in lines] == [
        ("INFO", "etlkit.test_lifecycle", "numbers", "node numbers started")
    ]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", "node numbers started"),
        ("DEBUG", "node numbers started"),
        ("DEBUG", "node numbers done"),
    ]


# -- the run's workers -----------------------------------------------------------------------


class Busy(ek.Transform[Bill, Bill]):
    """Records how many of its kind are inside `process` at once."""

    lock = threading.Lock()
    inside = 0
    most = 0

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        with Busy.lock:
            Busy.inside += 1
            Busy.most = max(Busy.most, Busy.inside)
        threading.Event().wait(0.05)  # long enough for the others to come in if they could
        with Busy.lock:
            Busy.inside -= 1
        return batch


@pytest.mark.parametrize("workers", [1, 3])
def test_at_most_max_workers_nodes_run_at_once(
    settings: ek.Settings, billing_table: pa.Table, workers: int
) -> None:
    Busy.most = 0
    attrs: dict[str, object] = {"max_workers": workers}
    for i in range(8):
        source = attrs[f"s{i}"] = MemorySource(billing_table, schema=Bill, stage=False)
        attrs[f"t{i}"] = Busy(source, stage=False)  # type: ignore[arg-type]
    Wide = type("Wide", (ek.Pipeline,), attrs)

    result = run(Wide, settings)

    assert result.state == "success", result.error
    assert Busy.most == workers  # as many as allowed, and no more


def test_a_chain_of_small_nodes_runs_on_one_thread(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    threads: set[int] = set()

    class Where(ek.Transform[Bill, Bill]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            threads.add(threading.get_ident())
            return batch

    class Chain(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill)
        a = Where(bills)
        b = Where(a)
        c = Where(b)
        d = Where(c)
        out = MemorySink(d)

    result = run(Chain, settings)

    assert result.state == "success", result.error
    assert Chain.out.table().num_rows == billing_table.num_rows
    assert len(threads) == 1  # each node ran on the thread its producer freed


def test_one_worker_streams_a_chain_through_full_channels(
    tmp_path: Path, billing_table: pa.Table
) -> None:
    settings = ek.load_settings(
        tmp_path,
        env={},
        cli={
            "paths.state_dir": str(tmp_path),
            "run.channel_depth": 1,
            "run.max_workers": 1,
            "run.timeout": 30,  # a deadlock fails the run instead of hanging the test
        },
    )

    class Narrow(ek.Pipeline):
        bills = MemorySource(billing_table, schema=Bill, chunk_rows=1)  # ten chunks
        taxed = AddTax(bills)
        again = AddTax(taxed)
        out = MemorySink(again)

    result = run(Narrow, settings)

    assert result.state == "success", result.error
    assert Narrow.out.table().num_rows == 10
    assert result.nodes["again"].chunks_in == 10  # streamed: every channel filled on the way


def test_a_waiting_sensor_does_not_keep_other_sensors_from_poking(settings: ek.Settings) -> None:
    poked = threading.Event()

    class Pokes(ek.Sensor):
        def poke(self, ctx: ek.Context) -> bool:
            poked.set()
            return True

    class WaitsForTheOther(ek.Sensor):
        def poke(self, ctx: ek.Context) -> bool:
            return poked.is_set()

    class Waits(ek.Pipeline):
        max_workers = 1  # were a waiting sensor to hold it, the other would never poke
        first = WaitsForTheOther(poke_interval=0.02, timeout=10)
        second = Pokes(poke_interval=0.02, timeout=10)

    result = run(Waits, settings)

    assert result.state == "success", result.error
    assert result.nodes["first"].state == "done"


def test_a_task_after_a_file_sensor_runs_once_the_file_exists(
    settings: ek.Settings, tmp_path: Path
) -> None:
    from etlkit.model.sensors import FileSensor

    (tmp_path / "ready.flag").write_text("ok")
    ran: list[str] = []

    class Record(ek.Task):
        def run(self, ctx: ek.Context) -> None:
            ran.append(ctx.node)

    class AfterSensor(ek.Pipeline):
        ready = FileSensor(str(tmp_path / "ready.flag"), poke_interval=0.01, timeout=10)
        rec = Record(after=[ready])

    result = run(AfterSensor, settings)

    assert result.state == "success", result.error
    assert result.nodes["ready"].state == "done"
    assert result.nodes["rec"].state == "done"
    assert ran == ["rec"]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("load", "done: 3 rows in, 3 out, 0.001s"),
        ("naïve-node", 'said "hi"\\ and\nleft\ttabs, é, 日本, \x00, \U0001f600'),
        ("", ""),
    ],
)
def test_a_node_line_in_the_run_log_is_what_json_would_write(node: str, message: str) -> None:
    from etlkit.engine import runlog

    at = 1_700_000_000.123456

    line = runlog._info_line(at, "etlkit.engine.execution", node, message)

    assert line == json.dumps(runlog._line(at, "INFO", "etlkit.engine.execution", node, message))
    assert json.loads(line)["message"] == message
