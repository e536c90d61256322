"""Limiters: caps on how a tracker may progress, with dictrack's names.

A limiter has a definition (what the user configured: ``count``, or the
window ``start``/``interval``) and a small numeric state (the remaining
count, or the current window's start). The state lives with the tracker's
state in the cache; the limiter object a caller sees carries both.

- ``CountLimiter(count)`` admits ``count`` progressing events; the event
  that uses the last one makes the tracker *limited* (LIMITED fires) unless
  it completed the tracker. A stage completion under a reset policy that
  includes ``LIMITER`` refills it.
- ``TimeLimiter(start_ts=None, end_ts=None, interval=None)`` admits events
  whose time lies in ``[start, start + interval]``. An event outside the
  window does not progress; the first such event marks the tracker limited
  and fires LIMITED. A reset (``LIMITER`` policy) opens a new window of the
  same length starting at the reset time.
"""

from __future__ import annotations

import abc
import logging
import time
from datetime import timedelta
from typing import Any, ClassVar

from tracking._validate import canonical_json, check_int, check_number
from tracking.errors import TrackingTypeError, TrackingValueError

logger = logging.getLogger(__name__)


class BaseLimiter(abc.ABC):
    """A limiter definition plus its current state value."""

    spec_type: ClassVar[str]

    @abc.abstractmethod
    def spec_fields(self) -> dict[str, Any]:
        """Definition fields as JSON (without ``type``)."""

    @abc.abstractmethod
    def initial_state(self) -> float:
        """State value of a fresh limiter."""

    @property
    @abc.abstractmethod
    def state_value(self) -> float:
        """The current state value (remaining count or window start)."""

    @abc.abstractmethod
    def with_state(self, value: float) -> BaseLimiter:
        """A copy of this limiter carrying the given state value."""

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec of the definition (state is not part of it)."""
        return {"type": self.spec_type, **self.spec_fields()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseLimiter):
            return NotImplemented
        return canonical_json(self.to_spec()) == canonical_json(other.to_spec())

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_spec()))


class CountLimiter(BaseLimiter):
    """Admit at most ``count`` progressing events, then the tracker is limited."""

    spec_type = "CountLimiter"

    def __init__(self, count: int) -> None:
        self.count = check_int(count, "count")
        if self.count <= 0:
            raise TrackingValueError("count must be a positive non-zero integer")
        self.remaining = self.count

    @property
    def limited(self) -> bool:
        return self.remaining <= 0

    def spec_fields(self) -> dict[str, Any]:
        return {"count": self.count}

    def initial_state(self) -> float:
        return self.count

    @property
    def state_value(self) -> float:
        return self.remaining

    def with_state(self, value: float) -> CountLimiter:
        copy = CountLimiter(self.count)
        copy.remaining = int(value)
        return copy

    def reset(self, reset_count: int | None = None) -> bool:
        """Refill: ``remaining = reset_count`` (default ``count``); True unless now limited.

        Unlike dictrack, ``reset_count`` refills this period only and does not
        change the configured ``count`` (the definition is separate from state).
        """
        if reset_count is None:
            reset_count = self.count
        check_int(reset_count, "reset_count")
        if reset_count < 0:
            raise TrackingValueError("reset_count must be a positive integer or zero")
        self.remaining = reset_count
        return not self.limited

    def __repr__(self) -> str:
        return f"<CountLimiter (count={self.count} remaining={self.remaining})>"


def _check_ts(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrackingTypeError(f"{what} must be an int timestamp, not {type(value).__name__}")
    return value


class TimeLimiter(BaseLimiter):
    """Admit events only inside a time window ``[start, end]``.

    Give ``end_ts`` or ``interval`` (not both); ``start_ts`` defaults to now.
    ``start_ts`` later than ``end_ts`` is swapped with a warning (as dictrack).
    """

    spec_type = "TimeLimiter"

    def __init__(
        self,
        start_ts: int | None = None,
        end_ts: int | None = None,
        interval: timedelta | None = None,
    ) -> None:
        start = _check_ts(start_ts, "start_ts")
        end = _check_ts(end_ts, "end_ts")
        if interval is not None and not isinstance(interval, timedelta):
            raise TrackingTypeError(
                f"interval must be a datetime.timedelta, not {type(interval).__name__}"
            )
        if end is None and interval is None:
            raise TrackingValueError(
                "at least one of end_ts or interval must be given; otherwise this "
                "limiter would have no effect"
            )
        if end is not None and interval is not None:
            raise TrackingValueError("only one of end_ts or interval can be given, not both")
        if start is None:
            start = int(time.time())
        if end is not None:
            if start > end:
                logger.warning("start_ts is greater than end_ts, swapping them")
                start, end = end, start
            seconds: float = end - start
        else:
            assert interval is not None
            seconds = interval.total_seconds()
        if seconds == 0:
            raise TrackingValueError(
                "start_ts and end_ts cannot be the same; the limiter would always be limited"
            )
        if seconds < 0:
            raise TrackingValueError("interval must be positive")
        check_number(seconds, "interval")
        self._initial_start = start
        self.interval_seconds = float(seconds)
        self.start: float = start

    @property
    def end(self) -> float:
        return self.start + self.interval_seconds

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.interval_seconds)

    def admits(self, now: float) -> bool:
        """True when ``now`` lies inside the current window."""
        return self.start <= now <= self.end

    @property
    def limited(self) -> bool:
        return not self.admits(time.time())

    def spec_fields(self) -> dict[str, Any]:
        return {"start_ts": self._initial_start, "interval": self.interval_seconds}

    def initial_state(self) -> float:
        return self._initial_start

    @property
    def state_value(self) -> float:
        return self.start

    def with_state(self, value: float) -> TimeLimiter:
        copy = TimeLimiter.__new__(TimeLimiter)
        copy._initial_start = self._initial_start
        copy.interval_seconds = self.interval_seconds
        copy.start = value
        return copy

    def reset(self, now_ts: float | None = None) -> bool:
        """Open a new window of the same length starting at ``now_ts`` (default now)."""
        self.start = time.time() if now_ts is None else check_number(now_ts, "now_ts")
        return True

    def __repr__(self) -> str:
        return f"<TimeLimiter (start={self.start} end={self.end} interval={self.interval})>"


LIMITER_CLASSES: tuple[type[BaseLimiter], ...] = (CountLimiter, TimeLimiter)
