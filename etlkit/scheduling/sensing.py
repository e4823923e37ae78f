"""Sensors poked by the scheduler: a due run starts only once all its sensors passed.

While a run waits, it holds no process and no worker slot: the scheduler pokes each sensor from
its loop every `poke_interval` seconds. The wait starts when the scheduler first pokes (recorded
as a `sensor_waiting` event, so a restarted scheduler keeps counting from there). On timeout a
`soft_fail` sensor skips the run (state `skipped`); otherwise the run fails with
`sensor 'x' timed out after N s waiting for <what>`. A poke that raises fails the run at once,
except a `TransientError`, which counts as "not yet".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from etlkit.errors import SensorTimeoutError, TransientError
from etlkit.model.nodes import Context, Sensor
from etlkit.model.pipeline import PipelineDefinition
from etlkit.scheduling.clock import Clock
from etlkit.scheduling.schedules import pipeline_zone
from etlkit.storage.store import RunRecord, RunStore

logger = logging.getLogger(__name__)

Verdict = Literal["waiting", "passed", "skipped", "failed"]


@dataclass
class _Waiting:
    since: datetime
    next_poke: dict[str, datetime] = field(default_factory=dict)
    passed: set[str] = field(default_factory=set)
    announced: bool = False  # the `sensors_passed` event is recorded


class SensorGate:
    """Pokes the sensors of queued runs until each run passes, is skipped or fails."""

    def __init__(self, store: RunStore, clock: Clock, *, store_path: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.store_path = store_path
        self._waiting: dict[str, _Waiting] = {}

    def forget(self, run_id: str) -> None:
        """Drop what is known about a run's sensors (it launched or ended)."""
        self._waiting.pop(run_id, None)

    def check(self, record: RunRecord, pipeline: type[PipelineDefinition]) -> Verdict:
        """Poke the run's sensors that are due; say whether the run may start.

        `skipped` and `failed` runs are finished in the store here.
        """
        sensors = {
            name: node for name, node in pipeline.graph().nodes.items() if isinstance(node, Sensor)
        }
        if not sensors:
            return "passed"
        now = self.clock.now()
        waiting = self._waiting.get(record.run_id)
        if waiting is None:
            waiting = self._waiting[record.run_id] = _Waiting(self._since(record, sensors, now))
        ctx = _context(record, pipeline, self.store_path)
        for name, sensor in sensors.items():
            waited = (now - waiting.since).total_seconds()
            due = waiting.next_poke.get(name, now) <= now or waited >= sensor.timeout
            if name in waiting.passed or not due:
                continue
            node_ctx = ctx.for_node(name)
            try:
                passed = sensor.poke(node_ctx)
            except TransientError as exc:
                logger.warning("run %s: sensor %s: %s (poking again)", record.run_id, name, exc)
                passed = False
            except Exception as exc:  # the node boundary: user code of any kind
                error = f"sensor '{name}' failed: {type(exc).__name__}: {exc}"
                return self._end(record, "failed", error, name)
            if passed:
                waiting.passed.add(name)
                logger.info("run %s of %s: sensor %s passed", record.run_id, record.pipeline, name)
                continue
            if waited >= sensor.timeout:
                timeout = SensorTimeoutError(name, sensor.timeout, _describe(sensor, node_ctx))
                if sensor.soft_fail:
                    error = (
                        f"sensor '{name}' timed out after {sensor.timeout:g} s waiting for "
                        f"{timeout.waited_for} (soft_fail: the run is skipped)"
                    )
                    return self._end(record, "skipped", error, name)
                return self._end(record, "failed", str(timeout), name)
            waiting.next_poke[name] = now + timedelta(seconds=sensor.poke_interval)
        if len(waiting.passed) < len(sensors):
            return "waiting"
        if not waiting.announced:  # it may wait for a free slot for a while: say it once
            waiting.announced = True
            self.store.add_event(
                record.run_id, "sensors_passed", payload={"sensors": sorted(sensors)}, at=now
            )
        return "passed"

    def _since(self, record: RunRecord, sensors: dict[str, Sensor], now: datetime) -> datetime:
        for event in self.store.events(record.run_id):
            if event.kind == "sensor_waiting" and event.payload.get("attempt") == record.attempt:
                return event.at
        payload = {"sensors": sorted(sensors), "attempt": record.attempt}
        self.store.add_event(record.run_id, "sensor_waiting", payload=payload, at=now)
        return now

    def _end(
        self, record: RunRecord, state: Literal["skipped", "failed"], error: str, node: str
    ) -> Verdict:
        self.forget(record.run_id)
        if self.store.finish_active_run(
            record.run_id, state, error=error, attempt=record.attempt, at=self.clock.now()
        ):
            log = logger.info if state == "skipped" else logger.error
            log("run %s of %s %s: %s", record.run_id, record.pipeline, state, error)
            self.store.add_event(
                record.run_id, f"sensor_{state}", node=node, payload={"error": error}
            )
        return state


def _describe(sensor: Sensor, ctx: Context) -> str:
    try:
        return sensor.describe(ctx)
    except Exception:  # the node boundary: a broken describe() must not hide the timeout
        logger.exception("sensor %s: describe() failed", ctx.node)
        return type(sensor).__name__


def _context(
    record: RunRecord, pipeline: type[PipelineDefinition], store_path: str | None
) -> Context:
    """The context a run's nodes will see, in the pipeline's timezone."""
    tz = pipeline_zone(pipeline)
    start, end = record.data_interval_start, record.data_interval_end
    return Context(
        pipeline=record.pipeline,
        run_id=record.run_id,
        logical_date=record.logical_date.astimezone(tz),
        params=dict(record.params),
        data_interval_start=start.astimezone(tz) if start is not None else None,
        data_interval_end=end.astimezone(tz) if end is not None else None,
        store_path=store_path,
    )
