"""The scheduler loop: plan due runs, poke sensors, launch workers, reap them, find vanished runs.

One `tick()` does one round of everything, so tests drive it with a `FakeClock` and a fake
launcher; `serve()` ticks every `scheduler.poll_seconds` until SIGINT or SIGTERM.

- Planning: every due interval of every unpaused, scheduled pipeline is recorded as a queued run
  (trigger `schedule`) before anything starts. The store allows one scheduled run per pipeline
  and logical date, so a restarted scheduler, or two schedulers on one store, never plan a run
  twice (`RunExistsError` means it is planned already), and the next interval to plan follows
  the last one planned, so none is skipped either.
- Launching: queued runs (trigger `schedule` or `triggered`; backfills launch their own) start
  oldest first, once their sensors passed, each in a worker process, within the pipeline's
  `max_active_runs` and `scheduler.max_active_runs`; the store claims each run atomically, so
  only one scheduler launches it. Runs of a paused pipeline stay queued, triggered ones included
  (as in Airflow), until it is unpaused.
- Reaping and recovery: a worker that ended without recording its run's end (killed by a signal,
  out of memory) fails its run with the reason; a run whose process vanished (no heartbeat for
  `scheduler.stale_after_seconds` and no process) is failed or queued again (`scheduler.on_stale`).
- Notifying: a failure the scheduler decides (those two, a sensor that failed or timed out, a
  worker that would not start) calls the pipeline's `on_failure`; the store's claim makes every
  failed attempt notify once, whether its worker or the scheduler noticed it.

The first SIGINT or SIGTERM stops launching and waits for the running workers; a second one
terminates them and marks their runs interrupted.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from etlkit.errors import EtlkitError, RunExistsError
from etlkit.runs.executors import worker_flags
from etlkit.runs.notifying import notify_failure
from etlkit.scheduling.catalog import Catalog
from etlkit.scheduling.clock import Clock, SystemClock
from etlkit.scheduling.processes import Children, Launcher, OnStale, sweep_stale
from etlkit.scheduling.sensing import SensorGate
from etlkit.scheduling.warmstart import close_launcher, launcher_for
from etlkit.storage.store import RunStore, new_run_id

if TYPE_CHECKING:
    from etlkit.settings.config import Settings

logger = logging.getLogger(__name__)

#: Triggers of the queued runs the scheduler launches.
LAUNCHED_TRIGGERS: Final = ("schedule", "triggered")
#: The state key remembering the last logical date planned (runs may be deleted by gc).
LAST_PLANNED_KEY: Final = "scheduler.last_logical_date"
_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
_NAP: Final = 0.25  # longest single sleep, so a stop request is noticed quickly


@dataclass(frozen=True)
class TickReport:
    """What one tick did, by run id."""

    planned: tuple[str, ...] = ()
    launched: tuple[str, ...] = ()
    ended: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()


class Scheduler:
    """Runs every pipeline of a folder on its schedule, each run in a worker process.

    Example:
        ```python
        with RunStore(settings.paths.store) as store:
            Scheduler(store, settings, project_dir=Path(".")).serve()
        ```

    Args:
        store: the run store (shared with the workers, and with other schedulers).
        settings: resolved project settings (`[scheduler]`, paths).
        project_dir: where workers run and find `etlkit.toml`.
        pipelines_dir: the pipelines folder (default `paths.pipelines_dir`).
        config_file: the config file workers read (default `<project_dir>/etlkit.toml`).
        clock: the time (default the system clock; tests pass a `FakeClock`).
        launch: starts a claimed run's worker (default `python -m etlkit.runs.worker`).
        log_level: the workers' log level.
        notifiers: the configured notifiers by name, for the failures the scheduler decides.
    """

    def __init__(
        self,
        store: RunStore,
        settings: Settings,
        *,
        project_dir: Path,
        pipelines_dir: Path | None = None,
        config_file: Path | None = None,
        clock: Clock | None = None,
        launch: Launcher | None = None,
        log_level: str = "INFO",
        notifiers: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.notifiers = dict(notifiers or {})
        self.settings = settings
        self.clock = clock or SystemClock()
        pipelines = Path(pipelines_dir or settings.paths.pipelines_dir)
        self.catalog = Catalog(pipelines)
        launcher = launch or launcher_for(
            settings.scheduler.worker_start,
            project_dir,
            config_file=config_file,
            pipelines_dir=pipelines,
            log_level=log_level,
            worker_flags=worker_flags(settings),
        )
        self.children = Children(store, launcher, self.clock)
        self.sensors = SensorGate(store, self.clock, store_path=settings.paths.store)
        self.scheduler_id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.started_at = self.clock.now()
        self.stopping = False
        self.forced = False
        #: the signal that first stopped `serve` (SIGINT: Ctrl-C), or None
        self.stopped_by: int | None = None
        self._unknown: set[str] = set()
        self._decided: list[str] = []  # runs this round ended here (sensors, launch failures)

    # -- one round -------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Reload changed pipelines, reap workers, recover vanished runs, plan, poke, launch."""
        now = self.clock.now()
        self.catalog.refresh()
        self.store.scheduler_heartbeat(
            self.scheduler_id, pid=os.getpid(), started_at=self.started_at, at=now
        )
        ended = tuple(child.run_id for child in self.children.reap())
        stale = tuple(
            record.run_id
            for record in sweep_stale(
                self.store,
                now=now,
                stale_after=self.settings.scheduler.stale_after_seconds,
                on_stale=_on_stale(self.settings.scheduler.on_stale),
                own={child.run_id for child in self.children},
            )
        )
        if self.stopping:
            self.notify_failures([*ended, *stale])
            return TickReport(ended=ended, stale=stale)
        planned = self.plan(now)
        launched, waiting = self.launch(now)
        self.notify_failures([*ended, *stale, *self._decided])
        self._decided.clear()
        return TickReport(planned, launched, ended, stale, waiting)

    def notify_failures(self, run_ids: list[str]) -> None:
        """Call `on_failure` for those of these runs that failed and nobody notified yet."""
        for run_id in run_ids:
            record = self.store.get_run(run_id)
            entry = self.catalog.get(record.pipeline)
            if record.state != "failed" or entry is None:
                continue
            failed_node = ""
            for event in reversed(self.store.events(run_id)):
                if event.kind in ("node_failed", "sensor_failed"):
                    failed_node = event.node
                    break
            notify_failure(
                entry.pipeline,
                run_id,
                store=self.store,
                settings=entry.pipeline.layered(self.settings),
                notifiers=self.notifiers,
                node=failed_node,
            )

    def plan(self, now: datetime) -> tuple[str, ...]:
        """Record a queued run for every due interval of every unpaused scheduled pipeline."""
        planned = []
        paused = self.store.paused_pipelines()
        for name, entry in sorted(self.catalog.entries.items()):
            if entry.schedule is None or name in paused:
                continue
            last = known = last_planned(self.store, name)
            params = entry.pipeline.resolve_params({})
            for interval in entry.schedule.due(now, last):
                run_id = new_run_id(now)
                try:
                    self.store.create_run(
                        run_id=run_id,
                        pipeline=name,
                        logical_date=interval.start,
                        params=params,
                        trigger="schedule",
                        staging_root=self.settings.paths.staging_root,
                        at=now,
                        data_interval_start=interval.start,
                        data_interval_end=interval.end,
                        timezone=entry.pipeline.timezone,
                    )
                except RunExistsError as exc:  # planned already, by us before a restart or a peer
                    logger.debug("%s: %s", name, exc)
                else:
                    planned.append(run_id)
                    logger.info(
                        "run %s of %s planned: interval %s to %s",
                        run_id,
                        name,
                        interval.start.isoformat(),
                        interval.end.isoformat(),
                    )
                last = interval.start
            if last is not None and last != known:
                self.store.set_state(name, LAST_PLANNED_KEY, last.isoformat(), at=now)
        return tuple(planned)

    def launch(self, now: datetime) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Start the queued runs whose sensors passed, oldest first, within the limits.

        Returns the runs launched and the runs still waiting for a sensor.
        """
        launched: list[str] = []
        waiting: list[str] = []
        paused = self.store.paused_pipelines()
        queue = [
            record
            for record in self.store.active_runs()
            if record.state == "queued" and record.trigger in LAUNCHED_TRIGGERS
        ]
        queue.sort(key=lambda r: (r.created_at, r.logical_date, r.run_id))  # catchup in order
        for record in queue:
            entry = self.catalog.get(record.pipeline)
            if entry is None:
                if record.run_id not in self._unknown:
                    self._unknown.add(record.run_id)
                    logger.warning(
                        "run %s stays queued: pipeline '%s' is not in %s (or failed to load)",
                        record.run_id,
                        record.pipeline,
                        self.catalog.pipelines_dir,
                    )
                continue
            if record.pipeline in paused:
                continue
            verdict = self.sensors.check(record, entry.pipeline)
            if verdict == "waiting":
                waiting.append(record.run_id)
                continue
            if verdict == "failed":
                self._decided.append(record.run_id)
            if verdict != "passed":
                continue
            claimed = self.store.claim_run(
                record.run_id,
                pipeline_limit=entry.pipeline.max_active_runs,
                global_limit=self.settings.scheduler.max_active_runs,
                at=now,
            )
            if not claimed:
                continue
            self.sensors.forget(record.run_id)
            if self.children.launch(self.store.get_run(record.run_id)):
                launched.append(record.run_id)
            else:  # its worker would not start: the run failed
                self._decided.append(record.run_id)
        return tuple(launched), tuple(waiting)

    # -- running until stopped -------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Stop launching (and, with `force`, terminate the running workers). Signal-safe."""
        if force or self.stopping:
            self.forced = True
        self.stopping = True

    def serve(self) -> None:
        """Tick every `scheduler.poll_seconds` until stopped; then wait for running workers.

        In the main thread, SIGINT and SIGTERM call `stop()` (the second one forcefully).
        """
        previous = self._install_signal_handlers()
        self.store.forget_dead_schedulers()
        logger.info(
            "scheduler %s started: pipelines in %s, run store %s",
            self.scheduler_id,
            self.catalog.pipelines_dir,
            self.store.path,
        )
        try:
            while not self.stopping:
                self._round()
                self._nap(self.settings.scheduler.poll_seconds, until_forced=False)
            logger.info(
                "scheduler stopping: launching no more runs; waiting for %d running (signal "
                "again to terminate them)",
                len(self.children),
            )
            while len(self.children) and not self.forced:
                self._round()
                self._nap(min(1.0, self.settings.scheduler.poll_seconds), until_forced=True)
            if len(self.children):
                self.children.terminate_all(reason="the scheduler was stopped by a second signal")
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.store.remove_scheduler(self.scheduler_id)
            close_launcher(self.children.launcher)
            logger.info("scheduler %s stopped", self.scheduler_id)

    # -- internals -------------------------------------------------------------------------------

    def _round(self) -> None:
        """One tick in `serve`: a failing round (a store locked too long) is logged, not fatal."""
        try:
            self.tick()
        except EtlkitError as exc:
            logger.error("scheduler round failed, trying again next round: %s", exc)

    def _nap(self, seconds: float, *, until_forced: bool) -> None:
        left = seconds
        while left > 0 and not (self.forced if until_forced else self.stopping):
            step = min(left, _NAP)
            self.clock.sleep(step)
            left -= step

    def _install_signal_handlers(self) -> dict[signal.Signals, _SignalHandler]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self.stopped_by is None:
                self.stopped_by = signum
            self.stop(force=self.stopping)

        previous: dict[signal.Signals, _SignalHandler] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, on_signal)
        return previous


def last_planned(store: RunStore, pipeline: str) -> datetime | None:
    """The last logical date the scheduler planned for `pipeline` (None: never)."""
    from_runs = store.last_logical_date(pipeline)
    text = store.get_state(pipeline, LAST_PLANNED_KEY)
    from_state = datetime.fromisoformat(text).astimezone(UTC) if text else None
    known = [moment for moment in (from_runs, from_state) if moment is not None]
    return max(known) if known else None


def _on_stale(value: str) -> OnStale:
    return "retry" if value == "retry" else "fail"


def serve(
    project_dir: Path,
    *,
    settings: Settings,
    config_file: Path | None = None,
    pipelines_dir: Path | None = None,
    log_level: str = "INFO",
    on_start: Callable[[Scheduler], None] | None = None,
) -> int | None:
    """Run the scheduler of a project until SIGINT or SIGTERM (what `etlkit scheduler` does).

    `on_start` is called once the store is open, before the first round.

    Returns:
        The signal that stopped it (`signal.SIGINT` for Ctrl-C), or None.

    Raises:
        StoreError: the run store cannot be opened.
    """
    from etlkit.runs.notifications import load_notifiers

    notifiers = load_notifiers(project_dir, config_file=config_file)
    with RunStore(settings.paths.store) as store:
        scheduler = Scheduler(
            store,
            settings,
            project_dir=project_dir,
            pipelines_dir=pipelines_dir,
            config_file=config_file,
            log_level=log_level,
            notifiers=notifiers,
        )
        if on_start is not None:
            on_start(scheduler)
        scheduler.serve()
        return scheduler.stopped_by
