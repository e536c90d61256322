"""The semantics of one event on one tracker, as a pure function.

This is the reference every cache backend follows: the memory cache calls
it directly, and the Redis Lua script does the same steps in the same
order (the property tests hold them to it). Conditions are evaluated
before this, in Python; here a *delta* arrives (1 for a count tracker, the
event's number for an accumulation tracker) and the state moves.

Order of one step on a tracker whose conditions matched:

1. A completed tracker changes no more.
2. A tracker with an exhausted count limiter refuses the event.
3. A time limiter whose window does not contain ``now`` refuses it; the
   first refusal marks the tracker limited and fires LIMITED.
4. Otherwise the event is admitted: a limited flag left by a time window
   clears, every count limiter spends one, and progress grows by delta.
5. While progress reaches the current target: a non-final stage fires
   STAGE_COMPLETED, moves to the next target and applies the tracker's
   reset policy; the final stage either repeats (``loop_forever``: once
   per event) or completes the tracker (ALL_COMPLETED, once).
6. If a count limiter is now exhausted and the tracker is not completed,
   it becomes limited and LIMITED fires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracking.events import (
    EVENT_TRACKER_ALL_COMPLETED,
    EVENT_TRACKER_LIMITED,
    EVENT_TRACKER_RESET,
    EVENT_TRACKER_STAGE_COMPLETED,
)
from tracking.model import Number, ResetPolicy, TrackerDefinition, TrackerState, limiter_kind


@dataclass(frozen=True)
class Fired:
    """One event fired by a step: enough to rebuild the tracker snapshot."""

    code: int
    name: str
    stage: int
    progress: Number
    limiter: int | None = None


@dataclass
class StepResult:
    """What a step did to one tracker."""

    changed: bool = False
    refused: bool = False
    fired: list[Fired] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return any(f.code == EVENT_TRACKER_ALL_COMPLETED for f in self.fired)

    @property
    def limited(self) -> bool:
        return self.refused or any(f.code == EVENT_TRACKER_LIMITED for f in self.fired)


def apply_reset_policy(
    definition: TrackerDefinition, state: TrackerState, policy: ResetPolicy, now: float
) -> None:
    """Clear what ``policy`` names: progress to 0, limiters refilled/reopened at ``now``."""
    if policy & ResetPolicy.PROGRESS:
        state.progress = 0
    if policy & ResetPolicy.LIMITER:
        for index, limiter in enumerate(definition.limiters):
            state.limits[index] = (
                limiter.initial_state() if limiter_kind(limiter) == "count" else now
            )
        state.limited = False


def _exhausted_count_limiter(definition: TrackerDefinition, state: TrackerState) -> int | None:
    for index, limiter in enumerate(definition.limiters):
        if limiter_kind(limiter) == "count" and state.limits[index] <= 0:
            return index
    return None


def _closed_time_window(
    definition: TrackerDefinition, state: TrackerState, now: float
) -> int | None:
    for index, limiter in enumerate(definition.limiters):
        if limiter_kind(limiter) == "time":
            start = state.limits[index]
            interval = limiter.spec_fields()["interval"]
            if not start <= now <= start + interval:
                return index
    return None


def step(
    definition: TrackerDefinition, state: TrackerState, delta: Number, now: float
) -> StepResult:
    """Apply one matched event (``delta``) at time ``now``; mutates ``state``."""
    result = StepResult()
    name = definition.name
    if state.completed:
        return result
    if _exhausted_count_limiter(definition, state) is not None:
        result.refused = True
        return result
    closed = _closed_time_window(definition, state, now)
    if closed is not None:
        result.refused = True
        if not state.limited:
            state.limited = True
            result.changed = True
            result.fired.append(
                Fired(EVENT_TRACKER_LIMITED, name, state.stage, state.progress, closed)
            )
        return result

    result.changed = True
    state.limited = False
    for index, limiter in enumerate(definition.limiters):
        if limiter_kind(limiter) == "count":
            state.limits[index] -= 1
    state.progress += delta

    targets = definition.targets
    while state.progress >= targets[state.stage]:
        if state.stage + 1 < len(targets):
            result.fired.append(
                Fired(EVENT_TRACKER_STAGE_COMPLETED, name, state.stage, state.progress)
            )
            state.stage += 1
            apply_reset_policy(definition, state, definition.reset_policy, now)
        elif definition.loop_forever:
            result.fired.append(
                Fired(EVENT_TRACKER_STAGE_COMPLETED, name, state.stage, state.progress)
            )
            apply_reset_policy(definition, state, definition.reset_policy, now)
            break
        else:
            state.completed = True
            state.limited = False
            result.fired.append(
                Fired(EVENT_TRACKER_ALL_COMPLETED, name, state.stage, state.progress)
            )
            return result

    exhausted = _exhausted_count_limiter(definition, state)
    if exhausted is not None and not state.limited:
        state.limited = True
        result.fired.append(
            Fired(EVENT_TRACKER_LIMITED, name, state.stage, state.progress, exhausted)
        )
    return result


def roll_period(
    definition: TrackerDefinition, state: TrackerState, period_start: int, now: float
) -> Fired | None:
    """Move a periodic tracker into the period starting at ``period_start``.

    A state not yet anchored to a period is anchored without a reset. A
    state of an earlier period is reset by the period's policy (``PROGRESS``
    also restarts the stages and reopens a completed tracker; ``LIMITER``
    refills and reopens the limiters) and RESET fires. The same period twice
    changes nothing, which makes the beat job idempotent.
    """
    if definition.period is None or state.period == period_start:
        return None
    if state.period is None:
        state.period = period_start
        return None
    if state.period > period_start:  # a caller's clock behind the recorded period
        return None
    state.period = period_start
    policy = ResetPolicy(definition.period.reset_policy)
    if policy & ResetPolicy.PROGRESS:
        state.stage = 0
        state.completed = False
    apply_reset_policy(definition, state, policy, now)
    if _exhausted_count_limiter(definition, state) is not None:
        state.limited = True
    return Fired(EVENT_TRACKER_RESET, definition.name, state.stage, state.progress)


def reset(
    definition: TrackerDefinition, state: TrackerState, policy: ResetPolicy | None, now: float
) -> Fired:
    """A manual reset: apply ``policy`` (default the tracker's) and fire RESET."""
    apply_reset_policy(
        definition, state, definition.reset_policy if policy is None else policy, now
    )
    state.completed = False
    if _exhausted_count_limiter(definition, state) is not None:
        state.limited = True
    return Fired(EVENT_TRACKER_RESET, definition.name, state.stage, state.progress)
