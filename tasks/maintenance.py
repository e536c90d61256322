"""Periodic jobs run by celery beat (``maintenance`` queue); all idempotent.

Beat may send a job twice or late; each of these does the work that is due
*now* and nothing else, so running it again changes nothing:

- ``flush_dirty``: write-behind, dirty groups to the store (a clean group
  is skipped).
- ``drain_outbox``: hand fired events to the broker (acknowledged entries
  are gone; one drain at a time).
- ``expire_sweep``: remove expired trackers and fire EXPIRED (removed
  trackers are not found again).
- ``reset_due``: calendar-period resets, by the engine (see
  :func:`reset_due`).
- ``repair_indexes``: re-add every group with work, expiring or periodic
  trackers to the Redis cache's cross-group indexes (additions only).

Logging: a run that did something logs one INFO line saying what; an idle
run logs at DEBUG. Celery's own "received"/"succeeded" lines for these
tasks are demoted to DEBUG too (:mod:`celery_app.quietlog`), so at the
default level the worker log shows real work only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis.exceptions
from celery.utils.log import get_task_logger

from celery_app import metrics, runtime
from celery_app.app import app
from tasks.base import MAINTENANCE_MAX_RETRIES, TrackingTask
from tasks.events import drain_all, publish_now

#: Groups (or trackers) handled by one run; the rest waits for the next run.
BATCH_LIMIT = 1000
#: A flush pass older than this no longer holds off the next one.
FLUSH_LOCK_SECONDS = 300

logger = get_task_logger(__name__)


def _summary(did_something: bool, message: str, *args: object) -> None:
    """INFO when the run changed something, DEBUG when it was idle."""
    logger.log(logging.INFO if did_something else logging.DEBUG, message, *args)


@app.task(
    base=TrackingTask,
    bind=True,
    name="tasks.flush_dirty",
    ignore_result=True,
    max_retries=MAINTENANCE_MAX_RETRIES,
)  # type: ignore[untyped-decorator]
def flush_dirty(self: TrackingTask, limit: int = BATCH_LIMIT) -> dict[str, Any]:
    """One write-behind pass over up to ``limit`` dirty groups; skipped while another runs.

    One pass at a time (a Redis lock, expiring after ``FLUSH_LOCK_SECONDS``
    should its holder die): during a store outage each pass waits out the
    store's timeouts, and beat keeps sending one per interval; without the
    lock those passes would occupy every pool process and starve ``track``
    (seen: tracking stalled for minutes during a 10 s Mongo outage). A
    skipped pass loses nothing: the running one or the next one flushes.
    """
    lock = runtime.redis_client().lock(
        runtime.key("flush-lock"), timeout=FLUSH_LOCK_SECONDS, blocking=False
    )
    if not lock.acquire(blocking=False):
        logger.debug("flush_dirty: another pass is running; skipped")
        return {"skipped": True}
    try:
        return _flush_pass(limit)
    finally:
        with contextlib.suppress(redis.exceptions.RedisError):
            lock.release()  # LockNotOwnedError (expired meanwhile) is a RedisError too


def _flush_pass(limit: int) -> dict[str, Any]:
    """The pass itself, with its metrics and one log line when it did something."""
    start = time.monotonic()
    report = runtime.get_manager().flush_dirty(limit)
    m = metrics.metrics()
    m.flush_duration.observe(time.monotonic() - start)
    m.dirty_groups.set(len(report.flushed) + len(report.changed_meanwhile) + len(report.failed))
    m.last_flush.set(time.time())
    _summary(
        bool(report.flushed or report.changed_meanwhile or report.failed),
        "flush_dirty: wrote %d group(s) to the store, %d changed meanwhile, %d failed",
        len(report.flushed),
        len(report.changed_meanwhile),
        len(report.failed),
    )
    return {
        "flushed": len(report.flushed),
        "changed_meanwhile": len(report.changed_meanwhile),
        "failed": report.failed,
    }


@app.task(
    base=TrackingTask,
    bind=True,
    name="tasks.drain_outbox",
    ignore_result=True,
    max_retries=MAINTENANCE_MAX_RETRIES,
)  # type: ignore[untyped-decorator]
def drain_outbox(self: TrackingTask) -> dict[str, Any]:
    """Publish pending outbox entries as ``dispatch_event`` tasks, then acknowledge them.

    A publish failure raises (retried): unacknowledged entries stay in the
    outbox, nothing is lost.
    """
    report = drain_all()
    _summary(
        bool(report.entries or report.published or report.dropped),
        "drain_outbox: %d outbox entries, published %d handler task(s), dropped %d",
        report.entries,
        report.published,
        report.dropped,
    )
    return {
        "entries": report.entries,
        "published": report.published,
        "dropped": report.dropped,
        "skipped": report.skipped,
    }


@app.task(
    base=TrackingTask,
    bind=True,
    name="tasks.expire_sweep",
    ignore_result=True,
    max_retries=MAINTENANCE_MAX_RETRIES,
)  # type: ignore[untyped-decorator]
def expire_sweep(self: TrackingTask, limit: int = BATCH_LIMIT) -> int:
    """Remove expired trackers and publish their EXPIRED events; returns how many."""
    expired = runtime.get_manager().sweep_expired(limit)
    publish_now(expired)
    _summary(bool(expired), "expire_sweep: %d tracker(s) expired", len(expired))
    return len(expired)


@app.task(
    base=TrackingTask,
    bind=True,
    name="tasks.reset_due",
    ignore_result=True,
    max_retries=MAINTENANCE_MAX_RETRIES,
)  # type: ignore[untyped-decorator]
def reset_due(self: TrackingTask) -> Any:
    """Calendar-period resets that are due: ``manager.reset_due()`` when the engine has it.

    Contract with the engine: ``TrackingManager.reset_due(limit: int) -> list[TrackerEvent]``
    rolls over every periodic tracker whose current period ended (state
    carries the period id; the rollover is keyed by it, so a second call in
    the same period changes nothing), queues RESET events in the outbox,
    and returns them; they are published here at once (same payload as a drain). A
    manager without ``reset_due`` makes this job a no-op.
    """
    manager = runtime.get_manager()
    method = getattr(manager, "reset_due", None)
    if method is None:
        return {"supported": False, "reset": 0}
    events = method(BATCH_LIMIT)
    publish_now(events)
    _summary(bool(events), "reset_due: %d periodic tracker(s) reset", len(events))
    return {"supported": True, "reset": len(events)}


@app.task(base=TrackingTask, bind=True, name="tasks.repair_indexes", ignore_result=True)  # type: ignore[untyped-decorator]
def repair_indexes(self: TrackingTask) -> int:
    """Rebuild the cache's cross-group index entries from its groups; returns groups seen.

    A backstop: an index write lost with the client that was to send it
    (see ``tracking.cache.redis.indexes``) delays that group's flush,
    outbox drain, expiry or period reset until this runs. Idempotent (it
    only adds entries that are due). A cache without such indexes: 0.
    """
    repair = getattr(runtime.get_manager().data_cache, "repair_indexes", None)
    seen = int(repair()) if callable(repair) else 0
    _summary(False, "repair_indexes: %d group(s) checked", seen)
    return seen
