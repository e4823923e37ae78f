"""`NodeRun`: one node of a local run, on the worker thread running it.

It waits for its inputs and pool slots, runs its role's steps (replay a reused output, write a
sink, poke a sensor, run a task, refer to a source's files, or produce, guard, stage and send
chunks) and is the node boundary: every failure of the node's own or a library's code is caught
here and becomes a `NodeError` of the run. `LocalRunView` is what it uses of its run
(`local._LocalRun`): the run's state, its channels, and the calls that report back to it.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Protocol

from polars.exceptions import PanicException

from etlkit.engine import runlog
from etlkit.engine.executor import node_error
from etlkit.engine.slots import take_slots, wanted_slots
from etlkit.engine.steps.context import StepContext
from etlkit.engine.steps.inputs import read_back, staged_rows
from etlkit.engine.steps.references import _expected_rows, refer
from etlkit.engine.steps.roles import open_output, produce, sink_input
from etlkit.engine.steps.sinks import write_sink
from etlkit.engine.steps.sources import cursor_extra
from etlkit.engine.steps.stage import close_output, commit_output, output_guard, stage_chunks
from etlkit.engine.steps.tasks import poke, run_task
from etlkit.errors import DataValidationError, EtlkitError, RunCancelledError
from etlkit.model.nodes import Lazy, Sensor, Sink, Source, Sql, Task, Transform

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.checks.guard import OutputGuard
    from etlkit.engine.channels import Inbox
    from etlkit.engine.database import RunDatabase
    from etlkit.engine.events import EventKind, NodeStats, RunResult
    from etlkit.engine.plan import Plan, RunOptions
    from etlkit.engine.slots import SlotProvider
    from etlkit.engine.workers import Workers
    from etlkit.model.graph import Graph
    from etlkit.model.nodes import Context
    from etlkit.storage.staging import NodeWriter, Staging

logger = logging.getLogger(__name__)


class LocalRunView(Protocol):
    """What a `NodeRun` uses of its run (`local._LocalRun`)."""

    plan: Plan
    graph: Graph
    options: RunOptions
    ctx: Context
    staging: Staging
    database: RunDatabase
    result: RunResult
    cancel: threading.Event
    lock: threading.Lock
    skipped: bool
    slots: SlotProvider
    workers: Workers
    inboxes: dict[str, Inbox]
    output_schemas: dict[str, pa.Schema]

    def emit(self, kind: EventKind, node: str = "") -> None: ...
    def node_failed(self, stats: NodeStats, exc: EtlkitError) -> None: ...
    def mark_committed(self, name: str) -> None: ...
    def finish(self, name: str) -> None: ...
    def wait_for_inputs(self, name: str) -> None: ...


class NodeRun:
    """One node of a local run, on the thread running it: waits for its inputs and slots,
    runs its role's steps, and is the node boundary (every failure is caught here)."""

    def __init__(self, run: LocalRunView, name: str) -> None:
        self.run = run
        self.name = name
        self.node = run.graph.nodes[name]
        self.stats = run.result.nodes[name]
        self.step = StepContext(
            plan=run.plan,
            name=name,
            node=self.node,
            ctx=run.ctx.for_node(name),
            stats=self.stats,
            staging=run.staging,
            database=run.database,
            cancelled=run.cancel.is_set,
            progress=partial(run.emit, "node_progress", name),
            output_schemas=run.output_schemas,
        )
        self.writer: NodeWriter | None = None
        self.guard: OutputGuard | None = None
        self.held: list[str] = []  # pools whose slot the node holds

    def work(self) -> None:
        run, name, stats = self.run, self.name, self.stats
        run_id = run.ctx.run_id
        runlog.bind(run.graph.pipeline, run_id, name)
        try:
            if name in run.options.skip:
                stats.state = "skipped"
                run.mark_committed(name)  # nothing waits on it (see Graph.resume_plan)
                return
            run.wait_for_inputs(name)  # waiting for inputs or a pool slot is not running
            self.take_slots()
            stats.state = "running"
            stats.started = time.perf_counter()
            run.emit("node_started", name)
            runlog.note(run_id, name, f"node {name} started", logger=logger)
            self.perform()
            stats.finished = time.perf_counter()
            runlog.note(
                run_id,
                name,
                f"node {name} {stats.state}: {stats.rows_in} rows in, {stats.rows_out} rows out, "
                f"{stats.invalid_rows} invalid, {max(stats.chunks_out, stats.chunks_in)} chunks, "
                f"{stats.seconds:.2f}s",
                logger=logger,
            )
        except RunCancelledError:
            if stats.state != "failed":  # a timed-out node stays failed
                stats.state = "cancelled"
        except DataValidationError as exc:
            run.node_failed(stats, exc)
        except EtlkitError as exc:
            run.node_failed(stats, node_error(run.plan, run_id, stats, exc, str(exc)))
        # the node boundary: user and library code of any kind; a polars panic (a Rust
        # assertion, e.g. a datetime out of range) is a BaseException, and fails the node too
        except (Exception, PanicException) as exc:
            cause = f"{type(exc).__name__}: {exc}"
            run.node_failed(stats, node_error(run.plan, run_id, stats, exc, cause))
        finally:
            self.release()

    def release(self) -> None:
        """The node returned: give back its slots, discard what it did not commit, report."""
        run, name, stats = self.run, self.name, self.stats
        for pool in self.held:
            run.slots.release_slot(pool, run.ctx.run_id, name)
        if stats.state != "done":
            if self.writer is not None:
                self.writer.abort()
            if self.guard is not None:
                self.guard.abort()
        if stats.state == "failed":
            extra = {"pipeline": run.graph.pipeline, "run_id": run.ctx.run_id, "node": name}
            logger.error("node %s failed: %s", name, stats.error, extra=extra)
        if stats.finished is None:
            stats.finished = time.perf_counter()
        run.emit("node_finished", name)
        runlog.unbind()

    def take_slots(self) -> None:
        """Wait for a slot of the node's pool (and of the global node limit), as leases."""
        run, options = self.run, self.run.options
        wanted = wanted_slots(
            self.name,
            self.node.kind,
            run.plan.pools.get(self.name),
            options.pools,
            options.max_active_nodes,
        )
        take_slots(
            run.slots,
            wanted,
            self.held,
            run_id=run.ctx.run_id,
            node=self.name,
            cancel=run.cancel,
            blocked=run.workers.blocked,
        )

    def perform(self) -> None:
        """Run the node's role: replay, write, sense, run, refer or stream."""
        run, name, node, stats, step = self.run, self.name, self.node, self.stats, self.step
        if name in run.options.reuse:
            self.replay()
            stats.state = "reused"
        elif isinstance(node, Sink):
            stats.write = write_sink(step, node, sink_input(step, node, run.inboxes.get(name)))
            stats.rows_out = stats.write.rows  # a sink's output is what it wrote
            stats.state = "done"
            run.mark_committed(name)
        elif isinstance(node, Sensor):
            self.sense(node)
        elif isinstance(node, Task):
            run_task(node, step.ctx)
            stats.state = "done"
            run.mark_committed(name)
        elif isinstance(node, Source) and name in run.plan.refers_in_place and refer(step, node):
            run.finish(name)
            stats.state = "done"
        else:
            self.stream()
            stats.state = "done"

    def stream(self) -> None:
        """Produce, guard, stage and send on the node's output, then commit it."""
        run, name, node, stats, step = self.run, self.name, self.node, self.stats, self.step
        if run.options.validate and node.output_model is not None:
            self.guard = output_guard(step)
        referenced, self.writer = open_output(step, self.guard)
        if isinstance(node, Source):
            stats.expected_rows = _expected_rows(node, step.ctx, referenced)
        streamed = [c for c in run.graph.consumers[name] if c in run.inboxes]
        frames = [c for c in streamed if isinstance(run.graph.nodes[c], Transform)]  # polars
        sends = [run.inboxes[c].put for c in streamed if c not in frames]
        frame_sends = [run.inboxes[c].put for c in frames]
        items = produce(step, run.inboxes.get(name))
        output = stage_chunks(step, items, self.writer, self.guard, sends, frame_sends)
        close_output(step, output, self.writer, self.guard, referenced)
        extra = cursor_extra(node, step.ctx, stats)
        commit_output(step, output, self.writer, self.guard, referenced, extra)
        run.finish(name)
        if isinstance(node, Sql | Lazy) and name not in run.inboxes:
            stats.rows_in = staged_rows(step, run.graph.inputs[name])  # read by DuckDB

    def replay(self) -> None:
        """Resume: send a committed output of this run downstream again, without recomputing."""
        run, name, stats = self.run, self.name, self.stats
        consumers = [run.inboxes[c] for c in run.graph.consumers[name] if c in run.inboxes]
        if consumers:
            for batch in read_back(self.step, name):
                for inbox in consumers:
                    inbox.put(batch)
                stats.rows_out += batch.num_rows
                stats.chunks_out += 1
        run.finish(name)

    def sense(self, node: Sensor) -> None:
        run, name, stats = self.run, self.name, self.stats
        with run.workers.blocked():
            outcome = poke(node, self.step.ctx, run.cancel)
        if outcome == "skipped":
            stats.state = "skipped"
            with run.lock:
                run.skipped = True
            logger.info(
                "sensor %s timed out (soft_fail): the run is skipped",
                name,
                extra={"run_id": run.ctx.run_id, "node": name},
            )
        else:
            stats.state = "done"
            run.mark_committed(name)  # a Task with `after=[sensor]` waits for this
