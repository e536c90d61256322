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
publish the same entries twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery_app import handlers
from tracking.cache.base import CachedGroup, OutboxEntry
from tracking.engine import Fired
from tracking.events import EVENT_NAMES
from tracking.trackers import BaseTracker

if TYPE_CHECKING:
    import redis

    from tracking.manager import TrackingManager

logger = logging.getLogger(__name__)

#: publish(handler_name, event_dict)
Publisher = Callable[[str, dict[str, Any]], None]

#: Lock lifetime: a drain that takes longer lets another one start (which is
#: safe, only wasteful: at-least-once either way).
LOCK_TIMEOUT_SECONDS = 60
DEFAULT_BATCH = 200
DEFAULT_MAX_ENTRIES = 5_000


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


def expand(
    entry: OutboxEntry,
    group: CachedGroup | None,
    known: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The full event dict for an outbox entry, or None if the record is unusable.

    The tracker snapshot comes from ``known`` (events the caller fired just
    now, with their exact snapshots) or else from the group's current
    definitions (state taken at the record's stage and progress). A tracker
    that is gone (completed, removed, expired) has ``tracker: None``; the
    compact fields (``name``, ``stage``, ``progress``, ``limiter``) are
    always there.
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
    if known is not None and event_id in known:
        event = dict(known[event_id])
    elif group is not None and name in group.trackers:
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
    event.update(
        {
            "stage": fired.stage,
            "progress": fired.progress,
            "limiter_index": fired.limiter,
        }
    )
    return event


def drain(
    manager: TrackingManager,
    publish: Publisher,
    *,
    lock_client: redis.Redis | None = None,
    lock_name: str = "",
    known: Mapping[str, dict[str, Any]] | None = None,
    batch: int = DEFAULT_BATCH,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> DrainReport:
    """Publish up to ``max_entries`` outbox entries to their handlers, then ack them.

    With ``lock_client``, runs only if no other drain holds ``lock_name``
    (returns ``skipped=True`` otherwise). A publish error propagates before
    the batch is acknowledged, so the batch stays in the outbox.
    """
    report = DrainReport()
    lock = None
    if lock_client is not None:
        lock = lock_client.lock(lock_name, timeout=LOCK_TIMEOUT_SECONDS, blocking=False)
        if not lock.acquire():
            report.skipped = True
            return report
    try:
        cache = manager.data_cache
        while report.entries < max_entries:
            entries = cache.outbox(limit=min(batch, max_entries - report.entries))
            if not entries:
                break
            groups: dict[str, CachedGroup | None] = {}
            for entry in entries:
                if entry.group_id not in groups:
                    groups[entry.group_id] = cache.get_group(entry.group_id)
                event = expand(entry, groups[entry.group_id], known)
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
            if len(entries) < batch:
                break
    finally:
        if lock is not None:
            try:
                lock.release()
            except Exception:  # expired meanwhile: another drain may run, harmless
                logger.debug("drain lock already released", exc_info=True)
    return report
