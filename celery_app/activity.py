"""Cheap activity records for the dashboard: per-minute rates and recent events.

Two kinds of small service keys (under ``<prefix>:svc:``, see
:func:`celery_app.runtime.service_key`), written by the tasks and read by
the dashboard (:mod:`dashboard`):

``rate:<hour>`` (hash, kept 2 h)
    fields ``t:<minute>`` (events tracked) and ``c:<minute>`` (trackers
    completed), epoch minutes. The track tasks call :func:`note_tracked`
    once per task or batch; counts are added up in the process and written
    by a timer at most once per :data:`FLUSH_SECONDS` (one pipelined
    ``HINCRBY``/``EXPIRE`` per flush), never inside the Lua hot path and
    never one round trip per event. A pool process writes what is left when
    it shuts down; one killed between flushes loses its last second of
    counts: these are rates for people, not the record.
``recent:<group_id>`` (list, newest first, kept for the dedupe window)
    the group's last :data:`RECENT_PER_GROUP` fired events as compact JSON
    (``event_id``, ``event``, ``code``, ``name``, ``stage``, ``progress``,
    ``event_ts``), written by :func:`record_fired` when events are handed to
    the broker (one pipeline per published batch, events are rare next to
    tracked data). A re-published event may appear twice; readers drop
    repeated ids.
``recent`` (list, newest first, kept for the dedupe window)
    the last :data:`RECENT_ALL` fired events of every group, the same
    records plus ``group_id``, written in the same pipeline: the overview's
    "latest fired events", so people find active groups without a key scan.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from celery_app import runtime

logger = logging.getLogger(__name__)

#: How often a process writes its buffered counts.
FLUSH_SECONDS = 1.0
#: Rate hashes live this long (the dashboard shows the last hour).
RATE_TTL_SECONDS = 2 * 3600
#: Fired events remembered per group.
RECENT_PER_GROUP = 50
#: Fired events remembered across all groups.
RECENT_ALL = 100


def rate_key(prefix: str, hour: int) -> str:
    """The hash of per-minute counts for the epoch hour ``hour``."""
    return runtime.service_key(prefix, "rate", str(hour))


def recent_key(prefix: str, group_id: str) -> str:
    """The list of a group's recent fired events."""
    return runtime.service_key(prefix, "recent", group_id)


def recent_all_key(prefix: str) -> str:
    """The list of the recent fired events of every group."""
    return runtime.service_key(prefix, "recent")


class _Counts:
    """This process's unwritten counts, per epoch minute."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tracked: defaultdict[int, int] = defaultdict(int)
        self.completed: defaultdict[int, int] = defaultdict(int)
        self.timer: threading.Timer | None = None
        #: (client, key prefix) of the settings the buffered counts were made under
        self.target: tuple[Any, str] | None = None
        self.pid = os.getpid()


_counts = _Counts()


def note_tracked(tracked: int, completed: int = 0) -> None:
    """Count ``tracked`` applied events and ``completed`` trackers; never raises.

    Called by the track tasks once per task or batch; the counts reach
    Redis within :data:`FLUSH_SECONDS`.
    """
    global _counts  # noqa: PLW0603 - per-process buffer, rebuilt after a fork
    if tracked <= 0 and completed <= 0:
        return
    if _counts.pid != os.getpid():  # forked: the parent's buffer and timer are not ours
        _counts = _Counts()
    minute = int(time.time() // 60)
    try:  # bound now: the process may run under other settings when the timer fires
        target = (runtime.redis_client(), runtime.settings().key_prefix)
    except Exception:
        logger.warning("no Redis for activity counts; dropped", exc_info=True)
        return
    with _counts.lock:
        if _counts.target is not None and _counts.target != target:
            _flush_locked(_counts)
        _counts.target = target
        _counts.tracked[minute] += tracked
        _counts.completed[minute] += completed
        if _counts.timer is None:
            timer = threading.Timer(FLUSH_SECONDS, flush_counts)
            timer.daemon = True
            _counts.timer = timer
            timer.start()


def flush_counts() -> None:
    """Write the buffered counts now (the timer calls this); never raises."""
    counts = _counts
    with counts.lock:
        counts.timer = None
        _flush_locked(counts)


def _flush_locked(counts: _Counts) -> None:
    tracked, completed = dict(counts.tracked), dict(counts.completed)
    counts.tracked.clear()
    counts.completed.clear()
    if counts.target is None or (not tracked and not completed):
        return
    client, prefix = counts.target
    try:
        write_counts(client, prefix, tracked, completed)
    except Exception:
        logger.warning("could not write activity counts; dropped", exc_info=True)


def write_counts(
    client: Any, prefix: str, tracked: Mapping[int, int], completed: Mapping[int, int]
) -> None:
    """One pipeline: ``HINCRBY`` per minute and kind, ``EXPIRE`` per hour hash."""
    pipe = client.pipeline(transaction=False)
    hours: set[int] = set()
    for kind, counts in (("t", tracked), ("c", completed)):
        for minute, count in counts.items():
            if count:
                hour = minute // 60
                hours.add(hour)
                pipe.hincrby(rate_key(prefix, hour), f"{kind}:{minute}", count)
    for hour in hours:
        pipe.expire(rate_key(prefix, hour), RATE_TTL_SECONDS)
    pipe.execute()


def compact_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """What the dashboard keeps of a handler's event dict."""
    return {
        "event_id": event.get("event_id"),
        "event": event.get("event"),
        "code": event.get("code"),
        "name": event.get("name"),
        "stage": event.get("stage"),
        "progress": event.get("progress"),
        "event_ts": event.get("event_ts"),
    }


def record_fired(events: Iterable[Mapping[str, Any]]) -> None:
    """Remember published events per group and across groups (one pipeline); never raises."""
    by_group: dict[str, list[str]] = {}
    everywhere: list[str] = []
    for event in events:
        group_id = event.get("group_id")
        if isinstance(group_id, str):
            compact = compact_event(event)
            by_group.setdefault(group_id, []).append(json.dumps(compact))
            everywhere.append(json.dumps({"group_id": group_id, **compact}))
    if not by_group:
        return
    try:
        prefix = runtime.settings().key_prefix
        ttl = runtime.settings().dedupe_window_seconds
        pipe = runtime.redis_client().pipeline(transaction=False)
        for key, items, keep in [
            *((recent_key(prefix, g), items, RECENT_PER_GROUP) for g, items in by_group.items()),
            (recent_all_key(prefix), everywhere, RECENT_ALL),
        ]:
            pipe.lpush(key, *items)
            pipe.ltrim(key, 0, keep - 1)
            pipe.expire(key, ttl)
        pipe.execute()
    except Exception:
        logger.warning("could not record fired events for the dashboard", exc_info=True)
