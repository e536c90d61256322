"""A tracker's definition and its state, kept apart.

The *definition* (conditions, stage targets, limiters, policies) rarely
changes and is shared: identical definitions have the same content hash
and cost memory once. The *state* (progress, stage, flags, limiter values)
changes on every event and is small. The cache stores them separately;
tracker objects (:mod:`tracking.trackers`) combine one of each.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tracking._validate import canonical_json, check_bool, check_name, check_number
from tracking.conditions import BaseCondition
from tracking.errors import TrackingTypeError, TrackingValueError
from tracking.limiters import BaseLimiter, CountLimiter, TimeLimiter
from tracking.periods import ResetPeriod

Number = int | float
TrackerKind = Literal["count", "accumulation"]


class ResetPolicy(enum.IntFlag):
    """What a reset clears; combine with ``|`` (``PROGRESS | LIMITER``)."""

    NONE = 0
    PROGRESS = 1
    LIMITER = 2
    ALL = 3
    DEFAULT = LIMITER


def check_reset_policy(value: object, what: str = "reset_policy") -> ResetPolicy:
    """An int flag within ``ResetPolicy.ALL`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrackingTypeError(f"{what} must be a ResetPolicy (int), not {type(value).__name__}")
    if not 0 <= value <= ResetPolicy.ALL:
        raise TrackingValueError(
            f"{what} must be between 0 and {int(ResetPolicy.ALL)}, got {value}"
        )
    return ResetPolicy(value)


def normalise_targets(target: object) -> tuple[Number, ...]:
    """A number or a non-empty list/tuple of positive finite numbers."""
    items: Sequence[object]
    if isinstance(target, list | tuple):
        items = target
        if not items:
            raise TrackingValueError("target list must not be empty")
    elif isinstance(target, int | float) and not isinstance(target, bool):
        items = (target,)
    else:
        raise TrackingTypeError(
            f"target must be a number or a list/tuple of numbers, not {type(target).__name__}"
        )
    result = []
    for item in items:
        number = check_number(item, "target")
        if number <= 0:
            raise TrackingValueError(f"targets must be positive, got {number!r}")
        result.append(number)
    return tuple(result)


@dataclass(frozen=True)
class TrackerDefinition:
    """What a tracker is: immutable, hashable by content, JSON via :mod:`tracking.spec`."""

    kind: TrackerKind
    name: str
    conditions: tuple[BaseCondition, ...]
    targets: tuple[Number, ...]
    key: str | None = None
    limiters: tuple[BaseLimiter, ...] = ()
    reset_policy: ResetPolicy = ResetPolicy.DEFAULT
    loop_forever: bool = False
    init_progress: Number = 0
    period: ResetPeriod | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        for condition in self.conditions:
            if not isinstance(condition, BaseCondition):
                raise TrackingTypeError(
                    f"conditions must hold conditions only, found {type(condition).__name__}"
                )
        normalise_targets(list(self.targets))
        for limiter in self.limiters:
            if not isinstance(limiter, BaseLimiter):
                raise TrackingTypeError(
                    f"limiters must hold limiters only, found {type(limiter).__name__}"
                )
        check_reset_policy(self.reset_policy)
        check_bool(self.loop_forever, "loop_forever")
        check_number(self.init_progress, "init_progress")
        if self.kind == "accumulation":
            if not isinstance(self.key, str) or not self.key:
                raise TrackingTypeError("AccumulationTracker needs key, a non-empty str")
        elif self.key is not None:
            raise TrackingValueError("only an AccumulationTracker has a key")
        if self.period is not None and not isinstance(self.period, ResetPeriod):
            raise TrackingTypeError(
                f"reset_period must be a ResetPeriod, not {type(self.period).__name__}"
            )

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec (``type`` is the dictrack class name)."""
        spec: dict[str, Any] = {
            "type": "AccumulationTracker" if self.kind == "accumulation" else "CountTracker",
            "name": self.name,
            "conditions": [c.to_spec() for c in self.conditions],
            "target": list(self.targets),
            "limiters": [lim.to_spec() for lim in self.limiters],
            "reset_policy": int(self.reset_policy),
            "loop_forever": self.loop_forever,
            "init_progress": self.init_progress,
        }
        if self.key is not None:
            spec["key"] = self.key
        if self.period is not None:
            spec["reset_period"] = self.period.to_spec()
        return spec

    def content_hash(self) -> str:
        """Stable hash of the spec: equal definitions share one stored copy."""
        return hashlib.sha256(canonical_json(self.to_spec()).encode()).hexdigest()[:24]

    def initial_state(self) -> TrackerState:
        """The state of a freshly added tracker."""
        return TrackerState(
            progress=self.init_progress,
            limits=[lim.initial_state() for lim in self.limiters],
        )

    def with_targets(self, targets: tuple[Number, ...]) -> TrackerDefinition:
        return replace(self, targets=targets)

    def limiter_views(self, state: TrackerState) -> list[BaseLimiter]:
        """Limiter objects carrying the state's values (what callers inspect)."""
        return [
            lim.with_state(value) for lim, value in zip(self.limiters, state.limits, strict=True)
        ]


@dataclass
class TrackerState:
    """What a tracker has done: small, changes on every event."""

    progress: Number = 0
    stage: int = 0
    completed: bool = False
    limited: bool = False
    limits: list[float] = field(default_factory=list)
    #: Start (epoch seconds) of the calendar period this state belongs to;
    #: None until a periodic tracker sees its first event.
    period: int | None = None

    def copy(self) -> TrackerState:
        return TrackerState(
            self.progress, self.stage, self.completed, self.limited, list(self.limits), self.period
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "stage": self.stage,
            "completed": self.completed,
            "limited": self.limited,
            "limits": list(self.limits),
            "period": self.period,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], definition: TrackerDefinition) -> TrackerState:
        """Validated inverse of :meth:`to_json`, checked against the definition."""
        if not isinstance(data, dict):
            raise TrackingTypeError("tracker state must be a JSON object")
        state = cls(
            progress=check_number(data.get("progress", 0), "state.progress"),
            stage=int(check_number(data.get("stage", 0), "state.stage", minimum=0)),
            completed=check_bool(data.get("completed", False), "state.completed"),
            limited=check_bool(data.get("limited", False), "state.limited"),
            limits=[check_number(v, "state.limits") for v in data.get("limits", [])],
            period=_optional_int(data.get("period"), "state.period"),
        )
        if len(state.limits) != len(definition.limiters):
            raise TrackingValueError("state.limits does not match the tracker's limiters")
        if state.stage >= len(definition.targets):
            raise TrackingValueError("state.stage is beyond the tracker's targets")
        return state


def _optional_int(value: object, what: str) -> int | None:
    if value is None:
        return None
    return int(check_number(value, what))


def limiter_kind(limiter: BaseLimiter) -> Literal["count", "time"]:
    """The engine's name for a limiter's behaviour."""
    if isinstance(limiter, CountLimiter):
        return "count"
    if isinstance(limiter, TimeLimiter):
        return "time"
    raise TrackingTypeError(f"unknown limiter {type(limiter).__name__}")
