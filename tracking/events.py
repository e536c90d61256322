"""Events fired by trackers and the manager, with dictrack's codes and classes.

Each event is plain data: ``to_dict()`` gives a JSON object, and its
``event_id`` is deterministic (a hash of the operation that caused it, the
group, the tracker, the code and its position in that operation), so a
handler that receives the same event twice can tell.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracking.engine import Fired
    from tracking.limiters import BaseLimiter
    from tracking.trackers import BaseTracker

EVENT_TRACKER_ADDED = 1001
EVENT_TRACKER_STAGE_COMPLETED = 1002
EVENT_TRACKER_ALL_COMPLETED = 1003
EVENT_TRACKER_RESET = 1004
EVENT_TRACKER_LIMITED = 1005
EVENT_TRACKER_REMOVED = 1006
EVENT_TRACKER_EXPIRED = 1007

EVENT_NAMES: dict[int, str] = {
    EVENT_TRACKER_ADDED: "ADDED",
    EVENT_TRACKER_STAGE_COMPLETED: "STAGE_COMPLETED",
    EVENT_TRACKER_ALL_COMPLETED: "ALL_COMPLETED",
    EVENT_TRACKER_RESET: "RESET",
    EVENT_TRACKER_LIMITED: "LIMITED",
    EVENT_TRACKER_REMOVED: "REMOVED",
    EVENT_TRACKER_EXPIRED: "EXPIRED",
}
EVENT_CODES: dict[str, int] = {name: code for code, name in EVENT_NAMES.items()}
EVENT_ALL: list[int] = list(EVENT_NAMES)


def make_event_id(source_id: str, group_id: str, name: str, code: int, index: int) -> str:
    """Deterministic id of the ``index``-th event an operation fired for a tracker.

    SHA-1 (first 32 hex digits) of the length-prefixed UTF-8 parts
    ``len:source|len:group|len:name|code|index``. SHA-1 because the Redis
    scripts compute the same id atomically with ``redis.sha1hex`` (Redis Lua
    has no SHA-256); the length prefixes (in bytes) make the encoding
    unambiguous whatever the strings contain. The id only has to be stable
    and collision-free among events, not secret.
    """
    parts = [s.encode() for s in (source_id, group_id, name)]
    raw = b"|".join(b"%d:%s" % (len(p), p) for p in parts) + b"|%d|%d" % (code, index)
    return hashlib.sha1(raw).hexdigest()[:32]


class BaseEvent:
    """An event with a code and a timestamp (seconds since the epoch)."""

    def __init__(self, code: int, event_ts: float = 0.0, event_id: str = "") -> None:
        self.code = code
        self.event_ts = event_ts
        self.event_id = event_id

    @property
    def code_name(self) -> str:
        return EVENT_NAMES.get(self.code, str(self.code))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the event."""
        return {
            "event_id": self.event_id,
            "code": self.code,
            "event": self.code_name,
            "event_ts": self.event_ts,
        }

    def __repr__(self) -> str:
        return f"<BaseEvent (code={self.code})>"


class TrackerEvent(BaseEvent):
    """An event about one tracker; ``tracker`` is a snapshot taken when it fired.

    ``fired`` is the compact record the cache wrote to the outbox for it
    (None for an event built by hand): the follow-up payload is made from
    it, see :func:`tracking.firing.event_payload`.
    """

    def __init__(
        self,
        code: int,
        group_id: str,
        name: str,
        tracker: BaseTracker,
        event_ts: float = 0.0,
        event_id: str = "",
        *,
        fired: Fired | None = None,
    ) -> None:
        super().__init__(code, event_ts, event_id)
        self.group_id = group_id
        self.name = name
        self.tracker = tracker
        self.fired = fired

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "group_id": self.group_id,
            "name": self.name,
            "tracker": self.tracker.to_spec(include_state=True),
        }

    def __repr__(self) -> str:
        return (
            f"<TrackerEvent (code={self.code} group_id={self.group_id} "
            f"name={self.name} tracker={self.tracker})>"
        )


class LimitedTrackerEvent(TrackerEvent):
    """A LIMITED event, naming the limiter that refused or ran out."""

    def __init__(
        self,
        code: int,
        group_id: str,
        name: str,
        tracker: BaseTracker,
        limiter: BaseLimiter,
        event_ts: float = 0.0,
        event_id: str = "",
        *,
        fired: Fired | None = None,
    ) -> None:
        super().__init__(code, group_id, name, tracker, event_ts, event_id, fired=fired)
        self.limiter = limiter

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["limiter"] = self.limiter.to_spec()
        return data

    def __repr__(self) -> str:
        return (
            f"<LimitedTrackerEvent (code={self.code} group_id={self.group_id} "
            f"name={self.name} tracker={self.tracker} limiter={self.limiter})>"
        )
