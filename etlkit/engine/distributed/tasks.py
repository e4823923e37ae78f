"""What runs on a Dask worker: one partition of a segment, or one node whole.

`run_partition` reads one partition of a segment's source and runs the segment's nodes over
it as chained generators (no channel, no thread): each node's items go through the same
`stage_chunks` as a local run's, one item at a time, its pieces handed to the next node.
Each staged node writes through a `PartitionWriter`, which `finish`es the partition at the
end (its statistics in the finish's `extra`, for a later attempt of the run); nothing is
committed. `run_node` runs one node whole, as the local executor runs a node reading its
inputs' committed staging, and commits its output (a sink writes, once). Both return
JSON-able statistics, never data, and catch every failure at the node boundary, returning
it described (`Failure`) for the coordinator to raise: a worker's death is Dask's to
handle (it runs the task again elsewhere, with a writer of a new attempt). A task runs with
the run's named connections current (`connections`), and what its nodes log, tagged with the
node as a local run's threads tag it, goes back with its answer (at most `LOG_LIMIT`
characters, the cut said) for the coordinator to write into the run's log.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from polars.exceptions import PanicException

from etlkit.engine import runlog
from etlkit.engine.database import RunDatabase
from etlkit.engine.distributed.connections import Sealed, current, masked, staging_options
from etlkit.engine.distributed.outputs import finished, resumed
from etlkit.engine.distributed.segments import adjusted
from etlkit.engine.distributed.spec import (
    PipelineRef,
    WorkSpec,
    context_from,
    load_definition,
    read_schema,
    write_schema,
)
from etlkit.engine.distributed.spec import options_from as _options_from
from etlkit.engine.events import NodeStats
from etlkit.engine.plan import build_plan
from etlkit.engine.steps.context import StepContext
from etlkit.engine.steps.inputs import staged_rows
from etlkit.engine.steps.references import refer
from etlkit.engine.steps.roles import open_output, produce, received
from etlkit.engine.steps.sinks import write_sink
from etlkit.engine.steps.sources import cursor_extra, read_partition, read_source
from etlkit.engine.steps.stage import (
    Output,
    close_output,
    commit_output,
    output_guard,
    stage_chunks,
)
from etlkit.engine.steps.tasks import run_task
from etlkit.errors import EtlkitError, RunCancelledError
from etlkit.model.nodes import Lazy, Partition, Sink, Source, Sql, Task
from etlkit.storage.staging import Staging

if TYPE_CHECKING:
    import polars as pl

    from etlkit.checks.guard import OutputGuard
    from etlkit.engine.plan import Plan
    from etlkit.model.nodes import Context
    from etlkit.storage.partitions import PartitionWriter

#: Pipeline classes this worker process imported, by reference (importing is costly); the
#: reference holds the file's content hash, so a file edited on a long-lived cluster is
#: imported again.
_DEFINITIONS: dict[PipelineRef, Any] = {}
#: The most characters of log lines a task sends back (the lines past it are counted).
LOG_LIMIT = 64_000
#: How often (seconds) a task asks the scheduler whether the run was cancelled.
CANCEL_POLL = 1.0


class _Cancelled:
    """Whether the run is being cancelled: the coordinator sets a distributed `Event`; a
    task asks at chunk boundaries, at most once per `CANCEL_POLL` (each ask is a round trip
    to the scheduler)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.asked = 0.0  # a task started after the run's cancellation stops at once
        self.cancelled = False

    def __call__(self) -> bool:
        if not self.cancelled and time.monotonic() - self.asked >= CANCEL_POLL:
            from distributed import Event

            self.asked = time.monotonic()
            self.cancelled = bool(Event(self.name).is_set())
        return self.cancelled


class _Failed(Exception):
    """A failure inside a chain, tagged with the node it happened in."""

    def __init__(self, node: str, error: BaseException) -> None:
        super().__init__(node)
        self.node = node
        self.error = error


def worker_address() -> str:
    """This worker's address ("" outside a worker)."""
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:
        return ""


def check_importable(spec_text: str) -> str | None:
    """Import the run's pipeline class here (run on every worker before anything runs):
    None, or why it cannot be imported."""
    try:
        _definition(WorkSpec.from_json(spec_text).pipeline, worker_address())
    except EtlkitError as exc:
        return str(exc)
    return None


def _definition(ref: PipelineRef, where: str) -> Any:
    found = _DEFINITIONS.get(ref)
    if found is None:
        edited = any(r.module == ref.module and r.digest != ref.digest for r in _DEFINITIONS)
        found = _DEFINITIONS[ref] = load_definition(ref, where, again=edited)
    return found


@dataclasses.dataclass
class _Run:
    """A run as a task sees it: the plan rebuilt from the spec, its context and staging."""

    plan: Plan
    ctx: Context
    staging: Staging
    database: RunDatabase
    cancelled: _Cancelled
    where: str
    schemas: dict[str, pa.Schema]

    @classmethod
    def open(cls, spec: WorkSpec, sealed: Sealed, schemas: Mapping[str, str]) -> _Run:
        where = worker_address()
        graph = _definition(spec.pipeline, where).graph()
        plan = adjusted(build_plan(graph, _options_from(spec.options)), spec.layout)
        cancelled = _Cancelled(spec.cancel_event)
        ctx = dataclasses.replace(context_from(spec.context), cancelled=cancelled)
        staging = Staging(spec.staging_root, storage_options=staging_options(sealed) or None)
        database = RunDatabase(staging, plan.pipeline, ctx.run_id, plan.options, cancelled)
        known = {n: read_schema(s) for n, s in schemas.items()}
        return cls(plan, ctx, staging, database, cancelled, where, known)

    def step(self, name: str) -> StepContext:
        node = self.plan.graph.nodes[name]
        return StepContext(
            plan=self.plan,
            name=name,
            node=node,
            ctx=self.ctx.for_node(name),
            stats=NodeStats(name, node.kind),
            staging=self.staging,
            database=self.database,
            cancelled=self.cancelled,
            progress=_nothing,
            output_schemas=self.schemas,
        )


def _nothing() -> None:
    """Progress is reported by the coordinator, per partition."""


def run_partition(
    spec_text: str,
    sealed: Sealed,
    segment: list[str],
    partition: str | None,
    partition_id: str,
    copies: list[str],
) -> dict[str, Any]:
    """Run one partition of a segment (see the module docstring) with the run's connections
    (`sealed`) current; `partition`: the source's `Partition` as JSON, None to read the
    source whole; `copies`: the nodes writing parts (`segments.copies`)."""
    with current(sealed) as connections, _collected(spec_text) as logs:
        answer = _run_partition(spec_text, sealed, segment, partition, partition_id, copies)
    return _masked(answer, logs.collected(), connections)


def _run_partition(
    spec_text: str,
    sealed: Sealed,
    segment: list[str],
    partition: str | None,
    partition_id: str,
    copies: list[str],
) -> dict[str, Any]:
    started = time.perf_counter()
    token = uuid.uuid4().hex  # this attempt, for nodes that stage nothing
    run = _Run.open(WorkSpec.from_json(spec_text), sealed, {})
    done = _finished_already(run, segment, copies, partition_id)
    if done is not None:
        run.database.close()
        return {"partition": partition_id, **done}
    steps = {name: run.step(name) for name in segment}
    writers: dict[str, PartitionWriter] = {}
    guards: dict[str, OutputGuard] = {}
    outputs: dict[str, Output] = {}
    try:
        try:
            pieces: Iterable[pa.RecordBatch] = ()
            for name in segment:
                step = steps[name]
                items = produce(step, pieces) if name != segment[0] else _read(step, partition)
                if run.plan.options.validate and step.node.output_model is not None:
                    guards[name] = output_guard(step)
                if name in copies:
                    writers[name] = run.staging.partition_writer(
                        run.plan.pipeline, run.ctx.run_id, name, partition_id
                    )
                chained = _chained(step, items, writers.get(name), guards.get(name), outputs)
                pieces = _tagged(run, name, chained)
            for _ in pieces:
                pass
            for name in segment:
                if name in guards:
                    guards[name].finish()
            seconds = time.perf_counter() - started
            nodes = _finish(run, steps, writers, outputs, token, seconds)
        except _Failed:
            raise
        except (Exception, PanicException) as exc:  # a writer or guard of no one node
            raise _Failed(segment[0], exc) from exc
        return {"partition": partition_id, "worker": run.where, "seconds": seconds, "nodes": nodes}
    except _Failed as failed:
        for writer in writers.values():
            writer.abort()  # an attempt that finished keeps its parts: its finish lists them
        for guard in guards.values():
            guard.abort()
        return _failure(run, failed.node, failed.error, partition_id)
    finally:
        run.database.close()


def _finished_already(
    run: _Run, segment: list[str], copies: list[str], partition_id: str
) -> dict[str, Any] | None:
    """What an attempt that finished the partition for every node writing parts returned,
    rebuilt from its finishes; None: run it.

    Dask runs a task again when the worker holding its result dies before the coordinator
    gathered it (a finished partition's result is lost with the worker, never its parts).
    Running it again would finish a second attempt, replacing the first's finish while the
    coordinator counts the first's statistics; the first one's answer is given instead.
    """
    found = []
    for name in copies:
        manifest = finished(run.staging, run.plan.pipeline, run.ctx.run_id, name, partition_id)
        if manifest is None:
            return None
        found.append(manifest)
    return resumed(segment, found)


def _finish(
    run: _Run,
    steps: Mapping[str, StepContext],
    writers: Mapping[str, PartitionWriter],
    outputs: Mapping[str, Output],
    token: str,
    seconds: float,
) -> dict[str, dict[str, Any]]:
    """Finish the partition for every node writing parts; the statistics of every node.

    Each finish records the whole segment's statistics: a later attempt of the run that
    reuses the partition reports every node of it from any one finish.
    """
    nodes: dict[str, dict[str, Any]] = {}
    for name, step in steps.items():
        writer = writers.get(name)
        attempt = writer.attempt if writer is not None else token
        nodes[name] = _facts(step.stats, outputs.get(name), attempt)
    extra = {"segment": nodes, "worker": run.where, "seconds": seconds}
    for name, writer in writers.items():
        output = outputs.get(name)
        schema = output.first_schema if output is not None else None
        finish = writer.finish(empty_schema=schema, extra=extra)
        nodes[name] = {**nodes[name], "bytes_staged": finish.bytes}
    return nodes


def _read(step: StepContext, partition: str | None) -> Iterator[pa.RecordBatch]:
    """A source's batches: one partition of it, or (None) all of it, counted as `read_source`
    counts them."""
    node, ctx, stats = step.node, step.ctx, step.stats
    assert isinstance(node, Source)
    if partition is None:
        seen = step.options.cursor_seen.get(step.name, frozenset())
        yield from read_source(node, ctx, stats, seen)
        return
    yield from read_partition(node, ctx, stats, Partition.from_json(partition))


def _tagged(run: _Run, name: str, pieces: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A node's pieces, its code run (each step of its generator) with what it logs tagged
    with the node, as a local run's node thread tags it: the chain runs in one thread."""
    while True:
        with runlog.tagged(run.plan.pipeline, run.ctx.run_id, name):
            piece = next(pieces, None)
        if piece is None:
            return
        yield piece


def _chained(
    step: StepContext,
    items: Iterable[pa.RecordBatch | pl.DataFrame],
    writer: PartitionWriter | None,
    guard: OutputGuard | None,
    outputs: dict[str, Output],
) -> Iterator[pa.RecordBatch]:
    """The node's items guarded, sliced and staged by `stage_chunks`, one at a time, its
    pieces yielded to the next node of the chain; a failure is tagged with the node."""
    pieces: list[pa.RecordBatch] = []
    try:
        for item in items:
            output = stage_chunks(step, (item,), writer, guard, (pieces.append,))
            kept = outputs.setdefault(step.name, output)
            if kept.first_schema is None:
                kept.first_schema = output.first_schema
            if kept.produced is None:
                kept.produced = output.produced
            yield from pieces
            pieces.clear()
    except _Failed:
        raise
    except (Exception, PanicException) as exc:
        raise _Failed(step.name, exc) from exc


def _facts(stats: NodeStats, output: Output | None, attempt: str) -> dict[str, Any]:
    """A node's statistics in one task, as JSON."""
    schema = output.first_schema if output is not None else None
    return {
        "rows_in": stats.rows_in,
        "chunks_in": stats.chunks_in,
        "rows_out": stats.rows_out,
        "chunks_out": stats.chunks_out,
        "invalid_rows": stats.invalid_rows,
        "bytes_staged": stats.bytes_staged,
        "cursor": stats.cursor,
        "cursor_seen": sorted(stats.cursor_seen),
        "attempt": attempt,
        "schema": write_schema(schema) if schema is not None else None,
        "produced": list(output.produced) if output is not None and output.produced else None,
    }


def run_node(spec_text: str, sealed: Sealed, name: str, schemas: dict[str, str]) -> dict[str, Any]:
    """Run one node whole over its inputs' committed staging and commit its output (a sink
    writes), with the run's connections (`sealed`) current; `schemas`: the columns of the
    outputs committed so far (IPC, base64)."""
    context = WorkSpec.from_json(spec_text).context
    with (
        current(sealed) as connections,
        _collected(spec_text) as logs,
        runlog.tagged(context["pipeline"], context["run_id"], name),  # as a node's thread
    ):
        answer = _run_node(spec_text, sealed, name, schemas)
    return _masked(answer, logs.collected(), connections)


def _collected(spec_text: str) -> Any:
    """Collect what the task's nodes log in this thread (`runlog.collect`), up to
    `LOG_LIMIT` characters: it goes back with the answer, into the run's log."""
    return runlog.collect(WorkSpec.from_json(spec_text).context["run_id"], limit=LOG_LIMIT)


def _masked(
    answer: dict[str, Any], logs: list[dict[str, Any]], connections: Mapping[str, Any]
) -> dict[str, Any]:
    """A task's answer with its log lines, the connections' secrets masked out of them and
    out of its failure's message."""
    failed = answer.get("failed")
    if failed is not None:
        failed["message"] = masked(str(failed["message"]), connections)
    for line in logs:
        for key in ("message", "exception"):
            if line.get(key):
                line[key] = masked(str(line[key]), connections)
    answer["logs"] = logs
    return answer


def _run_node(spec_text: str, sealed: Sealed, name: str, schemas: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    run = _Run.open(WorkSpec.from_json(spec_text), sealed, schemas)
    step = run.step(name)
    node, stats = step.node, step.stats
    guard: OutputGuard | None = None
    writer = None
    try:
        if isinstance(node, Sink):
            stats.write = write_sink(step, node, received(step, None))
            stats.rows_out = stats.write.rows
        elif isinstance(node, Task):
            run_task(node, step.ctx)
        elif not (
            isinstance(node, Source) and name in run.plan.refers_in_place and refer(step, node)
        ):
            if run.plan.options.validate and node.output_model is not None:
                guard = output_guard(step)
            referenced, writer = open_output(step, guard)
            output = stage_chunks(step, produce(step, None), writer, guard)
            close_output(step, output, writer, guard, referenced)
            extra = cursor_extra(node, step.ctx, stats)
            commit_output(step, output, writer, guard, referenced, extra)
            if isinstance(node, Sql | Lazy):
                stats.rows_in = staged_rows(step, run.plan.graph.inputs[name])
    except (Exception, PanicException) as exc:
        if writer is not None:
            writer.abort()
        if guard is not None:
            guard.abort()
        return _failure(run, name, exc, "")
    finally:
        run.database.close()
    facts = _facts(stats, None, "")
    schema = run.schemas.get(name)
    facts["schema"] = write_schema(schema) if schema is not None else None
    written = stats.write
    if written is not None:
        facts["write"] = {"rows": written.rows, "uri": written.uri, "extra": _plain(written.extra)}
    seconds = time.perf_counter() - started
    return {"partition": "", "worker": run.where, "seconds": seconds, "nodes": {name: facts}}


def _failure(run: _Run, node: str, exc: BaseException, partition: str) -> dict[str, Any]:
    """A task's failure, described for the coordinator (see `executor.raise_failure`)."""
    return {
        "failed": {
            "node": node,
            "partition": partition,
            "worker": run.where,
            "type": type(exc).__name__,
            "etlkit": isinstance(exc, EtlkitError),
            "validation": type(exc).__name__ == "DataValidationError",
            "cancelled": isinstance(exc, RunCancelledError),
            "message": str(exc),
        }
    }


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    """A sink's free-form facts, as JSON can carry them."""
    result: dict[str, Any] = json.loads(json.dumps(dict(value), default=str))
    return result
