"""`LocalExecutor`: a plan run on worker threads of this process, the nodes linked by channels.

Each node runs on a worker thread it gets when it is ready (its first chunk arrived, or its
inputs committed); idle threads are reused (`workers.Workers`), so a long chain of quick nodes
needs few threads. Streaming nodes pass `pyarrow.RecordBatch` chunks through bounded channels
(`channels.Inbox`), so memory is bounded by channel depth times chunk size, whatever the input
size; blocking nodes wait for their inputs to commit. `_LocalRun` supervises one run (readiness,
failure, cancellation, node and run timeouts); `node_run.NodeRun` is one node on its thread: it
waits for its inputs and pool slots, runs its role's steps and is the node boundary where a
foreign failure becomes a `NodeError`. The first failure cancels the run: every worker stops at its
next chunk boundary and uncommitted staging is discarded.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from etlkit.engine.channels import END, Inbox
from etlkit.engine.database import RunDatabase
from etlkit.engine.events import Event, EventKind, Listener, RunResult
from etlkit.engine.executor import new_result, overdue, settle
from etlkit.engine.node_run import NodeRun
from etlkit.engine.slots import LocalSlots, SlotProvider
from etlkit.engine.workers import Workers, default_workers
from etlkit.errors import (
    EtlkitError,
    RunCancelledError,
    quoted,
)
from etlkit.model.nodes import Sql

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.engine.events import NodeStats
    from etlkit.engine.plan import Plan
    from etlkit.model.nodes import Context
    from etlkit.storage.staging import Staging

logger = logging.getLogger(__name__)


class LocalExecutor:
    """Runs a plan on threads of this process (see the module docstring)."""

    def run(
        self,
        plan: Plan,
        ctx: Context,
        *,
        staging: Staging,
        listeners: Sequence[Listener] = (),
    ) -> RunResult:
        """Run every node of the plan once; return the result (see `Executor.run`)."""
        return _LocalRun(plan, ctx, staging, listeners).execute()


class _LocalRun:
    """One run on local threads: its channels, workers, database, and its supervision."""

    def __init__(
        self, plan: Plan, ctx: Context, staging: Staging, listeners: Sequence[Listener]
    ) -> None:
        self.plan = plan
        self.graph = graph = plan.graph
        self.options = options = plan.options
        self.cancel = threading.Event()
        self.ctx = dataclasses.replace(ctx, cancelled=self.cancel.is_set)
        self.staging = staging
        self.listeners = list(listeners)
        self.lock = threading.Lock()
        # Sets and conditions on the run's lock rather than events per node: a thousand nodes'
        # events, queues and their locks would be most of the run's set-up and busy the collector.
        self.committed: set[str] = set()  # nodes whose output is visible
        self.output_schemas: dict[str, pa.Schema] = {}  # columns of what each node streamed
        self.commits = threading.Condition(self.lock)  # a node committed, or the run failed
        self.returned: set[str] = set()  # nodes whose work returned (see `abandon`)
        self.skipped = False  # a soft-failing sensor skips the run
        self.slots: SlotProvider = options.slots or LocalSlots()
        # what the caller made current (its connections, its run log) travels to the run's
        # threads: each node runs in a copy of the caller's context, never in a process global
        self.scope = contextvars.copy_context()
        self.workers = Workers(options.max_workers or default_workers())
        self.database = RunDatabase(
            staging, graph.pipeline, ctx.run_id, options, self.cancel.is_set, ahead=True
        )
        self.phase: set[str] = set()
        self.submitted: set[str] = set()
        self.running: set[str] = set()  # submitted, not yet returned (nor abandoned)
        self.changed = threading.Condition(self.lock)  # a node returned, or the run failed
        self.inboxes = {
            name: Inbox(
                len(graph.inputs[name]),
                options.channel_depth,
                self.cancel,
                start=lambda last, name=name: self.ready(name, handoff=last),  # type: ignore[misc]
                workers=self.workers,
            )
            for name in graph.order
            if name in plan.channels
        }
        for name in plan.streamed_sql:
            self.inboxes[name].foreign = True  # DuckDB's threads read its chunks
        self.result = new_result(plan, ctx, staging)

    # -- events and failure ------------------------------------------------------------------

    def emit(self, kind: EventKind, node: str = "") -> None:
        event = Event(kind, self.result, node)
        for listener in self.listeners:
            listener(event)

    def fail(self, exc: EtlkitError) -> None:
        with self.lock:
            if self.result.error is None:
                self.result.error = exc
            first = not self.cancel.is_set()
            self.cancel.set()
            self.changed.notify_all()
            self.commits.notify_all()  # nodes waiting for an input's commit
        if first:  # wake every worker blocked on a channel, stop every running query
            for inbox in self.inboxes.values():
                inbox.wake()
            self.database.interrupt()

    def node_failed(self, stats: NodeStats, exc: EtlkitError) -> None:
        stats.state = "failed"
        stats.error = str(exc)
        self.fail(exc)

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> RunResult:
        logger.info("run %s of %s started", self.ctx.run_id, self.graph.pipeline)
        self.emit("run_started")
        sensors = list(self.plan.sensors)
        others = [n for n in self.graph.order if n not in sensors]
        opener = None
        if any(isinstance(n, Sql) or n.expectations.sql for n in self.graph.nodes.values()):
            # opened while the sources read, not when the first SQL node is waited for
            opener = threading.Thread(target=self.database.warm, name="etlkit-duckdb")
            opener.start()
        try:
            self.supervise(sensors)  # every sensor passes before anything else starts
            if self.result.error is None and not self.skipped:
                self.supervise(others)
        except KeyboardInterrupt:
            self.fail(RunCancelledError(f"Run {self.ctx.run_id} interrupted (Ctrl-C)"))
        finally:
            self.workers.close()
            if opener is not None:
                opener.join()  # a process exiting while DuckDB opens aborts (SIGABRT)
            self.database.close()  # after the nodes: it closes their connections too
        result = self.result
        settle(result, skipped=self.skipped)
        logger.info(
            "run %s of %s %s in %.2fs",
            self.ctx.run_id,
            self.graph.pipeline,
            result.state,
            result.seconds,
        )
        self.emit("run_finished")
        return result

    def ready(self, name: str, *, handoff: bool = False) -> None:
        """Give the node a worker, once: it has data waiting, or its inputs are committed.

        `handoff`: called by a node about to return, whose thread may run this one next.
        """
        with self.lock:
            if name in self.submitted or name not in self.phase:
                return
            self.submitted.add(name)
            self.running.add(name)
        self.workers.submit(self.run_node, name, handoff=handoff)

    def run_node(self, name: str) -> None:
        try:
            self.scope.copy().run(NodeRun(self, name).work)
        finally:
            with self.lock:
                self.returned.add(name)
                self.running.discard(name)
                if not self.running:  # what `supervise` waits for (a failure notifies too)
                    self.changed.notify_all()

    def startable(self, name: str) -> bool:
        """Whether a node can start now without waiting for anything."""
        if name in self.inboxes:
            return False  # started by its first item (or its producers' END)
        return all(i in self.committed for i in self.graph.inputs[name]) or (
            name in self.options.reuse or name in self.options.skip
        )

    def mark_committed(self, name: str) -> None:
        """The node's output is visible: start the consumers that were waiting for it (the
        node is about to return: its thread may run one of them next)."""
        with self.lock:
            self.committed.add(name)
            self.commits.notify_all()
        for consumer in self.graph.consumers[name]:
            if self.startable(consumer):
                self.ready(consumer, handoff=True)

    def finish(self, name: str) -> None:
        """The node's output committed: its consumers may start, its channels end."""
        self.mark_committed(name)
        for consumer in self.graph.consumers[name]:
            if consumer in self.inboxes:
                self.inboxes[consumer].put(END)

    def wait_for_inputs(self, name: str) -> None:
        if name in self.inboxes or name in self.options.reuse:
            return  # inputs arrive through the channel, or the node's own output is reused
        for upstream in self.graph.inputs[name]:
            if upstream not in self.committed:
                with self.workers.blocked(), self.lock:
                    while upstream not in self.committed and not self.cancel.is_set():
                        self.commits.wait()
            if self.cancel.is_set():
                raise RunCancelledError("run cancelled")

    def supervise(self, names: Sequence[str]) -> None:
        """Run these nodes to the end, enforcing node and run timeouts.

        A node past its timeout fails the run; workers stop at their next chunk boundary. One
        that does not yield within the grace period is abandoned (its thread is a daemon).
        Nodes never started because the run was cancelled first end as cancelled.
        """
        with self.lock:
            self.phase = set(names)
        for name in names:
            if self.startable(name):
                self.ready(name)
        # Woken when a node returns or the run fails, not per chunk or per poll: with a
        # thousand quick nodes, rescanning them all at each return made the run quadratic.
        # Timeouts are checked every 50 ms, only when some are set.
        timed = self.options.run_timeout is not None or any(n in self.plan.timeouts for n in names)
        deadline: float | None = None
        while True:
            with self.lock:
                if self.running and not self.cancel.is_set():
                    self.changed.wait(0.05 if timed else None)
                active = bool(self.running)
            if not active:
                with self.lock:
                    waiting = [n for n in names if n not in self.submitted]
                if not waiting or self.cancel.is_set():
                    break
                stuck = [n for n in waiting if self.startable(n)]
                if not stuck:  # cannot happen in a checked DAG; never hang on it
                    logger.error("nodes %s cannot start; cancelling the run", quoted(waiting))
                    self.fail(RunCancelledError(f"nodes {quoted(waiting)} could not start"))
                    break
                for name in stuck:
                    self.ready(name)
                continue
            if timed:
                self.check_timeouts()
            if self.cancel.is_set():
                deadline = deadline or time.perf_counter() + self.options.cancel_grace
                if time.perf_counter() > deadline:
                    with self.lock:
                        running = sorted(self.running)
                    self.abandon(running)
                    break
                with self.lock:  # wait for the running nodes to notice, up to the grace
                    if self.running:
                        self.changed.wait(max(0.0, deadline - time.perf_counter()))
        with self.lock:
            never = [n for n in names if n not in self.submitted]
            self.submitted.update(never)
        for name in never:
            stats = self.result.nodes[name]
            stats.state = "cancelled"
            self.emit("node_finished", name)

    def abandon(self, running: Sequence[str]) -> None:
        """Give up on nodes that did not stop within the grace after the run's cancellation."""
        for name in running:
            with self.lock:
                if name in self.returned:
                    continue
                self.running.discard(name)
            stats = self.result.nodes[name]
            if stats.state != "failed":
                stats.state = "cancelled"
            stats.finished = time.perf_counter()
            logger.warning(
                "node %s did not stop within %.1fs of the run's cancellation; abandoning it",
                name,
                self.options.cancel_grace,
            )

    def check_timeouts(self) -> None:
        """Fail the run at the first timeout passed (a node's leaves the node failed)."""
        now = time.perf_counter()
        for name, error in overdue(self.plan, self.result, self.ctx.run_id, now):
            stats = self.result.nodes.get(name)
            if stats is not None:
                stats.error = str(error)
            self.fail(error)
            if stats is not None:
                stats.state = "failed"
