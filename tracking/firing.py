"""What fired, as callers see it: event objects, follow-up payloads, ``TrackResult``.

The cache reports fired events as compact :class:`~tracking.engine.Fired`
records, and writes the same records to the group's outbox in the same
atomic step (:func:`tracking.cache.base.outbox_payload`). This module is
the one place that turns them into something else:

* :func:`fired_events` builds the event objects (with tracker snapshots)
  that in-process listeners and :class:`TrackResult` carry;
* :func:`event_payload` and :func:`record_payload` build the JSON payload
  a follow-up handler receives, from an event this process fired or from
  an outbox record. Both read only the fields of the record, so an event
  has the same payload whichever path delivers it (the ``track`` task
  publishing at once, or the outbox drain re-publishing it later, when
  the tracker may have changed or left the group).

The payload's fields are defined in the README ("Follow-up event
payload"); ``stage`` is the 0-based index of the stage in the tracker's
``target`` list, as in the tracker's stored state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tracking.cache.base import ApplyOutcome
from tracking.engine import Fired
from tracking.errors import TrackingValueError
from tracking.events import EVENT_NAMES, TrackerEvent, make_event_id
from tracking.model import TrackerDefinition, TrackerState
from tracking.trackers import BaseTracker, event_of

__all__ = ["TrackResult", "event_payload", "fired_events", "record_payload", "track_result"]

#: One fired record with the tracker it is about (None when that is unknown).
FiredItem = tuple[Fired, TrackerDefinition | None, TrackerState | None]


def fired_events(
    group_id: str, items: Iterable[FiredItem], source_id: str, event_ts: float
) -> list[TrackerEvent]:
    """The event objects for what one cache operation fired, in firing order.

    ``items`` are the operation's fired records in the order the cache
    fired them (the position is part of each event id, as in the outbox),
    each with the definition and state to snapshot; a record without them
    (the tracker is unknown here) gets no object, but keeps its position.
    """
    events = []
    for index, (fired, definition, state) in enumerate(items):
        if definition is None or state is None:
            continue
        event_id = make_event_id(source_id, group_id, fired.name, fired.code, index)
        events.append(event_of(definition, state, fired, group_id, event_ts, event_id))
    return events


def _payload(group_id: str, fired: Fired, event_id: str, event_ts: float) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "code": fired.code,
        "event": EVENT_NAMES[fired.code],
        "event_ts": float(event_ts),
        "group_id": group_id,
        "name": fired.name,
        "stage": fired.stage,
        "progress": fired.progress,
        "limiter": fired.limiter,
    }


def event_payload(event: TrackerEvent) -> dict[str, Any]:
    """The follow-up payload of an event this process fired (see the module docstring)."""
    if event.fired is None:
        raise TrackingValueError(f"{event!r} was not fired by a cache: it has no outbox record")
    return _payload(event.group_id, event.fired, event.event_id, event.event_ts)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def record_payload(
    group_id: str, entry_id: str, record: Mapping[str, object]
) -> dict[str, Any] | None:
    """The follow-up payload of an outbox record, or None if the record is unusable."""
    code, name = _int_or_none(record.get("code")), record.get("name")
    if code is None or code not in EVENT_NAMES or not isinstance(name, str):
        return None
    progress, event_ts = record.get("progress"), record.get("event_ts")
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        progress = 0
    if isinstance(event_ts, bool) or not isinstance(event_ts, int | float):
        event_ts = 0.0
    fired = Fired(
        code=code,
        name=name,
        stage=_int_or_none(record.get("stage")) or 0,
        progress=progress,
        limiter=_int_or_none(record.get("limiter")),
    )
    return _payload(group_id, fired, str(record.get("event_id") or entry_id), event_ts)


class TrackResult(tuple[bool, list[BaseTracker], list[BaseTracker], list[BaseTracker]]):
    """``(ok, dirtied, completed, limited)`` as dictrack returns, plus details.

    Unpacks like dictrack's 4-tuple. Extra attributes: ``duplicate`` (the
    event id was already applied; the lists are the original outcome),
    ``event_id`` and ``events`` (what fired).
    """

    duplicate: bool
    event_id: str
    events: list[TrackerEvent]

    def __new__(
        cls,
        ok: bool,
        dirtied: list[BaseTracker],
        completed: list[BaseTracker],
        limited: list[BaseTracker],
        *,
        duplicate: bool = False,
        event_id: str = "",
        events: list[TrackerEvent] | None = None,
    ) -> TrackResult:
        self = super().__new__(cls, (ok, dirtied, completed, limited))
        self.duplicate = duplicate
        self.event_id = event_id
        self.events = events or []
        return self

    @property
    def ok(self) -> bool:
        return self[0]

    @property
    def dirtied(self) -> list[BaseTracker]:
        return self[1]

    @property
    def completed(self) -> list[BaseTracker]:
        return self[2]

    @property
    def limited(self) -> list[BaseTracker]:
        return self[3]


def track_result(
    group_id: str,
    event_id: str,
    outcome: ApplyOutcome,
    definitions: Mapping[str, TrackerDefinition],
) -> TrackResult:
    """The :class:`TrackResult` of one apply: trackers after it and the events it fired."""

    def trackers(names: list[str]) -> list[BaseTracker]:
        return [
            BaseTracker.from_parts(definitions[name], outcome.states[name], group_id)
            for name in names
            if name in definitions and name in outcome.states
        ]

    items = [
        (fired, definitions.get(fired.name), outcome.states.get(fired.name))
        for fired in outcome.fired
    ]
    return TrackResult(
        True,
        trackers(outcome.changed),
        trackers(outcome.completed),
        trackers(outcome.limited),
        duplicate=outcome.status == "duplicate",
        event_id=event_id,
        events=fired_events(group_id, items, event_id, outcome.now),
    )
