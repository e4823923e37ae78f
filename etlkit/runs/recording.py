"""Running a pipeline for real: the run recorded in the store, its log kept, retries resumed.

`run_pipeline` is what `Pipeline.run`, `etlkit run` and the scheduler's worker call: it resolves the
run's context and options from the settings, records the run and every node run in the store
(when given one; see `recorder`), keeps the run's log as JSON lines, and executes the graph,
retrying failed nodes in the run (`retries`), with the executor the settings name (`executors`:
one per run, recorded with it). `retry_run` resumes a failed run under the same run
id and `run_recorded` executes a run already in the store: committed staged outputs are verified
and reused, sinks that already wrote are skipped, and only the rest runs again (`resuming`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from etlkit.engine import runlog
from etlkit.engine.execution import Listener, RunOptions, RunResult, execute, new_run_id
from etlkit.engine.executor import Executor
from etlkit.errors import ConfigError, StagingError, StoreError
from etlkit.model.nodes import Context, Policy
from etlkit.runs.cursors import cursor_seen, cursors, store_cursors
from etlkit.runs.executors import open_executor
from etlkit.runs.notifying import notice, notify
from etlkit.runs.recorder import Recorder, masked
from etlkit.runs.resuming import discard_companions, resume_plan
from etlkit.runs.retries import failed_node, retry_delay
from etlkit.settings import connections
from etlkit.storage.staging import Staging
from etlkit.storage.store import owner_gone, pid_alive

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from etlkit.model.graph import Graph
    from etlkit.runs.spec import RunSpec
    from etlkit.settings.config import Settings
    from etlkit.storage.store import RunRecord, RunStore

logger = logging.getLogger(__name__)


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
        adopt_staged=settings.run.adopt_staged,
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
        cursors=cursors(store, pipeline) if store is not None else {},
        store_path=settings.paths.store if store is not None else None,
    )
    run = _Run(pipeline, graph, ctx, staging, settings, store, notifiers, datetime.now(UTC))
    attempt = 1
    if store is not None:
        attempt = _record_start(run, trigger=trigger, resumed=resumed, force=force)
    with _opened(run) as executor:
        retries: dict[str, int] = {}
        while True:
            result = _attempt(run, attempt, listeners, reuse, skip, pools, executor)
            delay = retry_delay(pipeline, settings, result, retries)
            if delay is None:
                break
            _announce_retry(run, result, attempt, delay, retries[failed_node(result)])
            sleep(delay)
            reuse, skip = _retry_plan(run, result, skip)
            attempt += 1
    _finish(run, result, attempt)
    return result


@contextmanager
def _opened(run: _Run) -> Iterator[Executor | None]:
    """The run's executor, open for all its attempts (one cluster per run, closed after it),
    recorded in the store; a cluster that cannot be opened fails the recorded run."""
    with ExitStack() as stack:
        try:
            opened = stack.enter_context(open_executor(run.settings))
        except ConfigError as exc:
            if run.store is not None:
                run.store.finish_run(run.ctx.run_id, "failed", error=masked(str(exc)))
            raise
        if run.store is not None:
            run.store.record_executor(run.ctx.run_id, opened.description)
        yield opened.executor


@dataclass(frozen=True)
class _Run:
    """What the attempts of one run share: its pipeline, graph, context, staging and store."""

    pipeline: RunSpec
    graph: Graph
    ctx: Context
    staging: Staging
    settings: Settings
    store: RunStore | None
    notifiers: Mapping[str, Any] | None
    started_at: datetime


def _record_start(run: _Run, *, trigger: str, resumed: bool, force: bool) -> int:
    """Record in the store that the run starts (creating it unless `resumed`); its attempt."""
    store, ctx = cast("RunStore", run.store), run.ctx
    if resumed:
        record = store.get_run(ctx.run_id)
        if record.state == "queued":
            store.start_run(ctx.run_id, pid=os.getpid())
        return record.attempt
    record = store.create_run(
        run_id=ctx.run_id,
        pipeline=run.pipeline.name,
        logical_date=ctx.logical_date,
        params=ctx.params,
        trigger=trigger,
        staging_root=run.staging.root_url,
        data_interval_start=ctx.data_interval_start,
        data_interval_end=ctx.data_interval_end,
        timezone=run.pipeline.timezone,
        exclusive=not force,
    )
    store.start_run(ctx.run_id, pid=os.getpid())
    return record.attempt


def _attempt(
    run: _Run,
    attempt: int,
    listeners: Sequence[Listener],
    reuse: Collection[str],
    skip: Collection[str],
    pools: Mapping[str, int] | None,
    executor: Executor | None,
) -> RunResult:
    """Execute the graph once, node runs recorded in the store (if any) as they happen."""
    all_listeners = list(listeners)
    recorder = None if run.store is None else Recorder(run.store, run.ctx.run_id, attempt)
    if recorder is not None:
        all_listeners.insert(0, recorder)
    options = run_options(run.settings, reuse, skip, pools=pools, store=run.store)
    if run.store is not None:
        options = dataclasses.replace(options, cursor_seen=cursor_seen(run.store, run.pipeline))
    try:
        logs_dir = run.settings.paths.logs_dir
        return _execute(run, options, all_listeners, logs_dir, executor)
    finally:
        if recorder is not None:
            recorder.flush()


def _announce_retry(run: _Run, result: RunResult, attempt: int, delay: float, retry: int) -> None:
    """Log, notify and record that the failed node is retried after `delay` seconds."""
    failed = failed_node(result)
    run_id = run.ctx.run_id
    logger.warning(
        "run %s: node %s failed (%s); retry %d in %.1fs",
        run_id,
        failed,
        result.error,
        retry,
        delay,
        extra={"run_id": run_id, "node": failed},
    )
    notify(
        run.pipeline,
        "retry",
        notice(run.pipeline, result, run.ctx, attempt, run.settings, run.started_at, None),
        run.notifiers,
    )
    if run.store is not None:
        run.store.add_event(
            run_id,
            "node_retry",
            node=failed,
            payload={"delay": delay, "retry": retry},
        )


def _retry_plan(
    run: _Run, result: RunResult, skip: Collection[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """`(reuse, skip)` for the next attempt: what committed is reused, sinks that wrote skipped."""
    graph, staging, name, run_id = run.graph, run.staging, run.pipeline.name, run.ctx.run_id
    committed = {n for n in graph.order if staging.manifest(name, run_id, n)}
    done = {
        n
        for n, stats in result.nodes.items()
        if stats.kind == "sink" and stats.state in ("done", "skipped")
    }
    reuse, skipped = graph.resume_plan(committed, done | set(skip))
    discard_companions(staging, name, run_id, set(graph.order) - reuse - skipped)
    return reuse, skipped


def _finish(run: _Run, result: RunResult, attempt: int) -> None:
    """Record the run's end (and its cursors, on success); notify its callbacks once."""
    pipeline, store, run_id = run.pipeline, run.store, run.ctx.run_id
    finished_at = datetime.now(UTC)
    started_at = run.started_at
    if store is not None:
        error = masked(str(result.error)) if result.error is not None else None
        store.finish_run(run_id, cast("Any", result.state), error=error, at=finished_at)
        started_at = store.get_run(run_id).started_at or started_at
        if result.state == "success":
            store_cursors(store, pipeline, run.graph, run.staging, run_id)
    event = "success" if result.state == "success" else "failure"
    callbacks = pipeline.on_success if event == "success" else pipeline.on_failure
    if (
        result.state in ("success", "failed")
        and callbacks
        and (store is None or store.claim_notification(run_id, event, attempt=attempt))
    ):
        said = notice(pipeline, result, run.ctx, attempt, run.settings, started_at, finished_at)
        notify(pipeline, event, said, run.notifiers)


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
    run: _Run,
    options: RunOptions,
    listeners: Sequence[Listener],
    logs_dir: str,
    executor: Executor | None,
) -> RunResult:
    def go() -> RunResult:
        return execute(
            run.graph,
            run.ctx,
            staging=run.staging,
            options=options,
            listeners=listeners,
            executor=executor,
        )

    if "://" in logs_dir:  # run logs are local files; remote state dirs keep none
        return go()
    masking = connections.install_log_masking(connections.active_connections())
    with runlog.capture(logs_dir, run.graph.pipeline, run.ctx.run_id, filters=[masking]):
        return go()


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
    reuse, skip = resume_plan(pipeline, record.run_id, record.staging_root, store)
    store.retry_run(record.run_id, pid=os.getpid())
    store.add_event(
        record.run_id, "retry", payload={"reused": sorted(reuse), "skipped": sorted(skip)}
    )
    return _rerun(
        pipeline, record, settings, store, listeners, reuse, skip, pools=pools, notifiers=notifiers
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
    record = store.get_run(run_id)
    if record.pipeline != pipeline.name:
        raise StoreError(f"Run {run_id} belongs to pipeline '{record.pipeline}'")
    if record.state not in ("queued", "running"):
        raise StoreError(
            f"Run {record.run_id} of '{record.pipeline}' is {record.state}, not queued or running;"
            f" use `etlkit retry {record.run_id}` to run it again."
        )
    reuse: Collection[str] = ()
    skip: Collection[str] = ()
    if resume:
        reuse, skip = resume_plan(pipeline, record.run_id, record.staging_root, store)
        store.add_event(
            record.run_id, "retry", payload={"reused": sorted(reuse), "skipped": sorted(skip)}
        )
    return _rerun(
        pipeline, record, settings, store, listeners, reuse, skip, pools=pools, notifiers=notifiers
    )


def _rerun(
    pipeline: RunSpec,
    record: RunRecord,
    settings: Settings,
    store: RunStore,
    listeners: Sequence[Listener],
    reuse: Collection[str],
    skip: Collection[str],
    *,
    pools: Mapping[str, int] | None,
    notifiers: Mapping[str, Any] | None,
) -> RunResult:
    """Execute a recorded run under its id, with the dates its record holds, in the pipeline's
    timezone (`ctx.ds` is the local date, as the first attempt saw it)."""
    tz = _zone(pipeline)
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


def _zone(pipeline: RunSpec) -> ZoneInfo:
    """The pipeline's timezone.

    Raises:
        ConfigError: it is not an IANA timezone.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(pipeline.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"Pipeline '{pipeline.name}' has timezone {pipeline.timezone!r}, which is not an IANA"
            " timezone (e.g. 'Europe/Berlin', 'UTC')."
        ) from exc
