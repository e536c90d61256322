"""How :class:`~tracking.manager.TrackingManager` reaches a group's data.

:class:`GroupAccess` is the manager's base: it holds the cache and the
store, the in-process listeners, the worker-local cache of compiled
definitions (checked against each group's version by the cache's atomic
apply), write-through of admin changes, and the outbox. The outbox is
reached through :meth:`GroupAccess.outbox` and
:meth:`GroupAccess.ack_outbox`, so the code that publishes follow-up
events (the Celery service) needs the manager only, never its cache.
The dictrack API itself (track, add/update/remove/reset, beat's jobs) is
in :mod:`tracking.manager`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from tracking._validate import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_EVENT_DEPTH, check_expiry
from tracking.cache.base import CachedTracker, DataCache, OutboxEntry, TrackStep
from tracking.engine import Fired
from tracking.errors import TrackingTypeError, TrackingValueError
from tracking.events import EVENT_ALL, BaseEvent, TrackerEvent
from tracking.firing import fired_events
from tracking.model import TrackerDefinition
from tracking.persistence import flush_group, load_group
from tracking.plan import EventPlan
from tracking.store.base import DataStore

logger = logging.getLogger("tracking.manager")

Listener = Callable[[BaseEvent], Any]
Durability = Literal["write-behind", "write-through"]


class GroupAccess:
    """The manager's state and its access to groups, listeners and the outbox."""

    def __init__(
        self,
        data_cache: DataCache,
        data_store: DataStore,
        *,
        durability: Durability = "write-behind",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_event_depth: int = DEFAULT_MAX_EVENT_DEPTH,
        definitions_cache_size: int = 10_000,
    ) -> None:
        if not isinstance(data_cache, DataCache):
            raise TrackingTypeError(
                f"data_cache must be a DataCache, not {type(data_cache).__name__}"
            )
        if not isinstance(data_store, DataStore):
            raise TrackingTypeError(
                f"data_store must be a DataStore, not {type(data_store).__name__}"
            )
        if durability not in ("write-behind", "write-through"):
            raise TrackingValueError("durability must be 'write-behind' or 'write-through'")
        self.data_cache = data_cache
        self.data_store = data_store
        self.durability: Durability = durability
        self._max_event_bytes = max_event_bytes
        self._max_event_depth = max_event_depth
        self._listeners: dict[int, list[Listener]] = defaultdict(list)
        self._definitions: OrderedDict[str, tuple[int, list[TrackerDefinition]]] = OrderedDict()
        self._definitions_cache_size = definitions_cache_size
        self._plans: dict[int, EventPlan] = {}

    # -- listeners -------------------------------------------------------
    def add_listener(self, code: int, cb: Listener) -> None:
        """Call ``cb(event)`` in this process whenever an event with ``code`` fires here."""
        if isinstance(code, bool) or code not in EVENT_ALL:
            raise TrackingValueError(f"unknown event code {code!r}; expected one of {EVENT_ALL}")
        if not callable(cb):
            raise TrackingTypeError(f"{type(cb).__name__} is not callable")
        self._listeners[code].append(cb)

    def _dispatch(self, events: Iterable[BaseEvent]) -> None:
        for event in events:
            for cb in self._listeners[event.code]:
                try:
                    cb(event)
                except Exception:
                    # The state change is already committed; a listener's bug must
                    # not make the caller think tracking failed (and retry it).
                    logger.exception("listener %r failed on %r", cb, event)

    def _events(
        self,
        group_id: str,
        items: Sequence[tuple[CachedTracker, Fired]],
        source_id: str,
        now: float | None = None,
    ) -> list[TrackerEvent]:
        """Event objects for what an admin or maintenance operation fired (in order)."""
        fired = [(f, cached.definition, cached.state) for cached, f in items]
        return fired_events(
            group_id, fired, source_id, self.data_cache.now() if now is None else now
        )

    # -- definitions (worker-local, checked against the group version) -----
    def _group_definitions(self, group_id: str) -> tuple[int, list[TrackerDefinition]] | None:
        cached = self._definitions.get(group_id)
        if cached is not None:
            self._definitions.move_to_end(group_id)
            return cached
        loaded = self.data_cache.get_definitions(group_id)
        if loaded is not None:
            self._remember_definitions(group_id, loaded)
        return loaded

    def _remember_definitions(
        self, group_id: str, loaded: tuple[int, list[TrackerDefinition]]
    ) -> None:
        self._definitions[group_id] = loaded
        while len(self._definitions) > self._definitions_cache_size:
            self._definitions.popitem(last=False)

    def _steps(self, definitions: list[TrackerDefinition], data: dict[str, Any]) -> list[TrackStep]:
        """The steps an event makes: one per tracker whose conditions it meets.

        Through the :class:`EventPlan` of this definitions list (the cached
        list object of a group, so built once per group and version).
        """
        plan = self._plans.get(id(definitions))
        if plan is None or plan.definitions is not definitions:
            plan = EventPlan(definitions)
            if len(self._plans) >= 2 * self._definitions_cache_size:
                self._plans.clear()
            self._plans[id(definitions)] = plan
        return plan.steps(data)

    def _forget(self, group_id: str) -> None:
        self._definitions.pop(group_id, None)

    def _ensure_cached(self, group_id: str) -> None:
        if self.data_cache.get_definitions(group_id) is None:
            load_group(self.data_cache, self.data_store, group_id)

    def _expiry(self, expire: object, expire_at: object) -> float | None:
        expire_s = check_expiry(expire, "expire")
        expire_at_s = check_expiry(expire_at, "expire_at")
        if expire_s is not None and expire_at_s is not None:
            raise TrackingValueError("give expire or expire_at, not both")
        if expire_s is not None:
            if expire_s <= 0:
                raise TrackingValueError("expire must be a positive number of seconds")
            return self.data_cache.now() + expire_s
        return None if expire_at_s is None else float(expire_at_s)

    def _persist(self, group_id: str) -> None:
        """Admin changes are written through: the store holds them when we return."""
        flush_group(self.data_cache, self.data_store, group_id)

    # -- outbox ------------------------------------------------------------
    def outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` fired events not yet handed on, oldest first (compact records)."""
        return self.data_cache.outbox(limit=limit)

    def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        """Drop outbox entries that were handed on (unknown ones are ignored)."""
        self.data_cache.ack_outbox(entries)

    def ack_events(self, events: Sequence[TrackerEvent]) -> None:
        """Drop the outbox entries of events this process fired and handed on itself."""
        self.data_cache.ack_outbox([OutboxEntry(e.group_id, e.event_id, {}) for e in events])
