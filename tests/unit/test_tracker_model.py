"""Property test: a tracker fed any event stream matches a plain model of the rules.

The model below is written from the documented semantics (tracking/engine.py
docstring), independently of the engine's code, in the most direct way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tracking import (
    EVENT_TRACKER_ALL_COMPLETED,
    EVENT_TRACKER_LIMITED,
    EVENT_TRACKER_STAGE_COMPLETED,
    AccumulationTracker,
    CountLimiter,
    CountTracker,
    KeyValueEQ,
    ResetPolicy,
    TimeLimiter,
)
from tracking.events import BaseEvent

WINDOW = (1000, 2000)


@dataclass
class Model:
    targets: list[float]
    policy: int
    loop: bool
    counts: list[int]
    window: bool
    accumulate: bool
    progress: float = 0
    stage: int = 0
    completed: bool = False
    limited: bool = False
    remaining: list[int] = field(default_factory=list)
    window_start: float = WINDOW[0]
    window_len: float = WINDOW[1] - WINDOW[0]
    events: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.remaining = list(self.counts)

    def refill(self, now: float) -> None:
        if self.policy & 1:
            self.progress = 0
        if self.policy & 2:
            self.remaining = list(self.counts)
            self.window_start = now
            self.limited = False

    def feed(self, matches: bool, amount: float | None, now: float) -> None:
        if not matches or self.completed:
            return
        delta = amount if self.accumulate else 1
        if delta is None:
            return
        if any(r <= 0 for r in self.remaining):
            return
        if self.window and not (self.window_start <= now <= self.window_start + self.window_len):
            if not self.limited:
                self.limited = True
                self.events.append(EVENT_TRACKER_LIMITED)
            return
        self.limited = False
        self.remaining = [r - 1 for r in self.remaining]
        self.progress += delta
        while self.progress >= self.targets[self.stage]:
            if self.stage + 1 < len(self.targets):
                self.events.append(EVENT_TRACKER_STAGE_COMPLETED)
                self.stage += 1
                self.refill(now)
            elif self.loop:
                self.events.append(EVENT_TRACKER_STAGE_COMPLETED)
                self.refill(now)
                break
            else:
                self.completed = True
                self.limited = False
                self.events.append(EVENT_TRACKER_ALL_COMPLETED)
                return
        if any(r <= 0 for r in self.remaining) and not self.limited:
            self.limited = True
            self.events.append(EVENT_TRACKER_LIMITED)


numbers = st.one_of(
    st.integers(min_value=-5, max_value=40),
    st.floats(min_value=-5, max_value=40, allow_nan=False, allow_infinity=False),
)
events = st.lists(
    st.tuples(
        st.booleans(),  # matches the condition
        st.one_of(st.none(), numbers),  # amount
        st.integers(min_value=500, max_value=2500),  # time
    ),
    max_size=60,
)


@given(
    targets=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=4),
    policy=st.sampled_from(list(ResetPolicy)),
    loop=st.booleans(),
    counts=st.lists(st.integers(min_value=1, max_value=8), max_size=2),
    window=st.booleans(),
    accumulate=st.booleans(),
    stream=events,
)
def test_tracker_matches_plain_model(
    targets: list[int],
    policy: ResetPolicy,
    loop: bool,
    counts: list[int],
    window: bool,
    accumulate: bool,
    stream: list[tuple[bool, float | None, int]],
) -> None:
    limiters: list[Any] = [CountLimiter(c) for c in counts]
    if window:
        limiters.append(TimeLimiter(start_ts=WINDOW[0], end_ts=WINDOW[1]))
    conditions = [KeyValueEQ("ok", True)]
    tracker: CountTracker | AccumulationTracker
    if accumulate:
        tracker = AccumulationTracker(
            "t",
            conditions,
            targets,
            key="amount",
            limiters=limiters,
            reset_policy=policy,
            loop_forever=loop,
        )
    else:
        tracker = CountTracker(
            "t", conditions, targets, limiters=limiters, reset_policy=policy, loop_forever=loop
        )
    fired: list[BaseEvent] = []
    tracker.forward_event(fired.append)
    model = Model([float(t) for t in targets], int(policy), loop, counts, window, accumulate)
    for matches, amount, now in stream:
        data: dict[str, Any] = {"ok": matches}
        if amount is not None:
            data["amount"] = amount
        tracker.track(data, now=now)
        model.feed(matches, amount, now)
        assert tracker.progress == model.progress
        assert tracker.current_stage == model.stage + 1
        assert tracker.completed == model.completed
        assert tracker.limited == model.limited
        assert [e.code for e in fired] == model.events
        remaining = [lim.remaining for lim in tracker.limiters if isinstance(lim, CountLimiter)]
        assert remaining == model.remaining
