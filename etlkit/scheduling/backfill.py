"""Backfill: run a pipeline's scheduled intervals over a past range, resumably.

`backfill` records one run per interval whose logical date is in `[start, end]` (trigger
`backfill`; the store keeps one scheduled or backfilled run per pipeline and logical date) and
executes them in worker processes, at most `max_active` at once, oldest first (or newest first
with `reverse`). Which existing runs are redone depends on `reprocess`:

- `missing`: only dates without an outcome: no run yet, a run still queued (an interrupted
  backfill left it), or an `interrupted` run. Succeeded, skipped and failed runs stay.
- `failed`: also `failed` and `cancelled` runs. They run again under their run id (attempt + 1)
  and resume: outputs the failed attempt committed are reused, like `etlkit retry`.
- `all`: every run, from scratch: the run's staged outputs are deleted first.

Interrupting a backfill (Ctrl-C) terminates its workers and marks their runs `interrupted`; the
same command resumes it. As in the scheduler, a run's sensors are poked from the backfill's loop
before its worker starts, so a run waiting for a sensor holds no process and no `max_active`
slot; a failure decided here (a sensor that failed or timed out, a worker killed) calls the
pipeline's `on_failure`, once per failed attempt. The pipeline's `start_date`, `end_date`,
`catchup` and pause do not limit a backfill.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from etlkit.errors import ConfigError, RunExistsError, SchedulerError
from etlkit.runs.executors import worker_flags
from etlkit.runs.notifying import notify_failure
from etlkit.scheduling.clock import Clock, SystemClock
from etlkit.scheduling.processes import Children, Launcher, sweep_stale
from etlkit.scheduling.schedules import DataInterval, Schedule, parse_moment
from etlkit.scheduling.sensing import SensorGate
from etlkit.scheduling.warmstart import close_launcher, launcher_for
from etlkit.storage.store import ACTIVE_STATES, RunRecord, RunState, RunStore, new_run_id

if TYPE_CHECKING:
    from etlkit.model.pipeline import PipelineDefinition
    from etlkit.settings.config import Settings

logger = logging.getLogger(__name__)

Reprocess = Literal["missing", "failed", "all"]
REPROCESS: Final[tuple[Reprocess, ...]] = ("missing", "failed", "all")
#: The states of existing runs each mode runs again.
_RERUN: Final[dict[Reprocess, frozenset[str]]] = {
    "missing": frozenset({"interrupted"}),
    "failed": frozenset({"interrupted", "failed", "cancelled"}),
    "all": frozenset({"interrupted", "failed", "cancelled", "success", "skipped"}),
}


@dataclass(frozen=True)
class BackfillSummary:
    """What a backfill did.

    Attributes:
        pipeline: the pipeline's name.
        logical_dates: the logical dates in the range, in the order they were run.
        states: the final state of every run this backfill executed, by run id.
        kept: runs left as they were (already done, for this `reprocess` mode).
        elsewhere: runs that were already running in another process (not waited for).
        interrupted: the backfill was interrupted; run it again to resume.
    """

    pipeline: str
    logical_dates: tuple[datetime, ...]
    states: Mapping[str, RunState] = field(default_factory=dict)
    kept: tuple[str, ...] = ()
    elsewhere: tuple[str, ...] = ()
    interrupted: bool = False

    def count(self, state: RunState) -> int:
        """How many executed runs ended in `state`."""
        return sum(1 for value in self.states.values() if value == state)

    @property
    def ok(self) -> bool:
        """Whether every executed run succeeded (or was skipped) and nothing was interrupted."""
        return not self.interrupted and all(
            s in ("success", "skipped") for s in self.states.values()
        )


def backfill(
    pipeline: type[PipelineDefinition],
    *,
    start: str | datetime,
    end: str | datetime,
    store: RunStore,
    settings: Settings,
    project_dir: Path,
    config_file: Path | None = None,
    pipelines_dir: Path | None = None,
    reprocess: Reprocess = "missing",
    max_active: int = 1,
    reverse: bool = False,
    clock: Clock | None = None,
    launch: Launcher | None = None,
    poll_seconds: float = 0.5,
    notifiers: Mapping[str, Any] | None = None,
) -> BackfillSummary:
    """Run `pipeline` for every interval whose logical date is in `[start, end]`; see module doc.

    Args:
        start, end: the range of logical dates (`YYYY-MM-DD` or ISO; naive means the
            pipeline's timezone), both included.
        reprocess: which existing runs run again: `missing`, `failed` or `all`.
        max_active: runs at once.
        reverse: newest first.
        launch: starts a run's worker (default `python -m etlkit.runs.worker` in `project_dir`).
        notifiers: the configured notifiers by name, for `on_failure`.

    Raises:
        SchedulerError: the pipeline has no schedule.
        ConfigError: a bad date, range, mode or `max_active`.
    """
    schedule = Schedule.of(pipeline)
    if schedule is None:
        raise SchedulerError(
            f"Pipeline '{pipeline.name}' has no schedule, so it has no intervals to backfill; "
            "give it a `schedule`, or run single dates with `etlkit run --date`."
        )
    if reprocess not in REPROCESS:
        raise ConfigError(f"reprocess must be one of {', '.join(REPROCESS)}, not {reprocess!r}.")
    if max_active < 1:
        raise ConfigError(f"max_active must be >= 1, not {max_active}.")
    first = parse_moment(start, schedule.tz, what="Backfill start")
    last = parse_moment(end, schedule.tz, what="Backfill end")
    if last < first:
        raise ConfigError(f"Backfill end {end} is before its start {start}.")
    clock = clock or SystemClock()
    intervals = schedule.between(first, last)
    if reverse:
        intervals.reverse()
    plan, kept, elsewhere = _prepare(
        pipeline, schedule, intervals, store, settings, reprocess, clock
    )
    logger.info(
        "backfill of %s: %d intervals from %s to %s; %d to run, %d kept, %d running elsewhere",
        pipeline.name,
        len(intervals),
        first.isoformat(),
        last.isoformat(),
        len(plan),
        len(kept),
        len(elsewhere),
    )
    launcher = launch or launcher_for(
        settings.scheduler.worker_start,
        project_dir,
        config_file=config_file,
        pipelines_dir=Path(pipelines_dir or settings.paths.pipelines_dir),
        worker_flags=worker_flags(settings),
    )
    children = Children(store, launcher, clock)
    interrupted = False
    loop = _Loop(pipeline, children, store, settings, clock, dict(notifiers or {}))
    try:
        loop.execute(plan, max_active, poll_seconds)
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("backfill of %s interrupted; run it again to resume", pipeline.name)
        children.terminate_all(reason="the backfill was interrupted")
    finally:
        close_launcher(launcher)
    states = {run_id: store.get_run(run_id).state for run_id in plan}
    return BackfillSummary(
        pipeline=pipeline.name,
        logical_dates=tuple(i.start for i in intervals),
        states=states,
        kept=tuple(kept),
        elsewhere=tuple(elsewhere),
        interrupted=interrupted,
    )


def _prepare(
    pipeline: type[PipelineDefinition],
    schedule: Schedule,
    intervals: list[DataInterval],
    store: RunStore,
    settings: Settings,
    reprocess: Reprocess,
    clock: Clock,
) -> tuple[list[str], list[str], list[str]]:
    """Create or requeue the runs to execute: `(to run, kept, running elsewhere)`, by run id."""
    if not intervals:
        return [], [], []
    bounds = sorted((intervals[0].start, intervals[-1].start))
    existing = store.scheduled_runs(pipeline.name, start=bounds[0], end=bounds[1])
    params = pipeline.resolve_params({})
    plan: list[str] = []
    kept: list[str] = []
    elsewhere: list[str] = []
    for interval in intervals:
        now = clock.now()
        record: RunRecord | None = existing.get(interval.start)
        if record is None:
            try:
                record = store.create_run(
                    run_id=new_run_id(now),
                    pipeline=pipeline.name,
                    logical_date=interval.start,
                    params=params,
                    trigger="backfill",
                    staging_root=settings.paths.staging_root,
                    at=now,
                    data_interval_start=interval.start,
                    data_interval_end=interval.end,
                    timezone=pipeline.timezone,
                )
            except RunExistsError as exc:  # a scheduler planned it meanwhile
                record = store.get_run(exc.existing_run_id)
            else:
                plan.append(record.run_id)
                continue
        if record.state == "queued":
            plan.append(record.run_id)
        elif record.state == "running":
            elsewhere.append(record.run_id)
        elif record.state in _RERUN[reprocess]:
            resume = reprocess != "all"
            if not resume:
                from etlkit.storage.staging import Staging

                Staging(record.staging_root).delete_run(pipeline.name, record.run_id)
            if store.requeue_run(
                record.run_id,
                from_states=(record.state,),
                reason=f"backfill --reprocess {reprocess}",
                resume=resume,
                attempt=record.attempt,
                at=now,
            ):
                plan.append(record.run_id)
            else:  # it changed meanwhile: someone else is on it
                elsewhere.append(record.run_id)
        else:
            kept.append(record.run_id)
    return plan, kept, elsewhere


@dataclass
class _Loop:
    """Executes the planned runs: pokes their sensors, launches, reaps, notifies failures."""

    pipeline: type[PipelineDefinition]
    children: Children
    store: RunStore
    settings: Settings
    clock: Clock
    notifiers: dict[str, Any]

    def execute(self, plan: list[str], max_active: int, poll_seconds: float) -> None:
        """Launch the planned runs, `max_active` at once, until all of them ended."""
        store, children = self.store, self.children
        gate = SensorGate(store, self.clock, store_path=self.settings.paths.store)
        pending = list(plan)
        watched: set[str] = set()  # runs another process claimed: wait for their end
        while True:
            decided = [child.run_id for child in children.reap()]
            decided += [
                r.run_id
                for r in sweep_stale(  # a run another process took on, and lost
                    store,
                    now=self.clock.now(),
                    stale_after=self.settings.scheduler.stale_after_seconds,
                    on_stale="fail",  # nobody would launch a backfill run queued again
                    own={child.run_id for child in children},
                    among=watched,
                )
            ]
            for run_id in list(pending):
                if len(children) >= max_active:
                    break
                record = store.get_run(run_id)
                verdict = gate.check(record, self.pipeline) if record.state == "queued" else ""
                if verdict == "waiting":
                    continue  # its sensors hold no process: the next run may start
                pending.remove(run_id)
                if verdict in ("failed", "skipped"):
                    decided.append(run_id)
                elif store.claim_run(run_id, at=self.clock.now()):
                    if not children.launch(store.get_run(run_id)):
                        decided.append(run_id)
                elif store.get_run(run_id).state in ACTIVE_STATES:
                    watched.add(run_id)
            self.notify(decided)
            watched = {r for r in watched if store.get_run(r).state in ACTIVE_STATES}
            if not pending and not len(children) and not watched:
                return
            children.wait(poll_seconds)

    def notify(self, run_ids: list[str]) -> None:
        """`on_failure` for the runs that failed here and were not notified yet."""
        for run_id in run_ids:
            notify_failure(
                self.pipeline,
                run_id,
                store=self.store,
                settings=self.settings,
                notifiers=self.notifiers,
            )
