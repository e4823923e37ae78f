"""What a run tells its pipeline's callbacks: a notice of its retry, failure or success, once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from etlkit.engine import runlog
from etlkit.runs.recorder import masked
from etlkit.runs.retries import failed_node

if TYPE_CHECKING:
    from etlkit.engine.execution import RunResult
    from etlkit.model.nodes import Context
    from etlkit.runs.spec import RunSpec
    from etlkit.settings.config import Settings
    from etlkit.storage.store import RunStore


def notice(
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
        "node": failed_node(result),
        "error": masked(str(result.error)) if result.error is not None else None,
        "attempt": attempt,
        "log_path": str(runlog.log_path(settings.paths.logs_dir, pipeline.name, result.run_id)),
        "state": result.state,
        "started_at": started_at,
        "finished_at": finished_at,
    }


def notify(
    pipeline: RunSpec,
    event: str,
    notice: Mapping[str, Any],
    notifiers: Mapping[str, Any] | None,
) -> None:
    """Tell the pipeline's callbacks for `event` (none configured: nothing happens)."""
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
        "error": masked(record.error),
        "attempt": record.attempt,
        "log_path": str(log),
        "state": record.state,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
    }
    notify(pipeline, "failure", notice, notifiers)
    return True
