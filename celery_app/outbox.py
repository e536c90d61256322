"""From the cache's outbox to the broker: at-least-once, then acknowledged.

The engine appends every fired event to the group's outbox in the same
atomic step as the state change. :func:`drain` reads a batch of outbox
entries (through the manager), turns each compact record into the event
payload handlers receive (:func:`tracking.firing.record_payload`, the
same fields :func:`publish_fired` sends), publishes one ``dispatch_event``
task per registered handler, and only after every publish of the batch
returned (for RabbitMQ: after the publisher confirm) acknowledges the
batch in the cache.

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
from tracking.events import TrackerEvent
from tracking.firing import event_payload, record_payload

if TYPE_CHECKING:
    import redis
    from redis.cluster import RedisCluster

    from tracking.manager import TrackingManager

logger = logging.getLogger(__name__)

#: publish(handler_name, event_dict)
Publisher = Callable[[str, dict[str, Any]], None]
#: Told the events of each batch handed on (the dashboard's recent-events record).
Recorder = Callable[[list[dict[str, Any]]], None]

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


def publish_fired(
    manager: TrackingManager,
    publish: Publisher,
    events: Sequence[TrackerEvent],
    record: Recorder | None = None,
) -> int:
    """Publish events this process just fired, then ack their outbox entries.

    The fast path of ``track``: no outbox read, no lock. The payload is
    :func:`tracking.firing.event_payload`, built from the same compact
    record the outbox holds, so it equals what a drain would publish. A
    drain running at the same moment may publish some of them too
    (at-least-once, deduped by ``dispatch_event``). Returns the number of
    tasks published. ``record`` is told the payloads once they were published.
    """
    published = 0
    payloads = []
    for event in events:
        data = event_payload(event)
        for name in handlers.handlers_for(event.code):
            publish(name, data)
            published += 1
        payloads.append(data)
    if record is not None:
        record(payloads)
    manager.ack_events(events)
    return published


def drain(
    manager: TrackingManager,
    publish: Publisher,
    *,
    lock_client: redis.Redis | RedisCluster | None = None,
    lock_name: str = "",
    batch: int = DEFAULT_BATCH,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    record: Recorder | None = None,
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
    outbox. ``record`` is told each batch's events once they were published.
    """
    report = DrainReport()
    if lock_client is None:
        _drain_batches(manager, publish, batch, max_entries, report, record)
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
            _drain_batches(manager, publish, batch, max_entries, report, record)
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
    record: Recorder | None = None,
) -> None:
    while report.entries < max_entries:
        entries = manager.outbox(limit=min(batch, max_entries - report.entries))
        if not entries:
            break
        published: list[dict[str, Any]] = []
        for entry in entries:
            event = record_payload(entry.group_id, entry.entry_id, entry.payload)
            if event is None:
                logger.error("dropping unusable outbox entry %r", entry)
                report.dropped += 1
                continue
            for name in handlers.handlers_for(event["code"]):
                publish(name, event)
                report.published += 1
            published.append(event)
            report.by_event[event["event"]] = report.by_event.get(event["event"], 0) + 1
        if record is not None:
            record(published)
        manager.ack_outbox(entries)
        report.entries += len(entries)
