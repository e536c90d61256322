"""Calendar periods: DST-correct boundaries and lazy, idempotent rollover."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tracking import (
    EVENT_TRACKER_RESET,
    CountLimiter,
    CountTracker,
    InvalidSpecError,
    KeyExists,
    ResetPolicy,
    TrackingTypeError,
    TrackingValueError,
    tracker_from_spec,
)
from tracking.events import BaseEvent
from tracking.periods import ResetPeriod, period_from_spec


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("now", "start", "hours"),
    [
        ("2026-03-28 12:00", "2026-03-27 23:00", 24),  # winter: midnight Berlin = 23:00 UTC
        ("2026-03-29 12:00", "2026-03-28 23:00", 23),  # spring forward: a 23-hour day
        ("2026-10-25 12:00", "2026-10-24 22:00", 25),  # fall back: a 25-hour day
        ("2026-07-01 21:59", "2026-06-30 22:00", 24),  # summer: midnight = 22:00 UTC
        ("2026-07-01 22:00", "2026-07-01 22:00", 24),  # exactly on the boundary
    ],
)
def test_daily_boundaries_follow_dst(now: str, start: str, hours: int) -> None:
    period = ResetPeriod("day", "00:00", "Europe/Berlin")
    begin, end = period.bounds(ts(now))
    assert utc(begin) == start
    assert end - begin == hours * 3600


def test_weekly_and_monthly_boundaries() -> None:
    weekly = ResetPeriod("week", "04:00", "America/New_York", weekday=2)  # Wednesdays
    begin, end = weekly.bounds(ts("2026-11-23 12:00"))  # a Monday
    assert (utc(begin), utc(end)) == ("2026-11-18 09:00", "2026-11-25 09:00")
    monthly = ResetPeriod("month", "00:00", "Asia/Tokyo", day=28)
    begin, end = monthly.bounds(ts("2026-11-23 12:00"))
    assert (utc(begin), utc(end)) == ("2026-10-27 15:00", "2026-11-27 15:00")
    first = ResetPeriod("month", "00:00", "UTC")
    begin, end = first.bounds(ts("2026-12-31 23:59"))
    assert (utc(begin), utc(end)) == ("2026-12-01 00:00", "2027-01-01 00:00")


def test_a_time_inside_the_spring_gap_is_read_with_the_old_offset() -> None:
    period = ResetPeriod("day", "02:30", "Europe/Berlin")
    begin, _ = period.bounds(ts("2026-03-29 12:00"))
    assert utc(begin) == "2026-03-29 01:30"  # 03:30 summer time, deterministic


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"every": "hour"}, TrackingValueError),
        ({"every": "day", "at": "25:00"}, TrackingValueError),
        ({"every": "day", "at": 900}, TrackingTypeError),
        ({"every": "day", "timezone": "Mars/Olympus"}, TrackingValueError),
        ({"every": "week", "weekday": 7}, TrackingValueError),
        ({"every": "week", "weekday": "someday"}, TrackingValueError),
        ({"every": "month", "day": 31}, TrackingValueError),
        ({"every": "day", "reset_policy": 0}, TrackingValueError),
        ({"every": "day", "color": "red"}, TrackingValueError),
    ],
)
def test_bad_periods(spec: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        period_from_spec(spec)


def test_weekday_names_and_spec_round_trip() -> None:
    period = period_from_spec({"every": "week", "weekday": "Friday", "at": "18:30"})
    assert period.weekday == 4
    assert period_from_spec(period.to_spec()) == period
    tracker = CountTracker("quest", [KeyExists("x")], 3, reset_period=period)
    rebuilt = tracker_from_spec(tracker.to_spec())
    assert rebuilt.reset_period == period
    with pytest.raises(InvalidSpecError):
        tracker_from_spec({**tracker.to_spec(), "reset_period": {"every": "year"}})


def test_daily_quest_rolls_over_lazily_and_once() -> None:
    daily = ResetPeriod("day", "00:00", "UTC")
    quest = CountTracker("quest", [KeyExists("x")], [2, 3], reset_period=daily)
    events: list[BaseEvent] = []
    quest.forward_event(events.append)
    day1 = ts("2026-11-23 10:00")
    for offset in range(3):
        quest.track({"x": 1}, now=day1 + offset)
    assert quest.completed  # a periodic tracker waits for its next period
    quest.track({"x": 1}, now=day1 + 100)
    assert quest.progress == 3
    day2 = ts("2026-11-24 00:00")
    quest.track({"y": 1}, now=day2)  # any event (even a non-matching one) rolls it over
    assert not quest.completed and quest.progress == 0 and quest.current_stage == 1
    assert quest.roll_period(now=day2 + 5) is None  # same period twice: nothing
    assert [e.code for e in events].count(EVENT_TRACKER_RESET) == 1
    quest.track({"x": 1}, now=day2 + 10)
    assert quest.progress == 1


def test_daily_quota_refills_only_the_limiter() -> None:
    quota = ResetPeriod("day", "00:00", "UTC", reset_policy=ResetPolicy.LIMITER)
    tracker = CountTracker(
        "orders", [KeyExists("x")], 1000, limiters=[CountLimiter(2)], reset_period=quota
    )
    day1 = ts("2026-11-23 10:00")
    for offset in range(4):
        tracker.track({"x": 1}, now=day1 + offset)
    assert tracker.progress == 2 and tracker.limited
    tracker.track({"x": 1}, now=day1 + 86400)
    assert tracker.progress == 3 and not tracker.limited  # refilled, progress kept


def test_a_clock_behind_the_recorded_period_changes_nothing() -> None:
    daily = ResetPeriod("day", "00:00", "UTC")
    tracker = CountTracker("t", [KeyExists("x")], 10, reset_period=daily)
    tracker.track({"x": 1}, now=ts("2026-11-24 01:00"))
    tracker.track({"x": 1}, now=ts("2026-11-23 23:59"))  # a late worker clock
    assert tracker.progress == 2
    assert tracker.roll_period(now=ts("2026-11-24 02:00")) is None
