"""In-process cache: the reference backend, correct within one process.

Every primitive runs under one mutex, so each is atomic with respect to
other threads of the process (dictrack's memory cache raised on changing
events; this one is the semantics every other backend is tested against).
It runs :mod:`tracking.engine` directly.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from tracking.cache.base import (
    ApplyOutcome,
    CachedGroup,
    CachedTracker,
    DataCache,
    DirtySnapshot,
    OutboxEntry,
    PeriodBounds,
    SeenEvent,
    TrackStep,
    outbox_payload,
)
from tracking.engine import Fired, roll_period, step
from tracking.engine import reset as engine_reset
from tracking.errors import ConflictingNameError
from tracking.events import (
    EVENT_TRACKER_ADDED,
    EVENT_TRACKER_EXPIRED,
    EVENT_TRACKER_REMOVED,
    make_event_id,
)
from tracking.model import ResetPolicy

#: What dedupe remembers of an applied event: changed, limited, completed names.
_Digest = tuple[list[str], list[str], list[str]]


class MemoryDataCache(DataCache):
    """A cache in this process's memory (nothing is shared between processes)."""

    def __init__(
        self,
        dedupe_window: float = 24 * 3600,
        dedupe_max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.RLock()
        self._groups: dict[str, CachedGroup] = {}
        self._dirty: dict[str, int] = {}
        self._removed: dict[str, set[str]] = {}
        self._seq = 0
        self._outbox: OrderedDict[str, OutboxEntry] = OrderedDict()
        self._seen: dict[str, OrderedDict[str, tuple[float, _Digest]]] = {}
        # The highest version an evicted group had: a new incarnation starts
        # above it even if the clock is fixed or stepped back (see _fresh_version).
        self._retired_version = 0
        self._dedupe_window = dedupe_window
        self._dedupe_max = dedupe_max_entries
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def get_group(self, group_id: str) -> CachedGroup | None:
        with self._lock:
            group = self._groups.get(group_id)
            return copy.deepcopy(group) if group is not None else None

    def install_group(
        self, group_id: str, trackers: Sequence[CachedTracker], seen: Sequence[SeenEvent] = ()
    ) -> int:
        with self._lock:
            if group_id in self._groups:
                return 0
            group = CachedGroup(version=self._fresh_version())
            for tracker in trackers:
                group.trackers[tracker.definition.name] = copy.deepcopy(tracker)
            self._groups[group_id] = group
            remembered = self._seen.setdefault(group_id, OrderedDict())
            for record in sorted(seen, key=lambda r: r.applied_at):
                if record.event_id not in remembered:
                    digest = (list(record.changed), list(record.limited), list(record.completed))
                    remembered[record.event_id] = (record.applied_at, digest)
            while len(remembered) > self._dedupe_max:
                remembered.popitem(last=False)
            return group.version

    def _fresh_version(self) -> int:
        """A new group's version: the clock in microseconds, above any evicted group's."""
        return max(int(self._clock() * 1_000_000), self._retired_version + 1)

    def _mark_dirty(self, group_id: str) -> None:
        self._seq += 1
        self._dirty[group_id] = self._seq

    def _remember(self, group_id: str, event_id: str, now: float, outcome: ApplyOutcome) -> None:
        """Keep the outcome's names for dedupe, bounded per group by window and count."""
        seen = self._seen.setdefault(group_id, OrderedDict())
        # an id applied again (its record had aged out) is now the newest one
        seen.pop(event_id, None)
        seen[event_id] = (
            now,
            (list(outcome.changed), list(outcome.limited), list(outcome.completed)),
        )
        while seen:
            seen_at = next(iter(seen.values()))[0]
            if len(seen) > self._dedupe_max or seen_at < now - self._dedupe_window:
                seen.popitem(last=False)
            else:
                break

    def _duplicate(self, group: CachedGroup | None, digest: _Digest, now: float) -> ApplyOutcome:
        changed, limited, completed = digest
        outcome = ApplyOutcome(status="duplicate", version=group.version if group else 0, now=now)
        outcome.changed, outcome.limited, outcome.completed = (
            list(changed),
            list(limited),
            list(completed),
        )
        if group is not None:
            for name in {*changed, *limited, *completed}:
                if name in group.trackers:
                    outcome.states[name] = group.trackers[name].state.copy()
        return outcome

    def apply(
        self,
        group_id: str,
        version: int,
        steps: Sequence[TrackStep],
        event_id: str,
        source_id: str | None = None,
        periods: PeriodBounds | None = None,
    ) -> ApplyOutcome:
        with self._lock:
            now = self.now()
            group = self._groups.get(group_id)
            remembered = self._seen.get(group_id)
            seen = remembered.get(event_id) if remembered is not None else None
            if seen is not None and seen[0] >= now - self._dedupe_window:
                return self._duplicate(group, seen[1], now)
            if group is None:
                return ApplyOutcome(status="missing", now=now)
            if group.version != version:
                return ApplyOutcome(status="stale", version=group.version, now=now)
            periods = periods or {}
            if any(not start <= now < end for start, end in periods.values()):
                return ApplyOutcome(status="clock", version=version, now=now)
            outcome = ApplyOutcome(status="applied", version=version, now=now)
            for name, cached in group.trackers.items():
                bounds = periods.get(name)
                if bounds is None or not self._alive(cached, now):
                    continue
                state_before = cached.state.copy()
                rolled = roll_period(cached.definition, cached.state, bounds[0], now)
                if rolled is not None:
                    outcome.fired.append(rolled)
                if cached.state != state_before:
                    outcome.changed.append(name)
                    outcome.states[name] = cached.state.copy()
            for item in steps:
                name = item.definition.name
                target = group.trackers.get(name)
                if target is None or not self._alive(target, now):
                    continue
                result = step(target.definition, target.state, item.delta, now)
                if result.changed and name not in outcome.changed:
                    outcome.changed.append(name)
                if result.limited:
                    outcome.limited.append(name)
                if result.completed:
                    outcome.completed.append(name)
                outcome.fired.extend(result.fired)
                outcome.states[name] = target.state.copy()
            for name in outcome.completed:
                if group.trackers[name].definition.period is None:
                    del group.trackers[name]
                    self._removed.setdefault(group_id, set()).add(name)
            if outcome.changed:
                self._mark_dirty(group_id)
            self._queue(group_id, source_id or event_id, outcome.fired, now)
            self._remember(group_id, event_id, now, outcome)
            return copy.deepcopy(outcome)

    @staticmethod
    def _alive(cached: CachedTracker, now: float) -> bool:
        return cached.expire_at is None or cached.expire_at > now

    def _queue(self, group_id: str, source_id: str, fired: Sequence[Fired], now: float) -> None:
        for index, item in enumerate(fired):
            event_id = make_event_id(source_id, group_id, item.name, item.code, index)
            payload = outbox_payload(group_id, item, event_id, now)
            self._outbox[event_id] = OutboxEntry(group_id, event_id, payload)

    def put_trackers(
        self,
        group_id: str,
        trackers: Sequence[CachedTracker],
        source_id: str,
        replace: bool = False,
    ) -> tuple[int, list[Fired]]:
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                group = CachedGroup(version=self._fresh_version())
            if not replace:
                for tracker in trackers:
                    if tracker.definition.name in group.trackers:
                        raise ConflictingNameError(group_id, tracker.definition.name)
            fired: list[Fired] = []
            for tracker in trackers:
                name = tracker.definition.name
                if name not in group.trackers:
                    state = tracker.state
                    fired.append(Fired(EVENT_TRACKER_ADDED, name, state.stage, state.progress))
                group.trackers[name] = copy.deepcopy(tracker)
                self._removed.get(group_id, set()).discard(name)
            self._groups[group_id] = group
            group.version += 1
            self._mark_dirty(group_id)
            self._queue(group_id, source_id, fired, self.now())
            return group.version, fired

    def _take(
        self, group_id: str, group: CachedGroup, name: str, code: int
    ) -> tuple[CachedTracker, Fired]:
        cached = group.trackers.pop(name)
        self._removed.setdefault(group_id, set()).add(name)
        return cached, Fired(code, name, cached.state.stage, cached.state.progress)

    def remove_trackers(
        self, group_id: str, names: Sequence[str] | None, source_id: str
    ) -> list[tuple[CachedTracker, Fired]]:
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                return []
            wanted = list(group.trackers) if names is None else list(names)
            removed = [
                self._take(group_id, group, n, EVENT_TRACKER_REMOVED)
                for n in wanted
                if n in group.trackers
            ]
            if removed:
                group.version += 1
                self._mark_dirty(group_id)
                self._queue(group_id, source_id, [f for _, f in removed], self.now())
            return removed

    def reset_trackers(
        self, group_id: str, names: Sequence[str], policy: ResetPolicy | None, source_id: str
    ) -> list[tuple[CachedTracker, Fired]]:
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                return []
            now = self.now()
            done = []
            for name in names:
                cached = group.trackers.get(name)
                if cached is None:
                    continue
                fired = engine_reset(cached.definition, cached.state, policy, now)
                done.append((copy.deepcopy(cached), fired))
            if done:
                self._mark_dirty(group_id)
                self._queue(group_id, source_id, [f for _, f in done], now)
            return done

    def expire(
        self, source_id: str, now: float | None = None, limit: int = 1000
    ) -> list[tuple[str, CachedTracker, Fired]]:
        with self._lock:
            now = self.now() if now is None else now
            found: list[tuple[str, CachedTracker, Fired]] = []
            for group_id, group in self._groups.items():
                due = [
                    name
                    for name, cached in group.trackers.items()
                    if cached.expire_at is not None and cached.expire_at <= now
                ][: max(0, limit - len(found))]
                if not due:
                    continue
                taken = [self._take(group_id, group, n, EVENT_TRACKER_EXPIRED) for n in due]
                group.version += 1
                self._mark_dirty(group_id)
                self._queue(group_id, source_id, [f for _, f in taken], now)
                found.extend((group_id, cached, fired) for cached, fired in taken)
            return found

    def periodic_groups(self, limit: int = 1000, after: str = "") -> list[str]:
        with self._lock:
            found = sorted(
                group_id
                for group_id, group in self._groups.items()
                if group_id > after
                and any(t.definition.period is not None for t in group.trackers.values())
            )
            return found[:limit]

    def evict_group(self, group_id: str) -> bool:
        with self._lock:
            if group_id in self._dirty:
                return False
            if any(entry.group_id == group_id for entry in self._outbox.values()):
                return False
            evicted = self._groups.pop(group_id, None)
            if evicted is not None:
                self._retired_version = max(self._retired_version, evicted.version)
            self._seen.pop(group_id, None)
            return True

    def dirty_groups(self, limit: int = 1000) -> list[str]:
        with self._lock:
            return list(self._dirty)[:limit]

    def dirty_snapshot(self, group_id: str) -> DirtySnapshot | None:
        with self._lock:
            mark = self._dirty.get(group_id)
            if mark is None:
                return None
            group = self._groups.get(group_id)
            trackers = copy.deepcopy(group.trackers) if group is not None else {}
            removed = sorted(self._removed.get(group_id, set()))
            cutoff = self.now() - self._dedupe_window
            seen = [
                SeenEvent(event_id, at, tuple(digest[0]), tuple(digest[1]), tuple(digest[2]))
                for event_id, (at, digest) in self._seen.get(group_id, {}).items()
                if at >= cutoff
            ]
            return DirtySnapshot(group_id, mark, trackers, removed, seen)

    def clear_dirty(self, group_id: str, mark: int) -> bool:
        with self._lock:
            if self._dirty.get(group_id) != mark:
                return False
            del self._dirty[group_id]
            self._removed.pop(group_id, None)
            return True

    def outbox(self, limit: int = 100) -> list[OutboxEntry]:
        with self._lock:
            return list(self._outbox.values())[:limit]

    def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        with self._lock:
            for entry in entries:
                self._outbox.pop(entry.entry_id, None)

    def flush(self) -> None:
        with self._lock:
            self._groups.clear()
            self._dirty.clear()
            self._removed.clear()
            self._outbox.clear()
            self._seen.clear()
