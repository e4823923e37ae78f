"""Steering the scheduler through the store: trigger a run, pause and unpause, see the status.

None of these needs the scheduler process: they write to (or read) the run store it polls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from etlkit.scheduling.catalog import Catalog
from etlkit.scheduling.clock import Clock, SystemClock
from etlkit.scheduling.scheduler import last_planned
from etlkit.scheduling.schedules import DataInterval, Schedule, parse_moment, pipeline_zone
from etlkit.storage.store import FINAL_STATES, RunRecord, RunStore, new_run_id

if TYPE_CHECKING:
    from etlkit.model.pipeline import PipelineDefinition
    from etlkit.settings.config import Settings


def trigger(
    pipeline: type[PipelineDefinition],
    *,
    store: RunStore,
    settings: Settings,
    date: str | datetime | None = None,
    params: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> RunRecord:
    """Queue a run of `pipeline` now (trigger `triggered`); the scheduler launches it next round.

    Args:
        date: the logical date (`YYYY-MM-DD` or ISO datetime; naive means the pipeline's
            timezone); default now. A scheduled pipeline's run covers the schedule's interval
            that contains it; others get the empty interval [date, date].
        params: values for the params the pipeline declares.

    A triggered run does not count as the scheduled run of its date: both may exist. A paused
    pipeline's triggered runs wait until it is unpaused.

    Raises:
        ConfigError: a bad date or an undeclared param.
        PipelineDefinitionError: the pipeline's schedule or timezone is invalid.
    """
    now = (clock or SystemClock()).now()
    logical = now if date is None else _logical(date, pipeline)
    interval = data_interval(pipeline, logical) or DataInterval(logical, logical)
    return store.create_run(
        run_id=new_run_id(now),
        pipeline=pipeline.name,
        logical_date=logical,
        params=pipeline.resolve_params(params or {}),
        trigger="triggered",
        staging_root=settings.paths.staging_root,
        at=now,
        data_interval_start=interval.start,
        data_interval_end=interval.end,
        timezone=pipeline.timezone,
    )


def data_interval(
    pipeline: type[PipelineDefinition], logical_date: datetime
) -> DataInterval | None:
    """The schedule's interval containing `logical_date`, for a run outside the schedule
    (`etlkit run --date`, `etlkit trigger`); None for a pipeline without a schedule.

    Raises:
        PipelineDefinitionError: the pipeline's schedule or timezone is invalid.
    """
    schedule = Schedule.of(pipeline)
    return schedule.interval_containing(logical_date) if schedule else None


def pause(store: RunStore, pipeline: str, *, clock: Clock | None = None) -> bool:
    """Stop planning and launching `pipeline`'s runs (queued ones wait); False if it was paused.

    Running runs finish. On `unpause`, a pipeline without catchup runs only its latest due
    interval; with catchup, every interval missed while it was paused.
    """
    return store.pause_pipeline(pipeline, at=(clock or SystemClock()).now())


def unpause(store: RunStore, pipeline: str) -> bool:
    """Let the scheduler run `pipeline` again; False if it was not paused."""
    return store.unpause_pipeline(pipeline)


@dataclass(frozen=True)
class PipelineStatus:
    """One pipeline as the scheduler sees it.

    Attributes:
        name: the pipeline's name (for a file that failed to import: the file's name).
        schedule: the schedule as declared (`30 2 * * *`, `@daily`, `every 2s`), or None.
        timezone: the schedule's timezone.
        paused: whether the scheduler leaves it alone.
        next_logical_date: the logical date of the next scheduled run to plan.
        next_due: when that run is due (the end of its interval; may be past: due now).
        queued: ids of its queued runs, oldest first.
        running: ids of its running runs, oldest first.
        last_run: its finished run with the latest logical date (any trigger).
        error: why it cannot be scheduled (import failure, invalid graph or schedule).
    """

    name: str
    schedule: str | None
    timezone: str
    paused: bool
    next_logical_date: datetime | None
    next_due: datetime | None
    queued: tuple[str, ...]
    running: tuple[str, ...]
    last_run: RunRecord | None
    error: str | None = None


def status(
    store: RunStore, pipelines_dir: Path, *, clock: Clock | None = None
) -> list[PipelineStatus]:
    """The status of every pipeline in `pipelines_dir` (and of every file that fails to load)."""
    now = (clock or SystemClock()).now()
    store.forget_dead_schedulers()
    catalog = Catalog(pipelines_dir, log_problems=False)  # problems are in `.error`
    catalog.refresh()
    paused = store.paused_pipelines()
    active = store.active_runs()
    found = []
    for name, entry in sorted(catalog.entries.items()):
        schedule = entry.schedule
        upcoming = None
        if schedule is not None and name not in paused:
            upcoming = schedule.next_due(now, last_planned(store, name))
        found.append(
            PipelineStatus(
                name=name,
                schedule=schedule.text if schedule else None,
                timezone=entry.pipeline.timezone,
                paused=name in paused,
                next_logical_date=upcoming.start if upcoming else None,
                next_due=upcoming.end if upcoming else None,
                queued=tuple(
                    r.run_id for r in active if r.pipeline == name and r.state == "queued"
                ),
                running=tuple(
                    r.run_id for r in active if r.pipeline == name and r.state == "running"
                ),
                last_run=store.last_run(name, states=FINAL_STATES),
            )
        )
    for where, error in sorted(catalog.errors.items()):
        name = Path(where).stem if where.endswith(".py") else where
        found.append(
            PipelineStatus(
                name=name,
                schedule=None,
                timezone="",
                paused=name in paused,
                next_logical_date=None,
                next_due=None,
                queued=(),
                running=(),
                last_run=store.last_run(name, states=FINAL_STATES),
                error=error,
            )
        )
    return found


def _logical(date: str | datetime, pipeline: type[PipelineDefinition]) -> datetime:
    return parse_moment(date, pipeline_zone(pipeline), what="Logical date")
