"""One run of a pipeline: a worker thread per node, bounded channels, staging, cancellation.

Streaming nodes (sources, transforms, sinks) pass `pyarrow.RecordBatch` chunks through bounded
queues, so memory is bounded by channel depth times chunk size, whatever the input size. Blocking
nodes (`Sql`, `Lazy`) wait for their inputs' staged outputs to commit and run DuckDB or polars'
streaming engine over those Parquet files, out of core, streaming their result out in chunks.

Every chunk leaving a node is validated against the node's output model, appended to the node's
staged Parquet and sent to its streaming consumers. The first failure cancels the run: every
worker stops at its next chunk boundary and uncommitted staging is discarded.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
import pyarrow as pa

from etlkit.errors import DataValidationError, EtlkitError, NodeError, RunCancelledError
from etlkit.nodes import Context, Lazy, Node, Sink, Source, Sql, Transform, WriteResult
from etlkit.schema import arrow_schema, polars_schema
from etlkit.staging import NodeWriter, Staging

if TYPE_CHECKING:
    from etlkit.graph import Graph
    from etlkit.validation import ChunkValidator

logger = logging.getLogger(__name__)

NodeState = Literal["pending", "running", "done", "failed", "cancelled", "reused"]
RunState = Literal["running", "success", "failed", "cancelled"]
EventKind = Literal["run_started", "node_started", "node_progress", "node_finished", "run_finished"]

_END: Any = object()
_POLL_SECONDS = 0.05


def new_run_id(now: datetime | None = None) -> str:
    """A unique, sortable, path-safe run id: `20250301T020000Z-7f3a2c`."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunOptions:
    """How a run executes: chunking, channel depth, validation, DuckDB resources, resume."""

    chunk_rows: int = 131_072
    chunk_bytes: int = 64 * 1024 * 1024
    channel_depth: int = 4
    validate: bool = True
    duckdb_memory_limit: str = "2GB"
    duckdb_threads: int = 0
    duckdb_temp_directory: str = ""
    reuse: frozenset[str] = frozenset()


@dataclass
class NodeStats:
    """Live facts about one node in a run (updated by its worker only)."""

    name: str
    kind: str
    state: NodeState = "pending"
    rows_in: int = 0
    chunks_in: int = 0
    rows_out: int = 0
    chunks_out: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    write: WriteResult | None = None

    @property
    def seconds(self) -> float:
        """Time spent so far (or in all, once finished)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.perf_counter()) - self.started


@dataclass
class RunResult:
    """The outcome of a run; `error` is the first failure, which cancelled the rest."""

    pipeline: str
    run_id: str
    state: RunState
    nodes: dict[str, NodeStats]
    started: float
    finished: float | None = None
    error: EtlkitError | None = None
    staging_root: str = ""

    @property
    def seconds(self) -> float:
        """Wall time of the run."""
        return (self.finished or time.perf_counter()) - self.started

    def raise_for_error(self) -> None:
        """Raise the run's error, if it failed."""
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class Event:
    """A progress event; `result` is the live run (read it, never change it)."""

    kind: EventKind
    result: RunResult
    node: str = ""


Listener = Callable[[Event], None]


class _Inbox:
    """The bounded channel into one streaming node, fed by one or more producers."""

    def __init__(self, producers: int, depth: int, cancel: threading.Event) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.open = producers
        self.cancel = cancel

    def put(self, item: Any) -> None:
        while True:
            try:
                self.queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                if self.cancel.is_set():
                    raise RunCancelledError("run cancelled") from None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while self.open:
            try:
                item = self.queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self.cancel.is_set():
                    raise RunCancelledError("run cancelled") from None
                continue
            if item is _END:
                self.open -= 1
            else:
                if self.cancel.is_set():
                    raise RunCancelledError("run cancelled")
                yield item


def _split(batch: pa.RecordBatch, rows: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """Slice a batch (without copying) so no piece exceeds `rows` rows or about `max_bytes`."""
    n = batch.num_rows
    if n == 0:
        return
    step = rows
    if n > 1 and batch.nbytes > max_bytes:
        step = min(step, max(1, n * max_bytes // batch.nbytes))
    if n <= step:
        yield batch
        return
    for offset in range(0, n, step):
        yield batch.slice(offset, step)


def _to_batches(item: pa.RecordBatch | pl.DataFrame) -> list[pa.RecordBatch]:
    if isinstance(item, pa.RecordBatch):
        return [item]
    batches: list[pa.RecordBatch] = item.to_arrow().to_batches()
    return batches


class _Run:
    def __init__(
        self,
        graph: Graph,
        ctx: Context,
        staging: Staging,
        options: RunOptions,
        listeners: Sequence[Listener],
    ) -> None:
        self.graph = graph
        self.ctx = ctx
        self.staging = staging
        self.options = options
        self.listeners = list(listeners)
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.committed = {name: threading.Event() for name in graph.order}
        self.inboxes = {
            name: _Inbox(len(graph.inputs[name]), options.channel_depth, self.cancel)
            for name, node in graph.nodes.items()
            if node.streaming
        }
        self.result = RunResult(
            pipeline=graph.pipeline,
            run_id=ctx.run_id,
            state="running",
            nodes={n: NodeStats(n, node.kind) for n, node in graph.nodes.items()},
            started=time.perf_counter(),
            staging_root=staging.root_url,
        )

    # -- events and failure ------------------------------------------------------------------

    def emit(self, kind: EventKind, node: str = "") -> None:
        event = Event(kind, self.result, node)
        for listener in self.listeners:
            listener(event)

    def fail(self, exc: EtlkitError) -> None:
        with self.lock:
            if self.result.error is None:
                self.result.error = exc
        self.cancel.set()

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> RunResult:
        logger.info("run %s of %s started", self.ctx.run_id, self.graph.pipeline)
        self.emit("run_started")
        threads = [
            threading.Thread(target=self.work, args=(name,), name=f"etlkit-{name}", daemon=True)
            for name in self.graph.order
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)
        except KeyboardInterrupt:
            self.fail(RunCancelledError(f"Run {self.ctx.run_id} interrupted (Ctrl-C)"))
            for thread in threads:
                thread.join()
        result = self.result
        result.finished = time.perf_counter()
        if result.error is None:
            result.state = "success"
        elif isinstance(result.error, RunCancelledError):
            result.state = "cancelled"
        else:
            result.state = "failed"
        logger.info(
            "run %s of %s %s in %.2fs",
            self.ctx.run_id,
            self.graph.pipeline,
            result.state,
            result.seconds,
        )
        self.emit("run_finished")
        return result

    def work(self, name: str) -> None:
        node = self.graph.nodes[name]
        stats = self.result.nodes[name]
        ctx = self.ctx.for_node(name)
        writer: NodeWriter | None = None
        try:
            self.wait_for_inputs(name)
            stats.state = "running"
            stats.started = time.perf_counter()
            self.emit("node_started", name)
            if name in self.options.reuse:
                self.replay(name, stats)
                stats.state = "reused"
            elif isinstance(node, Sink):
                stats.write = node.write(self.sink_batches(name, stats), ctx)
                stats.state = "done"
            else:
                if self.graph.needs_staging(name):
                    writer = self.staging.writer(self.graph.pipeline, self.ctx.run_id, name)
                self.stream(name, node, ctx, stats, writer)
                stats.state = "done"
            stats.finished = time.perf_counter()
            logger.info(
                "node %s done: %d rows in, %d rows out, %d chunks, %.2fs",
                name,
                stats.rows_in,
                stats.rows_out,
                stats.chunks_out,
                stats.seconds,
            )
        except RunCancelledError:
            stats.state = "cancelled"
        except DataValidationError as exc:
            self.node_failed(stats, exc)
        except EtlkitError as exc:
            self.node_failed(stats, self.wrap(name, stats, exc, str(exc)))
        except Exception as exc:  # the node boundary: user and library code of any kind
            self.node_failed(stats, self.wrap(name, stats, exc, f"{type(exc).__name__}: {exc}"))
        finally:
            if writer is not None and stats.state != "done":
                writer.abort()
            if stats.finished is None:
                stats.finished = time.perf_counter()
            self.emit("node_finished", name)

    def node_failed(self, stats: NodeStats, exc: EtlkitError) -> None:
        stats.state = "failed"
        stats.error = str(exc)
        self.fail(exc)

    def wrap(self, name: str, stats: NodeStats, exc: Exception, cause: str) -> NodeError:
        chunk = stats.chunks_in if self.graph.nodes[name].streaming else stats.chunks_out + 1
        where = f" on chunk {chunk}" if chunk else ""
        error = NodeError(
            f"Node '{name}' in pipeline '{self.graph.pipeline}' (run {self.ctx.run_id}) "
            f"failed{where}: {cause}",
            pipeline=self.graph.pipeline,
            node=name,
            run_id=self.ctx.run_id,
            chunk=chunk or None,
        )
        error.__cause__ = exc
        return error

    def wait_for_inputs(self, name: str) -> None:
        if self.graph.nodes[name].streaming and name not in self.options.reuse:
            return
        for upstream in self.graph.inputs[name]:
            while not self.committed[upstream].wait(_POLL_SECONDS):
                if self.cancel.is_set():
                    raise RunCancelledError("run cancelled")

    def finish(self, name: str) -> None:
        self.committed[name].set()
        for consumer in self.graph.consumers[name]:
            if consumer in self.inboxes:
                self.inboxes[consumer].put(_END)

    # -- producing ---------------------------------------------------------------------------

    def stream(
        self, name: str, node: Node, ctx: Context, stats: NodeStats, writer: NodeWriter | None
    ) -> None:
        validator = self.validator(node)
        consumers = [self.inboxes[c] for c in self.graph.consumers[name] if c in self.inboxes]
        first_schema: pa.Schema | None = None
        for item in self.produce(name, node, ctx, stats):
            if self.cancel.is_set():
                raise RunCancelledError("run cancelled")
            batches = self.check(name, node, item, validator, stats)
            for batch in batches:
                if first_schema is None:
                    first_schema = batch.schema
                for piece in _split(batch, self.options.chunk_rows, self.options.chunk_bytes):
                    if writer is not None:
                        writer.append(piece)
                    for inbox in consumers:
                        inbox.put(piece)
                    stats.rows_out += piece.num_rows
                    stats.chunks_out += 1
                    self.emit("node_progress", name)
        self.check_row_count(name, node, stats)
        if writer is not None:
            model = node.output_model
            writer.commit(
                empty_schema=first_schema or (arrow_schema(model) if model else None),
                extra={"kind": node.kind, "chunks": stats.chunks_out},
            )
        self.finish(name)

    def check_row_count(self, name: str, node: Node, stats: NodeStats) -> None:
        rows = stats.rows_out
        low, high = node.min_rows, node.max_rows
        if (low is None or rows >= low) and (high is None or rows <= high):
            return
        wanted = f"at least {low}" if low is not None and rows < low else f"at most {high}"
        hint = " (no data found: is the input empty or the path wrong?)" if rows == 0 else ""
        raise DataValidationError(
            f"Output of node '{name}' in pipeline '{self.graph.pipeline}' "
            f"(run {self.ctx.run_id}) has {rows} rows; expected {wanted}{hint}"
        )

    def validator(self, node: Node) -> ChunkValidator | None:
        if not self.options.validate or node.output_model is None:
            return None
        from etlkit.validation import ChunkValidator

        return ChunkValidator(node.output_model)

    def check(
        self,
        name: str,
        node: Node,
        item: pa.RecordBatch | pl.DataFrame,
        validator: ChunkValidator | None,
        stats: NodeStats,
    ) -> Iterable[pa.RecordBatch]:
        if validator is None:
            return _to_batches(item)
        frame = item if isinstance(item, pl.DataFrame) else pl.DataFrame(pl.from_arrow(item))
        report = validator.check(frame)
        if not report.ok:
            from etlkit.validation import validation_error

            raise validation_error(
                report.failures,
                pipeline=self.graph.pipeline,
                node=name,
                run_id=self.ctx.run_id,
                chunk=stats.chunks_in if node.streaming else stats.chunks_out + 1,
                model_name=node.output_model.__name__ if node.output_model else "untyped",
            )
        if isinstance(item, pa.RecordBatch) and report.data is frame:
            return (item,)
        return _to_batches(report.data)

    def produce(
        self, name: str, node: Node, ctx: Context, stats: NodeStats
    ) -> Iterator[pa.RecordBatch | pl.DataFrame]:
        if isinstance(node, Source):
            return self.read_source(node, ctx, stats)
        if isinstance(node, Transform):
            return self.transform(name, node, ctx, stats)
        if isinstance(node, Sql):
            return self.run_sql(name, node, ctx)
        if isinstance(node, Lazy):
            return self.run_lazy(name, node, ctx)
        raise TypeError(f"node '{name}' has an unknown role {type(node).__name__}")

    def read_source(self, node: Source, ctx: Context, stats: NodeStats) -> Iterator[pa.RecordBatch]:
        reader = node.read(ctx)
        try:
            for batch in reader:
                if not isinstance(batch, pa.RecordBatch):
                    raise TypeError(
                        f"{type(node).__name__}.read yielded {type(batch).__name__}; "
                        "sources yield pyarrow.RecordBatch"
                    )
                stats.rows_in += batch.num_rows
                stats.chunks_in += 1
                yield batch
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()

    def transform(
        self, name: str, node: Transform[Any, Any], ctx: Context, stats: NodeStats
    ) -> Iterator[pl.DataFrame]:
        for batch in self.inboxes[name]:
            stats.rows_in += batch.num_rows
            stats.chunks_in += 1
            out = node.process(pl.DataFrame(pl.from_arrow(batch)), ctx)
            if not isinstance(out, pl.DataFrame):
                raise TypeError(
                    f"{type(node).__name__}.process returned {type(out).__name__}; "
                    "transforms return a polars DataFrame"
                )
            if out.height:
                yield out
        if stats.chunks_in == 0:
            empty = self.empty_input(name, node)
            if empty is not None:
                yield node.process(empty, ctx).clear()

    def empty_input(self, name: str, node: Node) -> pl.DataFrame | None:
        """An empty frame shaped like the node's input, so an empty run still has a schema."""
        model = node.input_model
        if model is None:
            upstream = [self.graph.nodes[i].output_model for i in self.graph.inputs[name]]
            model = upstream[0] if upstream else None
        return pl.DataFrame(schema=polars_schema(model)) if model is not None else None

    def input_files(self, name: str) -> dict[str, list[str]]:
        files = {}
        for upstream in self.graph.inputs[name]:
            files[upstream] = self.staging.files(self.graph.pipeline, self.ctx.run_id, upstream)
        return files

    def run_sql(self, name: str, node: Sql, ctx: Context) -> Iterator[pa.RecordBatch]:
        import duckdb

        options = self.options
        config: dict[str, Any] = {"memory_limit": options.duckdb_memory_limit}
        if options.duckdb_threads:
            config["threads"] = options.duckdb_threads
        if options.duckdb_temp_directory:
            config["temp_directory"] = options.duckdb_temp_directory
        con = duckdb.connect(":memory:", config=config)
        try:
            if not self.staging.local:
                con.register_filesystem(self.staging.fs)
            for upstream, files in self.input_files(name).items():
                if not files:
                    raise NodeError(
                        f"Input '{upstream}' of SQL node '{name}' produced no rows and declares "
                        "no schema, so its columns are unknown; give it an output model",
                        pipeline=self.graph.pipeline,
                        node=name,
                        run_id=self.ctx.run_id,
                    )
                listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(f'CREATE VIEW "{upstream}" AS SELECT * FROM read_parquet([{listed}])')
            sql = ctx.render(node.query, {u: f'"{u}"' for u in self.graph.inputs[name]})
            yield from con.sql(sql).to_arrow_reader(options.chunk_rows)
        finally:
            con.close()

    def run_lazy(self, name: str, node: Lazy[Any], ctx: Context) -> Iterator[pl.DataFrame]:
        frames = []
        for upstream, files in self.input_files(name).items():
            if files:
                frames.append(pl.scan_parquet(files))
            else:
                model = self.graph.nodes[upstream].output_model
                frames.append(pl.LazyFrame(schema=polars_schema(model) if model else None))
        query = node.query(ctx, *frames)
        if not isinstance(query, pl.LazyFrame):
            raise TypeError(
                f"{type(node).__name__}.query returned {type(query).__name__}; "
                "lazy nodes return a polars LazyFrame"
            )
        yield from query.collect_batches(chunk_size=self.options.chunk_rows, engine="streaming")

    def replay(self, name: str, stats: NodeStats) -> None:
        """Resume: send a committed output of this run downstream again, without recomputing."""
        consumers = [self.inboxes[c] for c in self.graph.consumers[name] if c in self.inboxes]
        if consumers:
            for batch in self.staging.iter_batches(
                self.graph.pipeline, self.ctx.run_id, name, batch_size=self.options.chunk_rows
            ):
                for inbox in consumers:
                    inbox.put(batch)
                stats.rows_out += batch.num_rows
                stats.chunks_out += 1
        self.finish(name)

    def sink_batches(self, name: str, stats: NodeStats) -> Iterator[pa.RecordBatch]:
        for batch in self.inboxes[name]:
            stats.rows_in += batch.num_rows
            stats.chunks_in += 1
            self.emit("node_progress", name)
            yield batch


def execute(
    graph: Graph,
    ctx: Context,
    *,
    staging: Staging,
    options: RunOptions | None = None,
    listeners: Sequence[Listener] = (),
) -> RunResult:
    """Run every node of `graph` once; return the result (check `.error`, or `raise_for_error`).

    Nodes named in `options.reuse` are not run: their committed staged output of this run id is
    reused (read back only for streaming consumers).
    """
    run = _Run(graph, ctx, staging, options or RunOptions(), listeners)
    return run.execute()
