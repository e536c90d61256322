"""From the cache's outbox to the broker: at-least-once, then acknowledged.

The engine appends every fired event to the group's outbox in the same
atomic step as the state change. :func:`drain` reads a batch of outbox
entries, expands each compact record into the full event dict handlers
receive, publishes one ``dispatch_event`` task per registered handler,
and only after every publish of the batch returned (for RabbitMQ: after
the publisher confirm) acknowledges the batch in the cache.

So an event is never lost: a worker that dies after the Redis step but
before publishing leaves the entries in the outbox for the next drain
(beat runs one every ``TRACKING_DRAIN_INTERVAL_SECONDS``). A worker that
dies after publishing but before the acknowledgement makes the next drain
publish the batch again: delivery to the broker is at-least-once. Each
published task carries the event's deterministic ``event_id`` and a task
id derived from it and the handler, and ``dispatch_event`` skips a
(event, handler) pair that already succeeded, so handlers normally run
once; a handler with external side effects should still dedupe by
``event_id`` for the rare crash windows.

Only one drain runs at a time (a short Redis lock), so concurrent drains
(beat plus the one a ``track`` task starts when it fired events) do not
publish the same entries twice; a drain that finds the lock taken hands
its work to the holder (see :func:`drain`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery_app import handlers
from tracking.cache.base import CachedGroup, OutboxEntry
from tracking.engine import Fired
from tracking.events import EVENT_NAMES, TrackerEvent
from tracking.trackers import BaseTracker

if TYPE_CHECKING:
    import redis
    from redis.cluster import RedisCluster

    from tracking.manager import TrackingManager

logger = logging.getLogger(__name__)

#: publish(handler_name, event_dict)
Publisher = Callable[[str, dict[str, Any]], None]

#: Lock lifetime: a drain that takes longer lets another one start (which is
#: safe, only wasteful: at-least-once either way).
LOCK_TIMEOUT_SECONDS = 60
DEFAULT_BATCH = 200
DEFAULT_MAX_ENTRIES = 5_000
#: Drain rounds one call makes when others asked for a drain meanwhile.
MAX_ROUNDS = 10


@dataclass
class DrainReport:
    """What one drain did."""

    entries: int = 0
    published: int = 0
    dropped: int = 0
    skipped: bool = False
    by_event: dict[str, int] = field(default_factory=dict)


def _number(value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return value


def event_dict(event: TrackerEvent) -> dict[str, Any]:
    """The JSON dict handlers receive for an event fired in this process."""
    data = event.to_dict()
    data["stage"] = event.tracker.current_stage
    data["progress"] = event.tracker.progress
    return data


def publish_fired(
    manager: TrackingManager, publish: Publisher, events: Sequence[TrackerEvent]
) -> int:
    """Publish events this process just fired (exact snapshots), then ack their entries.

    The fast path of ``track``: no outbox read, no lock. A drain running at
    the same moment may publish some of them too (at-least-once, deduped
    by ``dispatch_event``). Returns the number of tasks published.
    """
    published = 0
    for event in events:
        data = event_dict(event)
        for name in handlers.handlers_for(event.code):
            publish(name, data)
            published += 1
    manager.data_cache.ack_outbox([OutboxEntry(e.group_id, e.event_id, {}) for e in events])
    return published


def expand(entry: OutboxEntry, group: CachedGroup | None) -> dict[str, Any] | None:
    """The full event dict for an outbox entry, or None if the record is unusable.

    The tracker snapshot is rebuilt from the group's current definitions
    (state taken at the record's stage and progress). A tracker that is
    gone (completed, removed, expired) has ``tracker: None``; the compact
    fields (``group_id``, ``name``, ``stage``, ``progress``) are always
    there. (Events fired by ``track`` normally bypass this: see
    :func:`publish_fired`.)
    """
    payload = entry.payload
    event_id = str(payload.get("event_id") or entry.entry_id)
    code = payload.get("code")
    name = payload.get("name")
    if not isinstance(code, int) or code not in EVENT_NAMES or not isinstance(name, str):
        return None
    stage = payload.get("stage")
    limiter = payload.get("limiter")
    fired = Fired(
        code=code,
        name=name,
        stage=stage if isinstance(stage, int) and not isinstance(stage, bool) else 0,
        progress=_number(payload.get("progress")),
        limiter=limiter if isinstance(limiter, int) and not isinstance(limiter, bool) else None,
    )
    event_ts = float(_number(payload.get("event_ts")))
    event: dict[str, Any] | None = None
    if group is not None and name in group.trackers:
        cached = group.trackers[name]
        try:
            tracker = BaseTracker.from_parts(cached.definition, cached.state, entry.group_id)
            event = tracker.event_for(fired, entry.group_id, event_ts, event_id).to_dict()
        except (IndexError, ValueError, TypeError):  # definition changed since it fired
            logger.warning("no snapshot for event %s of %r/%r", event_id, entry.group_id, name)
    if event is None:
        event = {
            "event_id": event_id,
            "code": code,
            "event": EVENT_NAMES[code],
            "event_ts": event_ts,
            "group_id": entry.group_id,
            "name": name,
            "tracker": None,
        }
    event.update({"stage": fired.stage, "progress": fired.progress})
    return event


def drain(
    manager: TrackingManager,
    publish: Publisher,
    *,
    lock_client: redis.Redis | RedisCluster | None = None,
    lock_name: str = "",
    batch: int = DEFAULT_BATCH,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> DrainReport:
    """Publish up to ``max_entries`` outbox entries to their handlers, then ack them.

    With ``lock_client``, one drain runs at a time. A caller that finds the
    lock taken does not wait: it leaves a "pending" mark (set *before*
    trying the lock) and returns ``skipped=True``; the holder deletes the
    mark right after taking the lock (before reading the outbox) and, after
    releasing the lock, drains again if a mark appeared meanwhile. Either
    the holder sees the mark, or the lock was already free when the caller
    tried it, so no entry waits for beat's next drain. A publish error
    propagates before the batch is acknowledged: the batch stays in the
    outbox.
    """
    report = DrainReport()
    if lock_client is None:
        _drain_batches(manager, publish, batch, max_entries, report)
        return report
    pending = f"{lock_name}:pending"
    lock_client.set(pending, b"1", ex=LOCK_TIMEOUT_SECONDS)
    for _ in range(MAX_ROUNDS):
        lock = lock_client.lock(lock_name, timeout=LOCK_TIMEOUT_SECONDS, blocking=False)
        if not lock.acquire():
            report.skipped = report.entries == 0
            return report
        try:
            lock_client.delete(pending)
            _drain_batches(manager, publish, batch, max_entries, report)
        finally:
            try:
                lock.release()
            except Exception:  # expired meanwhile: another drain may run, harmless
                logger.debug("drain lock already released", exc_info=True)
        if report.entries >= max_entries or not lock_client.exists(pending):
            break
    return report


def _drain_batches(
    manager: TrackingManager,
    publish: Publisher,
    batch: int,
    max_entries: int,
    report: DrainReport,
) -> None:
    cache = manager.data_cache
    while report.entries < max_entries:
        entries = cache.outbox(limit=min(batch, max_entries - report.entries))
        if not entries:
            break
        groups: dict[str, CachedGroup | None] = {}
        for entry in entries:
            if entry.group_id not in groups:
                groups[entry.group_id] = cache.get_group(entry.group_id)
            event = expand(entry, groups[entry.group_id])
            if event is None:
                logger.error("dropping unusable outbox entry %r", entry)
                report.dropped += 1
                continue
            for name in handlers.handlers_for(event["code"]):
                publish(name, event)
                report.published += 1
            report.by_event[event["event"]] = report.by_event.get(event["event"], 0) + 1
        cache.ack_outbox(entries)
        report.entries += len(entries)
