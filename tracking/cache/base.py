"""The cache interface: the shared working set that applies events atomically.

A cache keeps, per group, the tracker definitions (shared by content hash
where the backend can) and their small states, plus a definitions
*version*. Its primitives are atomic; the policy around them (evaluating
conditions, reloading definitions, cold loads, listeners) lives in
:class:`tracking.manager.TrackingManager`, so every backend behaves alike.

The hot path is :meth:`DataCache.apply`: the caller evaluated the
conditions against the definitions of ``version`` and sends one
:class:`TrackStep` per matching tracker. The cache, in one atomic step,
deduplicates the event id, checks the version, runs
:func:`tracking.engine.step` semantics for each tracker, removes completed
trackers, appends fired events to the outbox and marks the group dirty.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tracking.engine import Fired
from tracking.errors import TrackingValueError
from tracking.model import Number, ResetPolicy, TrackerDefinition, TrackerState


@dataclass
class CachedTracker:
    """One tracker as the cache holds it."""

    definition: TrackerDefinition
    state: TrackerState
    expire_at: float | None = None


@dataclass
class CachedGroup:
    """A group's trackers (insertion order) and its definitions version."""

    version: int
    trackers: dict[str, CachedTracker] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackStep:
    """A matching tracker and how much the event moves it."""

    definition: TrackerDefinition
    delta: Number


ApplyStatus = Literal["applied", "duplicate", "stale", "missing", "clock"]

#: Calendar period bounds ``(start, end)`` in epoch seconds, per periodic tracker name.
PeriodBounds = Mapping[str, tuple[int, int]]


@dataclass
class ApplyOutcome:
    """What one atomic apply did.

    ``status``: ``applied``; ``duplicate`` (the event id was seen within the
    dedupe window: nothing changed; ``changed``/``limited``/``completed`` are
    the original outcome's names, ``states`` the *current* states of those
    that still exist, ``fired`` is empty: the original events are already in
    the outbox); ``stale`` (the group's definitions version is not the one
    the caller evaluated against: nothing changed); ``missing`` (the group is
    not in the cache: load it from the store and try again); ``clock`` (the
    cache's clock, ``now``, lies outside a period bound the caller computed
    from its own clock: nothing changed, recompute the bounds from ``now``).
    """

    status: ApplyStatus
    version: int = 0
    now: float = 0.0
    states: dict[str, TrackerState] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    limited: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    fired: list[Fired] = field(default_factory=list)


@dataclass(frozen=True)
class ApplyRequest:
    """The arguments of one :meth:`DataCache.apply`, for :meth:`DataCache.apply_many`."""

    group_id: str
    version: int
    steps: Sequence[TrackStep]
    event_id: str
    periods: PeriodBounds | None = None


@dataclass(frozen=True)
class OutboxEntry:
    """A fired event waiting to be handed to the broker."""

    group_id: str
    entry_id: str
    payload: dict[str, object]


@dataclass(frozen=True)
class SeenEvent:
    """One dedupe record: an event id applied to a group, when, and its outcome's names.

    Flushed to the store with the group and installed again by a cold load,
    so a redelivery after the cache lost the group is still recognised.
    """

    event_id: str
    applied_at: float
    changed: tuple[str, ...] = ()
    limited: tuple[str, ...] = ()
    completed: tuple[str, ...] = ()

    def to_json(self) -> list[object]:
        """``[id, time, changed, limited, completed]``: compact, plain JSON."""
        return [
            self.event_id,
            self.applied_at,
            list(self.changed),
            list(self.limited),
            list(self.completed),
        ]

    @classmethod
    def from_json(cls, data: object) -> SeenEvent:
        """Inverse of :meth:`to_json`; a malformed record is a ``TrackingValueError``."""
        if isinstance(data, list) and len(data) == 5:
            event_id, at, changed, limited, completed = data
            names = (changed, limited, completed)
            if (
                isinstance(event_id, str)
                and isinstance(at, int | float)
                and not isinstance(at, bool)
                and all(isinstance(x, list) and all(isinstance(n, str) for n in x) for x in names)
            ):
                return cls(event_id, float(at), tuple(changed), tuple(limited), tuple(completed))
        raise TrackingValueError(f"malformed dedupe record {data!r}")


@dataclass
class DirtySnapshot:
    """A dirty group's current trackers and removals, taken at ``mark``.

    ``seen`` holds the group's dedupe records (bounded by the dedupe window
    and count), persisted with it.
    """

    group_id: str
    mark: int
    trackers: dict[str, CachedTracker]
    removed: list[str]
    seen: list[SeenEvent] = field(default_factory=list)


class DataCache(abc.ABC):
    """Atomic primitives over groups of trackers."""

    @abc.abstractmethod
    def now(self) -> float:
        """The cache's clock (Redis ``TIME`` for Redis): one clock for all workers."""

    @abc.abstractmethod
    def get_group(self, group_id: str) -> CachedGroup | None:
        """The group's trackers and version, or None when it is not cached."""

    @abc.abstractmethod
    def install_group(
        self, group_id: str, trackers: Sequence[CachedTracker], seen: Sequence[SeenEvent] = ()
    ) -> int:
        """Install a group loaded from the store, only if absent.

        Returns the installed group's version, or 0 if the group was already
        there. A freshly installed group's version is the cache's clock in
        microseconds, so a new incarnation of a group (after an eviction, or
        after the cache lost it) never repeats a version an earlier one had:
        a worker still holding the old incarnation's definitions gets
        ``stale`` instead of evaluating against them. An empty sequence installs
        an empty group, so that a group with no trackers is not looked up in
        the store on every event. ``seen`` are the dedupe records persisted
        with the group: they are remembered as if just applied here (their
        original times count for the window).
        """

    @abc.abstractmethod
    def apply(
        self,
        group_id: str,
        version: int,
        steps: Sequence[TrackStep],
        event_id: str,
        source_id: str | None = None,
        periods: PeriodBounds | None = None,
    ) -> ApplyOutcome:
        """Apply one event's steps atomically (see the module docstring).

        ``periods`` gives, for every tracker of the group that has a calendar
        reset period, the bounds of the current period as the caller's clock
        sees it. Before the steps, each such tracker is rolled into that
        period (:func:`tracking.engine.roll_period`; RESET fires for each
        that was reset). Completed periodic trackers stay in the group.
        """

    def apply_many(self, requests: Sequence[ApplyRequest]) -> list[ApplyOutcome]:
        """Apply several events in order, each atomically, as one batch.

        Each request behaves exactly like :meth:`apply` and gets its own
        outcome; requests for one group apply in the given order. Backends
        that can send the batch in one round trip (Redis: one pipeline)
        override this.
        """
        return [
            self.apply(r.group_id, r.version, r.steps, r.event_id, periods=r.periods)
            for r in requests
        ]

    def get_definitions(self, group_id: str) -> tuple[int, list[TrackerDefinition]] | None:
        """The group's version and definitions (what the hot path evaluates).

        Backends that can fetch definitions without states override this.
        """
        group = self.get_group(group_id)
        if group is None:
            return None
        return group.version, [t.definition for t in group.trackers.values()]

    @abc.abstractmethod
    def put_trackers(
        self,
        group_id: str,
        trackers: Sequence[CachedTracker],
        source_id: str,
        replace: bool = False,
    ) -> tuple[int, list[Fired]]:
        """Add trackers, or with ``replace`` add-or-replace them, atomically.

        Without ``replace`` an existing name raises ``ConflictingNameError``
        and nothing changes. Bumps the version; queues ADDED for each new
        tracker; returns the new version and what fired.
        """

    @abc.abstractmethod
    def remove_trackers(
        self, group_id: str, names: Sequence[str] | None, source_id: str
    ) -> list[tuple[CachedTracker, Fired]]:
        """Remove the named trackers (all when None); queue and return REMOVED."""

    @abc.abstractmethod
    def reset_trackers(
        self, group_id: str, names: Sequence[str], policy: ResetPolicy | None, source_id: str
    ) -> list[tuple[CachedTracker, Fired]]:
        """Reset the named trackers atomically; queue and return each RESET."""

    @abc.abstractmethod
    def expire(
        self, source_id: str, now: float | None = None, limit: int = 1000
    ) -> list[tuple[str, CachedTracker, Fired]]:
        """Remove trackers whose ``expire_at`` has passed; queue and return EXPIRED."""

    @abc.abstractmethod
    def periodic_groups(self, limit: int = 1000, after: str = "") -> list[str]:
        """Groups holding at least one periodic tracker, in a stable order after ``after``.

        Beat's reset job pages through them to roll idle groups over.
        """

    @abc.abstractmethod
    def evict_group(self, group_id: str) -> bool:
        """Drop a group from the cache if nothing of it is unflushed; True if dropped.

        Refuses (False) while the group is dirty or has outbox entries, so
        eviction never loses data: flush first, then evict.
        """

    @abc.abstractmethod
    def dirty_groups(self, limit: int = 1000) -> list[str]:
        """Groups changed since their last acknowledged flush."""

    @abc.abstractmethod
    def dirty_snapshot(self, group_id: str) -> DirtySnapshot | None:
        """A consistent snapshot of a dirty group for the flusher (None if clean)."""

    @abc.abstractmethod
    def clear_dirty(self, group_id: str, mark: int) -> bool:
        """Clear the dirty mark if nothing changed since ``mark``; True if cleared."""

    @abc.abstractmethod
    def outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """Fired events not yet acknowledged, oldest first."""

    @abc.abstractmethod
    def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        """Forget outbox entries that were handed on."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Delete every key/entry of this product, and nothing else."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def outbox_payload(group_id: str, fired: Fired, event_id: str, ts: float) -> dict[str, object]:
    """The compact outbox record of a fired event (the same in every backend)."""
    return {
        "event_id": event_id,
        "group_id": group_id,
        "code": fired.code,
        "name": fired.name,
        "stage": fired.stage,
        "progress": fired.progress,
        "limiter": fired.limiter,
        "event_ts": ts,
    }
