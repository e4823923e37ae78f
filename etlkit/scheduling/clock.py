"""Where the scheduler's time comes from: the system clock, or a fake one tests drive.

clock = FakeClock(datetime(2025, 3, 1, tzinfo=UTC))
clock.advance(hours=1)   # or clock.sleep(3600): a fake clock never blocks
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from etlkit.errors import SchedulerError


@runtime_checkable
class Clock(Protocol):
    """The scheduler's notion of time: `now()` is timezone-aware; `sleep` waits."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a fake clock just moves on)."""
        ...


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> datetime:
        """`datetime.now(UTC)`."""
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        """`time.sleep(seconds)`."""
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that stands still until told to move: `advance()`, `set()`, or `sleep()`.

    Example:
        ```python
        clock = FakeClock(datetime(2025, 3, 1, 2, 0, tzinfo=UTC))
        scheduler = Scheduler(..., clock=clock, launch=fake_launch)
        clock.advance(days=1)
        scheduler.tick()
        ```
    """

    def __init__(self, start: datetime) -> None:
        if start.utcoffset() is None:
            raise SchedulerError(f"FakeClock needs a timezone-aware start; got naive {start}.")
        self._now = start.astimezone(UTC)
        self.slept = 0.0  # seconds passed to sleep(), in all

    def now(self) -> datetime:
        """The fake current time, in UTC."""
        return self._now

    def sleep(self, seconds: float) -> None:
        """Move the time on by `seconds`, at once."""
        self.slept += max(seconds, 0.0)
        self.advance(seconds=max(seconds, 0.0))

    def advance(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> datetime:
        """Move the time on; returns the new time."""
        step = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if step < timedelta(0):
            raise SchedulerError(f"A FakeClock only moves forward; got a step of {step}.")
        self._now += step
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to `moment` (timezone-aware, not before the current time)."""
        if moment.utcoffset() is None:
            raise SchedulerError(f"FakeClock.set needs a timezone-aware time; got naive {moment}.")
        if moment < self._now:
            raise SchedulerError(f"A FakeClock only moves forward: {moment} < {self._now}.")
        self._now = moment.astimezone(UTC)
