"""Running a pipeline for real: the run recorded in the store, its log kept, retries resumed.

`run_pipeline` is what `Pipeline.run`, `etlkit run` and (later) the scheduler call: it resolves the
run's context and options from the settings, records the run and every node run in the store
(when given one), keeps the run's log as JSON lines, and executes the graph. `retry_run` resumes a
failed run under the same run id: committed staged outputs are verified and reused, sinks that
already wrote are skipped, and only the rest runs again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from etlkit.engine import runlog
from etlkit.engine.execution import (
    Event,
    Listener,
    NodeStats,
    RunOptions,
    RunResult,
    execute,
    new_run_id,
)
from etlkit.errors import (
    ConfigError,
    DataValidationError,
    PermanentError,
    RunCancelledError,
    RunTimeoutError,
    StagingError,
    StoreError,
)
from etlkit.model.nodes import Context, Policy
from etlkit.settings import connections
from etlkit.storage.staging import Staging
from etlkit.storage.store import NodeUpdate, owner_gone, pid_alive

if TYPE_CHECKING:
    from etlkit.model.graph import Graph
    from etlkit.settings.config import Settings
    from etlkit.storage.store import RunRecord, RunStore

logger = logging.getLogger(__name__)


class RunSpec(Protocol):
    """What a run needs of its pipeline: a `Pipeline` subclass is one. `runs` knows pipelines by
    this, so it does not import `pipeline` (which calls into `runs` for `Pipeline.run`)."""

    @property
    def name(self) -> str: ...

    @property
    def timezone(self) -> str: ...

    @property
    def on_failure(self) -> Sequence[str | Callable[[Any], None]]: ...

    @property
    def on_retry(self) -> Sequence[str | Callable[[Any], None]]: ...

    @property
    def on_success(self) -> Sequence[str | Callable[[Any], None]]: ...

    def graph(self) -> Graph: ...


_BOUNDARY: Final = "boundary."  # state key prefix: rows an incremental source loaded at its cursor


#: The event a sink's write leaves in the store: `{"rows": n, "uri": where}` (`etlkit show`).
SINK_WROTE: Final = "sink_wrote"


class _Recorder:
    """A listener writing node runs and run events to the store as they happen.

    A node's start or finish only marks it; its row is built from its live statistics and
    written with the others at most `_RECORD_SECONDS` later (a timer flushes what waits), at
    once when a node fails, and by `flush` at the end of the run: one SQLite transaction per
    node start and finish cost more than a trivial node itself, and so did building each
    update on the node's thread (twice per node).
    """

    def __init__(self, store: RunStore, run_id: str, attempt: int) -> None:
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.lock = threading.Lock()
        self.pending: dict[str, NodeStats] = {}  # nodes started or finished since the last flush
        self.timer: threading.Timer | None = None
        # one flush at a time: the run's last flush waits for the timer's, if one is writing,
        # so no update is written after the run ends (or into a closed store) or lost
        self.flushing = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind not in ("node_started", "node_finished"):
            return
        stats = event.result.nodes[event.node]
        failed = stats.state == "failed"
        with self.lock:
            self.pending[event.node] = stats
            if self.timer is None and not failed:
                self.timer = threading.Timer(_RECORD_SECONDS, self._flush_later)
                self.timer.daemon = True
                self.timer.start()
        if failed:
            self.flush()
            self.store.add_event(
                self.run_id, "node_failed", node=event.node, payload={"error": _masked(stats.error)}
            )
        elif event.kind == "node_finished" and stats.write is not None:
            payload = {"rows": stats.write.rows, "uri": _masked(stats.write.uri)}
            self.store.add_event(self.run_id, SINK_WROTE, node=event.node, payload=payload)

    def flush(self) -> None:
        """Write the marked nodes' current state, in one transaction.

        Raises:
            StoreError: the store could not be written; the nodes stay marked for the next
                flush.
        """
        with self.flushing:
            with self.lock:
                marked, self.pending = list(self.pending.values()), {}
                timer, self.timer = self.timer, None
            if timer is not None:
                timer.cancel()
            if not marked:
                return
            now_perf, now = time.perf_counter(), datetime.now(UTC)
            try:
                self.store.record_nodes(
                    self.run_id, [self._update(s, now_perf, now) for s in marked]
                )
            except BaseException:
                with self.lock:  # written by the next flush (the run's last, at the latest)
                    for stats in marked:
                        self.pending.setdefault(stats.name, stats)
                raise

    def _flush_later(self) -> None:
        """The timer's flush: a failure is logged, and the run's last flush tries again."""
        try:
            self.flush()
        except Exception as exc:  # a timer thread has nobody to raise to
            logger.warning(
                "run %s: recording node states failed (%s); retrying",
                self.run_id,
                exc,
                extra={"run_id": self.run_id},
            )

    def _update(self, stats: NodeStats, now_perf: float, now: datetime) -> NodeUpdate:
        def wall(perf: float | None) -> datetime | None:
            return None if perf is None else now - timedelta(seconds=now_perf - perf)

        return NodeUpdate(
            stats.name,
            kind=stats.kind,
            attempt=self.attempt,
            state=stats.state,
            started_at=wall(stats.started),
            finished_at=wall(stats.finished),
            rows_in=stats.rows_in,
            rows_out=stats.rows_out,
            invalid_rows=stats.invalid_rows,
            bytes_staged=stats.bytes_staged,
            chunks=max(stats.chunks_in, stats.chunks_out),
            error=_masked(stats.error),
        )


#: How long node updates may wait before they reach the store.
_RECORD_SECONDS: Final = 0.2


def _masked(text: str | None) -> str | None:
    """`text` with every active connection's secrets replaced by `***`."""
    if text is None:
        return None
    return connections.mask(text, connections.active_connections())


def run_options(
    settings: Settings,
    reuse: Collection[str],
    skip: Collection[str],
    *,
    pools: Mapping[str, int] | None = None,
    store: RunStore | None = None,
) -> RunOptions:
    """The executor's options from resolved settings (pools lease their slots in `store`)."""
    return RunOptions(
        pools=dict(pools or {}),
        slots=store,
        max_active_nodes=settings.scheduler.max_active_nodes,
        chunk_rows=settings.run.chunk_rows,
        chunk_bytes=settings.run.chunk_bytes,
        channel_depth=settings.run.channel_depth,
        max_workers=settings.run.max_workers,
        validate=settings.run.validate,
        on_invalid=cast("Policy", settings.run.on_invalid),
        max_invalid_fraction=settings.run.max_invalid_fraction,
        duckdb_memory_limit=settings.duckdb.memory_limit,
        duckdb_threads=settings.duckdb.threads,
        duckdb_temp_directory=settings.duckdb.temp_directory,
        reuse=frozenset(reuse),
        skip=frozenset(skip),
        run_timeout=settings.run.timeout,
        cancel_grace=settings.run.cancel_grace,
    )


def run_pipeline(
    pipeline: RunSpec,
    *,
    settings: Settings,
    logical_date: datetime,
    params: Mapping[str, str],
    listeners: Sequence[Listener] = (),
    run_id: str | None = None,
    reuse: Collection[str] = (),
    skip: Collection[str] = (),
    store: RunStore | None = None,
    trigger: str = "manual",
    resumed: bool = False,
    staging_root: str | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
    notifiers: Mapping[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    pools: Mapping[str, int] | None = None,
    force: bool = False,
) -> RunResult:
    """Execute one run of `pipeline`; record it in `store` and keep its log. See module doc.

    A node that fails with retries left (its own `options(retries=...)`, else the pipeline's)
    is retried after its delay: committed outputs are reused, so it restarts from its inputs'
    staged outputs. `resumed=True` means the store already has the run's record. A new run is
    refused while another run of the pipeline for the same logical date is active, unless
    `force` (`RunExistsError`).
    """
    graph = pipeline.graph()
    staging = Staging(staging_root or settings.paths.staging_root)
    if run_id is None:
        run_id = new_run_id()
    elif not resumed:
        _refuse_recompute(pipeline, graph, staging, run_id, set(reuse) | set(skip))
    ctx = Context(
        pipeline=pipeline.name,
        run_id=run_id,
        logical_date=logical_date,
        params=dict(params),
        chunk_rows=settings.run.chunk_rows,
        data_interval_start=data_interval[0] if data_interval else None,
        data_interval_end=data_interval[1] if data_interval else None,
        cursors=_cursors(store, pipeline) if store is not None else {},
        store_path=settings.paths.store if store is not None else None,
    )
    attempt = 1
    started_at = datetime.now(UTC)
    if store is not None:
        if resumed:
            record = store.get_run(run_id)
            if record.state == "queued":
                store.start_run(run_id, pid=os.getpid())
        else:
            record = store.create_run(
                run_id=run_id,
                pipeline=pipeline.name,
                logical_date=logical_date,
                params=params,
                trigger=trigger,
                staging_root=staging.root_url,
                data_interval_start=data_interval[0] if data_interval else None,
                data_interval_end=data_interval[1] if data_interval else None,
                timezone=pipeline.timezone,
                exclusive=not force,
            )
            store.start_run(run_id, pid=os.getpid())
        attempt = record.attempt
    retries: dict[str, int] = {}
    while True:
        all_listeners = list(listeners)
        recorder = None if store is None else _Recorder(store, run_id, attempt)
        if recorder is not None:
            all_listeners.insert(0, recorder)
        options = run_options(settings, reuse, skip, pools=pools, store=store)
        if store is not None:
            options = dataclasses.replace(options, cursor_seen=_cursor_seen(store, pipeline))
        try:
            result = _execute(graph, ctx, staging, options, all_listeners, settings.paths.logs_dir)
        finally:
            if recorder is not None:
                recorder.flush()
        delay = _retry_delay(pipeline, settings, result, retries)
        if delay is None:
            break
        failed = _failed_node(result)
        logger.warning(
            "run %s: node %s failed (%s); retry %d in %.1fs",
            run_id,
            failed,
            result.error,
            retries[failed],
            delay,
            extra={"run_id": run_id, "node": failed},
        )
        _notify(
            pipeline,
            "retry",
            _notice(pipeline, result, ctx, attempt, settings, started_at, None),
            notifiers,
        )
        if store is not None:
            store.add_event(
                run_id,
                "node_retry",
                node=failed,
                payload={"delay": delay, "retry": retries[failed]},
            )
        sleep(delay)
        committed = {n for n in graph.order if staging.manifest(pipeline.name, run_id, n)}
        done = {
            n
            for n, stats in result.nodes.items()
            if stats.kind == "sink" and stats.state in ("done", "skipped")
        }
        reuse, skip = graph.resume_plan(committed, done | set(skip))
        _discard_companions(staging, pipeline.name, run_id, set(graph.order) - reuse - skip)
        attempt += 1
    finished_at = datetime.now(UTC)
    if store is not None:
        error = _masked(str(result.error)) if result.error is not None else None
        store.finish_run(run_id, cast("Any", result.state), error=error, at=finished_at)
        started_at = store.get_run(run_id).started_at or started_at
        if result.state == "success":
            _store_cursors(store, pipeline, graph, staging, run_id)
    event = "success" if result.state == "success" else "failure"
    callbacks = pipeline.on_success if event == "success" else pipeline.on_failure
    if (
        result.state in ("success", "failed")
        and callbacks
        and (store is None or store.claim_notification(run_id, event, attempt=attempt))
    ):
        notice = _notice(pipeline, result, ctx, attempt, settings, started_at, finished_at)
        _notify(pipeline, event, notice, notifiers)
    return result


def _refuse_recompute(
    pipeline: RunSpec, graph: Graph, staging: Staging, run_id: str, kept: set[str]
) -> None:
    """Fail before anything runs if `run_id` committed a node that is neither reused nor skipped.

    Raises:
        StagingError: such a node exists (its output is immutable, so running it would fail).
    """
    committed = [
        name
        for name in graph.order
        if name not in kept and staging.manifest(pipeline.name, run_id, name) is not None
    ]
    if committed:
        raise StagingError(
            f"Run {run_id} of pipeline '{pipeline.name}' already committed "
            f"{', '.join(repr(n) for n in committed)}, and committed outputs are immutable: "
            "name them in `reuse` (sinks in `skip`), retry the run (`Pipeline.retry`, "
            f"`etlkit retry {run_id}`: they reuse every committed output), or use a new run id"
        )


def _execute(
    graph: Graph,
    ctx: Context,
    staging: Staging,
    options: RunOptions,
    listeners: Sequence[Listener],
    logs_dir: str,
) -> RunResult:
    if "://" in logs_dir:  # run logs are local files; remote state dirs keep none
        return execute(graph, ctx, staging=staging, options=options, listeners=listeners)
    masking = connections.install_log_masking(connections.active_connections())
    with runlog.capture(logs_dir, graph.pipeline, ctx.run_id, filters=[masking]):
        return execute(graph, ctx, staging=staging, options=options, listeners=listeners)


def _cursors(store: RunStore, pipeline: RunSpec) -> dict[str, str]:
    return {
        key.removeprefix("cursor."): value
        for key, value in store.states(pipeline.name).items()
        if key.startswith("cursor.")
    }


def _cursor_seen(store: RunStore, pipeline: RunSpec) -> dict[str, frozenset[str]]:
    """Per incremental source, the hashes of the rows it loaded at its stored cursor value
    (none when the stored boundary belongs to another value: the cursor was reset or set)."""
    states = store.states(pipeline.name)
    seen: dict[str, frozenset[str]] = {}
    for key, value in states.items():
        if not key.startswith(_BOUNDARY):
            continue
        node = key.removeprefix(_BOUNDARY)
        boundary = json.loads(value)
        if boundary.get("cursor") == states.get(f"cursor.{node}"):
            seen[node] = frozenset(boundary.get("seen", ()))
    return seen


def _store_cursors(
    store: RunStore, pipeline: RunSpec, graph: Graph, staging: Staging, run_id: str
) -> None:
    """Advance each incremental source's cursor to what its committed output read.

    The committed output says it, whichever attempt committed it (this one, an in-run retry
    reusing it, or the attempt `etlkit retry` resumes). A cursor another run moved since
    this one's source read is left alone: storing an older value would load rows twice.
    """
    for name in graph.order:
        if graph.nodes[name].cursor_column is None:
            continue
        manifest = staging.manifest(pipeline.name, run_id, name)
        cursor = manifest.extra.get("cursor") if manifest is not None else None
        if not isinstance(cursor, dict) or cursor.get("value") is None:
            continue  # nothing new was read: the stored cursor stays
        stored = store.get_state(pipeline.name, f"cursor.{name}")
        if stored != cursor.get("since"):
            logger.warning(
                "run %s: node %s read from cursor %s, but the stored cursor is now %s (another"
                " run or a reset moved it); the stored cursor is kept",
                run_id,
                name,
                cursor.get("since"),
                stored,
                extra={"run_id": run_id, "node": name},
            )
            continue
        boundary = {"cursor": cursor["value"], "seen": cursor.get("seen", [])}
        store.set_states(
            pipeline.name,
            {
                f"cursor.{name}": str(cursor["value"]),
                _BOUNDARY + name: json.dumps(boundary, separators=(",", ":")),
            },
        )


def _failed_node(result: RunResult) -> str:
    return str(getattr(result.error, "node", "") or "")


def _retryable(error: BaseException | None, retry_validation: bool) -> bool:
    if error is None or isinstance(error, RunTimeoutError | RunCancelledError):
        return False
    if isinstance(error, DataValidationError):
        return retry_validation
    cause = error.__cause__
    if isinstance(error, PermanentError) or isinstance(cause, PermanentError | ConfigError):
        return False
    return not isinstance(cause, DataValidationError) or retry_validation


def _retry_delay(
    pipeline: RunSpec, settings: Settings, result: RunResult, retries: dict[str, int]
) -> float | None:
    """Seconds to wait before retrying the failed node, or None when it is not retried."""
    if result.state != "failed":
        return None
    name = _failed_node(result)
    node = pipeline.graph().nodes.get(name)
    if node is None:
        return None
    options = node.run_options
    if not _retryable(result.error, options.retry_validation_errors):
        return None
    allowed = options.retries if options.retries is not None else settings.run.retries
    done = retries.get(name, 0)
    if done >= allowed:
        return None
    retries[name] = done + 1
    delay = options.retry_delay if options.retry_delay is not None else settings.run.retry_delay
    backoff = (
        options.retry_exponential_backoff
        if options.retry_exponential_backoff is not None
        else settings.run.retry_exponential_backoff
    )
    if backoff:
        delay *= 2**done
    cap = options.max_retry_delay or settings.run.max_retry_delay
    return min(delay, cap) if cap is not None else delay


def _notice(
    pipeline: RunSpec,
    result: RunResult,
    ctx: Context,
    attempt: int,
    settings: Settings,
    started_at: datetime,
    finished_at: datetime | None,
) -> dict[str, Any]:
    """What a notification about `result` says (`NotificationContext`'s fields but `event`)."""
    return {
        "pipeline": pipeline.name,
        "run_id": result.run_id,
        "logical_date": ctx.logical_date,
        "node": _failed_node(result),
        "error": _masked(str(result.error)) if result.error is not None else None,
        "attempt": attempt,
        "log_path": str(runlog.log_path(settings.paths.logs_dir, pipeline.name, result.run_id)),
        "state": result.state,
        "started_at": started_at,
        "finished_at": finished_at,
    }


def _notify(
    pipeline: RunSpec,
    event: str,
    notice: Mapping[str, Any],
    notifiers: Mapping[str, Any] | None,
) -> None:
    callbacks = {
        "failure": pipeline.on_failure,
        "retry": pipeline.on_retry,
        "success": pipeline.on_success,
    }[event]
    if not callbacks:
        return
    from etlkit.runs.notifications import NotificationContext, NotificationEvent, dispatch

    context = NotificationContext(event=cast("NotificationEvent", event), **notice)
    dispatch(callbacks, context, notifiers or {})


def notify_failure(
    pipeline: RunSpec,
    run_id: str,
    *,
    store: RunStore,
    settings: Settings,
    notifiers: Mapping[str, Any] | None,
    node: str = "",
) -> bool:
    """Tell `pipeline.on_failure` that `run_id` failed, unless someone already did.

    For failures decided outside the run's own process: a sensor that timed out in the
    scheduler, a worker killed, a process found gone. The store's claim makes each failed
    attempt notify once, whoever notices it first.

    Returns:
        True if the run is failed and this call notified (or had no one to tell).
    """
    record = store.get_run(run_id)
    if record.state != "failed":
        return False
    if not store.claim_notification(record.run_id, "failure", attempt=record.attempt):
        return False
    log = runlog.log_path(settings.paths.logs_dir, pipeline.name, record.run_id)
    notice = {
        "pipeline": pipeline.name,
        "run_id": record.run_id,
        "logical_date": record.local_logical_date,
        "node": node,
        "error": _masked(record.error),
        "attempt": record.attempt,
        "log_path": str(log),
        "state": record.state,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
    }
    _notify(pipeline, "failure", notice, notifiers)
    return True


def retry_run(
    pipeline: RunSpec,
    run_id: str,
    *,
    settings: Settings,
    store: RunStore,
    listeners: Sequence[Listener] = (),
    pools: Mapping[str, int] | None = None,
    notifiers: Mapping[str, Any] | None = None,
) -> RunResult:
    """Resume a run that did not succeed, under the same run id, reusing what committed.

    Raises:
        StoreError: the run is unknown, succeeded, or still running in a live process.
    """
    record = store.get_run(run_id)
    if record.pipeline != pipeline.name:
        raise StoreError(f"Run {run_id} belongs to pipeline '{record.pipeline}'")
    if record.state == "success":
        raise StoreError(f"Run {record.run_id} of '{record.pipeline}' already succeeded")
    if record.state in ("queued", "running"):
        alive = pid_alive(record.pid) if record.owner is None else owner_gone(record.owner) is None
        if alive and record.pid is not None and record.pid != os.getpid():
            raise StoreError(
                f"Run {record.run_id} is still running (pid {record.pid}); "
                "wait for it or stop it first"
            )
        store.finish_run(record.run_id, "interrupted", error="the process running it vanished")
    reuse, skip = _resume_plan(pipeline, record.run_id, record.staging_root, store)
    store.retry_run(record.run_id, pid=os.getpid())
    store.add_event(
        record.run_id, "retry", payload={"reused": sorted(reuse), "skipped": sorted(skip)}
    )
    return run_pipeline(
        pipeline,
        settings=settings,
        logical_date=record.logical_date,
        params=record.params,
        listeners=listeners,
        run_id=record.run_id,
        reuse=reuse,
        skip=skip,
        store=store,
        resumed=True,
        staging_root=record.staging_root,
        pools=pools,
        notifiers=notifiers,
    )


def run_recorded(
    pipeline: RunSpec,
    run_id: str,
    *,
    settings: Settings,
    store: RunStore,
    listeners: Sequence[Listener] = (),
    resume: bool = False,
    pools: Mapping[str, int] | None = None,
    notifiers: Mapping[str, Any] | None = None,
) -> RunResult:
    """Execute, in this process, a run already recorded in the store (queued or claimed).

    This is what `python -m etlkit.runs.worker` runs for the scheduler, `etlkit trigger` and
    backfills: the logical date, params, data interval and staging root come from the record,
    and nodes see the dates in the pipeline's timezone (so `ctx.ds` is the local date). With
    `resume`, the outputs an earlier attempt committed are verified and reused, and sinks that
    already wrote are skipped, as `retry_run` does.

    Raises:
        StoreError: the run is unknown, belongs to another pipeline, or is neither queued nor
            running.
        ConfigError: the pipeline's timezone is unknown.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    record = store.get_run(run_id)
    if record.pipeline != pipeline.name:
        raise StoreError(f"Run {run_id} belongs to pipeline '{record.pipeline}'")
    if record.state not in ("queued", "running"):
        raise StoreError(
            f"Run {record.run_id} of '{record.pipeline}' is {record.state}, not queued or running;"
            f" use `etlkit retry {record.run_id}` to run it again."
        )
    try:
        tz = ZoneInfo(pipeline.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"Pipeline '{pipeline.name}' has timezone {pipeline.timezone!r}, which is not an IANA"
            " timezone (e.g. 'Europe/Berlin', 'UTC')."
        ) from exc
    reuse: Collection[str] = ()
    skip: Collection[str] = ()
    if resume:
        reuse, skip = _resume_plan(pipeline, record.run_id, record.staging_root, store)
        store.add_event(
            record.run_id, "retry", payload={"reused": sorted(reuse), "skipped": sorted(skip)}
        )
    start, end = record.data_interval_start, record.data_interval_end
    interval = (start.astimezone(tz), end.astimezone(tz)) if start and end else None
    return run_pipeline(
        pipeline,
        settings=settings,
        logical_date=record.logical_date.astimezone(tz),
        params=record.params,
        listeners=listeners,
        run_id=record.run_id,
        reuse=reuse,
        skip=skip,
        store=store,
        resumed=True,
        staging_root=record.staging_root,
        data_interval=interval,
        pools=pools,
        notifiers=notifiers,
    )


def _resume_plan(
    pipeline: RunSpec, run_id: str, staging_root: str, store: RunStore
) -> tuple[frozenset[str], frozenset[str]]:
    """`(reuse, skip)` for rerunning `run_id`: its intact committed outputs and written sinks."""
    graph = pipeline.graph()
    staging = Staging(staging_root)
    committed = set()
    for name in graph.order:
        if staging.manifest(pipeline.name, run_id, name) is None:
            continue
        problems = staging.verify(pipeline.name, run_id, name)
        if problems:
            logger.warning("staged output of %s is damaged, recomputing: %s", name, problems[0])
            staging.discard(pipeline.name, run_id, name)
        else:
            committed.add(name)
    done_sinks = {n.node for n in store.node_runs(run_id) if n.kind == "sink" and n.state == "done"}
    reuse, skip = graph.resume_plan(committed, done_sinks)
    _discard_companions(staging, pipeline.name, run_id, set(graph.order) - reuse - skip)
    return reuse, skip


def discard_sink_leftovers(pipeline: RunSpec, record: RunRecord) -> list[str]:
    """Remove the temporary objects the sinks of a run no process runs any more left behind.

    `etlkit gc` calls it for dead runs (a retry's sinks do it themselves before writing). A
    sink's target is rendered as the run rendered it: with its params and logical date, in UTC
    and in the pipeline's timezone (manual and scheduled runs render dates in either).
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from etlkit.model.nodes import Sink

    dates = {record.logical_date}
    with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
        dates.add(record.logical_date.astimezone(ZoneInfo(pipeline.timezone)))
    removed: list[str] = []
    graph = pipeline.graph()
    for name in graph.order:
        node = graph.nodes[name]
        if not isinstance(node, Sink):
            continue
        for date in sorted(dates, key=lambda d: d.isoformat()):
            ctx = Context(
                pipeline=pipeline.name,
                run_id=record.run_id,
                logical_date=date,
                node=name,
                params=dict(record.params),
                data_interval_start=record.data_interval_start,
                data_interval_end=record.data_interval_end,
            )
            removed += node.discard_leftovers(ctx)
    return removed


def _discard_companions(staging: Staging, pipeline: str, run_id: str, rerun: set[str]) -> None:
    """Remove the `<node>.failures` and `<node>.rejects` an earlier attempt committed for the
    nodes that run again: their new attempt stages its own, and committed outputs are immutable.
    """
    for name in staging.committed(pipeline, run_id):
        node, dot, _ = name.partition(".")
        if dot and node in rerun:
            staging.discard(pipeline, run_id, name)
