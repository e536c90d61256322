"""Tracker objects with dictrack's classes, arguments and properties.

A tracker object pairs a :class:`~tracking.model.TrackerDefinition` with a
:class:`~tracking.model.TrackerState`. It works on its own
(``tracker.track(data)`` fires events to the tracker's listeners) and is
what the manager returns; inside the cache only the definition (once) and
the state are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from tracking._validate import check_name, check_number, validate_event
from tracking.conditions import MISSING, BaseCondition, lookup
from tracking.engine import Fired, StepResult, roll_period, step
from tracking.engine import reset as engine_reset
from tracking.errors import (
    GroupIdAlreadySetError,
    InvalidEventError,
    TrackerCompletedError,
    TrackingTypeError,
    TrackingValueError,
)
from tracking.events import (
    EVENT_ALL,
    EVENT_TRACKER_LIMITED,
    BaseEvent,
    LimitedTrackerEvent,
    TrackerEvent,
)
from tracking.limiters import BaseLimiter
from tracking.model import (
    Number,
    ResetPolicy,
    TrackerDefinition,
    TrackerKind,
    TrackerState,
    check_reset_policy,
    normalise_targets,
)
from tracking.periods import ResetPeriod

Listener = Callable[[BaseEvent], Any]


def _as_tuple(items: object, what: str, allow_none: bool = False) -> tuple[Any, ...]:
    if items is None and allow_none:
        return ()
    if isinstance(items, list | tuple | set | frozenset):
        return tuple(items)
    raise TrackingTypeError(f"{what} must be a list, tuple or set, not {type(items).__name__}")


def evaluate(definition: TrackerDefinition, data: dict[str, Any]) -> Number | None:
    """How much an event moves a tracker: None if a condition fails.

    1 for a count tracker; the number at ``key`` for an accumulation tracker
    (None when the key is absent or null). A non-number there raises
    :class:`InvalidEventError`, before anything anywhere has changed.
    """
    for condition in definition.conditions:
        if not condition.check(data):
            return None
    return delta_of(definition, data)


def delta_of(definition: TrackerDefinition, data: dict[str, Any]) -> Number | None:
    """:func:`evaluate` once the conditions hold: 1, or the number at ``key`` (None if absent)."""
    if definition.kind == "count":
        return 1
    assert definition.key is not None
    value = lookup(data, definition.key)
    if value is None or value is MISSING:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEventError(
            f"{definition.key!r} must be a number for tracker {definition.name!r}, "
            f"got {type(value).__name__}"
        )
    try:
        return check_number(value, definition.key)
    except TrackingValueError as exc:
        raise InvalidEventError(str(exc)) from None


def event_of(
    definition: TrackerDefinition,
    state: TrackerState,
    fired: Fired,
    group_id: str,
    event_ts: float = 0.0,
    event_id: str = "",
) -> TrackerEvent:
    """:meth:`BaseTracker.event_for` on a definition and state, without a tracker object."""
    snapshot_state = state.copy()
    snapshot_state.stage = fired.stage
    snapshot_state.progress = fired.progress
    snapshot = BaseTracker.from_parts(definition, snapshot_state, group_id)
    name = definition.name
    if fired.code == EVENT_TRACKER_LIMITED and fired.limiter is not None:
        limiter = snapshot.limiters[fired.limiter]
        return LimitedTrackerEvent(
            fired.code, group_id, name, snapshot, limiter, event_ts, event_id, fired=fired
        )
    return TrackerEvent(fired.code, group_id, name, snapshot, event_ts, event_id, fired=fired)


class BaseTracker:
    """Shared behaviour of :class:`CountTracker` and :class:`AccumulationTracker`."""

    kind: TrackerKind = "count"

    def __init__(
        self,
        name: str,
        conditions: Iterable[BaseCondition],
        target: Number | list[Number] | tuple[Number, ...],
        group_id: str | None = None,
        limiters: Iterable[BaseLimiter] | None = None,
        reset_policy: int = ResetPolicy.DEFAULT,
        loop_forever: bool = False,
        init_progress: Number = 0,
        *,
        key: str | None = None,
        reset_period: ResetPeriod | None = None,
    ) -> None:
        if group_id is not None:
            check_name(group_id, "group_id")
        definition = TrackerDefinition(
            kind=self.kind,
            name=name,
            conditions=_as_tuple(conditions, "conditions"),
            targets=normalise_targets(target),
            key=key,
            limiters=_as_tuple(limiters, "limiters", allow_none=True),
            reset_policy=check_reset_policy(reset_policy),
            loop_forever=loop_forever,
            init_progress=check_number(init_progress, "init_progress"),
            period=reset_period,
        )
        self._bind(definition, definition.initial_state(), group_id)

    def _bind(
        self, definition: TrackerDefinition, state: TrackerState, group_id: str | None
    ) -> None:
        self._definition = definition
        self._state = state
        self._group_id = group_id
        self._listeners: dict[int, list[Listener]] = {}  # cheaper than a defaultdict: most
        # trackers are snapshots (results, events) that never get a listener

    @classmethod
    def from_parts(
        cls, definition: TrackerDefinition, state: TrackerState, group_id: str | None = None
    ) -> BaseTracker:
        """A tracker object for a stored definition and state (no validation repeated)."""
        tracker_cls: type[BaseTracker] = (
            AccumulationTracker if definition.kind == "accumulation" else CountTracker
        )
        tracker = tracker_cls.__new__(tracker_cls)
        tracker._bind(definition, state, group_id)
        return tracker

    # -- the definition --------------------------------------------------
    @property
    def definition(self) -> TrackerDefinition:
        return self._definition

    @property
    def state(self) -> TrackerState:
        return self._state

    @property
    def name(self) -> str:
        return self._definition.name

    @property
    def conditions(self) -> tuple[BaseCondition, ...]:
        return self._definition.conditions

    @property
    def limiters(self) -> list[BaseLimiter]:
        """Limiter objects showing their current state (``remaining``, ``start``)."""
        return self._definition.limiter_views(self._state)

    @property
    def reset_policy(self) -> ResetPolicy:
        return self._definition.reset_policy

    @property
    def loop_forever(self) -> bool:
        return self._definition.loop_forever

    @property
    def target(self) -> Number:
        """The current stage's target."""
        return self._definition.targets[self._state.stage]

    @property
    def targets(self) -> tuple[Number, ...]:
        """Every stage target, done and to come."""
        return self._definition.targets

    @property
    def multi_target(self) -> list[Number]:
        """The stage targets still to come after the current one."""
        return list(self._definition.targets[self._state.stage + 1 :])

    @property
    def current_stage(self) -> int:
        """1-based number of the current stage (as in dictrack)."""
        return self._state.stage + 1

    # -- the state ---------------------------------------------------------
    @property
    def group_id(self) -> str | None:
        return self._group_id

    @group_id.setter
    def group_id(self, value: str) -> None:
        check_name(value, "group_id")
        if self._group_id is not None and self._group_id != value:
            raise GroupIdAlreadySetError(
                f"tracker {self.name!r} already belongs to group {self._group_id!r}"
            )
        self._group_id = value

    @property
    def progress(self) -> Number:
        return self._state.progress

    @progress.setter
    def progress(self, value: Number) -> None:
        check_number(value, "progress")
        self._check_not_completed()
        self._state.progress = value

    @property
    def completed(self) -> bool:
        return self._state.completed

    @property
    def limited(self) -> bool:
        return self._state.limited

    def add_targets(self, target: Number | list[Number] | tuple[Number, ...]) -> None:
        """Append stage targets after the existing ones."""
        self._check_not_completed()
        extra = normalise_targets(target)
        self._definition = self._definition.with_targets(self._definition.targets + extra)

    def _check_not_completed(self) -> None:
        if self._state.completed:
            raise TrackerCompletedError(f"tracker {self.name!r} has already completed")

    # -- behaviour ---------------------------------------------------------
    def delta_for(self, data: dict[str, Any]) -> Number | None:
        """How much this event moves the tracker (None when it does not apply)."""
        return evaluate(self._definition, data)

    def track(self, data: dict[str, Any], now: float | None = None) -> StepResult:
        """Apply one event to this tracker alone and notify its listeners."""
        validate_event(data)
        delta = self.delta_for(data)
        now = time.time() if now is None else now
        rolled = self.roll_period(now)
        if delta is None:
            return StepResult(changed=rolled is not None, fired=[rolled] if rolled else [])
        result = step(self._definition, self._state, delta, now)
        for fired in result.fired:
            self._dispatch(self.event_for(fired, self._group_id or ""))
        if rolled is not None:
            result.changed = True
            result.fired.insert(0, rolled)
        return result

    @property
    def reset_period(self) -> ResetPeriod | None:
        """The calendar period at whose boundaries this tracker resets, if any."""
        return self._definition.period

    def roll_period(self, now: float | None = None) -> Fired | None:
        """Reset the tracker if a new calendar period began (see ResetPeriod)."""
        period = self._definition.period
        if period is None:
            return None
        now = time.time() if now is None else now
        fired = roll_period(self._definition, self._state, period.start_of(now), now)
        if fired is not None:
            self._dispatch(self.event_for(fired, self._group_id or ""))
        return fired

    def reset(self, reset_policy: int | None = None, now: float | None = None) -> None:
        """Reset with ``reset_policy`` (default the tracker's own) and fire RESET."""
        policy = None if reset_policy is None else check_reset_policy(reset_policy)
        fired = engine_reset(
            self._definition, self._state, policy, time.time() if now is None else now
        )
        self._dispatch(self.event_for(fired, self._group_id or ""))

    def add_listener(self, code: int, cb: Listener) -> None:
        """Call ``cb(event)`` for this tracker's events with ``code``."""
        if code not in EVENT_ALL:
            raise TrackingValueError(f"unknown event code {code!r}; expected one of {EVENT_ALL}")
        if not callable(cb):
            raise TrackingTypeError(f"{type(cb).__name__} is not callable")
        self._listeners.setdefault(code, []).append(cb)

    def forward_event(self, cb: Listener) -> None:
        """Send every event of this tracker to ``cb``."""
        for code in EVENT_ALL:
            self.add_listener(code, cb)

    def _dispatch(self, event: BaseEvent) -> None:
        for cb in self._listeners.get(event.code, ()):
            cb(event)

    def event_for(
        self, fired: Fired, group_id: str, event_ts: float = 0.0, event_id: str = ""
    ) -> TrackerEvent:
        """The event object for a fired record, with a snapshot of this tracker."""
        return event_of(self._definition, self._state, fired, group_id, event_ts, event_id)

    # -- serialisation -----------------------------------------------------
    def to_spec(self, include_state: bool = False) -> dict[str, Any]:
        """The JSON spec of the definition, with ``state`` when asked."""
        spec = self._definition.to_spec()
        if include_state:
            spec["state"] = self._state.to_json()
        return spec

    def copy(self) -> BaseTracker:
        return BaseTracker.from_parts(self._definition, self._state.copy(), self._group_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseTracker):
            return NotImplemented
        return (
            self._definition == other._definition
            and self._state == other._state
            and self._group_id == other._group_id
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        conditions = "{" + ", ".join(repr(c) for c in self.conditions) + "}"
        limiters = "{" + ", ".join(repr(lim) for lim in self.limiters) + "}"
        extra = f" key={self._definition.key}" if self._definition.key else ""
        content = (
            f"<{type(self).__name__} (target={self.target} conditions={conditions} "
            f"limiters={limiters} group_id={self._group_id} name={self.name} "
            f"progress={self.progress}{extra})>"
        )
        if self.completed:
            return "[COMPLETED] " + content
        if self.limited:
            return "[LIMITED] " + content
        return content


class CountTracker(BaseTracker):
    """Counts matching events toward the target(s)."""

    kind: TrackerKind = "count"

    def __init__(
        self,
        name: str,
        conditions: Iterable[BaseCondition],
        target: Number | list[Number] | tuple[Number, ...],
        group_id: str | None = None,
        limiters: Iterable[BaseLimiter] | None = None,
        reset_policy: int = ResetPolicy.DEFAULT,
        loop_forever: bool = False,
        init_progress: Number = 0,
        *,
        reset_period: ResetPeriod | None = None,
    ) -> None:
        super().__init__(
            name,
            conditions,
            target,
            group_id,
            limiters,
            reset_policy,
            loop_forever,
            init_progress,
            reset_period=reset_period,
        )


class AccumulationTracker(BaseTracker):
    """Adds the number at ``key`` of each matching event toward the target(s).

    An event without the key (or with null there) does not move the tracker;
    a non-number there (a string, a bool, NaN) is an :class:`InvalidEventError`
    and the whole event is refused before anything changes.
    """

    kind: TrackerKind = "accumulation"

    def __init__(
        self,
        name: str,
        conditions: Iterable[BaseCondition],
        target: Number | list[Number] | tuple[Number, ...],
        key: str,
        group_id: str | None = None,
        limiters: Iterable[BaseLimiter] | None = None,
        reset_policy: int = ResetPolicy.DEFAULT,
        loop_forever: bool = False,
        init_progress: Number = 0,
        *,
        reset_period: ResetPeriod | None = None,
    ) -> None:
        if not isinstance(key, str):
            raise TrackingTypeError(f"key must be a str, not {type(key).__name__}")
        super().__init__(
            name,
            conditions,
            target,
            group_id,
            limiters,
            reset_policy,
            loop_forever,
            init_progress,
            key=key,
            reset_period=reset_period,
        )

    @property
    def key(self) -> str:
        assert self._definition.key is not None
        return self._definition.key
