"""Schedules: cron and interval boundaries, presets, DST, catchup, start and end dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from etlkit.errors import PipelineDefinitionError
from etlkit.scheduling.schedules import PRESETS, DataInterval, Schedule

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def starts(schedule: Schedule, start: datetime, end: datetime, zone: ZoneInfo) -> list[str]:
    """Logical dates in [start, end] as local wall-clock text with the UTC offset."""
    return [
        i.start.astimezone(zone).strftime("%m-%d %H:%M%z") for i in schedule.between(start, end)
    ]


# -- cron and presets ------------------------------------------------------------------------------


def test_a_daily_cron_run_is_due_at_the_end_of_its_interval_with_the_start_as_logical_date() -> (
    None
):
    daily = Schedule("30 2 * * *", start_date="2025-03-01")
    assert daily.due(utc(2025, 3, 2, 2, 29), last=None) == []
    due = daily.due(utc(2025, 3, 2, 2, 30), last=None)
    assert due == [DataInterval(utc(2025, 3, 1, 2, 30), utc(2025, 3, 2, 2, 30))]
    assert due[0].logical_date == utc(2025, 3, 1, 2, 30)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("@yearly", [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@annually", [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@monthly", [utc(2025, 1, 1), utc(2025, 2, 1)]),
        ("@weekly", [utc(2025, 1, 5), utc(2025, 1, 12)]),  # Sundays
        ("@daily", [utc(2025, 1, 1), utc(2025, 1, 2)]),
        ("@midnight", [utc(2025, 1, 1), utc(2025, 1, 2)]),
        ("@hourly", [utc(2025, 1, 1, 0), utc(2025, 1, 1, 1)]),
    ],
)
def test_presets_are_the_cron_expressions_they_name(preset: str, expected: list[datetime]) -> None:
    schedule = Schedule(preset)
    first = schedule.at_or_after(utc(2025, 1, 1))
    assert [first, schedule.next_after(first)] == expected
    assert preset in PRESETS


def test_boundaries_step_forward_and_back() -> None:
    quarter = Schedule("*/15 * * * *")
    assert quarter.next_after(utc(2025, 1, 1, 10, 7)) == utc(2025, 1, 1, 10, 15)
    assert quarter.next_after(utc(2025, 1, 1, 10, 15)) == utc(2025, 1, 1, 10, 30)
    assert quarter.at_or_before(utc(2025, 1, 1, 10, 15)) == utc(2025, 1, 1, 10, 15)
    assert quarter.at_or_before(utc(2025, 1, 1, 10, 14, 59)) == utc(2025, 1, 1, 10, 0)
    assert quarter.interval_containing(utc(2025, 1, 1, 10, 20)) == DataInterval(
        utc(2025, 1, 1, 10, 15), utc(2025, 1, 1, 10, 30)
    )


def test_a_cron_schedule_is_read_in_its_timezone() -> None:
    daily = Schedule("0 6 * * *", timezone="Europe/Berlin", start_date="2025-01-10")
    assert daily.first_start == local(BERLIN, 2025, 1, 10, 6)
    assert daily.next_after(daily.first_start) == local(BERLIN, 2025, 1, 11, 6)


# -- intervals -------------------------------------------------------------------------------------


def test_an_interval_schedule_steps_from_its_start_date() -> None:
    every6h = Schedule(timedelta(hours=6), start_date="2025-03-01T03:00")
    assert every6h.first_start == utc(2025, 3, 1, 3)
    assert every6h.due(utc(2025, 3, 1, 8, 59), last=None) == []
    assert every6h.due(utc(2025, 3, 1, 9), last=None) == [
        DataInterval(utc(2025, 3, 1, 3), utc(2025, 3, 1, 9))
    ]
    assert every6h.next_after(utc(2025, 3, 1, 9)) == utc(2025, 3, 1, 15)
    assert every6h.at_or_before(utc(2025, 3, 1, 2)) == utc(2025, 2, 28, 21)


def test_an_interval_without_start_date_is_aligned_to_the_epoch() -> None:
    every2s = Schedule(timedelta(seconds=2))
    assert every2s.first_start is None
    assert every2s.due(utc(2025, 3, 1, 0, 0, 5), last=None) == [
        DataInterval(utc(2025, 3, 1, 0, 0, 2), utc(2025, 3, 1, 0, 0, 4))
    ]


def test_an_interval_crossing_dst_keeps_its_length() -> None:
    every12h = Schedule(timedelta(hours=12), timezone="Europe/Berlin", start_date="2025-03-29")
    found = every12h.between(local(BERLIN, 2025, 3, 29), local(BERLIN, 2025, 3, 31))
    assert {i.end - i.start for i in found} == {timedelta(hours=12)}
    assert found[0].start == local(BERLIN, 2025, 3, 29)  # naive start_date: Berlin midnight


# -- daylight saving time --------------------------------------------------------------------------


def test_berlin_spring_forward_runs_a_missing_0230_once_at_0330() -> None:
    daily = Schedule("30 2 * * *", timezone="Europe/Berlin")
    found = starts(daily, utc(2025, 3, 28), utc(2025, 4, 1), BERLIN)
    assert found == [
        "03-28 02:30+0100",
        "03-29 02:30+0100",
        "03-30 03:30+0200",  # 02:30 does not exist that day: shifted forward by the gap
        "03-31 02:30+0200",
    ]


def test_berlin_fall_back_runs_an_ambiguous_0230_once() -> None:
    daily = Schedule("30 2 * * *", timezone="Europe/Berlin")
    found = starts(daily, utc(2025, 10, 24), utc(2025, 10, 28), BERLIN)
    assert found == [
        "10-24 02:30+0200",
        "10-25 02:30+0200",
        "10-26 02:30+0200",  # the first 02:30 only
        "10-27 02:30+0100",
    ]


def test_new_york_spring_forward_runs_a_missing_0230_once_at_0330() -> None:
    daily = Schedule("30 2 * * *", timezone="America/New_York")
    spring = starts(daily, utc(2025, 3, 8), utc(2025, 3, 11), NEW_YORK)
    assert spring == ["03-08 02:30-0500", "03-09 03:30-0400", "03-10 02:30-0400"]
    fall = starts(daily, utc(2025, 11, 1), utc(2025, 11, 4), NEW_YORK)
    assert fall == ["11-01 02:30-0400", "11-02 02:30-0500", "11-03 02:30-0500"]


def test_new_york_fall_back_runs_an_ambiguous_0130_once() -> None:
    daily = Schedule("30 1 * * *", timezone="America/New_York")
    fall = starts(daily, utc(2025, 11, 1), utc(2025, 11, 4), NEW_YORK)
    assert fall == ["11-01 01:30-0400", "11-02 01:30-0400", "11-03 01:30-0500"]


def test_hourly_runs_every_real_hour_23_on_spring_forward_25_on_fall_back() -> None:
    hourly = Schedule("@hourly", timezone="Europe/Berlin")
    spring = hourly.between(local(BERLIN, 2025, 3, 30), local(BERLIN, 2025, 3, 30, 23, 59))
    fall = hourly.between(local(BERLIN, 2025, 10, 26), local(BERLIN, 2025, 10, 26, 23, 59))
    assert (len(spring), len(fall)) == (23, 25)
    assert {i.end - i.start for i in spring + fall} == {timedelta(hours=1)}


def test_due_after_a_dst_day_plans_each_day_once() -> None:
    daily = Schedule("30 2 * * *", timezone="Europe/Berlin", start_date="2025-10-25", catchup=True)
    due = daily.due(local(BERLIN, 2025, 10, 28, 3), last=None)
    assert [i.start.astimezone(BERLIN).day for i in due] == [25, 26, 27]


# -- catchup, start and end dates ------------------------------------------------------------------


def test_after_three_days_down_catchup_plans_three_runs_and_no_catchup_plans_the_latest() -> None:
    start = "2025-03-01"
    last = utc(2025, 3, 4)  # planned before the scheduler went down
    now = utc(2025, 3, 8, 0, 5)  # the intervals of the 5th, 6th and 7th are due
    with_catchup = Schedule("@daily", start_date=start, catchup=True).due(now, last)
    without = Schedule("@daily", start_date=start, catchup=False).due(now, last)
    assert [i.start for i in with_catchup] == [utc(2025, 3, 5), utc(2025, 3, 6), utc(2025, 3, 7)]
    assert [i.start for i in without] == [utc(2025, 3, 7)]


def test_nothing_is_due_twice() -> None:
    daily = Schedule("@daily", start_date="2025-03-01", catchup=True)
    assert daily.due(utc(2025, 3, 8, 0, 5), last=utc(2025, 3, 7)) == []


def test_catchup_starts_at_the_start_date_and_comes_in_batches() -> None:
    hourly = Schedule("@hourly", start_date="2025-03-01", catchup=True)
    first = hourly.due(utc(2025, 3, 10), last=None, limit=5)
    assert [i.start.hour for i in first] == [0, 1, 2, 3, 4]
    second = hourly.due(utc(2025, 3, 10), last=first[-1].start, limit=5)
    assert second[0].start == utc(2025, 3, 1, 5)


def test_a_start_date_off_the_schedule_starts_at_the_next_boundary() -> None:
    daily = Schedule("0 6 * * *", start_date="2025-03-01T12:00", catchup=True)
    assert daily.first_start == utc(2025, 3, 2, 6)
    assert daily.due(utc(2025, 3, 3, 5), last=None) == []


def test_the_end_date_is_the_last_logical_date_planned() -> None:
    daily = Schedule("@daily", start_date="2025-03-01", end_date="2025-03-03", catchup=True)
    due = daily.due(utc(2025, 3, 20), last=None)
    assert [i.start.day for i in due] == [1, 2, 3]
    assert daily.due(utc(2025, 3, 20), last=utc(2025, 3, 3)) == []
    assert daily.next_due(utc(2025, 3, 20), last=utc(2025, 3, 3)) is None


def test_next_due_is_the_end_of_the_next_interval_to_plan() -> None:
    daily = Schedule("@daily", start_date="2025-03-01")
    upcoming = daily.next_due(utc(2025, 3, 5, 13), last=utc(2025, 3, 4))
    assert upcoming == DataInterval(utc(2025, 3, 5), utc(2025, 3, 6))
    overdue = daily.next_due(utc(2025, 3, 5, 13), last=utc(2025, 3, 1))
    assert overdue == DataInterval(utc(2025, 3, 4), utc(2025, 3, 5))  # no catchup: due now
    before_start = Schedule("@daily", start_date="2025-04-01").next_due(utc(2025, 3, 5), None)
    assert before_start == DataInterval(utc(2025, 4, 1), utc(2025, 4, 2))


def test_between_ignores_the_start_and_end_dates() -> None:
    daily = Schedule("@daily", start_date="2025-03-10", end_date="2025-03-11")
    assert [i.start.day for i in daily.between(utc(2025, 3, 1), utc(2025, 3, 3))] == [1, 2, 3]
    assert daily.between(utc(2025, 3, 1, 1), utc(2025, 3, 1, 23)) == []


# -- invalid schedules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spec": "* * * * * *"}, "neither a 5-field cron expression"),
        ({"spec": "61 * * * *"}, "neither a 5-field cron expression"),
        ({"spec": "@sometimes"}, r"preset \(@yearly"),
        ({"spec": timedelta(0)}, "must be positive"),
        ({"spec": "@daily", "timezone": "Mars/Olympus"}, "not an IANA timezone"),
        ({"spec": "@daily", "start_date": "soon"}, "start_date 'soon' is not a date"),
        (
            {"spec": "@daily", "start_date": "2025-03-02", "end_date": "2025-03-01"},
            "before start_date",
        ),
    ],
)
def test_invalid_schedules_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    spec = kwargs.pop("spec")
    with pytest.raises(PipelineDefinitionError, match=message) as raised:
        Schedule(spec, pipeline="report", **kwargs)  # type: ignore[arg-type]  # test table
    assert raised.value.pipeline == "report"
