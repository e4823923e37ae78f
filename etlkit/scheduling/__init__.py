"""Schedules, the scheduler loop, sensors poked by the scheduler, backfill, and the clock.

- `schedules`: cron, presets and intervals; data intervals; DST; catchup.
- `clock`: `Clock`, `SystemClock`, `FakeClock`.
- `scheduler`: `Scheduler` (`tick()` / `serve()`), `serve()` for `etlkit scheduler`.
- `processes`: worker processes (`python -m etlkit.runs.worker`), reaping, vanished runs.
- `warmstart`: workers started warm (`WarmLauncher`), forked by the fork server (`forkserver`).
- `sensing`: sensors poked from the scheduler loop, holding no process.
- `control`: `trigger`, `pause`, `unpause`, `status`.
- `backfill`: `backfill` over a range of logical dates.
- `load_pools` (from `etlkit.settings.pools`, which `etlkit run` needs without the scheduler).

`python -m etlkit.scheduling --project DIR` runs the scheduler.
"""

from __future__ import annotations

from etlkit.scheduling.backfill import BackfillSummary, Reprocess, backfill
from etlkit.scheduling.clock import Clock, FakeClock, SystemClock
from etlkit.scheduling.control import PipelineStatus, pause, status, trigger, unpause
from etlkit.scheduling.processes import Handle, Launcher, SubprocessLauncher
from etlkit.scheduling.scheduler import Scheduler, TickReport, serve
from etlkit.scheduling.schedules import PRESETS, DataInterval, Schedule
from etlkit.settings.pools import load_pools

__all__ = [
    "PRESETS",
    "BackfillSummary",
    "Clock",
    "DataInterval",
    "FakeClock",
    "Handle",
    "Launcher",
    "PipelineStatus",
    "Reprocess",
    "Schedule",
    "Scheduler",
    "SubprocessLauncher",
    "SystemClock",
    "TickReport",
    "backfill",
    "load_pools",
    "pause",
    "serve",
    "status",
    "trigger",
    "unpause",
]
