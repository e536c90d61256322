"""Limiters: dictrack's argument rules and the engine's limiting semantics."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tracking import (
    EVENT_TRACKER_LIMITED,
    CountLimiter,
    CountTracker,
    KeyExists,
    LimitedTrackerEvent,
    ResetPolicy,
    TimeLimiter,
    TrackingTypeError,
    TrackingValueError,
)
from tracking.events import BaseEvent


def test_count_limiter_arguments() -> None:
    limiter = CountLimiter(3)
    assert (limiter.count, limiter.remaining, limiter.limited) == (3, 3, False)
    for bad in (0, -1):
        with pytest.raises(TrackingValueError):
            CountLimiter(bad)
    for wrong in (1.5, "3", True, None):
        with pytest.raises(TrackingTypeError):
            CountLimiter(wrong)  # type: ignore[arg-type]


def test_count_limiter_reset() -> None:
    limiter = CountLimiter(3)
    limiter.remaining = 0
    assert limiter.limited
    assert limiter.reset() is True
    assert limiter.remaining == 3
    assert limiter.reset(reset_count=0) is False
    assert limiter.limited
    assert limiter.count == 3  # the definition is unchanged
    with pytest.raises(TrackingValueError):
        limiter.reset(reset_count=-1)


def test_time_limiter_argument_rules() -> None:
    with pytest.raises(TrackingValueError):
        TimeLimiter()
    with pytest.raises(TrackingValueError):
        TimeLimiter(start_ts=100)  # start alone has no effect
    with pytest.raises(TrackingValueError):
        TimeLimiter(start_ts=100, end_ts=100)
    with pytest.raises(TrackingValueError):
        TimeLimiter(start_ts=100, end_ts=200, interval=timedelta(seconds=5))
    with pytest.raises(TrackingValueError):
        TimeLimiter(start_ts=100, interval=timedelta(seconds=0))
    with pytest.raises(TrackingValueError):
        TimeLimiter(start_ts=100, interval=timedelta(seconds=-5))
    with pytest.raises(TrackingTypeError):
        TimeLimiter(start_ts="100", end_ts=200)  # type: ignore[arg-type]
    with pytest.raises(TrackingTypeError):
        TimeLimiter(start_ts=100.5, end_ts=200)  # type: ignore[arg-type]
    with pytest.raises(TrackingTypeError):
        TimeLimiter(start_ts=100, interval=60)  # type: ignore[arg-type]


def test_time_limiter_window_and_swap() -> None:
    limiter = TimeLimiter(start_ts=200, end_ts=100)  # swapped, as in dictrack
    assert (limiter.start, limiter.end) == (100, 200)
    assert limiter.interval == timedelta(seconds=100)
    by_interval = TimeLimiter(start_ts=100, interval=timedelta(minutes=1))
    assert by_interval.end == 160
    assert by_interval.admits(100) and by_interval.admits(160) and not by_interval.admits(161)
    now = int(time.time())
    default_start = TimeLimiter(interval=timedelta(hours=1))
    assert now - 2 <= default_start.start <= now + 2
    by_interval.reset(now_ts=1000)
    assert (by_interval.start, by_interval.end) == (1000, 1060)


def _tracker(limiters: list[object], **kwargs: object) -> CountTracker:
    return CountTracker(
        "t", [KeyExists("x")], kwargs.pop("target", 10), limiters=limiters, **kwargs
    )  # type: ignore[arg-type]


def test_count_limiter_admits_exactly_count_events_then_limits() -> None:
    tracker = _tracker([CountLimiter(3)])
    fired: list[BaseEvent] = []
    tracker.add_listener(EVENT_TRACKER_LIMITED, fired.append)
    results = [tracker.track({"x": 1}) for _ in range(5)]
    assert tracker.progress == 3
    assert tracker.limited
    assert [r.changed for r in results] == [True, True, True, False, False]
    assert [r.refused for r in results] == [False, False, False, True, True]
    assert len(fired) == 1
    assert isinstance(fired[0], LimitedTrackerEvent)
    assert fired[0].limiter == CountLimiter(3)
    assert tracker.limiters[0].remaining == 0  # type: ignore[attr-defined]


def test_non_matching_events_do_not_spend_the_count() -> None:
    tracker = _tracker([CountLimiter(2)])
    for _ in range(5):
        tracker.track({"other": 1})
    tracker.track({"x": 1})
    assert tracker.progress == 1 and not tracker.limited


def test_completing_event_does_not_limit() -> None:
    tracker = _tracker([CountLimiter(2)], target=2)
    tracker.track({"x": 1})
    tracker.track({"x": 1})
    assert tracker.completed and not tracker.limited


def test_reset_refills_count_limiter() -> None:
    tracker = _tracker([CountLimiter(1)])
    tracker.track({"x": 1})
    assert tracker.limited
    tracker.reset()  # default policy LIMITER
    assert not tracker.limited and tracker.progress == 1
    tracker.track({"x": 1})
    assert tracker.progress == 2 and tracker.limited
    tracker.reset(ResetPolicy.PROGRESS)
    assert tracker.progress == 0 and tracker.limited  # limiter untouched


def test_time_window_refuses_outside_and_fires_limited_once() -> None:
    tracker = _tracker([TimeLimiter(start_ts=1000, end_ts=2000)])
    fired: list[BaseEvent] = []
    tracker.add_listener(EVENT_TRACKER_LIMITED, fired.append)
    tracker.track({"x": 1}, now=500)
    tracker.track({"x": 1}, now=600)
    assert tracker.limited and tracker.progress == 0 and len(fired) == 1
    tracker.track({"x": 1}, now=1500)  # the window opened: admitted again
    assert not tracker.limited and tracker.progress == 1
    tracker.track({"x": 1}, now=2500)
    assert tracker.limited and tracker.progress == 1 and len(fired) == 2


def test_stage_completion_reopens_time_window_with_limiter_policy() -> None:
    tracker = _tracker([TimeLimiter(start_ts=1000, interval=timedelta(seconds=100))], target=[2, 4])
    tracker.track({"x": 1}, now=1010)
    tracker.track({"x": 1}, now=1050)  # completes stage 1 -> window restarts at 1050
    assert tracker.current_stage == 2
    assert tracker.limiters[0].start == 1050  # type: ignore[attr-defined]
    tracker.track({"x": 1}, now=1140)  # inside the new window (old one ended at 1100)
    assert tracker.progress == 3 and not tracker.limited
