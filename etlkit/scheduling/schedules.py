"""Schedules: when each run of a pipeline is due, and which data interval it covers.

A schedule is a 5-field cron expression, a preset (`@daily`, ...) or a `timedelta`. Its
boundaries `t_0 < t_1 < ...` cut time into data intervals; as in Airflow, the run for
`[t_i, t_{i+1})` is due at `t_{i+1}` and its logical date is `t_i`.

Cron expressions are read on the wall clock of the schedule's timezone, with Airflow's rules for
daylight saving time:

- An expression with fixed hours (`30 2 * * *`) fires at that wall-clock time once per day. On a
  spring-forward day, when 02:30 does not exist, it fires at 03:30 (the same instant 02:30 would
  have been without the change: the time is shifted forward by the gap); on a fall-back day,
  when 02:30 happens twice, it fires at the first 02:30 only.
- An expression that fires every hour (`0 * * * *`, `*/15 * * * *`) steps in absolute time, so
  every real hour gets its run: 23 hourly runs on a spring-forward day, 25 on a fall-back day.

A `timedelta` steps in absolute time from `start_date` (or from 1970-01-01 UTC without one), so
its timezone only says how a naive `start_date` is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from etlkit.errors import ConfigError, PipelineDefinitionError

if TYPE_CHECKING:
    from etlkit.model.pipeline import PipelineDefinition

PRESETS: Final[dict[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: How many intervals one call to `Schedule.due` returns at most (catchup proceeds in batches).
MAX_DUE: Final = 64
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TICK: Final = timedelta(microseconds=1)


def interval_text(interval: timedelta) -> str:
    """A `timedelta` schedule as people write it: `every 1d`, `every 6h`, `every 1h30m`."""
    seconds = int(interval.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    fraction = interval.microseconds / 1_000_000 if interval < timedelta(seconds=1) else 0
    return "every " + ("".join(parts) or f"{fraction:g}s")


@dataclass(frozen=True)
class DataInterval:
    """The data a scheduled run covers: `[start, end)`; its logical date is `start`."""

    start: datetime
    end: datetime

    @property
    def logical_date(self) -> datetime:
        """The run's logical date: the start of its interval."""
        return self.start


class Schedule:
    """A pipeline's timetable: its boundaries, due intervals and catchup behaviour.

    Example:
        ```python
        daily = Schedule("30 2 * * *", timezone="Europe/Berlin", start_date="2025-03-01")
        daily.due(now, last=None)  # the intervals due at `now`, none planned yet
        ```

    Raises:
        PipelineDefinitionError: a bad expression, timezone or date (the message says which).
    """

    def __init__(
        self,
        spec: str | timedelta,
        *,
        timezone: str = "UTC",
        start_date: str | datetime | None = None,
        end_date: str | datetime | None = None,
        catchup: bool = False,
        pipeline: str = "?",
    ) -> None:
        self.pipeline = pipeline
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise self._invalid(
                f"timezone {timezone!r} is not an IANA timezone (e.g. 'Europe/Berlin', 'UTC')"
            ) from exc
        self.timezone = timezone
        self.catchup = catchup
        self.interval: timedelta | None = None
        self.expression = ""
        self._every_hour = False
        if isinstance(spec, timedelta):
            if spec <= timedelta(0):
                raise self._invalid(f"schedule interval {spec} must be positive")
            self.interval = spec
            self.text = interval_text(spec)
        else:
            self.text = spec
            self.expression = PRESETS.get(spec.strip().lower(), spec.strip())
            if len(self.expression.split()) != 5 or not croniter.is_valid(self.expression):
                raise self._invalid(
                    f"schedule {spec!r} is neither a 5-field cron expression"
                    f" ('30 2 * * *') nor a preset ({', '.join(PRESETS)}) nor a timedelta"
                )
            hours = croniter(self.expression).expanded[1]
            self._every_hour = hours == ["*"] or len(hours) == 24
        self.start_date = self._moment(start_date, "start_date")
        self.end_date = self._moment(end_date, "end_date")
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise self._invalid(f"end_date {end_date} is before start_date {start_date}")
        self._anchor = self.start_date or _EPOCH
        #: the first logical date the scheduler plans, and the last (None: unbounded)
        self.first_start = None if self.start_date is None else self.at_or_after(self.start_date)
        self.last_start = None if self.end_date is None else self.at_or_before(self.end_date)

    @classmethod
    def of(cls, pipeline: type[PipelineDefinition]) -> Schedule | None:
        """The schedule a pipeline class declares, or None when it has none.

        Raises:
            PipelineDefinitionError: its schedule, timezone or dates are invalid.
        """
        if pipeline.schedule is None:
            return None
        return cls(
            pipeline.schedule,
            timezone=pipeline.timezone,
            start_date=pipeline.start_date,
            end_date=pipeline.end_date,
            catchup=pipeline.catchup,
            pipeline=pipeline.name,
        )

    def __repr__(self) -> str:
        return f"Schedule({self.text!r}, timezone={self.timezone!r})"

    # -- boundaries ------------------------------------------------------------------------------

    def next_after(self, moment: datetime) -> datetime:
        """The first boundary strictly after `moment` (UTC)."""
        if self.interval is not None:
            return self._anchor + ((moment - self._anchor) // self.interval + 1) * self.interval
        return self._cron_step(moment, forward=True)

    def at_or_before(self, moment: datetime) -> datetime:
        """The last boundary at or before `moment` (UTC)."""
        if self.interval is not None:
            return self._anchor + ((moment - self._anchor) // self.interval) * self.interval
        boundary = self._cron_step(moment, forward=False)
        following = self.next_after(boundary)  # a naive step back can overshoot around DST
        while following <= moment:
            boundary, following = following, self.next_after(following)
        return boundary

    def at_or_after(self, moment: datetime) -> datetime:
        """The first boundary at or after `moment` (UTC)."""
        return self.next_after(moment - _TICK)

    def interval_from(self, start: datetime) -> DataInterval:
        """The data interval that starts at boundary `start`."""
        return DataInterval(start, self.next_after(start))

    def interval_containing(self, moment: datetime) -> DataInterval:
        """The data interval `moment` falls in."""
        return self.interval_from(self.at_or_before(moment))

    def between(self, start: datetime, end: datetime) -> list[DataInterval]:
        """The intervals whose logical date is in `[start, end]`, oldest first (for backfill).

        The pipeline's start_date and end_date do not limit them.
        """
        found = []
        boundary = self.at_or_after(start)
        while boundary <= end:
            following = self.next_after(boundary)
            found.append(DataInterval(boundary, following))
            boundary = following
        return found

    # -- planning --------------------------------------------------------------------------------

    def due(
        self, now: datetime, last: datetime | None, *, limit: int = MAX_DUE
    ) -> list[DataInterval]:
        """The intervals to plan at `now`, oldest first, given the last logical date planned.

        An interval is due once it ended. With `catchup`, every due interval after `last` (or
        from `start_date`) is returned, at most `limit` per call; without it, only the latest
        one, so a scheduler that was down runs once, not once per missed interval.
        """
        latest = self.at_or_before(self.at_or_before(now) - _TICK)  # latest interval that ended
        if self.last_start is not None and latest > self.last_start:
            latest = self.last_start
        if self.first_start is not None and latest < self.first_start:
            return []
        if last is not None and latest <= last:
            return []
        if not self.catchup or (last is None and self.first_start is None):
            return [self.interval_from(latest)]
        if last is None:
            boundary = self.first_start or latest
        else:
            boundary = self.next_after(last)
            if self.first_start is not None and boundary < self.first_start:
                boundary = self.first_start
        found: list[DataInterval] = []
        while boundary <= latest and len(found) < limit:
            found.append(self.interval_from(boundary))
            boundary = found[-1].end
        return found

    def next_due(self, now: datetime, last: datetime | None) -> DataInterval | None:
        """The next interval the scheduler will plan (due at its end, perhaps already due)."""
        due = self.due(now, last, limit=1)
        if due:
            return due[0]
        start = self.at_or_before(now)
        if last is not None and start <= last:
            start = self.next_after(last)
        if self.first_start is not None and start < self.first_start:
            start = self.first_start
        if self.last_start is not None and start > self.last_start:
            return None
        return self.interval_from(start)

    # -- internals -------------------------------------------------------------------------------

    def _cron_step(self, moment: datetime, *, forward: bool) -> datetime:
        """The next (previous) cron time strictly after (before) `moment`; see the module doc."""
        naive = moment.astimezone(self.tz).replace(tzinfo=None)
        times = croniter(self.expression, naive)
        while True:
            candidate: datetime = times.get_next(datetime) if forward else times.get_prev(datetime)
            if self._every_hour:
                found = moment + (candidate - naive)
            else:  # fold=0: the first of two ambiguous times; a missing time moves forward
                found = candidate.replace(tzinfo=self.tz)
            found = found.astimezone(UTC)
            if (found > moment) if forward else (found < moment):
                return found

    def _moment(self, value: str | datetime | None, what: str) -> datetime | None:
        if value is None:
            return None
        try:
            return parse_moment(value, self.tz, what=what)
        except ConfigError as exc:
            raise self._invalid(str(exc)) from exc

    def _invalid(self, problem: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(self.pipeline, [problem])


def pipeline_zone(pipeline: type[PipelineDefinition]) -> ZoneInfo:
    """The pipeline's timezone.

    Raises:
        PipelineDefinitionError: it is not an IANA timezone.
    """
    try:
        return ZoneInfo(pipeline.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise PipelineDefinitionError(
            pipeline.name,
            [f"timezone {pipeline.timezone!r} is not an IANA timezone (e.g. 'Europe/Berlin')"],
        ) from exc


def parse_moment(value: str | datetime, tz: ZoneInfo, *, what: str = "date") -> datetime:
    """A UTC datetime from `YYYY-MM-DD`, ISO text or a datetime; naive means in `tz`.

    Raises:
        ConfigError: the text is not a date, or it is out of range.
    """
    from etlkit.model.pipeline import parse_moment as parse_local

    return parse_local(value, tz, what=what).astimezone(UTC)
