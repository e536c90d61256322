"""`TrackingManager`: dictrack's API over an atomic cache and a durable store.

The manager owns the policy: validate input, evaluate conditions in Python
against the group's definitions, hand the resulting steps to the cache in
one atomic call, reload definitions when another worker changed them, load
a group from the store on a cache miss, and tell in-process listeners what
fired. It starts no threads; periodic work (write-behind, expiry) is
called from outside (celery beat), see :meth:`flush_dirty` and
:meth:`sweep_expired`.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tracking._validate import (
    check_name,
    check_names,
    validate_event,
)
from tracking.access import Durability, GroupAccess, Listener
from tracking.cache.base import (
    ApplyOutcome,
    ApplyRequest,
    CachedTracker,
    TrackStep,
)
from tracking.engine import Fired, roll_period
from tracking.errors import (
    CacheError,
    StoreError,
    TrackingError,
    TrackingTypeError,
    TrackingValueError,
)
from tracking.events import TrackerEvent
from tracking.firing import TrackResult, track_result
from tracking.model import Number, TrackerDefinition, check_reset_policy
from tracking.persistence import FlushReport, flush_dirty, flush_group, load_group, records_to_cache
from tracking.trackers import BaseTracker

logger = logging.getLogger(__name__)

#: How many times ``track`` re-evaluates after a definitions change or cold load.
MAX_ATTEMPTS = 5


#: What one apply needs beyond the group: its steps, event id and period bounds.
_Request = tuple[list[TrackStep], str, dict[str, tuple[int, int]]]


def period_bounds(
    definitions: Iterable[TrackerDefinition], now: float
) -> dict[str, tuple[int, int]]:
    """Current calendar period bounds of every periodic definition, by tracker name."""
    return {d.name: d.period.bounds(now) for d in definitions if d.period is not None}


class TrackingManager(GroupAccess):
    """Track events for groups of trackers (dictrack's ``TrackingManager``).

    Construction, listeners, the worker-local definitions cache and outbox
    access are in :class:`tracking.access.GroupAccess`.
    """

    # -- tracking ------------------------------------------------------------
    def track(
        self, group_id: str, data: dict[str, Any], event_id: str | None = None
    ) -> TrackResult:
        """Apply one event to the group's trackers.

        Returns ``(ok, dirtied, completed, limited)``: ``ok`` is True (kept
        for dictrack's shape: an event that could not be applied raises
        instead, ``StoreError`` when the group is not cached and the store
        cannot be read, so a task never acknowledges it); the lists hold
        trackers (after the event) whose state changed, that completed all
        their stages, and that refused the event or became limited by it.
        ``event_id`` makes the effect exactly-once: the same id applied again
        within the dedupe window changes nothing and returns the original
        outcome with ``duplicate=True``.
        """
        check_name(group_id, "group_id")
        validate_event(data, max_bytes=self._max_event_bytes, max_depth=self._max_event_depth)
        if event_id is None:
            event_id = uuid.uuid4().hex
        else:
            check_name(event_id, "event_id")
        track_id = event_id

        def request(defs: list[TrackerDefinition], now: float) -> _Request:
            return self._steps(defs, data), track_id, period_bounds(defs, now)

        # A cold group whose store read fails raises StoreError (a BackendError):
        # the caller must not acknowledge an event that was not applied.
        applied = self._apply_current(group_id, request, cold_load=True)
        assert applied is not None  # a cold load always ends in an apply
        outcome, _, defs = applied
        definitions = {d.name: d for d in defs}
        result = track_result(group_id, event_id, outcome, definitions)
        if outcome.status == "applied":
            self._dispatch(result.events)
        if self.durability == "write-through":
            # Also for a duplicate: a retried event whose first try reached the
            # cache but not the store is persisted now. Raises if the store
            # fails, so the caller (the task) does not acknowledge the event.
            flush_group(self.data_cache, self.data_store, group_id)
        return result

    def track_many(
        self, events: Sequence[tuple[str, dict[str, Any], str | None]]
    ) -> list[TrackResult | TrackingError]:
        """Apply a batch of ``(group_id, data, event_id)`` events, in order, in one go.

        Each event is applied exactly like :meth:`track` (atomically, deduped
        by its id, events of one group in the given order), but the whole
        batch goes to the cache together: with Redis, one round trip for the
        batch instead of one per event. A bad event does not stop the others:
        its slot in the returned list holds the typed error instead of a
        :class:`TrackResult`. A backend error (Redis, or the store while
        loading a cold group) raises for the whole batch: retrying it is safe,
        the events already applied are recognised by their ids.
        """
        results: list[TrackResult | TrackingError | None] = [None] * len(events)
        requests: list[ApplyRequest] = []
        pending: list[tuple[int, dict[str, TrackerDefinition]]] = []
        later: list[int] = []
        assigned: dict[int, str] = {}  # generated ids, reused if an event is retried
        now = time.time()
        for index, (group_id, data, event_id) in enumerate(events):
            try:
                check_name(group_id, "group_id")
                validate_event(
                    data, max_bytes=self._max_event_bytes, max_depth=self._max_event_depth
                )
                if event_id is not None:
                    check_name(event_id, "event_id")
                loaded = self._group_definitions(group_id)
                if loaded is None:
                    later.append(index)  # cold group: the single path loads it
                    continue
                version, defs = loaded
                steps = self._steps(defs, data)
            except (TrackingTypeError, TrackingValueError) as exc:
                results[index] = exc
                continue
            assigned[index] = event_id or uuid.uuid4().hex
            requests.append(
                ApplyRequest(group_id, version, steps, assigned[index], period_bounds(defs, now))
            )
            pending.append((index, {d.name: d for d in defs}))
        touched: set[str] = set()
        for (index, definitions), request, outcome in zip(
            pending, requests, self.data_cache.apply_many(requests), strict=True
        ):
            if outcome.status in ("stale", "missing", "clock"):
                self._forget(request.group_id)
                later.append(index)
                continue
            result = track_result(request.group_id, request.event_id, outcome, definitions)
            if outcome.status == "applied":
                self._dispatch(result.events)
            touched.add(request.group_id)
            results[index] = result
        for index in sorted(later):
            group_id, data, event_id = events[index]
            try:
                results[index] = self.track(group_id, data, assigned.get(index, event_id))
            except (TrackingTypeError, TrackingValueError) as exc:
                results[index] = exc
        if self.durability == "write-through":
            for group_id in touched:
                flush_group(self.data_cache, self.data_store, group_id)
        return [r if r is not None else TrackResult(False, [], [], []) for r in results]

    def _cold_load(self, group_id: str) -> tuple[int, list[TrackerDefinition]] | None:
        """Load a group from the store into the cache; its definitions if we installed it."""
        installed = load_group(self.data_cache, self.data_store, group_id)
        if installed is None:
            return None
        version, entries = installed
        loaded = (version, [entry.definition for entry in entries])
        self._remember_definitions(group_id, loaded)
        return loaded

    # -- administration --------------------------------------------------
    def add_tracker(
        self,
        group_id: str,
        tracker: BaseTracker,
        expire: int | None = None,
        expire_at: int | None = None,
    ) -> None:
        """Add one tracker to a group (``ConflictingNameError`` if the name is taken)."""
        self.add_trackers(group_id, [tracker], expire=expire, expire_at=expire_at)

    def add_trackers(
        self,
        group_id: str,
        trackers: Sequence[BaseTracker],
        expire: int | None = None,
        expire_at: int | None = None,
    ) -> None:
        """Add trackers to a group atomically: all of them or, on a name clash, none.

        ``expire`` (seconds from now) or ``expire_at`` (epoch seconds) makes
        the trackers expire: they leave the group and EXPIRED fires.
        """
        check_name(group_id, "group_id")
        if not isinstance(trackers, list | tuple):
            raise TrackingTypeError(f"trackers must be a list, not {type(trackers).__name__}")
        for tracker in trackers:
            if not isinstance(tracker, BaseTracker):
                raise TrackingTypeError(
                    f"trackers must hold trackers only, found {type(tracker).__name__}"
                )
            if tracker.group_id is not None and tracker.group_id != group_id:
                tracker.group_id = group_id  # raises GroupIdAlreadySetError
        names = [t.name for t in trackers]
        if len(set(names)) != len(names):
            raise TrackingValueError("tracker names must be unique within one call")
        absolute = self._expiry(expire, expire_at)
        self._ensure_cached(group_id)
        entries = [CachedTracker(t.definition, t.state.copy(), absolute) for t in trackers]
        source_id = uuid.uuid4().hex
        _, fired = self.data_cache.put_trackers(group_id, entries, source_id)
        for tracker in trackers:
            tracker.group_id = group_id
        self._forget(group_id)
        self._persist(group_id)
        by_name = {e.definition.name: e for e in entries}
        self._dispatch(self._events(group_id, [(by_name[f.name], f) for f in fired], source_id))

    def get_trackers(self, group_id: str, name: str | list[str] | None = None) -> list[BaseTracker]:
        """The group's live trackers (all, or the named ones that exist), as copies.

        Expired trackers are left out even before the sweep removes them, and
        a periodic tracker whose period has ended is shown as the new period
        will find it (the cache itself rolls it over on the next event).
        """
        check_name(group_id, "group_id")
        names = check_names(name)
        now = self.data_cache.now()
        group = self.data_cache.get_group(group_id)
        if group is not None:
            entries = list(group.trackers.values())
        else:
            entries = records_to_cache(self.data_store.load_group(group_id, now=now))
        by_name = {
            e.definition.name: e for e in entries if e.expire_at is None or e.expire_at > now
        }
        wanted = list(by_name) if names is None else [n for n in names if n in by_name]
        result = []
        for tracker_name in wanted:
            entry = by_name[tracker_name]
            state = entry.state.copy()
            if entry.definition.period is not None:
                roll_period(entry.definition, state, entry.definition.period.start_of(now), now)
            result.append(BaseTracker.from_parts(entry.definition, state, group_id))
        return result

    def update_tracker(self, group_id: str, tracker: BaseTracker) -> None:
        """Replace a tracker's definition and state with ``tracker`` (or add it)."""
        check_name(group_id, "group_id")
        if not isinstance(tracker, BaseTracker):
            raise TrackingTypeError(f"tracker must be a tracker, not {type(tracker).__name__}")
        if tracker.group_id is not None and tracker.group_id != group_id:
            tracker.group_id = group_id  # raises GroupIdAlreadySetError
        self._ensure_cached(group_id)
        group = self.data_cache.get_group(group_id)
        expire_at = None
        if group is not None and tracker.name in group.trackers:
            expire_at = group.trackers[tracker.name].expire_at
        entry = CachedTracker(tracker.definition, tracker.state.copy(), expire_at)
        source_id = uuid.uuid4().hex
        _, fired = self.data_cache.put_trackers(group_id, [entry], source_id, replace=True)
        self._forget(group_id)
        self._persist(group_id)
        self._dispatch(self._events(group_id, [(entry, f) for f in fired], source_id))

    def remove_tracker(
        self, group_id: str, name: str | list[str] | None = None
    ) -> list[BaseTracker]:
        """Remove the named trackers (all when None); REMOVED fires for each."""
        check_name(group_id, "group_id")
        names = check_names(name)
        self._ensure_cached(group_id)
        source_id = uuid.uuid4().hex
        removed = self.data_cache.remove_trackers(group_id, names, source_id)
        self._forget(group_id)
        self._persist(group_id)
        self._dispatch(self._events(group_id, removed, source_id))
        return [BaseTracker.from_parts(c.definition, c.state, group_id) for c, _ in removed]

    def reset_tracker(self, group_id: str, name: str, reset_policy: int | None = None) -> bool:
        """Reset one tracker (policy default: its own); False if there is no such tracker."""
        check_name(group_id, "group_id")
        check_name(name, "name")
        policy = None if reset_policy is None else check_reset_policy(reset_policy)
        self._ensure_cached(group_id)
        source_id = uuid.uuid4().hex
        done = self.data_cache.reset_trackers(group_id, [name], policy, source_id)
        if not done:
            return False
        self._persist(group_id)
        self._dispatch(self._events(group_id, done, source_id))
        return True

    # -- maintenance -----------------------------------------------------
    def flush(self, confirm: bool = False) -> None:
        """Delete every tracker of this product from the cache and the store.

        Irreversible, so it does nothing unless ``confirm=True``.
        """
        if confirm is not True:
            logger.warning("flush() is irreversible; pass confirm=True to proceed")
            return
        self.data_cache.flush()
        self.data_store.flush()
        self._definitions.clear()

    def flush_dirty(self, limit: int = 1000) -> FlushReport:
        """One write-behind pass: write dirty groups to the store."""
        return flush_dirty(self.data_cache, self.data_store, limit)

    def reset_due(self, limit: int = 1000) -> list[TrackerEvent]:
        """Roll every periodic group into its current calendar period (beat's job).

        Events roll groups over lazily; this catches idle groups so their
        RESET fires on time. Each group's roll is one atomic apply with an
        event id made of the period starts, so running this twice, or late,
        or concurrently with events, resets each tracker once per period.
        """
        events: list[TrackerEvent] = []
        after = ""
        # The cache's clock, not this worker's: the roll's id is made of the
        # period bounds, so a worker clock behind a boundary would send the
        # id of the roll already done for the ended period, which the cache
        # drops as a duplicate before it could see the clock disagree - the
        # RESET would wait until this worker's clock passed the boundary.
        now = self.data_cache.now()
        while len(events) < limit:
            page = self.data_cache.periodic_groups(limit=100, after=after)
            if not page:
                break
            for group_id in page:
                events.extend(self._roll_group(group_id, now))
            after = page[-1]
        return events

    def _roll_group(self, group_id: str, now: float) -> list[TrackerEvent]:
        def request(defs: list[TrackerDefinition], now: float) -> _Request | None:
            periods = period_bounds(defs, now)
            if not periods:
                return None
            digest = hashlib.sha1(repr(sorted(periods.items())).encode(), usedforsecurity=False)
            return [], "period:" + digest.hexdigest(), periods

        applied = self._apply_current(group_id, request, cold_load=False, now=now)
        if applied is None:
            return []
        outcome, roll_id, defs = applied
        result = track_result(group_id, roll_id, outcome, {d.name: d for d in defs})
        if outcome.status == "applied":
            self._dispatch(result.events)
        return result.events

    def _apply_current(
        self,
        group_id: str,
        request: Callable[[list[TrackerDefinition], float], _Request | None],
        *,
        cold_load: bool,
        now: float | None = None,
    ) -> tuple[ApplyOutcome, str, list[TrackerDefinition]] | None:
        """Apply ``request(definitions, now)`` against the group's current definitions.

        Retries with reloaded definitions when another worker changed them
        (``stale``) or the group left the cache (``missing``), and with the
        cache's clock when the period bounds were computed from a clock on
        the other side of a boundary (``clock``). None when the group is not
        cached and ``cold_load`` is off, or when ``request`` has nothing to do.
        ``now`` (a reading of the cache's clock) replaces this process's clock
        on the first try.
        """
        clock: float | None = now
        for _ in range(MAX_ATTEMPTS):
            loaded = self._group_definitions(group_id)
            if loaded is None:
                if not cold_load:
                    return None
                loaded = self._cold_load(group_id)
                if loaded is None:
                    continue
            version, defs = loaded
            built = request(defs, time.time() if clock is None else clock)
            if built is None:
                return None
            steps, event_id, periods = built
            outcome = self.data_cache.apply(group_id, version, steps, event_id, periods=periods)
            if outcome.status == "clock":
                clock = outcome.now
                continue
            if outcome.status in ("stale", "missing"):
                self._forget(group_id)
                continue
            return outcome, event_id, defs
        raise CacheError(f"group {group_id!r} kept changing; gave up after {MAX_ATTEMPTS} tries")

    def evict(self, group_id: str) -> bool:
        """Write a group to the store, then drop it from the cache.

        False (nothing dropped) if the group changed meanwhile or still has
        undelivered events in its outbox: eviction never loses state or
        events. The next event reloads the group from the store.
        """
        check_name(group_id, "group_id")
        flush_group(self.data_cache, self.data_store, group_id)
        evicted = self.data_cache.evict_group(group_id)
        if evicted:
            self._forget(group_id)
        return evicted

    def sweep_expired(self, limit: int = 1000) -> list[TrackerEvent]:
        """Remove expired trackers, persist that, fire and return EXPIRED events."""
        source_id = uuid.uuid4().hex
        # One clock reading for the sweep and the events: the outbox records
        # carry it too, so a payload published from these events (the
        # expire_sweep task does) equals the one a drain would publish.
        now = self.data_cache.now()
        expired = self.data_cache.expire(source_id, now=now, limit=limit)
        events: list[TrackerEvent] = []
        by_group: dict[str, list[tuple[CachedTracker, Fired]]] = defaultdict(list)
        for group_id, cached, fired in expired:
            by_group[group_id].append((cached, fired))
        for group_id, items in by_group.items():
            self._forget(group_id)
            try:
                self._persist(group_id)
            except StoreError:
                logger.exception("expired trackers of %r not yet removed from the store", group_id)
            events.extend(self._events(group_id, items, source_id, now))
        self._dispatch(events)
        return events


__all__ = ["Durability", "Listener", "Number", "TrackResult", "TrackingManager", "period_bounds"]
