"""JSON specs: every condition, limiter and tracker round-trips; bad specs are typed errors."""

from __future__ import annotations

import json
import operator
from datetime import timedelta
from typing import Any

import pytest

from tracking import (
    AccumulationTracker,
    AllOf,
    AnyOf,
    CountLimiter,
    CountTracker,
    InvalidSpecError,
    KeyExists,
    KeyNotExists,
    KeyValueComparison,
    KeyValueContained,
    KeyValueEQ,
    KeyValueGE,
    KeyValueGT,
    KeyValueInList,
    KeyValueLE,
    KeyValueListHasItem,
    KeyValueListIntersectList,
    KeyValueListNotHasItem,
    KeyValueListNotIntersectList,
    KeyValueLT,
    KeyValueNE,
    KeyValueNotContained,
    KeyValueNotInList,
    Not,
    ResetPolicy,
    TimeLimiter,
    condition_from_spec,
    from_spec,
    limiter_from_spec,
    tracker_from_spec,
)
from tracking.conditions import CONDITION_CLASSES

CONDITIONS = [
    KeyExists("a.b"),
    KeyNotExists("a"),
    KeyValueComparison("a", 3, operator.le),
    KeyValueEQ("a", {"nested": [1, "x", None]}),
    KeyValueNE("a", "x"),
    KeyValueLT("a", 1.5),
    KeyValueLE("a", 2),
    KeyValueGT("a", -3),
    KeyValueGE("a", 0),
    KeyValueContained("a", "sub", case_sensitive=False),
    KeyValueNotContained("a", "sub"),
    KeyValueInList("a", [1, "two"]),
    KeyValueNotInList("a", ["x"]),
    KeyValueListHasItem("a", "x"),
    KeyValueListNotHasItem("a", 2),
    KeyValueListIntersectList("a", ["x", "y"]),
    KeyValueListNotIntersectList("a", [1]),
    AllOf([KeyExists("a"), AnyOf([KeyValueEQ("b", 1), Not(KeyExists("c"))])]),
    AnyOf([KeyExists("z")]),
    Not(KeyValueEQ("a", "b")),
]


def test_every_condition_class_is_covered() -> None:
    assert {type(c) for c in CONDITIONS} == set(CONDITION_CLASSES)


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: type(c).__name__)
def test_condition_round_trip_through_json(condition: Any) -> None:
    spec = json.loads(json.dumps(condition.to_spec()))
    rebuilt = condition_from_spec(spec)
    assert rebuilt == condition and type(rebuilt) is type(condition)
    assert from_spec(spec) == condition


def test_limiter_round_trip() -> None:
    for limiter in (CountLimiter(5), TimeLimiter(start_ts=100, interval=timedelta(minutes=5))):
        rebuilt = limiter_from_spec(json.loads(json.dumps(limiter.to_spec())))
        assert rebuilt == limiter


@pytest.mark.parametrize(
    ("spec", "built"),
    [
        (
            {"type": "TimeLimiter", "start_ts": 100, "end_ts": 400},
            TimeLimiter(start_ts=100, end_ts=400),
        ),
        (
            {"type": "TimeLimiter", "start_ts": 400, "end_ts": 100},  # swapped, as the class does
            TimeLimiter(start_ts=100, end_ts=400),
        ),
        (
            {"type": "TimeLimiter", "start_ts": 100, "interval": 300},
            TimeLimiter(start_ts=100, interval=timedelta(seconds=300)),
        ),
        (
            {"type": "TimeLimiter", "start_ts": 100, "interval": 0.5},
            TimeLimiter(start_ts=100, interval=timedelta(seconds=0.5)),
        ),
    ],
)
def test_time_limiter_spec_takes_end_ts_or_interval(spec: Any, built: TimeLimiter) -> None:
    loaded = limiter_from_spec(spec)
    assert loaded == built and (loaded.start, loaded.end) == (built.start, built.end)
    # Written back as start_ts + interval; that loads to the same limiter again.
    written = json.loads(json.dumps(loaded.to_spec()))
    assert set(written) == {"type", "start_ts", "interval"}
    assert limiter_from_spec(written) == loaded
    assert written["start_ts"] + written["interval"] == built.end
    assert limiter_from_spec(written).to_spec() == written


def test_time_limiter_with_end_ts_round_trips_inside_a_tracker() -> None:
    spec = {
        "type": "CountTracker",
        "name": "window",
        "conditions": [],
        "target": 3,
        "limiters": [{"type": "TimeLimiter", "start_ts": 1000, "end_ts": 2000}],
    }
    tracker = tracker_from_spec(spec)
    assert tracker.track({}, now=1500).changed
    assert tracker.track({}, now=2500).refused
    again = tracker_from_spec(json.loads(json.dumps(tracker.to_spec(include_state=True))))
    assert again == tracker


def test_tracker_round_trip_with_and_without_state() -> None:
    tracker = AccumulationTracker(
        "spend",
        [KeyValueEQ("status", "paid")],
        [10, 20.5],
        key="amount",
        limiters=[CountLimiter(3), TimeLimiter(start_ts=0, end_ts=2_000_000_000)],
        reset_policy=ResetPolicy.ALL,
        loop_forever=True,
        init_progress=1,
    )
    tracker.track({"status": "paid", "amount": 12}, now=10)
    spec = json.loads(json.dumps(tracker.to_spec(include_state=True)))
    rebuilt = tracker_from_spec(spec)
    assert rebuilt.definition == tracker.definition
    assert rebuilt.state == tracker.state
    assert rebuilt.current_stage == 2
    fresh = tracker_from_spec(tracker.to_spec())
    assert fresh.progress == 1 and fresh.current_stage == 1
    assert isinstance(from_spec(tracker.to_spec()), AccumulationTracker)


def test_definition_hash_is_by_content() -> None:
    one = CountTracker("a", [KeyExists("x")], [1, 2])
    two = CountTracker("a", [KeyExists("x")], (1, 2))
    other = CountTracker("a", [KeyExists("x")], [1, 3])
    assert one.definition.content_hash() == two.definition.content_hash()
    assert one.definition.content_hash() != other.definition.content_hash()


@pytest.mark.parametrize(
    "spec",
    [
        None,
        [],
        "KeyExists",
        {},
        {"type": "Pickle", "payload": "x"},
        {"type": "KeyExists"},
        {"type": "KeyExists", "key": 5},
        {"type": "KeyExists", "key": ""},
        {"type": "KeyExists", "key": "a", "extra": 1},
        {"type": "KeyValueComparison", "key": "a", "value": 1, "op": "add"},
        {"type": "KeyValueContained", "key": "a", "value": 1},
        {"type": "KeyValueInList", "key": "a", "value": "abc"},
        {"type": "AllOf", "conditions": [{"type": "Nope"}]},
        {"type": "Not", "condition": "x"},
    ],
)
def test_bad_condition_specs(spec: Any) -> None:
    with pytest.raises(InvalidSpecError):
        condition_from_spec(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "CountLimiter", "count": 0},
        {"type": "CountLimiter", "count": "3"},
        {"type": "CountLimiter", "count": True},
        {"type": "TimeLimiter", "start_ts": 1},
        {"type": "TimeLimiter", "start_ts": 1, "interval": -5},
        {"type": "TimeLimiter", "start_ts": 1, "end_ts": 1},
        {"type": "TimeLimiter", "start_ts": 1, "end_ts": 5, "interval": 4},
        {"type": "TimeLimiter", "start_ts": 1, "end_ts": 5.5},
        {"type": "TimeLimiter", "end_ts": 5},
        {"type": "LeakyBucket", "rate": 3},
    ],
)
def test_bad_limiter_specs(spec: Any) -> None:
    with pytest.raises(InvalidSpecError):
        limiter_from_spec(spec)


GOOD_TRACKER = {"type": "CountTracker", "name": "t", "conditions": [], "target": 3}


@pytest.mark.parametrize(
    "change",
    [
        {"type": "Tracker"},
        {"name": ""},
        {"target": -3},
        {"target": "3"},
        {"target": []},
        {"target": True},
        {"conditions": [{"type": "Nope"}]},
        {"limiters": [{"type": "CountLimiter", "count": -1}]},
        {"reset_policy": 9},
        {"loop_forever": "yes"},
        {"key": "amount"},
        {"type": "AccumulationTracker"},
        {"state": {"progress": "x"}},
        {"state": {"stage": 4}},
        {"state": {"limits": [1]}},
        {"unknown_field": 1},
    ],
)
def test_bad_tracker_specs(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpecError):
        tracker_from_spec({**GOOD_TRACKER, **change})


def test_unknown_type_error_lists_known_types() -> None:
    with pytest.raises(InvalidSpecError, match="known types"):
        from_spec({"type": "os.system"})


def test_deeply_nested_spec_is_an_error_not_a_crash() -> None:
    spec: dict[str, Any] = {"type": "KeyExists", "key": "a"}
    for _ in range(100):
        spec = {"type": "Not", "condition": spec}
    with pytest.raises(InvalidSpecError):
        condition_from_spec(spec)
