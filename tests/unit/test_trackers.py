"""Trackers: dictrack's properties, multi-stage targets, loop_forever, reset policies."""

from __future__ import annotations

import math

import pytest

from tracking import (
    EVENT_TRACKER_ALL_COMPLETED,
    EVENT_TRACKER_RESET,
    EVENT_TRACKER_STAGE_COMPLETED,
    AccumulationTracker,
    CountLimiter,
    CountTracker,
    GroupIdAlreadySetError,
    InvalidEventError,
    KeyValueEQ,
    ResetPolicy,
    TrackerCompletedError,
    TrackerEvent,
    TrackingTypeError,
    TrackingValueError,
)
from tracking.events import BaseEvent

PAID = KeyValueEQ("status", "paid")


def _collect(tracker: CountTracker | AccumulationTracker) -> list[BaseEvent]:
    events: list[BaseEvent] = []
    tracker.forward_event(events.append)
    return events


def test_properties_match_dictrack() -> None:
    tracker = CountTracker("orders", [PAID], [10, 50, 100])
    assert tracker.name == "orders"
    assert tracker.conditions == (PAID,)
    assert tracker.target == 10
    assert tracker.multi_target == [50, 100]
    assert tracker.current_stage == 1
    assert tracker.progress == 0
    assert not tracker.completed and not tracker.limited and not tracker.loop_forever
    assert tracker.reset_policy == ResetPolicy.DEFAULT == ResetPolicy.LIMITER
    assert tracker.group_id is None
    assert tracker.limiters == []


def test_reset_policy_values_and_combination() -> None:
    assert (ResetPolicy.NONE, ResetPolicy.PROGRESS, ResetPolicy.LIMITER, ResetPolicy.ALL) == (
        0,
        1,
        2,
        3,
    )
    assert ResetPolicy.PROGRESS | ResetPolicy.LIMITER == ResetPolicy.ALL


def test_default_policy_carries_progress_across_stages() -> None:
    tracker = CountTracker("orders", [PAID], [2, 4])
    events = _collect(tracker)
    for _ in range(2):
        tracker.track({"status": "paid"})
    assert [e.code for e in events] == [EVENT_TRACKER_STAGE_COMPLETED]
    assert tracker.current_stage == 2 and tracker.target == 4 and tracker.progress == 2
    stage_event = events[0]
    assert isinstance(stage_event, TrackerEvent)
    assert stage_event.tracker.target == 2 and stage_event.tracker.progress == 2
    for _ in range(2):
        tracker.track({"status": "paid"})
    assert tracker.completed and tracker.progress == 4
    assert [e.code for e in events][-1] == EVENT_TRACKER_ALL_COMPLETED
    tracker.track({"status": "paid"})
    assert tracker.progress == 4  # a completed tracker never progresses again
    assert sum(e.code == EVENT_TRACKER_ALL_COMPLETED for e in events) == 1


def test_progress_policy_counts_each_stage_from_zero() -> None:
    tracker = CountTracker("orders", [PAID], [2, 3], reset_policy=ResetPolicy.PROGRESS)
    for _ in range(2):
        tracker.track({"status": "paid"})
    assert tracker.current_stage == 2 and tracker.progress == 0
    for _ in range(3):
        tracker.track({"status": "paid"})
    assert tracker.completed and tracker.progress == 3


def test_loop_forever_repeats_the_last_target() -> None:
    tracker = CountTracker("daily", [PAID], 2, loop_forever=True, reset_policy=ResetPolicy.ALL)
    events = _collect(tracker)
    for _ in range(6):
        tracker.track({"status": "paid"})
    assert [e.code for e in events].count(EVENT_TRACKER_STAGE_COMPLETED) == 3
    assert not tracker.completed and tracker.progress == 0 and tracker.current_stage == 1


def test_loop_forever_with_carry_over_completes_once_per_event() -> None:
    tracker = CountTracker("x", [PAID], 2, loop_forever=True)
    events = _collect(tracker)
    for _ in range(4):
        tracker.track({"status": "paid"})
    # progress 2, 3, 4 each reach the repeated target: one completion per event
    assert [e.code for e in events].count(EVENT_TRACKER_STAGE_COMPLETED) == 3


def test_one_big_accumulation_passes_several_stages() -> None:
    tracker = AccumulationTracker("spend", [PAID], [10, 50, 100], key="amount")
    events = _collect(tracker)
    tracker.track({"status": "paid", "amount": 60})
    assert [e.code for e in events] == [EVENT_TRACKER_STAGE_COMPLETED] * 2
    assert tracker.current_stage == 3 and tracker.progress == 60
    tracker.track({"status": "paid", "amount": 40.5})
    assert tracker.completed and tracker.progress == 100.5


def test_accumulation_skips_missing_or_null_values() -> None:
    tracker = AccumulationTracker("spend", [PAID], 10, key="order.amount")
    tracker.track({"status": "paid"})
    tracker.track({"status": "paid", "order": {"amount": None}})
    assert tracker.progress == 0
    tracker.track({"status": "paid", "order": {"amount": 2.25}})
    assert tracker.progress == 2.25


@pytest.mark.parametrize("bad", [True, "5", float("nan"), float("inf"), 2**60, [1]])
def test_accumulation_rejects_bad_numbers_and_changes_nothing(bad: object) -> None:
    tracker = AccumulationTracker("spend", [PAID], 10, key="amount")
    tracker.track({"status": "paid", "amount": 1})
    with pytest.raises((InvalidEventError,)):
        tracker.track({"status": "paid", "amount": bad})
    assert tracker.progress == 1


def test_settable_progress_and_add_targets() -> None:
    tracker = CountTracker("x", [PAID], 5)
    tracker.progress = 4
    tracker.add_targets([8, 10])
    assert tracker.multi_target == [8, 10]
    tracker.track({"status": "paid"})
    assert tracker.current_stage == 2 and tracker.target == 8
    with pytest.raises(TrackingTypeError):
        tracker.progress = "3"  # type: ignore[assignment]
    with pytest.raises(TrackingValueError):
        tracker.add_targets(-1)


def test_completed_tracker_refuses_changes() -> None:
    tracker = CountTracker("x", [PAID], 1)
    tracker.track({"status": "paid"})
    with pytest.raises(TrackerCompletedError):
        tracker.progress = 0
    with pytest.raises(TrackerCompletedError):
        tracker.add_targets(3)


def test_manual_reset_fires_reset_and_reopens_a_completed_tracker() -> None:
    tracker = CountTracker("x", [PAID], 1, limiters=[CountLimiter(5)])
    events = _collect(tracker)
    tracker.track({"status": "paid"})
    tracker.reset(ResetPolicy.ALL)
    assert events[-1].code == EVENT_TRACKER_RESET
    assert not tracker.completed and tracker.progress == 0
    assert tracker.limiters[0].remaining == 5  # type: ignore[attr-defined]


def test_group_id_can_be_set_once() -> None:
    tracker = CountTracker("x", [PAID], 1, group_id="g1")
    tracker.group_id = "g1"
    with pytest.raises(GroupIdAlreadySetError):
        tracker.group_id = "g2"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, TrackingValueError),
        ({"name": 5}, TrackingTypeError),
        ({"conditions": PAID}, TrackingTypeError),
        ({"conditions": ["status"]}, TrackingTypeError),
        ({"target": -1}, TrackingValueError),
        ({"target": 0}, TrackingValueError),
        ({"target": []}, TrackingValueError),
        ({"target": [5, -2]}, TrackingValueError),
        ({"target": "10"}, TrackingTypeError),
        ({"target": True}, TrackingTypeError),
        ({"target": math.nan}, TrackingValueError),
        ({"target": math.inf}, TrackingValueError),
        ({"target": 1e300}, TrackingValueError),
        ({"limiters": [5]}, TrackingTypeError),
        ({"limiters": CountLimiter(3)}, TrackingTypeError),
        ({"reset_policy": 4}, TrackingValueError),
        ({"reset_policy": "ALL"}, TrackingTypeError),
        ({"loop_forever": 1}, TrackingTypeError),
        ({"init_progress": "0"}, TrackingTypeError),
        ({"init_progress": math.nan}, TrackingValueError),
        ({"group_id": 7}, TrackingTypeError),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    arguments: dict[str, object] = {"name": "x", "conditions": [PAID], "target": 5, **kwargs}
    with pytest.raises(error):
        CountTracker(**arguments)  # type: ignore[arg-type]


def test_accumulation_tracker_needs_a_string_key() -> None:
    with pytest.raises(TrackingTypeError):
        AccumulationTracker("x", [PAID], 5, key=3)  # type: ignore[arg-type]
    with pytest.raises(TrackingTypeError):
        AccumulationTracker("x", [PAID], 5, key="")


def test_track_rejects_non_dict_data() -> None:
    tracker = CountTracker("x", [PAID], 5)
    for bad in (None, [1], "status=paid", {"a": float("nan")}, {"a": {1, 2}}):
        with pytest.raises(InvalidEventError):
            tracker.track(bad)  # type: ignore[arg-type]
    assert tracker.progress == 0


def test_repr_shows_state_prefix() -> None:
    tracker = CountTracker("Demo-1", [KeyValueEQ("status", "active")], 1, group_id="Robot001")
    assert repr(tracker).startswith("<CountTracker (target=1 conditions={<KeyValueEQ")
    assert "group_id=Robot001 name=Demo-1 progress=0" in repr(tracker)
    tracker.track({"status": "active"})
    assert repr(tracker).startswith("[COMPLETED] ")
