"""Running for real: node retries with backoff, timeouts, tasks, incremental cursors, the store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.engine.execution import RunState
from etlkit.errors import StoreError
from etlkit.storage.store import NodeUpdate, RunStore
from etlkit.testing import MemorySink, MemorySource


class Row(pdp.DataFrameModel):
    id: int
    amount: float


TABLE = pa.table({"id": [1, 2, 3, 4], "amount": [1.0, 2.0, 3.0, 4.0]})


class Flaky(ek.Transform[Row, Row]):
    """Fails its first `failures` attempts with `error`."""

    def __init__(self, *inputs: ek.Source, failures: int, error: Exception) -> None:
        super().__init__(*inputs)
        self.failures = failures
        self.error = error
        self.calls = 0

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return batch


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    with RunStore(tmp_path / "store.sqlite") as opened:
        yield opened


def test_a_failing_node_is_retried_with_exponential_backoff_from_staged_inputs(
    settings: ek.Settings, store: RunStore
) -> None:
    class Retried(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row)
        flaky = Flaky(rows, failures=2, error=ConnectionError("warehouse busy")).options(
            retries=3, retry_delay=5, retry_exponential_backoff=True, max_retry_delay=8
        )
        out = MemorySink(flaky)

    delays: list[float] = []
    result = Retried.run(settings=settings, store=store, sleep=delays.append)

    assert result.state == "success", result.error
    assert delays == [5, 8]  # 5, then 10 capped at 8
    assert Retried.rows.reads == 1  # retries restart from the staged output of `rows`
    assert Retried.out.table().num_rows == 4
    attempts = [
        (n.node, n.attempt, n.state)
        for n in store.node_runs(result.run_id, latest_attempt_only=False)
    ]
    assert ("flaky", 1, "failed") in attempts
    assert ("flaky", 3, "done") in attempts
    assert [e.kind for e in store.events(result.run_id)].count("node_retry") == 2


def test_retries_run_out_and_the_run_fails(settings: ek.Settings, store: RunStore) -> None:
    class Exhausted(ek.Pipeline):
        retries = 1
        rows = MemorySource(TABLE, schema=Row)
        flaky = Flaky(rows, failures=5, error=OSError("disk on fire"))

    delays: list[float] = []
    result = Exhausted.run(settings=settings, store=store, sleep=delays.append)

    assert result.state == "failed"
    assert delays == [0.0]  # the pipeline's retries=1, default delay 0
    assert "OSError: disk on fire" in str(result.error)
    assert store.get_run(result.run_id).state == "failed"


def test_permanent_and_validation_errors_are_not_retried(
    settings: ek.Settings, store: RunStore
) -> None:
    class Bad(ek.PermanentError, ValueError):
        pass

    class Permanent(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row)
        flaky = Flaky(rows, failures=1, error=Bad("schema changed upstream")).options(retries=3)

    delays: list[float] = []
    assert Permanent.run(settings=settings, store=store, sleep=delays.append).state == "failed"
    assert delays == []

    class Invalid(ek.Pipeline):
        rows = MemorySource(pa.table({"id": [1], "amount": ["x"]}), schema=Row).options(retries=3)

    result = Invalid.run(settings=settings, store=store, sleep=delays.append)
    assert isinstance(result.error, ek.DataValidationError)
    assert delays == []


def test_a_node_past_its_timeout_fails_the_run_naming_the_limit(settings: ek.Settings) -> None:
    release = threading.Event()

    class Stuck(ek.Transform[Row, Row]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            release.wait(30)  # never yields: the run abandons it after the grace period
            return batch

    class TimesOut(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row)
        stuck = Stuck(rows).options(timeout=0.2)
        out = MemorySink(stuck)

    try:
        result = TimesOut.run(settings=settings.with_overrides({"run.cancel_grace": 0.2}, "test"))
    finally:
        release.set()

    assert isinstance(result.error, ek.NodeTimeoutError)
    assert "Node 'stuck' in pipeline 'times_out'" in str(result.error)
    assert "timed out after 0.2s (its timeout)" in str(result.error)
    assert result.nodes["stuck"].state == "failed"
    assert not TimesOut.out.committed


def test_a_sql_node_past_its_timeout_has_its_query_interrupted(
    settings: ek.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    class LongQuery(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row)
        # minutes of DuckDB's time: unless interrupted, it runs past the grace period
        counted = ek.Sql(
            "select count(*) as n from {rows}, range(20000000000) t(x) where x % 7 = 3"
        ).options(timeout=0.2)

    with caplog.at_level(logging.WARNING, logger="etlkit"):
        result = LongQuery.run(settings=settings.with_overrides({"run.cancel_grace": 5.0}, "test"))

    assert isinstance(result.error, ek.NodeTimeoutError)
    assert "Node 'counted'" in str(result.error)
    assert result.nodes["counted"].state == "failed"
    assert "abandoning" not in caplog.text  # the query stopped, and the node returned


def test_a_dataset_check_of_a_node_past_its_timeout_is_interrupted(
    settings: ek.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    endless = "select id from {output}, range(20000000000) t(x) where x % 7 = 3 and x < 0"

    class LongCheck(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row).expect(sql=[endless]).options(timeout=0.2)

    with caplog.at_level(logging.WARNING, logger="etlkit"):
        result = LongCheck.run(settings=settings.with_overrides({"run.cancel_grace": 5.0}, "test"))

    assert isinstance(result.error, ek.NodeTimeoutError)
    assert result.nodes["rows"].state == "failed"
    assert "abandoning" not in caplog.text


def test_a_run_past_the_pipeline_timeout_is_cancelled(settings: ek.Settings) -> None:
    release = threading.Event()

    class Slow(ek.Transform[Row, Row]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            while not ctx.cancelled():  # a well-behaved node polls for cancellation
                release.wait(0.01)
            return batch

    class RunTimeout(ek.Pipeline):
        timeout = 0.3
        rows = MemorySource(TABLE, schema=Row)
        slow = Slow(rows)

    result = RunTimeout.run(settings=settings)
    release.set()

    assert isinstance(result.error, ek.RunTimeoutError)
    assert "timed out after 0.3s (the pipeline's timeout)" in str(result.error)
    assert result.nodes["slow"].state == "cancelled"


def test_tasks_run_after_their_inputs_including_sinks(settings: ek.Settings) -> None:
    order: list[str] = []

    class Record(ek.Task):
        def __init__(self, label: str, *, after: list[ek.Sink]) -> None:
            super().__init__(after=after)
            self.label = label

        def run(self, ctx: ek.Context) -> None:
            assert ReportThenSend.out.committed
            order.append(f"{self.label} {ctx.ds}")

    class ReportThenSend(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row)
        out = MemorySink(rows)
        send = Record("send", after=[out])

    result = ReportThenSend.run(settings=settings, date="2025-03-01")

    assert result.state == "success", result.error
    assert order == ["send 2025-03-01"]


def test_incremental_source_loads_each_row_exactly_once(
    settings: ek.Settings, store: RunStore
) -> None:
    data = {"table": TABLE}

    class Incremental(ek.Pipeline):
        rows = MemorySource(lambda: iter(data["table"].to_batches()), schema=Row).incremental("id")
        out = MemorySink(rows)

    first = Incremental.run(settings=settings, store=store)
    assert Incremental.out.table().column("id").to_pylist() == [1, 2, 3, 4]
    assert store.get_state("incremental", "cursor.rows") == "4"

    data["table"] = pa.concat_tables([TABLE, pa.table({"id": [5, 6], "amount": [5.0, 6.0]})])
    Incremental.run(settings=settings, store=store)
    assert Incremental.out.table().column("id").to_pylist() == [5, 6]

    data["table"] = pa.concat_tables([data["table"], pa.table({"id": [7], "amount": [-1.0]})])

    class Failing(ek.Sink):
        def write(self, batches, ctx):  # type: ignore[no-untyped-def]
            list(batches)
            raise OSError("target down")

    class IncrementalFails(Incremental):
        name = "incremental"
        out = Failing("rows")

    assert IncrementalFails.run(settings=settings, store=store).state == "failed"
    assert store.get_state("incremental", "cursor.rows") == "6"  # a failed run never advances

    Incremental.run(settings=settings, store=store)
    assert Incremental.out.table().column("id").to_pylist() == [7]
    assert first.state == "success"


class Change(pdp.DataFrameModel):
    id: int
    updated: int


def changes(ids: Sequence[int], updated: Sequence[int]) -> pa.Table:
    return pa.table({"id": list(ids), "updated": list(updated)})


class FlakyChanges(ek.Transform[Change, Change]):
    """Fails its first attempt."""

    def __init__(self, *inputs: ek.Source) -> None:
        super().__init__(*inputs)
        self.calls = 0

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("warehouse busy")
        return batch


def test_an_in_run_retry_that_reuses_an_incremental_source_still_advances_its_cursor(
    settings: ek.Settings, store: RunStore
) -> None:
    data = {"table": changes([1, 2, 3], [10, 20, 30])}

    class Reused(ek.Pipeline):
        rows = MemorySource(lambda: iter(data["table"].to_batches()), schema=Change).incremental(
            "updated"
        )
        flaky = FlakyChanges(rows).options(retries=1)
        out = MemorySink(flaky)

    first = Reused.run(settings=settings, store=store, sleep=lambda _: None)

    assert first.state == "success", first.error
    assert Reused.rows.reads == 1  # the retry reused the committed output of `rows`
    assert store.get_state("reused", "cursor.rows") == "30"
    data["table"] = changes([1, 2, 3, 4], [10, 20, 30, 40])
    Reused.run(settings=settings, store=store)
    assert Reused.out.table().column("id").to_pylist() == [4]


def test_retrying_a_failed_run_advances_the_cursor_from_the_source_it_committed(
    settings: ek.Settings, store: RunStore
) -> None:
    data = {"table": changes([1, 2, 3], [10, 20, 30])}

    class Resumed(ek.Pipeline):
        rows = MemorySource(lambda: iter(data["table"].to_batches()), schema=Change).incremental(
            "updated"
        )
        flaky = FlakyChanges(rows)
        out = MemorySink(flaky)

    failed = Resumed.run(settings=settings, store=store)
    assert failed.state == "failed"
    assert store.get_state("resumed", "cursor.rows") is None  # a failed run never advances

    retried = Resumed.retry(failed.run_id, store=store, settings=settings)

    assert retried.state == "success", retried.error
    assert retried.nodes["rows"].state == "reused"
    assert store.get_state("resumed", "cursor.rows") == "30"
    data["table"] = changes([1, 2, 3, 4], [10, 20, 30, 40])
    Resumed.run(settings=settings, store=store)
    assert Resumed.out.table().column("id").to_pylist() == [4]


@pytest.mark.parametrize("primary_key", [(), ("id",)])
def test_rows_arriving_late_at_the_stored_cursor_value_are_loaded_once(
    settings: ek.Settings, store: RunStore, primary_key: tuple[str, ...]
) -> None:
    data = {"table": changes([1, 2, 3], [10, 20, 20])}

    def incremental(source: MemorySource) -> MemorySource:
        if primary_key:
            return source.incremental("updated", primary_key=primary_key)
        return source.incremental("updated")  # the whole row identifies a row loaded before

    class Late(ek.Pipeline):
        rows = incremental(MemorySource(lambda: iter(data["table"].to_batches()), schema=Change))
        out = MemorySink(rows)

    loaded: list[int] = []
    for ids, updated in (
        ([1, 2, 3], [10, 20, 20]),
        ([1, 2, 3, 4], [10, 20, 20, 20]),  # 4 committed late, with the same timestamp as 2, 3
        ([1, 2, 3, 4], [10, 20, 20, 20]),  # nothing new
        ([1, 2, 3, 4, 5, 6], [10, 20, 20, 20, 20, 30]),
    ):
        data["table"] = changes(ids, updated)
        result = Late.run(settings=settings, store=store)
        assert result.state == "success", result.error
        loaded.extend(Late.out.table().to_pydict().get("id", []))

    assert loaded == [1, 2, 3, 4, 5, 6]
    assert store.get_state("late", "cursor.rows") == "30"


def test_a_pool_bounds_how_many_nodes_run_at_once(settings: ek.Settings, store: RunStore) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    entered = threading.Event()

    class Guarded(ek.Transform[Row, Row]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            entered.set()
            entered.wait(0.05)  # give the other branch every chance to overlap
            with lock:
                running -= 1
            return batch

    class Pooled(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row, chunk_rows=1)
        first = Guarded(rows).options(pool="warehouse")
        second = Guarded(rows).options(pool="warehouse")
        third = Guarded(rows).options(pool="warehouse")

    result = Pooled.run(settings=settings, store=store, pools={"warehouse": 1})

    assert result.state == "success", result.error
    assert peak == 1
    assert store.slot_leases("warehouse") == []  # every slot given back

    class Undefined(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row)
        first = Guarded(rows).options(pool="nowhere")

    failed = Undefined.run(settings=settings, pools={"warehouse": 1})
    assert "uses pool 'nowhere', which is not defined; pools are 'warehouse'" in str(failed.error)


def test_nodes_using_a_sized_connection_share_its_pool(settings: ek.Settings) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    class Warehouse(ek.Sink):
        conn = "warehouse"  # like PostgresSink(conn="warehouse")

        def write(self, batches, ctx):  # type: ignore[no-untyped-def]
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            rows = sum(b.num_rows for b in batches)
            threading.Event().wait(0.05)
            with lock:
                running -= 1
            return ek.WriteResult(rows, "warehouse")

    class TwoLoads(ek.Pipeline):
        rows = MemorySource(TABLE, schema=Row, chunk_rows=1)
        first = Warehouse(rows)
        second = Warehouse(rows)

    result = TwoLoads.run(settings=settings, pools={"warehouse": 1})

    assert result.state == "success", result.error
    assert peak == 1
    assert result.nodes["first"].write == result.nodes["second"].write


class Gate(ek.Transform[Row, Row]):
    """Holds its first chunk until `opened` is set, telling `entered` it got there."""

    def __init__(self, *inputs: ek.Source) -> None:
        super().__init__(*inputs)
        self.entered = threading.Event()
        self.opened = threading.Event()

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        self.entered.set()
        self.opened.wait(30)
        return batch


def test_the_store_shows_a_running_node_while_it_runs_and_every_node_at_the_end(
    settings: ek.Settings, store: RunStore
) -> None:
    held, gate = _gated()
    results: list[ek.RunResult] = []
    runner = threading.Thread(
        target=lambda: results.append(held.run(settings=settings, store=store))
    )
    runner.start()
    try:
        assert gate.entered.wait(30)
        [run] = store.runs("gated")
        states: dict[str, str] = {}
        for _ in range(300):  # node updates reach the store within a fraction of a second
            states = {n.node: n.state for n in store.node_runs(run.run_id)}
            if states.get("held") == "running":
                break
            threading.Event().wait(0.05)
        assert states.get("held") == "running"
    finally:
        gate.opened.set()
        runner.join(30)

    assert results[0].state == "success"
    final = {n.node: n.state for n in store.node_runs(results[0].run_id)}
    assert final == {"rows": "done", "held": "done", "out": "done"}


class _HeldTimerStore(RunStore):
    """A run store whose writes from threads other than the main one (the recorder's timer)
    set `entered`, then wait until the run is finished in the store (or `hold` seconds)."""

    def __init__(self, path: Path, entered: threading.Event, *, hold: float) -> None:
        super().__init__(path)
        self.entered = entered
        self.hold = hold
        self.finished = threading.Event()
        self.timer_done = threading.Event()

    def record_nodes(self, run_id: str, updates: Sequence[NodeUpdate]) -> None:
        if threading.current_thread() is threading.main_thread():
            super().record_nodes(run_id, updates)
            return
        self.entered.set()
        self.finished.wait(self.hold)  # a last flush that waits for this one waits `hold`
        try:
            super().record_nodes(run_id, updates)
        finally:
            self.timer_done.set()

    def finish_run(self, run_id: str, state: RunState, **kwargs: Any) -> None:
        super().finish_run(run_id, state, **kwargs)
        self.finished.set()


def _gated() -> tuple[type[ek.Pipeline], Gate]:
    """rows -> held (a `Gate`) -> out, and the gate."""
    source = MemorySource(TABLE, schema=Row)
    gate = Gate(source)

    class Gated(ek.Pipeline):
        rows = source
        held = gate
        out = MemorySink(held)

    return Gated, gate


def test_node_states_written_by_the_timer_as_the_run_ends_do_not_overwrite_the_final_ones(
    settings: ek.Settings, tmp_path: Path
) -> None:
    pipeline, gate = _gated()
    # the node runs until the recorder's timer is writing "held: running"; that write then
    # waits for the run to be finished in the store: without serialized flushes it lands
    # after the final states
    with _HeldTimerStore(tmp_path / "held.sqlite", gate.opened, hold=1.0) as store:
        result = pipeline.run(settings=settings, store=store)
        assert store.timer_done.wait(10)
        states = {n.node: n.state for n in store.node_runs(result.run_id)}

    assert result.state == "success", result.error
    assert states == {"rows": "done", "held": "done", "out": "done"}


class _FailingTimerStore(RunStore):
    """A run store whose first write from a thread other than the main one fails, setting
    `failed`."""

    def __init__(self, path: Path, failed: threading.Event) -> None:
        super().__init__(path)
        self.failed = failed

    def record_nodes(self, run_id: str, updates: Sequence[NodeUpdate]) -> None:
        if threading.current_thread() is not threading.main_thread() and not self.failed.is_set():
            self.failed.set()
            raise StoreError("database is locked (test)")
        super().record_nodes(run_id, updates)


def test_node_states_the_timer_could_not_write_are_written_by_the_last_flush(
    settings: ek.Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline, gate = _gated()  # `held` runs until the timer's write has failed
    with _FailingTimerStore(tmp_path / "failing.sqlite", gate.opened) as store:
        result = pipeline.run(settings=settings, store=store)
        nodes = {
            n.node: (n.state, n.started_at is not None) for n in store.node_runs(result.run_id)
        }

    assert result.state == "success", result.error
    assert gate.opened.is_set()
    assert nodes == {"rows": ("done", True), "held": ("done", True), "out": ("done", True)}
    assert "recording node states failed (database is locked (test)); retrying" in caplog.text


def test_a_retried_run_sees_the_dates_the_first_attempt_saw_in_the_pipelines_timezone(
    settings: ek.Settings, store: RunStore
) -> None:
    seen: list[tuple[str, Any, Any]] = []
    attempts = {"left": 1}

    class Dated(ek.Task):
        def run(self, ctx: ek.Context) -> None:
            seen.append((ctx.ds, ctx.data_interval_start, ctx.data_interval_end))
            if attempts["left"]:
                attempts["left"] -= 1
                raise RuntimeError("first attempt fails")

    class Tokyo(ek.Pipeline):
        timezone = "Asia/Tokyo"  # local midnight is 15:00 UTC of the day before
        dated = Dated()

    start = datetime(2025, 3, 1, tzinfo=ZoneInfo("Asia/Tokyo"))
    failed = Tokyo.run(
        date="2025-03-01",
        settings=settings,
        store=store,
        data_interval=(start, start + timedelta(days=1)),
    )
    assert failed.state == "failed"

    retried = Tokyo.retry(failed.run_id, store=store, settings=settings)

    assert retried.state == "success", retried.error
    assert seen[1] == seen[0]
    assert seen[1][0] == "2025-03-01"
    assert seen[1][1] == start
