"""One run of a pipeline: worker threads, bounded channels, staging, cancellation.

Each node runs on a worker thread it gets when it is ready (its first chunk arrived, or its
inputs committed); idle threads are reused, so a long chain of quick nodes needs few threads.
Streaming nodes (sources, transforms, sinks) pass `pyarrow.RecordBatch` chunks through bounded
queues, so memory is bounded by channel depth times chunk size, whatever the input size. Blocking
nodes (`Sql`, `Lazy`) wait for their inputs' staged outputs to commit and run DuckDB or polars'
streaming engine over those Parquet files, out of core, streaming their result out in chunks;
a `Sql` node over one streamed input scans that input's chunks as they come instead (DuckDB
consumes them as an Arrow stream while they are staged), unless its query reads it twice.

Every chunk leaving a node is validated against the node's output model, appended to the node's
staged Parquet and sent to its streaming consumers. A Parquet source whose output is its files
as they are is staged as a reference to them instead of a copy (validated in one pass, or from
footer statistics, when nothing streams from it). The first failure cancels the run: every
worker stops at its next chunk boundary and uncommitted staging is discarded.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from polars.exceptions import PanicException

from etlkit.checks.guard import OutputGuard
from etlkit.engine import runlog
from etlkit.errors import (
    ConfigError,
    DataValidationError,
    EtlkitError,
    NodeError,
    NodeTimeoutError,
    RunCancelledError,
    RunTimeoutError,
    StagingError,
    quoted,
)
from etlkit.model.nodes import (
    Context,
    Lazy,
    Node,
    Origin,
    Policy,
    Sensor,
    Sink,
    Source,
    SourceFiles,
    Sql,
    Task,
    Transform,
    WriteResult,
    bind_sql,
)
from etlkit.model.schema import (
    Model,
    arrow_schema,
    arrow_schema_in,
    cast_array,
    has_regex,
    polars_schema,
    polars_schema_in,
    to_polars,
    unique_sets,
    unique_sets_in,
)
from etlkit.storage.parquet import PARQUET
from etlkit.storage.staging import NodeWriter, Staging, conform_chunk
from etlkit.storage.store import NodeState as NodeState
from etlkit.storage.store import RunState as RunState
from etlkit.storage.store import new_run_id as new_run_id

if TYPE_CHECKING:
    from etlkit.checks.validation import ChunkValidator, KeyCheck
    from etlkit.model.graph import Graph
    from etlkit.storage.formats import FileFormat

logger = logging.getLogger(__name__)

EventKind = Literal["run_started", "node_started", "node_progress", "node_finished", "run_finished"]

_END: Any = object()


@dataclass(frozen=True)
class RunOptions:
    """How a run executes: chunking, channel depth, validation, DuckDB resources, resume.

    `reuse` names nodes whose committed output of this run id is reused (read back only for
    streaming consumers); `skip` names nodes not run at all (sinks that already wrote).
    """

    chunk_rows: int = 131_072
    chunk_bytes: int = 64 * 1024 * 1024
    channel_depth: int = 4
    validate: bool = True
    on_invalid: Policy = "fail"
    max_invalid_fraction: float | None = None
    duckdb_memory_limit: str = "2GB"
    duckdb_threads: int = 0
    duckdb_temp_directory: str = ""
    reuse: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()
    run_timeout: float | None = None
    cancel_grace: float = 10.0
    reference_sources: bool = True
    pools: Mapping[str, int] = dataclasses.field(default_factory=dict)
    slots: SlotProvider | None = None
    max_active_nodes: int = 0
    max_workers: int = 0  # nodes running at once (blocked ones do not count); 0: automatic
    # per incremental source, the hashes of the rows loaded at its stored cursor value
    cursor_seen: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)


class SlotProvider(Protocol):
    """Leases of pool slots shared across runs and processes (the run store implements it)."""

    def acquire_slot(self, pool: str, slots: int, run_id: str, node: str, pid: int) -> bool: ...

    def release_slot(self, pool: str, run_id: str, node: str) -> bool: ...


class _LocalSlots:
    """Pool slots of one run only: used when a run has no store, so that two runs in one
    process never count each other's slots (runs share slots through their store)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, set[tuple[str, str]]] = {}

    def acquire_slot(self, pool: str, slots: int, run_id: str, node: str, pid: int) -> bool:
        with self.lock:
            holders = self.held.setdefault(pool, set())
            if (run_id, node) in holders or len(holders) < slots:
                holders.add((run_id, node))
                return True
            return False

    def release_slot(self, pool: str, run_id: str, node: str) -> bool:
        with self.lock:
            holders = self.held.get(pool, set())
            found = (run_id, node) in holders
            holders.discard((run_id, node))
            return found


ALL_NODES_POOL: Final = "__all_nodes__"


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
    invalid_rows: int = 0
    bytes_staged: int = 0
    cursor: str | None = None  # an incremental source's largest cursor value, as text
    cursor_value: Any = None
    cursor_seen: set[str] = dataclasses.field(default_factory=set)  # rows read at that value
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    write: WriteResult | None = None
    expected_rows: int | None = None  # a source's estimate of its input (`Source.estimate`)

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
    """The bounded channel into one streaming node, fed by one or more producers.

    It holds up to `depth` chunks per producer (the bound is per edge), so producers of a wide
    fan-in do not queue up behind each other's chunks.

    The consumer is started (`start`) when the channel fills, or when every producer has ended:
    a small output reaches its consumer whole, which then runs on the thread its last producer
    frees (no hand-over between threads per node), while a large one streams with the consumer
    running beside its producers from the first full channel on.

    A deque under a lock, with conditions made only when a thread must wait: most channels of
    a graph of quick nodes never block, and a `queue.Queue` (three conditions, a lock and their
    bound methods) per edge was most of a run's set-up and of its garbage collection.
    """

    def __init__(
        self,
        producers: int,
        depth: int,
        cancel: threading.Event,
        start: Callable[[bool], None] = lambda last: None,
        workers: _Workers | None = None,
    ) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.limit = depth * max(1, producers)
        self.producers = producers
        self.open = producers  # producers the consumer has not seen end yet
        self.cancel = cancel
        self.workers = workers or _Workers()  # a run's pool; without one, blocking costs nothing
        self.start = start  # gives the consumer a worker; True: from a producer about to return
        self.started = False
        self.lock = threading.Lock()
        # made by the first thread that must wait, on `lock`: an item arrived (the consumer
        # waits for one), an item was taken (producers wait for room)
        self.arrived: threading.Condition | None = None
        self.taken: threading.Condition | None = None
        self.ended = 0  # producers that put their end
        self.foreign = False  # read by threads not the pool's, for a running node (DuckDB's)

    def _conditions(self) -> tuple[threading.Condition, threading.Condition]:
        """Under the lock: (arrived, taken), made on first use."""
        if self.arrived is None or self.taken is None:
            self.arrived = threading.Condition(self.lock)
            self.taken = threading.Condition(self.lock)
        return self.arrived, self.taken

    def put(self, item: Any) -> None:
        with self.lock:
            full = len(self.items) >= self.limit
            if not full:
                self.items.append(item)
                if self.arrived is not None:
                    self.arrived.notify()
        if full:
            self.begin(last=False)  # the consumer must drain the channel: it starts now
            with self.workers.blocked(), self.lock:
                arrived, taken = self._conditions()
                while len(self.items) >= self.limit:
                    if self.cancel.is_set():
                        raise RunCancelledError("run cancelled")
                    taken.wait()  # cancellation wakes it (`wake`)
                self.items.append(item)
                arrived.notify()
        if item is _END:
            with self.lock:
                self.ended += 1
                last = self.ended >= self.producers
            if last:
                self.begin(last=True)

    def begin(self, *, last: bool) -> None:
        if not self.started:
            self.started = True
            self.start(last)

    def wake(self) -> None:
        """Wake the threads waiting on the channel (the run is being cancelled)."""
        with self.lock:
            if self.arrived is not None and self.taken is not None:
                self.arrived.notify_all()
                self.taken.notify_all()

    def _take(self) -> Any:
        with self.lock:
            if self.items:
                item = self.items.popleft()
                if self.taken is not None:
                    self.taken.notify()  # one item out: room for one waiting producer
                return item
        with self.workers.blocked(force=self.foreign), self.lock:
            arrived, taken = self._conditions()
            while not self.items:
                if self.cancel.is_set():
                    raise RunCancelledError("run cancelled")
                arrived.wait()  # cancellation wakes it (`wake`)
            item = self.items.popleft()
            taken.notify()
            return item

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while self.open:
            item = self._take()
            if self.cancel.is_set():
                raise RunCancelledError("run cancelled")
            if item is _END:
                self.open -= 1
            else:
                yield item


def row_hashes(batch: pa.RecordBatch, key: Sequence[str]) -> list[str]:
    """A stable hash per row of `key`'s columns (of every column when `key` is empty).

    Stable across runs and processes (SHA-256 of the values as JSON text), unlike polars' and
    Python's hashes: it identifies rows an incremental source already loaded.
    """
    import hashlib
    import json

    columns = list(key) or batch.schema.names
    rows = zip(*(batch.column(c).to_pylist() for c in columns), strict=True)
    return [
        hashlib.sha256(
            json.dumps(list(row), default=str, separators=(",", ":")).encode()
        ).hexdigest()[:32]
        for row in rows
    ]


def _track_cursor(stats: NodeStats, batch: pa.RecordBatch, column: str, key: Sequence[str]) -> None:
    """Move an incremental source's high-water mark to the batch's largest cursor value and
    collect the hashes of the rows read at the mark (every one, loaded or already loaded)."""
    top = pc.max(batch.column(column))
    if not top.is_valid:
        return
    value = top.as_py()
    if stats.cursor is not None and value < stats.cursor_value:
        return
    if stats.cursor is None or value > stats.cursor_value:
        stats.cursor_value = value
        stats.cursor = str(top.cast(pa.string()).as_py())
        stats.cursor_seen = set()
    at_top = batch.filter(pc.equal(batch.column(column), top))
    stats.cursor_seen.update(row_hashes(at_top, key))


def _takes_out_repeats(graph: Graph, options: RunOptions, name: str) -> bool:
    """Whether a node may take rows out of its output after its last chunk (a unique key
    repeating across chunks, under drop or quarantine): its consumers then read its committed
    output instead of taking its chunks as they come."""
    node = graph.nodes[name]
    model = node.output_model
    if not options.validate or model is None or name in options.reuse | options.skip:
        return False
    policy = node.expectations.on_invalid or options.on_invalid
    return policy != "fail" and bool(unique_sets(model))


_SQL_FILES_HINT: Final = (
    "A SQL node reads only its inputs (the nodes named in braces) and writes no file itself: "
    "read other files with a source node, write with a sink."
)


def _streams_sql(graph: Graph, options: RunOptions, name: str) -> bool:
    """Whether a SQL node scans its input's chunks as they come (an Arrow stream) instead of
    its staged output: one input, which streams (not reused from an earlier attempt, not a
    source whose Parquet files may be read in place: DuckDB reads those better itself)."""
    node = graph.nodes[name]
    if not isinstance(node, Sql) or len(graph.inputs[name]) != 1:
        return False
    upstream = graph.inputs[name][0]
    producer = graph.nodes[upstream]
    if upstream in options.reuse or upstream in options.skip:
        return False
    if producer.kind in ("sink", "sensor", "task"):
        return False
    return not (
        isinstance(producer, Source)
        and options.reference_sources
        and producer.cursor_column is None
        and type(producer).files is not Source.files
        and producer.files_in_place
    )


def _arrow_scans(con: Any, sql: str, params: Mapping[str, str] | None = None) -> int:
    """How many times the query's plan scans a registered Arrow stream (-1: no plan)."""
    import json

    import duckdb

    try:
        rows = con.execute(f"EXPLAIN (FORMAT json) {sql}", params).fetchall()
    except duckdb.Error:  # the query fails: let it fail where it runs, as it always does
        return -1
    found = 0
    plans: list[Any] = [json.loads(row[1]) for row in rows]
    while plans:
        plan = plans.pop()
        if isinstance(plan, list):
            plans.extend(plan)
        elif isinstance(plan, dict):
            found += plan.get("name") == "PYTHON_ARROW_SCAN"
            plans.extend(plan.get("children", []))
    return found


class _SqlStream:
    """A SQL node's arriving chunks as a record batch reader, for DuckDB to scan once.

    DuckDB's threads call `__next__` (one at a time: a lock, as a Python generator cannot be
    resumed by one thread while another waits in it). Chunks are cast to the first chunk's
    types, as staging casts them. What stops the input (cancellation, an input check) is kept
    in `failure`, for the node to raise instead of DuckDB's rewording of it.
    """

    def __init__(
        self, first: pa.RecordBatch, rest: Iterator[pa.RecordBatch], producer: str
    ) -> None:
        self.schema = first.schema
        self.producer = producer  # names the input in errors
        self.failure: BaseException | None = None
        self._first: pa.RecordBatch | None = first
        self._rest = rest
        self._lock = threading.Lock()

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        with self._lock:
            if self._first is not None:
                batch, self._first = self._first, None
                return batch
            try:
                batch = conform_chunk(next(self._rest), self.schema, self.producer)
            except StopIteration:
                raise
            except BaseException as exc:
                self.failure = exc
                raise
            return batch

    def drain(self) -> None:
        """Read what DuckDB left, to the input's end (its commit)."""
        for _ in self:
            pass
        if self.failure is not None:
            raise self.failure


def default_workers() -> int:
    """Nodes a run runs at once by default: twice the CPU cores, at least 8 (nodes waiting on
    a network or a database count as running; nodes blocked on a channel do not)."""
    return max(8, 2 * (os.cpu_count() or 1))


#: While threads keep taking queued nodes, another thread is sent for the queue only when none
#: has taken one for this long: nodes quicker than that run one after another on the threads
#: already busy, instead of spreading over threads that take turns at the GIL.
_SPREAD_SECONDS: Final = 0.02


class _Workers:
    """Daemon threads reused across a run's nodes, at most `size` running nodes at once.

    A ready node is queued. A thread that finishes a node takes the next queued one; a queued
    node gets another thread (an idle one, or a new one) when none is running, or when no
    thread has taken a queued node for `_SPREAD_SECONDS` (the threads are busy with long nodes),
    and only while fewer than `size` nodes run (0: no limit). A node that blocks on a channel,
    or waits as a sensor, steps out (`blocked`): it stops counting, and a queued node gets a
    thread, so whatever blocks, no node waits for a thread forever (no deadlock).

    Why: a wide graph readies hundreds of nodes at once. On threads taking turns at the GIL,
    nodes that take a millisecond spend more time handing the GIL over than working (a wide
    fan of trivial nodes runs faster on fewer threads, fastest on one), while nodes that
    wait on a database or run native code want threads of their own.
    """

    def __init__(self, size: int = 0) -> None:
        self.size = size
        self.tasks: collections.deque[tuple[Callable[[str], None], str]] = collections.deque()
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.idle = 0  # threads waiting for a task
        self.woken = 0  # of those, notified and not yet awake (each has a place kept)
        self.starting = 0  # threads started and not yet asking for a task (each has a place)
        self.running = 0  # threads running a node and not blocked
        self.started = 0
        self.closed = False
        self.threads: list[threading.Thread] = []
        self.local = threading.local()
        self.served = 0.0  # when a thread last took a queued node, or was sent for one
        self.spreading = threading.Condition(self.lock)
        self.spreader: threading.Thread | None = None  # sends threads for a queue left waiting

    def room(self) -> bool:
        return self.size <= 0 or self.running + self.woken + self.starting < self.size

    def dispatch(self, *, served: bool = False) -> bool:
        """Under the lock: wake an idle thread for a queued node if there is room and the queue
        is not being served already (`served`: the calling thread serves it next); True when a
        new thread must be started instead (outside the lock: `start`)."""
        if not self.tasks or not self.room():
            return False
        if self.running + self.woken + self.starting:
            if served:
                self.served = time.monotonic()  # the caller takes queued nodes in a moment
            if time.monotonic() - self.served < _SPREAD_SECONDS:
                self.spread_later()
                return False
        self.served = time.monotonic()
        if self.idle > self.woken:
            self.woken += 1
            self.wakeup.notify()
            return False
        if self.closed:
            return False
        self.starting += 1
        return True

    def spread_later(self) -> None:
        """Under the lock: have the spreader look at the queue again when it has waited."""
        if self.spreader is not None:
            self.spreading.notify()
        elif not self.closed:
            self.spreader = threading.Thread(target=self.spread, name="etlkit-spread", daemon=True)
            self.spreader.start()

    def spread(self) -> None:
        """The spreader: sends a thread for queued nodes no thread has taken in a while."""
        with self.lock:
            while not self.closed:
                wait = None
                if self.tasks and self.room():
                    wait = self.served + _SPREAD_SECONDS - time.monotonic()
                    if wait <= 0:
                        if self.dispatch():
                            self.lock.release()
                            try:
                                self.start()
                            finally:
                                self.lock.acquire()
                        continue
                self.spreading.wait(wait)

    def start(self) -> None:
        with self.lock:
            if self.closed:  # closed since `dispatch` asked for it: it would only end at once
                self.starting -= 1
                return
            self.started += 1
            thread = threading.Thread(
                target=self.loop, name=f"etlkit-worker-{self.started}", daemon=True
            )
            self.threads.append(thread)
        try:
            thread.start()
        except BaseException:  # no thread after all (e.g. the system's limit): its place is free
            with self.lock:
                self.starting -= 1
                self.threads.remove(thread)
            raise

    def submit(self, work: Callable[[str], None], name: str, *, handoff: bool = False) -> None:
        """Queue a node. `handoff`: the calling node is about to return; its thread runs this
        one next (the first such node), then serves the queue (other threads come for it only
        if that takes a while)."""
        handoff = handoff and getattr(self.local, "running", False)
        if handoff and self.local.next is None:
            self.local.next = (work, name)
            return
        with self.lock:
            self.tasks.append((work, name))
            new = self.dispatch(served=handoff)
        if new:
            self.start()

    def next_task(self, *, first: bool) -> tuple[Callable[[str], None], str] | None:
        with self.lock:
            if first:
                self.starting -= 1
            else:
                self.running -= 1
            while not (self.tasks and self.room()):
                if self.closed:
                    return None
                self.idle += 1
                self.wakeup.wait()
                self.idle -= 1
                self.woken = max(0, self.woken - 1)
            self.running += 1
            self.served = time.monotonic()
            return self.tasks.popleft()

    def loop(self) -> None:
        thread = threading.current_thread()
        self.local.next = None
        task = self.next_task(first=True)
        while task is not None:
            work, name = task
            thread.name = f"etlkit-{name}"
            self.local.running = True
            try:
                work(name)  # catches everything at the node boundary
            finally:
                self.local.running = False
                thread.name = "etlkit-idle"
            task, self.local.next = self.local.next, None  # handed over: keeps its place
            if task is not None:
                self.served = time.monotonic()
            else:
                task = self.next_task(first=False)

    @contextlib.contextmanager
    def blocked(self, *, force: bool = False) -> Iterator[None]:
        """Around a blocking wait of a running node: it does not count while it waits.

        `force`: the wait is a running node's even though this thread is not a worker (a
        DuckDB thread reading a SQL node's streamed input)."""
        if not (force or getattr(self.local, "running", False)):
            yield
            return
        with self.lock:
            self.running -= 1
            new = self.dispatch()
        if new:
            self.start()
        try:
            yield
        finally:
            with self.lock:
                self.running += 1

    def close(self) -> None:
        """Let idle threads end; busy ones (abandoned nodes) end when their node returns."""
        with self.lock:
            self.closed = True
            self.wakeup.notify_all()
            self.spreading.notify_all()
            threads = list(self.threads)
            if self.spreader is not None:
                threads.append(self.spreader)
        deadline = time.perf_counter() + 1.0
        for thread in threads:  # an abandoned node keeps its thread: do not wait on it long
            if thread.ident is None:
                continue  # `start` has yet to start it: it will find the pool closed and end
            thread.join(max(0.0, deadline - time.perf_counter()))


def _split(batch: pa.RecordBatch, rows: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """Slice a batch (without copying) so no piece exceeds `rows` rows or about `max_bytes`."""
    n = batch.num_rows
    if n == 0:
        return
    step = rows
    # the buffers' total size bounds the batch's (a slice shares its parent's): exact sizes
    # are only worth their cost (microseconds, per chunk) when the bound is over the limit
    if n > 1 and batch.get_total_buffer_size() > max_bytes and batch.nbytes > max_bytes:
        step = min(step, max(1, n * max_bytes // batch.nbytes))
    if n <= step:
        yield batch
        return
    for offset in range(0, n, step):
        yield batch.slice(offset, step)


_SQL_TYPES: dict[type[pl.DataType], str] = {
    pl.Int8: "TINYINT",
    pl.Int16: "SMALLINT",
    pl.Int32: "INTEGER",
    pl.Int64: "BIGINT",
    pl.UInt8: "UTINYINT",
    pl.UInt16: "USMALLINT",
    pl.UInt32: "UINTEGER",
    pl.UInt64: "UBIGINT",
    pl.Float32: "FLOAT",
    pl.Float64: "DOUBLE",
    pl.String: "VARCHAR",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
}
_SQL_NAIVE: Final = {"ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}
_SQL_ZONED: Final = {"us": "TIMESTAMPTZ", "ns": "TIMESTAMPTZ_NS"}  # DuckDB has no zoned ms
_INTEGER_RANGES: Final[dict[type[pl.DataType], tuple[int, int]]] = {
    pl.Int8: (-(2**7), 2**7 - 1),
    pl.Int16: (-(2**15), 2**15 - 1),
    pl.Int32: (-(2**31), 2**31 - 1),
    pl.Int64: (-(2**63), 2**63 - 1),
    pl.UInt8: (0, 2**8 - 1),
    pl.UInt16: (0, 2**16 - 1),
    pl.UInt32: (0, 2**32 - 1),
    pl.UInt64: (0, 2**64 - 1),
}


def _typed(batch: pa.RecordBatch, wanted: pa.Schema) -> pa.RecordBatch:
    """`batch` with each of its columns the model declares cast to the declared type (text
    stays in the layout it has: string, large string or view, polars takes each alike)."""
    columns, schema = list(batch.columns), batch.schema
    for i, field in enumerate(schema):
        index = wanted.get_field_index(field.name)
        target = wanted.field(index).type if index >= 0 else field.type
        if field.type != target and not (_is_text(field.type) and _is_text(target)):
            columns[i] = cast_array(columns[i], target)  # as the source cast it
            schema = schema.set(i, field.with_type(target))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _empty_output_schema(model: Model, names: Sequence[str] | None) -> pa.Schema:
    """The schema of an output without rows: the model's, a regex column standing for the
    columns it matches in the first chunk the node yielded (`names`: it may have had no rows,
    or none passed validation), else for a column named as its pattern (a staged file needs
    at least one column)."""
    if names is not None:
        resolved = arrow_schema_in(model, names)
        if len(resolved):
            return resolved
    return arrow_schema(model)


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    )


def _sql_type(dtype: pl.DataType) -> str | None:
    """The DuckDB type a polars dtype casts to, or None when there is no plain equivalent."""
    if isinstance(dtype, pl.Datetime):
        unit = dtype.time_unit or "us"
        if dtype.time_zone:
            return _SQL_ZONED.get(unit)
        return _SQL_NAIVE[unit]
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision or 38}, {dtype.scale or 0})"
    return _SQL_TYPES.get(type(dtype))


def _exact_cast(found: pl.DataType, wanted: pl.DataType) -> bool:
    """Whether every value of type `found` has an exact equal of type `wanted`.

    A reference is validated with polars' cast, its SQL consumers read DuckDB's and a resumed
    run pyarrow's: only a cast that loses nothing gives them all the same values (and passes
    wherever the streamed path's safe cast does). Others, whose result depends on rounding or
    range (`timestamp[ns]` to µs, narrower decimals or integers, int64 to float, dates to µs
    timestamps past year 294,000), are left to the streamed path, which reports the first value
    it cannot cast.
    """
    if found == wanted:
        return True
    if isinstance(wanted, pl.String):
        return isinstance(found, pl.String | pl.Categorical | pl.Enum)
    if found.is_integer():
        low, high = _INTEGER_RANGES.get(type(found), (1, 0))
        if low > high:
            return False
        if wanted.is_integer():
            wanted_low, wanted_high = _INTEGER_RANGES.get(type(wanted), (1, 0))
            return wanted_low <= low and high <= wanted_high
        if isinstance(wanted, pl.Float32 | pl.Float64):  # pyarrow's safe cast bounds it so
            limit = 1 << (24 if isinstance(wanted, pl.Float32) else 53)
            return -limit <= low and high <= limit
        if isinstance(wanted, pl.Decimal):
            digits = (wanted.precision or 38) - (wanted.scale or 0)
            return len(str(max(-low, high))) <= digits
        return False
    if isinstance(found, pl.Float32):
        return isinstance(wanted, pl.Float64)
    if isinstance(found, pl.Decimal) and isinstance(wanted, pl.Decimal):
        found_scale, wanted_scale = found.scale or 0, wanted.scale or 0
        return (
            wanted_scale >= found_scale
            and (wanted.precision or 38) - wanted_scale >= (found.precision or 38) - found_scale
        )
    if isinstance(found, pl.Decimal) and isinstance(wanted, pl.Float64):
        # inexact, but polars and DuckDB both divide the integer by 10**scale, rounding once
        return (found.precision or 38) <= 15 and 0 <= (found.scale or 0) <= 22
    if isinstance(found, pl.Date) and isinstance(wanted, pl.Datetime):
        return wanted.time_unit == "ms" and wanted.time_zone is None  # holds every date
    if isinstance(found, pl.Datetime) and isinstance(wanted, pl.Datetime):
        # one instant in another time zone; a naive timestamp has no instant to keep
        return bool(found.time_unit == wanted.time_unit and found.time_zone and wanted.time_zone)
    return False


def _checked_cast(found: pl.DataType, wanted: pl.DataType) -> bool:
    """Whether a cast keeps some values and changes others, `_changes` tells which, and
    pyarrow's safe cast rejects every value it changes (so a streamed source staged as a
    reference to its files commits only if none changed). A reference then holds the files
    only when it keeps them all, equal whoever casts them: `timestamp[ns]` holding whole
    microseconds, int64 within int32's range, and so on. float64 to float32 is not one: pyarrow
    rounds where DuckDB fails past float32's range."""
    if found.is_integer():
        return wanted.is_integer() or isinstance(wanted, pl.Float32 | pl.Float64 | pl.Decimal)
    if isinstance(found, pl.Decimal):
        return wanted.is_integer() or isinstance(wanted, pl.Decimal)
    if isinstance(found, pl.Date):
        return isinstance(wanted, pl.Datetime) and wanted.time_zone is None
    if isinstance(found, pl.Datetime) and isinstance(wanted, pl.Datetime):
        return (found.time_zone is None) == (wanted.time_zone is None)
    return False


def _changes(column: str, found: pl.DataType, wanted: pl.DataType) -> pl.Expr:
    """Whether casting a value of `column` from `found` to `wanted` changes it (or fails): the
    value does not come back from a cast back, or is an integer beyond what pyarrow's safe cast
    to floats accepts (2**53, 2**24 for float32)."""
    value = pl.col(column)
    cast = value.cast(wanted, strict=False)
    changed = cast.is_null() | (cast.cast(found, strict=False) != value).fill_null(True)
    if found.is_integer() and isinstance(wanted, pl.Float32 | pl.Float64):
        limit = 1 << (24 if isinstance(wanted, pl.Float32) else 53)
        changed = changed | (value > limit)
        if found.is_signed_integer():
            changed = changed | (value < -limit)
    return value.is_not_null() & changed


def _changed(lossy: pl.LazyFrame) -> bool:
    """Whether a reference's casts would change a value (also when polars cannot tell)."""
    try:
        return bool(lossy.collect(engine="streaming").item())
    except pl.exceptions.PolarsError:
        return True


def _readers_differ(files: SourceFiles) -> bool:
    """Whether polars, DuckDB and pyarrow would read a referenced column differently (Parquet's
    INT96 timestamps, say), so that only a copy reads the same everywhere."""
    return not files.format.readers_agree(files.metadata, files.columns)


def _to_batches(item: pa.RecordBatch | pl.DataFrame) -> list[pa.RecordBatch]:
    if isinstance(item, pa.RecordBatch):
        return [item]
    batches: list[pa.RecordBatch] = item.to_arrow().to_batches()
    return batches


def _proven(validator: ChunkValidator, files: SourceFiles) -> frozenset[tuple[str, str]]:
    """The checks the files' metadata (Parquet footer statistics and dictionaries) prove for
    all rows."""
    found = files.format.statistics(
        files.urls, files.columns, values_of=validator.text_columns(), metadata=files.metadata
    )
    return validator.proven_checks(found) if found else frozenset()


def _coalesce(frames: Iterator[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Frames of about `rows` rows in one piece each: the streaming engine emits a selective
    query's output as frames of hundreds of small pieces, each of which would otherwise cross
    the channels and staging as a chunk of its own."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        pending.append(frame)
        held += frame.height
        if held >= rows:
            yield pl.concat(pending).rechunk()
            pending, held = [], 0
    if pending:
        yield pl.concat(pending).rechunk()


@dataclass(frozen=True)
class _Reference:
    """A source staged as a reference to its files: the files (in their format), their SQL
    casts to its model and, for files that describe themselves (Parquet), a lazy frame over
    them as the source would yield them (None for parsed ones, such as CSV: a parse costs what
    a copy saves)."""

    files: SourceFiles
    select: list[tuple[str, str | None]]
    frame: pl.LazyFrame | None
    lossy: pl.LazyFrame | None = None  # one row: whether the casts would change any value


def _expected_rows(node: Source, ctx: Context, referenced: _Reference | None) -> int | None:
    """How many rows a source is about to read, for progress: the row counts in the footers
    `reference` already read (files that describe themselves), else the source's own estimate."""
    if referenced is not None and referenced.files.format.schema is None:
        return referenced.files.rows
    return node.estimate(ctx)


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
        self.cancel = threading.Event()
        self.ctx = dataclasses.replace(ctx, cancelled=self.cancel.is_set)
        self.staging = staging
        self.options = options
        self.listeners = list(listeners)
        self.lock = threading.Lock()
        # Sets and conditions on the run's lock rather than events per node: a thousand nodes'
        # events, queues and their locks would be most of the run's set-up and busy the collector.
        self.committed: set[str] = set()  # nodes whose output is visible
        self.output_schemas: dict[str, pa.Schema] = {}  # columns of what each node streamed
        self.commits = threading.Condition(self.lock)  # a node committed, or the run failed
        self.returned: set[str] = set()  # nodes whose work returned (see `abandon`)
        self.skipped = False  # a soft-failing sensor skips the run
        self.slots: SlotProvider = options.slots or _LocalSlots()
        # what the caller made current (its connections, its run log) travels to the run's
        # threads: each node runs in a copy of the caller's context, never in a process global
        self.scope = contextvars.copy_context()
        idle = options.reuse | options.skip
        self.workers = _Workers(options.max_workers or default_workers())
        self.database: Any = None  # the run's DuckDB database, opened by the first node needing it
        self.database_lock = threading.RLock()
        self.readable: set[str] = set()  # files outside the run's directory its database reads
        self.retired: list[Any] = []  # databases replaced by one reading more files
        self.database_used = False  # a node has a connection to `database`
        self.phase: set[str] = set()
        self.submitted: set[str] = set()
        self.running: set[str] = set()  # submitted, not yet returned (nor abandoned)
        self.changed = threading.Condition(self.lock)  # a node returned, or the run failed
        streamed_sql = {name for name in graph.order if _streams_sql(graph, options, name)}
        self.inboxes = {
            name: _Inbox(
                len(graph.inputs[name]),
                options.channel_depth,
                self.cancel,
                start=lambda last, name=name: self.ready(name, handoff=last),  # type: ignore[misc]
                workers=self.workers,
            )
            for name in graph.order
            if (graph.streams_into(name) or name in streamed_sql)
            and self.pool_of(name) is None
            and name not in idle
            and not any(_takes_out_repeats(graph, options, i) for i in graph.inputs[name])
        }
        self.queries: dict[int, Any] = {}  # connections running queries (`interruptible`)
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
            first = not self.cancel.is_set()
            self.cancel.set()
            self.changed.notify_all()
            self.commits.notify_all()  # nodes waiting for an input's commit
        if first:  # wake every worker blocked on a channel, stop every running query
            for inbox in self.inboxes.values():
                inbox.wake()
            with self.lock:
                queries = list(self.queries.values())
            for con in queries:
                with contextlib.suppress(Exception):  # closed meanwhile: its query has ended
                    con.interrupt()

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> RunResult:
        logger.info("run %s of %s started", self.ctx.run_id, self.graph.pipeline)
        self.emit("run_started")
        sensors = [n for n in self.graph.order if self.graph.nodes[n].kind == "sensor"]
        others = [n for n in self.graph.order if n not in sensors]
        opener = None
        if any(isinstance(n, Sql) or n.expectations.sql for n in self.graph.nodes.values()):
            # opened while the sources read, not when the first SQL node is waited for
            opener = threading.Thread(target=self.prepare_database, name="etlkit-duckdb")
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
            for database in [*self.retired, self.database]:
                if database is not None:
                    database.close()  # after the nodes: it closes their connections too
        result = self.result
        result.finished = time.perf_counter()
        if result.error is None and self.skipped:
            result.state = "skipped"
            for stats in result.nodes.values():
                if stats.state == "pending":
                    stats.state = "skipped"
        elif result.error is None:
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
            self.scope.copy().run(self.work, name)
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
        timed = self.options.run_timeout is not None or any(
            self.graph.nodes[n].run_options.timeout is not None for n in names
        )
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
        now = time.perf_counter()
        limit = self.options.run_timeout
        if limit is not None and now - self.result.started > limit:
            self.fail(
                RunTimeoutError(
                    f"Run {self.ctx.run_id} of pipeline '{self.graph.pipeline}' timed out after "
                    f"{limit:g}s (the pipeline's timeout); running nodes were cancelled"
                )
            )
            return
        for name, stats in self.result.nodes.items():
            timeout = self.graph.nodes[name].run_options.timeout
            if timeout is None or stats.state != "running" or stats.started is None:
                continue
            if now - stats.started > timeout:
                error = NodeTimeoutError(
                    f"Node '{name}' in pipeline '{self.graph.pipeline}' (run {self.ctx.run_id}) "
                    f"timed out after {timeout:g}s (its timeout); it was cancelled",
                    pipeline=self.graph.pipeline,
                    node=name,
                    run_id=self.ctx.run_id,
                )
                stats.error = str(error)
                self.fail(error)
                stats.state = "failed"

    def work(self, name: str) -> None:
        node = self.graph.nodes[name]
        stats = self.result.nodes[name]
        ctx = self.ctx.for_node(name)
        writer: NodeWriter | None = None
        guard: OutputGuard | None = None
        held: list[str] = []
        runlog.bind(self.graph.pipeline, self.ctx.run_id, name)
        try:
            if name in self.options.skip:
                stats.state = "skipped"
                self.mark_committed(name)  # nothing waits on it (see Graph.resume_plan)
                return
            self.wait_for_inputs(name)  # waiting for inputs or a pool slot is not running
            held = self.take_slots(name, node, held)
            stats.state = "running"
            stats.started = time.perf_counter()
            self.emit("node_started", name)
            runlog.note(self.ctx.run_id, name, f"node {name} started", logger=logger)
            if name in self.options.reuse:
                self.replay(name, stats)
                stats.state = "reused"
            elif isinstance(node, Sink):
                stats.write = self.write_sink(name, node, ctx, stats)
                stats.rows_out = stats.write.rows  # a sink's output is what it wrote
                stats.state = "done"
                self.mark_committed(name)
            elif isinstance(node, Sensor):
                self.sense(name, node, ctx, stats)
            elif isinstance(node, Task):
                node.run(ctx)
                stats.state = "done"
                self.mark_committed(name)
            elif isinstance(node, Source) and self.refer(name, node, ctx, stats):
                stats.state = "done"
            else:
                if self.options.validate and node.output_model is not None:
                    guard = self.guard(name, node)
                referenced = None
                if (
                    isinstance(node, Source)
                    and (guard is None or guard.policy == "fail")
                    and not node.expectations.dataset_checks
                ):
                    referenced = self.reference(name, node, ctx)  # the files are the copy
                    if referenced is not None and guard is not None:
                        # what the files' statistics prove is not checked again per chunk
                        guard.validator.assume(_proven(guard.validator, referenced.files))
                if referenced is None and self.must_stage(name):
                    writer = self.staging.writer(self.graph.pipeline, self.ctx.run_id, name)
                if isinstance(node, Source):
                    stats.expected_rows = _expected_rows(node, ctx, referenced)
                self.stream(name, node, ctx, stats, writer, guard, referenced)
                if isinstance(node, Sql | Lazy) and name not in self.inboxes:
                    stats.rows_in = self.staged_rows(self.graph.inputs[name])  # read by DuckDB
                stats.state = "done"
            stats.finished = time.perf_counter()
            runlog.note(
                self.ctx.run_id,
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
            self.node_failed(stats, exc)
        except EtlkitError as exc:
            self.node_failed(stats, self.wrap(name, stats, exc, str(exc)))
        # the node boundary: user and library code of any kind; a polars panic (a Rust
        # assertion, e.g. a datetime out of range) is a BaseException, and fails the node too
        except (Exception, PanicException) as exc:
            self.node_failed(stats, self.wrap(name, stats, exc, f"{type(exc).__name__}: {exc}"))
        finally:
            for pool in held:
                self.slots.release_slot(pool, self.ctx.run_id, name)
            if stats.state != "done":
                if writer is not None:
                    writer.abort()
                if guard is not None:
                    guard.abort()
            if stats.state == "failed":
                extra = {"pipeline": self.graph.pipeline, "run_id": self.ctx.run_id, "node": name}
                logger.error("node %s failed: %s", name, stats.error, extra=extra)
            if stats.finished is None:
                stats.finished = time.perf_counter()
            self.emit("node_finished", name)
            runlog.unbind()

    def guard(self, name: str, node: Node, *, input_side: bool = False) -> OutputGuard:
        return OutputGuard(
            pipeline=self.graph.pipeline,
            run_id=self.ctx.run_id,
            name=name,
            node=node,
            staging=self.staging,
            default_policy=self.options.on_invalid,
            default_max_fraction=self.options.max_invalid_fraction,
            input_side=input_side,
        )

    def input_guard(self, name: str, node: Node) -> OutputGuard | None:
        """A check of chunks on arrival, where the inputs' own models do not already ensure it."""
        model = node.input_model
        if not self.options.validate or model is None:
            return None
        upstream = [self.graph.nodes[i].output_model for i in self.graph.inputs[name]]
        if all(m is not None and issubclass(m, model) for m in upstream):
            return None  # every input already validated against this model (or a subclass)
        return self.guard(name, node, input_side=True)

    def node_failed(self, stats: NodeStats, exc: EtlkitError) -> None:
        stats.state = "failed"
        stats.error = str(exc)
        self.fail(exc)

    def wrap(
        self, name: str, stats: NodeStats, exc: Exception | PanicException, cause: str
    ) -> NodeError:
        node = self.graph.nodes[name]
        if node.streaming:
            chunk = stats.chunks_in  # the input chunk being processed
        elif node.kind == "source":
            chunk = stats.chunks_in + 1 if stats.chunks_in else 0  # 0: before any data
        else:
            chunk = stats.chunks_out + 1 if stats.chunks_out else 0
        where = f" on chunk {chunk}" if chunk else ""
        if isinstance(node, Sql):
            import duckdb

            if isinstance(exc, duckdb.PermissionException):
                cause += f" {_SQL_FILES_HINT}"
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

    def pool_of(self, name: str) -> str | None:
        """The node's pool: its own `options(pool=...)`, else its connection's, if one is sized.

        A connection with `pool_slots` (or a `[pools]` entry named like it) bounds how many
        nodes using that connection run at once, so parallel nodes cannot exhaust a database.
        """
        node = self.graph.nodes[name]
        if node.run_options.pool is not None:
            return node.run_options.pool
        conn = getattr(node, "conn", None)
        return conn if isinstance(conn, str) and conn in self.options.pools else None

    def must_stage(self, name: str) -> bool:
        """Whether a node's output must be staged: the graph says so, or a pooled consumer
        reads it back from staging instead of a channel."""
        if self.graph.needs_staging(name):
            return True
        return any(
            self.graph.nodes[c].streaming
            and c not in self.inboxes
            and c not in self.options.reuse | self.options.skip
            for c in self.graph.consumers[name]
        )

    def take_slots(self, name: str, node: Node, held: list[str]) -> list[str]:
        """Wait for a slot of the node's pool (and of the global node limit), as leases."""
        wanted: list[tuple[str, int]] = []
        if self.options.max_active_nodes and node.kind != "sensor":
            wanted.append((ALL_NODES_POOL, self.options.max_active_nodes))
        pool = self.pool_of(name)
        if pool is not None:
            if pool not in self.options.pools:
                raise ConfigError(
                    f"Node '{name}' uses pool '{pool}', which is not defined; pools are "
                    f"{quoted(sorted(self.options.pools))} (add `{pool} = N` under [pools] "
                    "in etlkit.toml)"
                )
            wanted.append((pool, self.options.pools[pool]))
        for pool_name, size in wanted:
            waited = False
            while not self.slots.acquire_slot(pool_name, size, self.ctx.run_id, name, os.getpid()):
                if not waited:
                    logger.info(
                        "node %s waits for a slot of pool %s (%d slots)",
                        name,
                        pool_name,
                        size,
                        extra={"run_id": self.ctx.run_id, "node": name},
                    )
                    waited = True
                with self.workers.blocked():
                    if self.cancel.wait(0.2):
                        raise RunCancelledError("run cancelled")
            held.append(pool_name)
        return held

    def sense(self, name: str, node: Sensor, ctx: Context, stats: NodeStats) -> None:
        from etlkit.model.sensors import wait

        with self.workers.blocked():
            outcome = wait(node, ctx, cancel=self.cancel)
        if self.cancel.is_set():
            raise RunCancelledError("run cancelled")
        if outcome == "skipped":
            stats.state = "skipped"
            with self.lock:
                self.skipped = True
            logger.info(
                "sensor %s timed out (soft_fail): the run is skipped",
                name,
                extra={"run_id": self.ctx.run_id, "node": name},
            )
        else:
            stats.state = "done"
            self.mark_committed(name)  # a Task with `after=[sensor]` waits for this

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

    def finish(self, name: str) -> None:
        self.mark_committed(name)
        for consumer in self.graph.consumers[name]:
            if consumer in self.inboxes:
                self.inboxes[consumer].put(_END)

    # -- producing ---------------------------------------------------------------------------

    def stream(
        self,
        name: str,
        node: Node,
        ctx: Context,
        stats: NodeStats,
        writer: NodeWriter | None,
        guard: OutputGuard | None,
        referenced: _Reference | None = None,
    ) -> None:
        from etlkit.checks.validation import IncreasingKey

        consumers = [self.inboxes[c] for c in self.graph.consumers[name] if c in self.inboxes]
        first_schema: pa.Schema | None = None
        produced: list[str] | None = None
        keys = [IncreasingKey(k[0]) for k in self.unique_keys(node) if len(k) == 1]
        for item in self.produce(name, node, ctx, stats):
            if self.cancel.is_set():
                raise RunCancelledError("run cancelled")
            chunk = stats.chunks_in if node.streaming else stats.chunks_out + 1
            origin = None
            if isinstance(item, pa.RecordBatch):
                origin, item = Origin.take(item)  # for failures only: staging does not keep it
            if produced is None:  # what regex columns match when no row passes
                produced = item.schema.names if isinstance(item, pa.RecordBatch) else item.columns
            batches = guard.check(item, chunk, origin) if guard is not None else _to_batches(item)
            if guard is not None:
                stats.invalid_rows = guard.invalid_rows
            for batch in batches:
                if first_schema is None:
                    first_schema = batch.schema
                for key in keys:
                    key.update(batch)
                for piece in _split(batch, self.options.chunk_rows, self.options.chunk_bytes):
                    if writer is not None:
                        writer.append(piece)
                    for inbox in consumers:
                        inbox.put(piece)
                    stats.rows_out += piece.num_rows
                    stats.chunks_out += 1
                    self.emit("node_progress", name)
        names = first_schema.names if first_schema is not None else []  # a regex key's columns
        if guard is not None and produced is None and not has_regex(guard.validator.model):
            # no chunk at all: Pandera still judges an empty frame (a check that cannot apply
            # to its column's type fails it)
            empty = pa.RecordBatch.from_pylist([], schema=arrow_schema(guard.validator.model))
            guard.check(empty, 1)
        if guard is not None:
            if writer is not None and guard.policy != "fail":
                increasing = [k.column for k in keys if k.holds]
                self.take_out_repeats(node, stats, writer, guard, increasing, names)
            guard.finish()
        model = node.output_model
        if first_schema is None and model is not None and (writer or produced is not None):
            first_schema = _empty_output_schema(model, produced)
        if first_schema is not None:
            self.output_schemas[name] = first_schema
        staged: Callable[[], list[str]] = list
        if writer is not None:
            staged = writer.part_urls  # closes the part being written: only called if needed
        elif referenced is not None:
            staged = partial(list, referenced.files.urls)  # the source's own files are staged
        proven: list[tuple[str, ...]] = [(key.column,) for key in keys if key.holds]
        if guard is not None and guard.policy != "fail":
            # taken out above, like a chunk's
            proven = list(unique_sets_in(guard.validator.model, names))
        self.check_dataset(
            name,
            node,
            stats,
            staged,
            proven,
            referenced.files.format if referenced is not None else PARQUET,
            columns=names,
        )
        if writer is not None:
            manifest = writer.commit(
                empty_schema=first_schema,
                extra={
                    "kind": node.kind,
                    "chunks": stats.chunks_out,
                    "invalid_rows": stats.invalid_rows,
                    "policy": guard.policy if guard is not None else None,
                    "validated": guard is not None,
                    **self.cursor_extra(node, ctx, stats),
                },
            )
            stats.bytes_staged = manifest.bytes
        elif referenced is not None and isinstance(node, Source):
            if referenced.files.format.schema is not None:  # parsed, not described
                self.check_unchanged(name, node, ctx, referenced.files)
            self.commit_reference(name, node, referenced.files, referenced.select, stats)
        self.finish(name)

    def take_out_repeats(
        self,
        node: Node,
        stats: NodeStats,
        writer: NodeWriter,
        guard: OutputGuard,
        increasing: Sequence[str],
        columns: Sequence[str],
    ) -> None:
        """Under drop and quarantine, take out of the staged output the rows whose unique key
        repeats across chunks, as a chunk's check takes out those repeating within it: every
        occurrence, nulls included, counting rows already taken out (Pandera's verdict on the
        whole output). The verdict then does not depend on where chunks begin and end.

        DuckDB counts the keys over the staged parts; only when some repeat is the output read
        back in order, the rows kept spooled to a local file and staged again.
        """
        from etlkit.checks.validation import flag_repeats, key_checks

        model = node.output_model
        assert model is not None
        checks = [
            c
            for c in key_checks(model, columns)
            if guard.invalid_rows or c.column is None or c.column not in increasing
        ]
        if not checks or guard.checked_chunks < 2:
            return  # one chunk: its own check saw every row; or keys seen increasing, none out
        output, judged = writer.part_urls(), guard.judged_parts()
        if not output:
            return
        removed = 0
        con = self.duckdb()
        try:
            with (
                self.interruptible(con),
                tempfile.TemporaryDirectory(prefix="etlkit-unique-") as spool,
            ):
                select = flag_repeats(con, output, judged, checks)
                if select is None:
                    return
                kept = f"{spool}/kept.parquet"
                removed = self.split_repeats(con, select, checks, writer, guard, kept)
                writer.restart()
                if os.path.exists(kept):  # noqa: PTH110
                    with pq.ParquetFile(kept) as spooled:
                        writer.append_many(spooled.iter_batches(self.options.chunk_rows))
        finally:
            con.close()
        stats.rows_out -= removed
        stats.invalid_rows = guard.invalid_rows

    def split_repeats(
        self,
        con: Any,
        select: str,
        checks: Sequence[KeyCheck],
        writer: NodeWriter,
        guard: OutputGuard,
        kept_file: str,
    ) -> int:
        """Read the flagged output (`flag_repeats`): rows with a repeated key go to the guard,
        the others to `kept_file`. Returns how many rows went to the guard."""
        from etlkit.checks.validation import repeat_rejects

        columns = list(writer.schema.names) if writer.schema is not None else []
        flags = [f"__repeat_{n}" for n in range(len(checks))]
        removed = 0
        kept: pq.ParquetWriter | None = None
        try:
            for batch in con.sql(select).to_arrow_reader(self.options.chunk_rows):
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                out = frame.select(pl.any_horizontal(flags)).to_series()
                if out.any():
                    rows, failures = repeat_rejects(frame.filter(out), checks, columns)
                    guard.reject_repeats(rows, failures)
                    removed += rows.height
                keep = batch.filter(pc.invert(out.to_arrow())).select(columns)
                kept = kept or pq.ParquetWriter(kept_file, keep.schema)
                kept.write_batch(keep)
        finally:
            if kept is not None:
                kept.close()
        return removed

    def check_unchanged(self, name: str, node: Source, ctx: Context, files: SourceFiles) -> None:
        """Fail when a source's parsed (CSV) files changed while it read them: a reference to them
        would not hold what it read (a copy would have half-written data)."""

        def state(found: SourceFiles) -> dict[str, tuple[int, str]]:
            return dict(
                zip(found.urls, zip(found.sizes, found.checksums, strict=True), strict=True)
            )

        again = node.files(ctx)
        before, after = state(files), {} if again is None else state(again)
        changed = sorted(u for u in before.keys() | after.keys() if before.get(u) != after.get(u))
        if changed:
            raise StagingError(
                f"Source '{name}' of pipeline '{self.graph.pipeline}' (run {self.ctx.run_id}): "
                f"its files changed while it read them ({', '.join(changed[:5])}"
                f"{', ...' if len(changed) > 5 else ''}); nothing of it was staged. Run again "
                "once the files are complete (a sensor can wait for them)."
            )

    def reference(self, name: str, node: Source, ctx: Context) -> _Reference | None:
        """The files a source reads, the SQL casts to its model, and (Parquet) a lazy frame
        over them as the source would yield them; None when the source cannot be referenced.

        CSV files are referenced only when every consumer takes the source's chunks from a
        channel: nothing of this run parses them again (unless a unique key is not seen
        increasing as it streams), and a copy would cost as much as the parse it saves.
        """
        if not self.options.reference_sources or node.cursor_column is not None:
            return None
        if not node.files_in_place and not all(
            c in self.inboxes for c in self.graph.consumers[name]
        ):
            return None
        files = node.files(ctx)
        if files is None:
            return None
        if files.format.schema is not None:
            return self.parsed_reference(node, files, files.format.schema)
        if _readers_differ(files):
            return None
        frame = files.format.frame(files.urls, storage_options=files.storage_options).select(
            files.columns
        )
        lossy: pl.LazyFrame | None = None
        select: list[tuple[str, str | None]] = [(c, None) for c in files.columns]
        model = node.output_model
        if model is not None:
            found = frame.collect_schema()
            wanted = polars_schema_in(model, files.columns)
            casts = {c: t for c, t in wanted.items() if c in found and found[c] != t}
            checked = {c: t for c, t in casts.items() if not _exact_cast(found[c], t)}
            if not all(_checked_cast(found[c], t) for c, t in checked.items()):
                return None
            sql_types = {c: _sql_type(t) for c, t in casts.items()}
            if any(t is None for t in sql_types.values()):
                return None
            if checked:
                changed = [_changes(c, found[c], t) for c, t in checked.items()]
                lossy = frame.select(pl.any_horizontal(changed).any())
            frame = frame.with_columns(pl.col(c).cast(t) for c, t in casts.items())
            select = [(c, sql_types.get(c)) for c in files.columns]
        return _Reference(files, select, frame, lossy=lossy)

    @staticmethod
    def parsed_reference(node: Source, files: SourceFiles, schema: pa.Schema) -> _Reference | None:
        """A reference to files its format parses (CSV) into `schema`: the columns as parsed,
        cast to the model's types in SQL; None when a cast has no SQL spelling."""
        select: list[tuple[str, str | None]] = [(c, None) for c in schema.names]
        model = node.output_model
        if model is not None:
            parsed = cast("pl.DataFrame", pl.from_arrow(schema.empty_table())).schema
            wanted = polars_schema_in(model, schema.names)
            casts = {c: t for c, t in wanted.items() if c in parsed and parsed[c] != t}
            if not all(_exact_cast(parsed[c], t) for c, t in casts.items()):
                return None
            sql_types = {c: _sql_type(t) for c, t in casts.items()}
            if any(t is None for t in sql_types.values()):
                return None
            select = [(c, sql_types.get(c)) for c in schema.names]
        return _Reference(files, select, None)

    def commit_reference(
        self,
        name: str,
        node: Source,
        files: SourceFiles,
        select: list[tuple[str, str | None]],
        stats: NodeStats,
    ) -> None:
        writer = self.staging.writer(self.graph.pipeline, self.ctx.run_id, name)
        writer.commit_reference(
            urls=files.urls,
            rows=files.rows if files.format.schema is None else stats.rows_out,
            sizes=files.sizes,
            checksums=files.checksums,
            select=select,
            extra={
                "kind": node.kind,
                "validated": self.options.validate and node.output_model is not None,
            },
            read_as=files.format,
        )

    def refer(self, name: str, node: Source, ctx: Context, stats: NodeStats) -> bool:
        """Stage a reference to the immutable files a source reads, validated in one pass.

        Only when nothing streams from the source (its consumers are Sql and Lazy nodes, which
        read files anyway): the data is then not read here at all. False means: stream it as
        usual (also when validation finds failures, so the chunks report them exactly).
        """
        if not node.files_in_place or any(c in self.inboxes for c in self.graph.consumers[name]):
            return False
        found = self.reference(name, node, ctx)
        if found is None or found.frame is None:
            return False
        files, select, frame = found.files, found.select, found.frame
        if found.lossy is not None and _changed(found.lossy):
            logger.info(
                "node %s: its model's types would change values of the files; streaming them",
                name,
                extra={"run_id": self.ctx.run_id, "node": name},
            )
            return False  # the streamed path names the first value its cast cannot keep
        model = node.output_model
        if self.options.validate and model is not None:
            from etlkit.checks.validation import ChunkValidator

            validator = ChunkValidator(model)
            verdict = validator.scan_clean(frame, _proven(validator, files))
            if verdict is not True:
                logger.info(
                    "node %s: %s; validating chunk by chunk",
                    name,
                    "the files break the model" if verdict is False else "custom checks",
                    extra={"run_id": self.ctx.run_id, "node": name},
                )
                return False
        stats.rows_in = stats.rows_out = files.rows
        stats.chunks_out = len(files.urls)
        self.check_dataset(name, node, stats, partial(list, files.urls))
        self.commit_reference(name, node, files, select, stats)
        self.finish(name)
        return True

    def unique_keys(self, node: Node) -> list[tuple[str, ...]]:
        """The column sets the node's output must hold unique across all its chunks."""
        keys: list[tuple[str, ...]] = []
        if self.options.validate and node.output_model is not None:
            keys.extend(unique_sets(node.output_model))
        if node.expectations.unique:
            keys.append(node.expectations.unique)
        return keys

    def check_dataset(
        self,
        name: str,
        node: Node,
        stats: NodeStats,
        staged: Callable[[], list[str]],
        proven: Sequence[tuple[str, ...]] = (),
        read_as: FileFormat = PARQUET,
        *,
        columns: Sequence[str] = (),
    ) -> None:
        """Row counts, uniqueness across chunks and SQL assertions over the whole output.

        `staged` gives the output's Parquet files (or the files a reference names, in format
        `read_as`), asked for only when a check reads them. `proven`: key sets
        already known unique (seen strictly increasing as they streamed). `columns`: the
        output's columns, which a unique regex column's pattern selects its keys from.
        """
        expected = node.expectations
        modelled: list[tuple[str, ...]] = []  # the model's keys, where nulls repeat (Pandera)
        if self.options.validate and node.output_model is not None and stats.chunks_out > 1:
            # one chunk was checked on its own; a regex key, on each column it matches
            modelled.extend(unique_sets_in(node.output_model, columns))
        modelled = [k for k in modelled if k not in proven]
        unique = [expected.unique] if expected.unique and expected.unique not in proven else []
        unique = [k for k in unique if k not in modelled]
        if (
            expected.min_rows is None
            and expected.max_rows is None
            and not (unique or modelled or expected.sql)
        ):
            return
        from etlkit.checks.validation import dataset_problems

        files = staged() if unique or modelled or expected.sql else []
        con = self.duckdb(read_as.duckdb_paths(files)) if files else None
        try:
            with self.interruptible(con):
                problems = dataset_problems(
                    con,
                    files,
                    rows=stats.rows_out,
                    min_rows=expected.min_rows,
                    max_rows=expected.max_rows,
                    unique=unique,
                    model_unique=modelled,
                    sql=expected.sql,
                    read_as=read_as,
                )
        finally:
            if con is not None:
                con.close()
        if problems:
            where = (
                f"Output of node '{name}' in pipeline '{self.graph.pipeline}' "
                f"(run {self.ctx.run_id})"
            )
            body = problems[0] if len(problems) == 1 else "".join(f"\n  - {p}" for p in problems)
            error = DataValidationError(f"{where} {body}")
            error.__dict__.update(
                pipeline=self.graph.pipeline, node=name, run_id=self.ctx.run_id, chunk=None
            )
            raise error

    @contextlib.contextmanager
    def interruptible(self, con: Any) -> Iterator[None]:
        """While a node runs DuckDB queries on `con`: a failing run interrupts them (`fail`),
        and the error an interrupted query raises becomes the run's cancellation. `con` None:
        the node runs no query."""
        if con is None:
            yield
            return
        with self.lock:
            self.queries[id(con)] = con
        try:
            if self.cancel.is_set():  # failed before its queries could be interrupted
                raise RunCancelledError("run cancelled")
            yield
        except Exception as exc:
            import duckdb

            if isinstance(exc, duckdb.Error) and self.cancel.is_set():
                raise RunCancelledError("run cancelled") from None  # an interrupted query
            raise
        finally:
            with self.lock:
                del self.queries[id(con)]

    def duckdb(self, reads: Sequence[str] = ()) -> Any:
        """A connection of its own to the run's DuckDB database, able to read `reads` (and the
        run's staged outputs); close it after use.

        The database is opened once per run, with the run's resource limits (so SQL nodes
        running at once share one memory limit); opening one is costly, a connection to it
        cheap. Views a node creates are TEMP: they belong to its connection.
        """
        with self.database_lock:
            con = self.open_database(reads).cursor()
            self.database_used = True
        # a cursor starts with the progress bar off, and the locked configuration keeps it so
        return con

    def prepare_database(self) -> None:
        """Open the run's database ahead of need; a failure is raised to the node needing it."""
        with contextlib.suppress(Exception):
            self.open_database()

    def open_database(self, reads: Sequence[str] = ()) -> Any:
        """The run's DuckDB database, opened on first call, locked down as `etlkit query`'s:
        it reads the run's staged outputs and the files in `reads` (a source's own Parquet
        files, read in place), and no other file; a query can neither write a file (`COPY ...
        TO`), attach, nor load an extension, nor change a setting.

        The files a database may read are fixed when it opens: one asked for later, outside
        the run's directory, opens another database (the first stays open for the nodes using
        it, until the run ends).
        """
        with self.database_lock:
            prefix = self.staging.url(self.staging.run_dir(self.graph.pipeline, self.ctx.run_id))
            outside = {f for f in reads if not f.startswith(prefix + "/")}
            if self.database is not None and outside <= self.readable:
                return self.database
            if self.database is not None and self.database_used:
                self.retired.append(self.database)
            elif self.database is not None:  # opened ahead of need, never used: not kept
                self.database.close()
            self.database_used = False
            self.readable |= outside
            self.database = self.locked_database(prefix + "/", sorted(self.readable))
            return self.database

    def locked_database(self, run_dir: str, files: Sequence[str]) -> Any:
        import duckdb

        options = self.options
        config: dict[str, Any] = {
            "memory_limit": options.duckdb_memory_limit,
            "autoinstall_known_extensions": False,  # offline machines: never download
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "allow_persistent_secrets": False,
        }
        if options.duckdb_threads:
            config["threads"] = options.duckdb_threads
        if options.duckdb_temp_directory:
            config["temp_directory"] = options.duckdb_temp_directory
        database = duckdb.connect(":memory:", config=config)
        try:
            if not self.staging.local:
                database.register_filesystem(self.staging.fs)
            # spilling to the temp directory is DuckDB's own: it needs no allowed directory
            database.execute("SET allowed_directories = ?", [[run_dir]])
            database.execute("SET allowed_paths = ?", [list(files)])
            database.execute("SET enable_external_access = false")
            database.execute("SET lock_configuration = true")
        except BaseException:
            database.close()
            raise
        return database

    def produce(
        self, name: str, node: Node, ctx: Context, stats: NodeStats
    ) -> Iterator[pa.RecordBatch | pl.DataFrame]:
        if isinstance(node, Source):
            return self.read_source(node, ctx, stats)
        if isinstance(node, Transform):
            return self.transform(name, node, ctx, stats)
        if isinstance(node, Sql):
            return self.run_sql(name, node, ctx, stats)
        if isinstance(node, Lazy):
            return self.run_lazy(name, node, ctx)
        raise TypeError(f"node '{name}' has an unknown role {type(node).__name__}")

    def read_source(self, node: Source, ctx: Context, stats: NodeStats) -> Iterator[pa.RecordBatch]:
        if node.cursor_column is not None:
            return self.incremental(node, ctx, stats, self.read_all(node, ctx, stats))
        return self.read_all(node, ctx, stats)

    def incremental(
        self, node: Source, ctx: Context, stats: NodeStats, batches: Iterator[pa.RecordBatch]
    ) -> Iterator[pa.RecordBatch]:
        """Keep the rows not loaded yet: at or above the last cursor value, less those loaded
        at that value (by row hash); remember the largest value seen and its rows' hashes."""
        column = node.cursor_column
        assert column is not None
        seen = self.options.cursor_seen.get(ctx.node, frozenset())
        last: pa.Scalar | None = None
        for batch in batches:
            if column not in batch.schema.names:
                raise KeyError(
                    f"incremental cursor column '{column}' is not among the source's columns "
                    f"{batch.schema.names}"
                )
            values = batch.column(column)
            if ctx.cursor is not None:
                if last is None:
                    last = pa.scalar(ctx.cursor).cast(values.type)
                # the rows left are no longer where the batch's origin says they are
                batch = Origin.take(batch)[1].filter(pc.greater_equal(values, last))
            if not batch.num_rows:
                yield batch
                continue
            _track_cursor(stats, batch, column, node.cursor_key)
            if last is not None and seen:
                at_last = pc.equal(batch.column(column), last)
                if pc.any(at_last).as_py():
                    hashes = row_hashes(batch.filter(at_last), node.cursor_key)
                    loaded = pa.array([h in seen for h in hashes], pa.bool_())
                    # in place of each row at the last value: whether it was loaded before
                    batch = batch.filter(pc.invert(pc.replace_with_mask(at_last, at_last, loaded)))
            yield batch

    def cursor_extra(self, node: Node, ctx: Context, stats: NodeStats) -> dict[str, Any]:
        """What an incremental source's committed output records of its cursor: the value it
        read from, the largest value it read and the hashes of its rows at that value."""
        if node.cursor_column is None:
            return {}
        return {
            "cursor": {
                "since": ctx.cursor,
                "value": stats.cursor,
                "seen": sorted(stats.cursor_seen),
            }
        }

    def read_all(self, node: Source, ctx: Context, stats: NodeStats) -> Iterator[pa.RecordBatch]:
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

    def arrivals(self, name: str, node: Node, stats: NodeStats) -> Iterator[pa.RecordBatch]:
        """The chunks arriving at a streaming node, checked against its input model if needed."""
        guard = self.input_guard(name, node)
        for batch in self.inboxes[name] if name in self.inboxes else self.staged_inputs(name):
            stats.rows_in += batch.num_rows
            stats.chunks_in += 1
            if guard is None:
                yield batch
            else:
                yield from guard.check(batch, stats.chunks_in)

    def staged_inputs(self, name: str) -> Iterator[pa.RecordBatch]:
        """A node's inputs read back from their committed staged outputs, one after another."""
        for upstream in self.graph.inputs[name]:
            for batch in self.read_back(upstream):
                if self.cancel.is_set():
                    raise RunCancelledError("run cancelled")
                yield batch

    def read_back(self, name: str) -> Iterator[pa.RecordBatch]:
        """A node's committed output of this run, chunk by chunk, typed as the node yields it:
        a reference holds the source's files, whose columns keep their stored types (decimals,
        say, where the model wants floats) until cast to the model's, as the source casts them."""
        model = self.graph.nodes[name].output_model
        wanted: pa.Schema | None = None
        for batch in self.staging.iter_batches(
            self.graph.pipeline, self.ctx.run_id, name, batch_size=self.options.chunk_rows
        ):
            if model is not None and wanted is None:  # a regex column: the columns it matches
                wanted = arrow_schema_in(model, batch.schema.names)
            if wanted is not None and batch.schema.types != wanted.types:
                batch = _typed(batch, wanted)
            yield batch

    def transform(
        self, name: str, node: Transform[Any, Any], ctx: Context, stats: NodeStats
    ) -> Iterator[pl.DataFrame]:
        for batch in self.arrivals(name, node, stats):
            out = node.process(to_polars(batch), ctx)
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

    def staged_rows(self, names: Sequence[str]) -> int:
        """The rows of these nodes' committed outputs, as their manifests count them."""
        manifests = [self.staging.manifest(self.graph.pipeline, self.ctx.run_id, n) for n in names]
        return sum(m.rows for m in manifests if m is not None)

    def input_files(self, name: str) -> dict[str, list[str]]:
        files = {}
        for upstream in self.graph.inputs[name]:
            files[upstream] = self.staging.files(self.graph.pipeline, self.ctx.run_id, upstream)
        return files

    def run_sql(
        self, name: str, node: Sql, ctx: Context, stats: NodeStats
    ) -> Iterator[pa.RecordBatch]:
        bound = bind_sql(node.query, ctx, {u: u for u in self.graph.inputs[name]})
        sql, params = bound.text, bound.params or None
        staged = {} if name in self.inboxes else self.input_files(name)
        con = self.duckdb([f for files in staged.values() for f in files])
        stream: _SqlStream | None = None
        with contextlib.closing(con), self.interruptible(con):
            if name in self.inboxes:
                stream = self.sql_stream(name, node, con, sql, params, stats)
                if stream is None:  # read from staging, in the run's directory
                    staged = self.input_files(name)
            for upstream, files in staged.items():
                manifest = self.staging.manifest(self.graph.pipeline, self.ctx.run_id, upstream)
                if not files:
                    raise NodeError(
                        f"Input '{upstream}' of SQL node '{name}' produced no rows and declares "
                        "no schema, so its columns are unknown; give it an output model",
                        pipeline=self.graph.pipeline,
                        node=name,
                        run_id=self.ctx.run_id,
                    )
                read_as = (manifest.reference_format if manifest is not None else None) or PARQUET
                scan = read_as.scan(con, files, f"__etlkit_ref_{upstream}")
                columns = manifest.select_sql() if manifest is not None else "*"
                con.execute(f'CREATE TEMP VIEW "{upstream}" AS SELECT {columns} FROM {scan}')
            try:
                reader = con.sql(sql, params=params).to_arrow_reader(self.options.chunk_rows)
                if node.output_model is None:  # the columns of an empty result, for its sinks
                    self.output_schemas.setdefault(name, reader.schema)
                yield from reader
            except Exception:
                if stream is not None and stream.failure is not None:
                    raise stream.failure from None  # what stopped the input, not DuckDB's words
                raise
            if stream is not None:
                stream.drain()  # a query may stop early (LIMIT): the input still commits first

    def sql_stream(
        self,
        name: str,
        node: Sql,
        con: Any,
        sql: str,
        params: Mapping[str, str] | None,
        stats: NodeStats,
    ) -> _SqlStream | None:
        """Register the SQL node's one input as the Arrow stream of its arriving chunks.

        None when the input is read from staging instead, after it commits: it had no rows (its
        staged output knows its columns), or the query's plan scans it more than once (or not
        at all), which a stream cannot serve.
        """
        upstream = self.graph.inputs[name][0]
        chunks = self.arrivals(name, node, stats)
        first = next(chunks, None)
        if first is None:
            return None
        inbox = self.inboxes[name]
        inbox.foreign = True  # DuckDB's threads read the rest
        producer = f"Input '{upstream}' of SQL node '{name}' (run {self.ctx.run_id})"
        stream = _SqlStream(first, chunks, producer)
        con.register(upstream, stream.reader())
        scans = _arrow_scans(con, sql, params)
        if scans in (1, -1):  # -1: the query is wrong; running it says how, before the input ends
            return stream
        logger.info(
            "node %s: its query scans input %s %d times: reading it from staging",
            name,
            upstream,
            scans,
            extra={"run_id": self.ctx.run_id, "node": name},
        )
        con.unregister(upstream)
        stream.drain()
        return None

    def polars_options(self, files: list[str]) -> dict[str, str] | None:
        """polars' storage options for staged files (None for local ones)."""
        if all("://" not in f for f in files):
            return None
        return self.staging.polars_storage_options()

    def run_lazy(self, name: str, node: Lazy[Any], ctx: Context) -> Iterator[pl.DataFrame]:
        frames = []
        for upstream, files in self.input_files(name).items():
            if files:
                manifest = self.staging.manifest(self.graph.pipeline, self.ctx.run_id, upstream)
                read_as = (manifest.reference_format if manifest is not None else None) or PARQUET
                frame = read_as.frame(files, storage_options=self.polars_options(files))
                if manifest is not None and manifest.reference_select is not None:
                    model = self.graph.nodes[upstream].output_model
                    columns = [c for c, _ in manifest.reference_select]
                    frame = frame.select(columns)
                    if model is not None:
                        wanted = polars_schema_in(model, columns)
                        frame = frame.with_columns(pl.col(c).cast(wanted[c]) for c in columns)
                frames.append(frame)
            else:
                model = self.graph.nodes[upstream].output_model
                frames.append(pl.LazyFrame(schema=polars_schema(model) if model else None))
        query = node.query(ctx, *frames)
        if not isinstance(query, pl.LazyFrame):
            raise TypeError(
                f"{type(node).__name__}.query returned {type(query).__name__}; "
                "lazy nodes return a polars LazyFrame"
            )
        yield from _coalesce(
            query.collect_batches(chunk_size=self.options.chunk_rows, engine="streaming"),
            self.options.chunk_rows,
        )

    def replay(self, name: str, stats: NodeStats) -> None:
        """Resume: send a committed output of this run downstream again, without recomputing."""
        consumers = [self.inboxes[c] for c in self.graph.consumers[name] if c in self.inboxes]
        if consumers:
            for batch in self.read_back(name):
                for inbox in consumers:
                    inbox.put(batch)
                stats.rows_out += batch.num_rows
                stats.chunks_out += 1
        self.finish(name)

    def write_sink(self, name: str, node: Sink, ctx: Context, stats: NodeStats) -> WriteResult:
        """Write a sink exactly once: a load this run already committed is not repeated.

        A retry after a kill between the destination's commit and the store's finds the load
        (`Sink.find_load`) and keeps it; the inputs are drained all the same, so their producers
        finish. Temporary objects a dead attempt of this run left are removed first.
        """
        batches = self.sink_batches(name, node, stats)
        for leftover in node.discard_leftovers(ctx):
            logger.info("node %s: removed %s, left by an earlier attempt", name, leftover)
        result = node.find_load(ctx)
        if result is None:
            result = node.write(batches, ctx)
        else:
            runlog.note(
                self.ctx.run_id,
                name,
                f"node {name}: load {ctx.load_id} already committed {result.rows} rows to "
                f"{result.uri}; not loading again",
                logger=logger,
            )
        for _ in batches:  # a sink that stopped early must not leave its producers blocked
            pass
        return result

    def sink_batches(self, name: str, node: Node, stats: NodeStats) -> Iterator[pa.RecordBatch]:
        for batch in self.arrivals(name, node, stats):
            self.emit("node_progress", name)
            yield batch
        if stats.chunks_in == 0:
            schema = self.empty_schema(name, node)
            if schema is not None:  # an empty output still has the model's columns and types
                yield pa.RecordBatch.from_pylist([], schema=schema)

    def empty_schema(self, name: str, node: Node) -> pa.Schema | None:
        """The columns of a sink's input when no chunk arrived: its model's, else its inputs'.

        A regex column stands for the columns it matches in what its input staged; where
        that is unknown, for a column named as its pattern (a file needs at least one column).
        """
        staged = [self.output_schemas.get(u) for u in self.graph.inputs[name]]
        names = next((s.names for s in staged if s is not None), None)
        wanted = node.input_model
        if wanted is not None:
            return arrow_schema(wanted) if names is None else arrow_schema_in(wanted, names)
        for upstream, schema in zip(self.graph.inputs[name], staged, strict=True):
            model = self.graph.nodes[upstream].output_model
            if schema is None and model is not None:
                schema = arrow_schema(model)
            if schema is not None:
                return schema
        return None


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
