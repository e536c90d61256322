"""EventPlan: the steps of an event equal those of evaluate() run per definition.

The plan checks each distinct condition once per event; this holds it to
the reference (tracking.trackers.evaluate, one definition at a time) on
random definitions that share, repeat and nest conditions, including the
error an accumulation tracker raises on a non-number.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tracking import AccumulationTracker, CountTracker, KeyValueEQ, KeyValueGT
from tracking.conditions import AnyOf, BaseCondition, KeyExists, KeyValueNE, Not
from tracking.errors import InvalidEventError
from tracking.model import TrackerDefinition
from tracking.plan import EventPlan
from tracking.trackers import evaluate

_CONDITIONS: list[BaseCondition] = [
    KeyValueEQ("s", "a"),
    KeyValueEQ("s", "a"),  # equal to the first, another object
    KeyValueEQ("n", 1),
    KeyValueEQ("n", 1.0),  # not the same spec as n == 1
    KeyValueEQ("n", True),
    KeyValueNE("s", "b"),
    KeyValueGT("n", 0),
    KeyExists("v"),
    AnyOf([KeyValueEQ("s", "a"), KeyValueEQ("s", "b")]),
    Not(KeyValueEQ("s", "a")),
]

_EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "s": st.sampled_from(["a", "b", "c"]),
        "n": st.sampled_from([0, 1, 1.0, True, 2, "1"]),
        "v": st.sampled_from([1, 2.5, None, "x", True]),
    },
)


@st.composite
def _definitions(draw: Any) -> list[TrackerDefinition]:
    definitions = []
    for i in range(draw(st.integers(0, 6))):
        conditions = draw(st.lists(st.sampled_from(_CONDITIONS), max_size=3))
        if draw(st.booleans()):
            definitions.append(CountTracker(f"c{i}", conditions, 5).definition)
        else:
            definitions.append(AccumulationTracker(f"a{i}", conditions, 5, key="v").definition)
    return definitions


def _reference(definitions: list[TrackerDefinition], data: dict[str, Any]) -> Any:
    try:
        steps = []
        for definition in definitions:
            delta = evaluate(definition, data)
            if delta is not None:
                steps.append((definition.name, delta, type(delta)))
        return steps
    except InvalidEventError as exc:
        return ("error", str(exc))


def _planned(plan: EventPlan, data: dict[str, Any]) -> Any:
    try:
        return [(s.definition.name, s.delta, type(s.delta)) for s in plan.steps(data)]
    except InvalidEventError as exc:
        return ("error", str(exc))


@settings(max_examples=300, deadline=None)
@given(_definitions(), st.lists(_EVENTS, min_size=1, max_size=4))
def test_plan_equals_evaluate_per_definition(
    definitions: list[TrackerDefinition], events: list[dict[str, Any]]
) -> None:
    plan = EventPlan(definitions)
    for data in events:  # one plan, many events: nothing leaks between events
        assert _planned(plan, data) == _reference(definitions, data)


def test_a_shared_condition_is_checked_once_per_event() -> None:
    calls: list[dict[str, Any]] = []

    class Counted(KeyValueEQ):
        def check(self, data: dict[str, Any]) -> bool:
            calls.append(data)
            return super().check(data)

    shared = Counted("s", "a")
    definitions = [CountTracker(f"t{i}", [shared], 5).definition for i in range(10)]
    plan = EventPlan(definitions)
    assert [s.definition.name for s in plan.steps({"s": "a"})] == [f"t{i}" for i in range(10)]
    assert len(calls) == 1
    assert plan.steps({"s": "b"}) == []
    assert len(calls) == 2
