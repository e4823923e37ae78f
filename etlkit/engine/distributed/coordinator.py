"""`DaskRun`: one run on a Dask cluster, supervised from this process (the coordinator).

The coordinator (this process) cuts the plan (`segments.layout`), describes the run as JSON
(`spec.WorkSpec`) and submits tasks (`tasks`): one per partition of each segment once the
segment's inputs committed, one per single node likewise. Tasks return statistics; the
coordinator adds them up, emits the events the local executor emits, commits each staged
node of a segment once all its partitions finished (`outputs.commit_node`), and alone holds
the run's result (which the caller records in the run store). Sensors run here, before
anything else: they wait, and a wait needs no worker. The first failure sets the run's
cancel event (tasks stop at their next chunk boundary), cancels the tasks not started and
waits for the running ones. A worker that dies mid-task is Dask's to handle: it runs the
task again elsewhere, and the partition writer's attempts keep its earlier parts out. A
cluster left with no worker at all fails the run after a grace (`watch`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from etlkit.engine import runlog
from etlkit.engine.database import RunDatabase
from etlkit.engine.distributed import cluster
from etlkit.engine.distributed.connections import Sealed, seal
from etlkit.engine.distributed.failures import lost, node_failure, reported
from etlkit.engine.distributed.outputs import (
    add_node,
    add_partition,
    commit_node,
    commit_referenced,
    finished_earlier,
    resumed,
)
from etlkit.engine.distributed.segments import Layout, adjusted, copies, layout
from etlkit.engine.distributed.spec import plain_options, work_spec
from etlkit.engine.events import Event, EventKind, Listener, RunResult
from etlkit.engine.executor import new_result, overdue, settle
from etlkit.engine.steps.context import StepContext
from etlkit.engine.steps.references import _expected_rows, _Reference, reference
from etlkit.engine.steps.tasks import poke
from etlkit.errors import DataValidationError, EtlkitError, RunCancelledError
from etlkit.model.nodes import Sensor, Source

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.engine.distributed.watch import WorkerWatch
    from etlkit.engine.plan import Plan
    from etlkit.model.nodes import Context
    from etlkit.storage.manifest import Manifest
    from etlkit.storage.staging import Staging

logger = logging.getLogger(__name__)

#: The partition id of a source read whole, in one task (it returned no partitions).
WHOLE = "whole"


@dataclasses.dataclass
class _Segment:
    """A segment being run: its nodes, its partitions' ids, the tasks not yet returned and
    what the returned ones produced (the first schema, the first item's columns per node)."""

    nodes: tuple[str, ...]
    partitions: list[str] = dataclasses.field(default_factory=list)
    waiting: set[str] = dataclasses.field(default_factory=set)
    schemas: dict[str, pa.Schema] = dataclasses.field(default_factory=dict)
    produced: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    copies: list[str] = dataclasses.field(default_factory=list)  # nodes writing parts
    referenced: _Reference | None = None  # the source staged as a reference to its files


def _quiet() -> None:
    """Progress on the coordinator is reported per partition, not per chunk."""


class DaskRun:
    """One run on a Dask cluster, supervised from this process."""

    def __init__(
        self,
        client: Any,
        plan: Plan,
        ctx: Context,
        staging: Staging,
        listeners: Sequence[Listener],
        watch: WorkerWatch,
    ) -> None:
        self.client, self.watch = client, watch
        self.layout: Layout = layout(plan)
        self.plan = adjusted(plan, self.layout.fields())
        self.graph = plan.graph
        self.cancel = threading.Event()
        self.ctx = dataclasses.replace(ctx, cancelled=self.cancel.is_set)
        self.staging = staging
        self.listeners = list(listeners)
        self.result = new_result(plan, ctx, staging)
        self.committed: set[str] = set(plan.reused | plan.skipped)
        self.started: set[str] = set()  # units submitted (a segment by its source)
        self.futures: dict[Any, tuple[str, str]] = {}  # task -> (unit, partition)
        self.segments: dict[str, _Segment] = {}
        self.roots = {s[0] for s in self.layout.segments}
        self.schemas: dict[str, pa.Schema] = {}  # columns of each committed output
        self.step_schemas: dict[str, pa.Schema] = {}  # what close_output records
        self.skipped = False
        self.event_name = f"etlkit-cancel-{ctx.run_id}-{uuid.uuid4().hex[:8]}"
        self.spec_text = ""
        self.sealed = Sealed("")
        self.database = RunDatabase(
            staging, plan.pipeline, ctx.run_id, plan.options, self.cancel.is_set
        )

    # -- events and failure ------------------------------------------------------------------

    def emit(self, kind: EventKind, node: str = "") -> None:
        event = Event(kind, self.result, node)
        for listener in self.listeners:
            listener(event)

    def fail(self, exc: EtlkitError, node: str = "") -> None:
        if node:
            stats = self.result.nodes[node]
            stats.state, stats.error = "failed", str(exc)
            stats.finished = time.perf_counter()
            self.emit("node_finished", node)
        if self.result.error is None:
            self.result.error = exc
        if not self.cancel.is_set():
            self.cancel.set()
            self.stop_tasks()

    def stop_tasks(self) -> None:
        """Stop the run's tasks (see `cluster.stop_tasks`)."""
        if self.futures:
            grace = self.plan.options.cancel_grace
            if not cluster.stop_tasks(self.client, list(self.futures), self.event_name, grace):
                logger.warning("tasks of run %s did not stop within the grace", self.ctx.run_id)
            self.futures.clear()

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> RunResult:
        logger.info("run %s of %s started on Dask", self.ctx.run_id, self.graph.pipeline)
        self.emit("run_started")
        try:
            self.prepare()
            for name in self.plan.sensors:
                if self.result.error is None and not self.skipped:
                    self.sense(name)
            if self.result.error is None and not self.skipped:
                self.supervise()
        except KeyboardInterrupt:
            self.fail(RunCancelledError(f"Run {self.ctx.run_id} interrupted (Ctrl-C)"))
        except EtlkitError as exc:
            self.fail(exc)
        finally:
            self.database.close()
            if self.futures:
                self.stop_tasks()
        for name, stats in self.result.nodes.items():
            if self.result.error is not None and stats.state in ("pending", "running"):
                stats.state = "cancelled"  # stopped, or never started, by the failure
                stats.finished = stats.finished or time.perf_counter()
                self.emit("node_finished", name)
        settle(self.result, skipped=self.skipped)
        self.emit("run_finished")
        return self.result

    def prepare(self) -> None:
        """Before anything runs: the workers can reach staging and import the pipeline."""
        spec = work_spec(self.plan, self.ctx, self.staging, self.layout.fields(), self.event_name)
        self.spec_text = cluster.prepare_workers(self.client, spec, self.staging)
        # the connections its nodes name and the staging's credentials, for the workers
        options = {} if self.staging.local else plain_options(self.staging.fs.storage_options)
        self.sealed = seal(self.plan.graph, options)

    def sense(self, name: str) -> None:
        """Run a sensor here: it waits, and a wait needs no worker."""
        stats = self.result.nodes[name]
        node = self.graph.nodes[name]
        assert isinstance(node, Sensor)
        stats.state, stats.started = "running", time.perf_counter()
        self.emit("node_started", name)
        try:
            outcome = poke(node, self.ctx.for_node(name), self.cancel)
        except EtlkitError as exc:
            self.fail(exc, name)
            return
        except Exception as exc:  # the sensor's own code
            cause = f"{type(exc).__name__}: {exc}"
            self.fail(node_failure(self.graph.pipeline, self.ctx.run_id, name, cause), name)
            return
        stats.finished = time.perf_counter()
        if outcome == "skipped":
            stats.state, self.skipped = "skipped", True
        else:
            stats.state = "done"
            self.committed.add(name)
        self.emit("node_finished", name)

    def supervise(self) -> None:
        """Submit units as their inputs commit; collect their tasks until all returned."""
        from distributed import wait
        from distributed.client import FuturesCancelledError

        units = [(s[0], s) for s in self.layout.segments]
        units += [(n, (n,)) for n in self.layout.singles]  # a segment is named by its source
        self.settle_idle()
        while self.result.error is None:
            for key, nodes in units:
                if key not in self.started and self.ready(nodes):
                    self.started.add(key)
                    self.submit(key, nodes)
            if not self.futures:
                if all(key in self.started for key, _ in units) or self.result.error:
                    return
                waiting = sorted(k for k, _ in units if k not in self.started)
                raise RunCancelledError(f"nodes {waiting} could not start")  # never, in a DAG
            try:
                done = wait(list(self.futures), timeout=0.5, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                done = set()
            except FuturesCancelledError:  # cancelled from outside (the cluster closing)
                done = {f for f in self.futures if f.status == "cancelled"}
            # the answers of the tasks that finished in one round trip, not one each
            finished = [f for f in done if f.status == "finished"]
            answers = dict(zip(finished, self.client.gather(finished), strict=True))
            for future in done:
                if self.result.error is None:
                    self.returned(future, answers.get(future))
            self.check_timeouts()

    def settle_idle(self) -> None:
        """Report the nodes that do not run, as a local run does: reused outputs of an
        earlier attempt (committed already), skipped sinks (they wrote already)."""
        for name in self.graph.order:
            stats = self.result.nodes[name]
            if name in self.plan.reused:
                stats.state, stats.started = "reused", time.perf_counter()
                self.emit("node_started", name)
            elif name in self.plan.skipped:
                stats.state = "skipped"
            else:
                continue
            stats.finished = time.perf_counter()
            self.emit("node_finished", name)

    def ready(self, nodes: tuple[str, ...]) -> bool:
        inputs = {i for n in nodes for i in self.graph.inputs[n]} - set(nodes)
        return inputs <= self.committed

    def submit(self, key: str, nodes: tuple[str, ...]) -> None:
        from etlkit.engine.distributed.spec import write_schema
        from etlkit.engine.distributed.tasks import run_node

        now = time.perf_counter()
        for name in nodes:
            stats = self.result.nodes[name]
            stats.state, stats.started = "running", now
            self.emit("node_started", name)
        if key not in self.roots:
            inputs = self.graph.inputs[key]
            known = {n: write_schema(self.schemas[n]) for n in inputs if n in self.schemas}
            args = (self.spec_text, self.sealed, key, known)
            future = self.client.submit(run_node, *args, key=self.task_key(key, ""), pure=False)
            self.futures[future] = (key, "")
            return
        self.submit_segment(key, nodes)

    def task_key(self, node: str, partition: str) -> str:
        return f"etlkit-{self.ctx.run_id}-{node}-{partition or 'node'}-{uuid.uuid4().hex[:8]}"

    def submit_segment(self, root: str, nodes: tuple[str, ...]) -> None:
        """One task per partition of the segment's source not finished by an earlier attempt
        of the run (those are reused: their statistics are read from their finishes)."""
        from etlkit.engine.distributed.tasks import run_partition

        segment = self.segments[root] = _Segment(nodes)
        try:
            source = self.graph.nodes[root]
            assert isinstance(source, Source)
            step = self.step(root)
            parts = partitions_of(source, step.ctx)
            if root in self.plan.references:  # its files stand for its output: no copy
                segment.referenced = reference(step, source)
            # for the progress display's percentage and ETA, as a local run estimates it
            step.stats.expected_rows = _expected_rows(source, step.ctx, segment.referenced)
        except Exception as exc:  # the source's own code, listing its partitions or files
            cause = f"{type(exc).__name__}: {exc}"
            self.fail(node_failure(self.graph.pipeline, self.ctx.run_id, root, cause), root)
            return
        staged = segment.copies = copies(self.plan, nodes, segment.referenced is not None)
        run_dir = self.staging.run_dir(self.graph.pipeline, self.ctx.run_id)
        # a run's first attempt has no finishes to look for (one look per node, not per part);
        # a retry reads them all at once, each once
        earlier: dict[str, list[Manifest]] = {}
        if staged and all(self.staging.exists(f"{run_dir}/{n}.parts") for n in staged):
            pids = [pid for pid, _ in parts]
            earlier = finished_earlier(
                self.staging, self.graph.pipeline, self.ctx.run_id, staged, pids
            )
        for pid, text in parts:
            segment.partitions.append(pid)
            done = resumed(nodes, earlier[pid]) if pid in earlier else None
            if done is not None:
                self.partition_done(root, pid, done)
                continue
            segment.waiting.add(pid)
            args = (self.spec_text, self.sealed, list(nodes), text, pid, staged)
            future = self.client.submit(
                run_partition, *args, key=self.task_key(root, pid), pure=False
            )
            self.futures[future] = (root, pid)
        if not segment.waiting:
            self.commit_segment(root)

    def returned(self, future: Any, answer: dict[str, Any] | None) -> None:
        """A task returned `answer` (None: it failed, or was cancelled): add up what it
        reports, commit what is complete."""
        key, partition = self.futures.pop(future)
        if answer is not None and answer.get("logs"):  # what its nodes logged, on the worker
            where = {"worker": str(answer.get("worker", ""))}
            where.update({"partition": partition} if partition else {})
            runlog.replay(self.ctx.run_id, answer["logs"], **where)
        if answer is None:
            error = future.exception() if future.status == "error" else None
            self.task_failed(key, partition, error)
            return
        if "failed" in answer:
            self.task_error(key, answer["failed"])
        elif key in self.segments:
            self.partition_done(key, partition, answer)
            self.segments[key].waiting.discard(partition)
            if not self.segments[key].waiting and self.result.error is None:
                self.commit_segment(key)
        else:
            self.node_done(key, answer)

    def partition_done(self, root: str, partition: str, answer: dict[str, Any]) -> None:
        """Add a partition's statistics (of a task, or of an earlier attempt's finishes)."""
        segment = self.segments[root]
        for name, facts in answer["nodes"].items():
            add_partition(self.result.nodes[name], partition, facts, answer)
            if facts.get("schema") and name not in segment.schemas:
                from etlkit.engine.distributed.spec import read_schema

                segment.schemas[name] = read_schema(facts["schema"])
            if facts.get("produced") and name not in segment.produced:
                segment.produced[name] = list(facts["produced"])
        self.emit("node_progress", root)

    def commit_segment(self, root: str) -> None:
        """Every partition of the segment finished: commit each staged node of it, in order."""
        segment = self.segments[root]
        order = {p: i for i, p in enumerate(segment.partitions)}
        for name in segment.nodes:
            stats = self.result.nodes[name]
            stats.partitions.sort(key=lambda p: order[p.partition])  # as the source reads them
            try:
                schema, produced = segment.schemas.get(name), segment.produced.get(name)
                if name == root and segment.referenced is not None:
                    commit_referenced(self.step(name), segment.referenced, schema, produced)
                elif name in segment.copies:
                    commit_node(self.step(name), segment.partitions, schema, produced)
            except DataValidationError as exc:
                self.fail(exc, name)
                return
            except EtlkitError as exc:
                cause = f"{type(exc).__name__}: {exc}"
                self.fail(node_failure(self.graph.pipeline, self.ctx.run_id, name, cause), name)
                return
            if name in self.step_schemas:
                self.schemas[name] = self.step_schemas[name]
            stats.state = "done"
            stats.finished = time.perf_counter()
            self.committed.add(name)
            self.emit("node_finished", name)

    def step(self, name: str) -> StepContext:
        return _coordinator_step(self, name)

    def node_done(self, name: str, answer: dict[str, Any]) -> None:
        """A single node returned: its statistics, its output's columns, its write."""
        stats = self.result.nodes[name]
        schema = add_node(stats, answer["nodes"][name])
        if schema is not None:
            self.schemas[name] = schema
        stats.state = "done"
        stats.finished = time.perf_counter()
        self.committed.add(name)
        self.emit("node_finished", name)

    def task_error(self, key: str, failed: dict[str, Any]) -> None:
        """A task caught a failure of one of its nodes: fail the run, naming the partition."""
        if failed["cancelled"] and self.cancel.is_set():
            return  # it stopped because the run is being cancelled
        source = key if key in self.roots else ""
        error = reported(self.graph.pipeline, self.ctx.run_id, source, failed)
        self.fail(error, failed["node"])

    def task_failed(self, key: str, partition: str, exc: BaseException | None) -> None:
        """A task did not return: Dask gave up on it (its workers kept dying), or it was
        cancelled, or it raised before its node boundary."""
        if exc is None and self.cancel.is_set():
            return
        self.fail(lost(self.graph.pipeline, self.ctx.run_id, key, partition, exc), key)

    def check_timeouts(self) -> None:
        """Fail the run at the first timeout passed (a node's leaves the node failed), or
        once the cluster has had no worker for the grace while tasks wait (`watch`)."""
        for name, error in overdue(self.plan, self.result, self.ctx.run_id, time.perf_counter()):
            self.fail(error, name)
            return
        stranded = self.watch.check(self.ctx.run_id, self.graph.pipeline) if self.futures else None
        if stranded is not None:  # no worker runs a task to wait for: drop them at once
            cluster.stop_tasks(self.client, list(self.futures), self.event_name, 0.0)
            self.futures.clear()
            self.fail(stranded)


def _coordinator_step(run: DaskRun, name: str) -> StepContext:
    """A node's step on the coordinator (its commit, its dataset checks)."""
    return StepContext(
        plan=run.plan,
        name=name,
        node=run.graph.nodes[name],
        ctx=run.ctx.for_node(name),
        stats=run.result.nodes[name],
        staging=run.staging,
        database=run.database,
        cancelled=run.cancel.is_set,
        progress=_quiet,
        output_schemas=run.step_schemas,
    )


def partitions_of(source: Source, ctx: Context) -> list[tuple[str, str | None]]:
    """The source's partitions as `(id, JSON)`; `(WHOLE, None)` for a source read whole (not
    split, or incremental: its cursor is one high-water mark over all it reads)."""
    if source.cursor_column is not None:
        return [(WHOLE, None)]
    found = source.partitions(ctx)
    return [(WHOLE, None)] if found is None else [(p.id, p.to_json()) for p in found]
