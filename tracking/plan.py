"""Evaluating an event against a group's definitions, each distinct condition once.

Trackers of one group often share conditions (ten trackers of one
``KeyValueEQ("status", "active")``, say). A :class:`EventPlan` is built once
per definitions list (the manager keeps it with the group's cached
definitions) and checks each distinct condition at most once per event.
Conditions are pure predicates over the event and equal conditions (same
class, same spec) give the same answer, so the steps are exactly those of
:func:`tracking.trackers.evaluate` run per definition, in the same order,
raising the same error for the same first bad accumulation value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracking._validate import canonical_json
from tracking.cache.base import TrackStep
from tracking.conditions import BaseCondition
from tracking.model import TrackerDefinition
from tracking.trackers import delta_of

_UNKNOWN: Any = object()


def _condition_key(condition: BaseCondition) -> object:
    """Equal for conditions that must give the same answer: same class and same JSON spec
    (the spec is what the store keeps of a condition, so it is all of it)."""
    try:
        return (type(condition), canonical_json(condition.to_spec()))
    except Exception:  # a custom condition that cannot describe itself: never shared
        return ("id", id(condition))


class EventPlan:
    """The steps an event makes on a list of definitions (see the module docstring)."""

    __slots__ = ("_conditions", "_uses", "definitions")

    def __init__(self, definitions: Sequence[TrackerDefinition]) -> None:
        self.definitions = definitions
        index: dict[object, int] = {}
        self._conditions: list[BaseCondition] = []
        uses: list[tuple[TrackerDefinition, tuple[int, ...]]] = []
        for definition in definitions:
            slots = []
            for condition in definition.conditions:
                key = _condition_key(condition)
                slot = index.get(key)
                if slot is None:
                    slot = index[key] = len(self._conditions)
                    self._conditions.append(condition)
                slots.append(slot)
            uses.append((definition, tuple(slots)))
        self._uses = uses

    def steps(self, data: dict[str, Any]) -> list[TrackStep]:
        """One step per definition whose conditions the event meets, in definition order."""
        conditions = self._conditions
        known = [_UNKNOWN] * len(conditions)
        steps = []
        for definition, slots in self._uses:
            for slot in slots:
                held = known[slot]
                if held is _UNKNOWN:
                    held = known[slot] = conditions[slot].check(data)
                if not held:
                    break
            else:
                delta = delta_of(definition, data)
                if delta is not None:
                    steps.append(TrackStep(definition, delta))
        return steps
