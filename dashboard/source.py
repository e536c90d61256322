"""What the dashboard shows, read from the cache, the store and the service keys.

:class:`Source` turns reads into plain view objects the templates render.
It only reads. Costs per page, whatever the number of groups:

- group page: one atomic cache read of the group and its pending outbox
  (:meth:`inspect_group`), one ``LRANGE`` of the group's recent events and
  one pipeline of done/claim markers for its (event, handler) pairs; a
  group that is not cached is read from the store (one ``load_group``).
- overview: one pipeline over the index shards plus one over the oldest
  :data:`~tracking.cache.redis.inspect.DEFAULT_SAMPLE` work entries, and
  one pipeline of the two per-minute rate hashes and the list of the
  latest fired events of all groups (at most
  :data:`~celery_app.activity.RECENT_ALL`): the newest
  :data:`LATEST_EVENTS` are listed, and every group in it is linked. The number of groups in
  the cache is counted by a background SCAN at most every
  :data:`COUNT_EVERY_SECONDS` and shown with its age, never on page load.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster

from celery_app import activity, handlers
from celery_app.runtime import service_key
from dashboard.describe import (
    describe_conditions,
    describe_period,
    describe_policy,
    duration_text,
    time_text,
)
from tracking._validate import check_name
from tracking.cache.base import CachedTracker
from tracking.cache.redis.client import client_from_url
from tracking.cache.redis.inspect import IndexSummary
from tracking.errors import TrackingError
from tracking.events import EVENT_CODES, EVENT_NAMES
from tracking.factory import cache_from_settings, redis_url, store_from_settings
from tracking.limiters import CountLimiter, TimeLimiter
from tracking.model import TrackerState
from tracking.spec import definition_from_spec

if TYPE_CHECKING:
    from config.settings import Settings
    from tracking.cache.redis import RedisDataCache
    from tracking.store.base import DataStore

logger = logging.getLogger(__name__)

#: The background group count is refreshed at most this often.
COUNT_EVERY_SECONDS = 60.0
#: Fired events of all groups listed on the overview.
LATEST_EVENTS = 20


@dataclass
class StageView:
    index: int
    target: float
    state: str  # "done" | "current" | "todo"
    percent: float  # fill of this stage's bar, 0..100


@dataclass
class LimiterView:
    kind: str
    text: str
    used: float | None = None
    limit: float | None = None
    percent: float = 0.0
    blocking: bool = False


@dataclass
class TrackerView:
    name: str
    kind: str
    conditions: str
    key: str | None
    progress: float
    stage: int
    stages: list[StageView]
    limiters: list[LimiterView]
    completed: bool
    limited: bool
    period: str | None
    period_started: str | None
    next_reset: str | None
    expires: str | None
    reset_policy: str
    loop_forever: bool


@dataclass
class HandlerRun:
    handler: str
    status: str  # "done" | "running" | "not run yet" | "waiting in the outbox"


@dataclass
class EventView:
    event_id: str
    event: str
    name: str
    stage: Any
    progress: Any
    time: str
    pending: bool
    handlers: list[HandlerRun] = field(default_factory=list)
    group_id: str | None = None


@dataclass
class GroupPage:
    group_id: str
    where: str  # "cache" | "store" | "nowhere"
    version: int | None
    trackers: list[TrackerView]
    events: list[EventView]
    handlers: list[str]
    handler_error: str | None


@dataclass
class RateRow:
    minute: str
    tracked: int
    completed: int
    percent: float


@dataclass
class Overview:
    prefix: str
    groups: int | None
    groups_counted: str | None
    index: IndexSummary
    flush_lag: str | None
    next_expiry: str | None
    tracked_hour: int
    completed_hour: int
    rates: list[RateRow]
    latest: list[EventView]
    active_groups: list[str]  # groups of the recorded latest events, newest first
    handlers: list[str]
    handler_error: str | None
    flower_url: str | None


def _percent(part: float, whole: float) -> float:
    if whole <= 0:
        return 100.0
    return max(0.0, min(100.0, 100.0 * part / whole))


def tracker_view(cached: CachedTracker, now: float) -> TrackerView:
    """One tracker as the group page shows it."""
    d, s = cached.definition, cached.state
    stages = []
    for i, target in enumerate(d.targets):
        if s.completed or i < s.stage:
            stages.append(StageView(i + 1, target, "done", 100.0))
        elif i == s.stage:
            stages.append(StageView(i + 1, target, "current", _percent(s.progress, target)))
        else:
            stages.append(StageView(i + 1, target, "todo", 0.0))
    limiters = [
        _limiter_view(lim, value, now) for lim, value in zip(d.limiters, s.limits, strict=False)
    ]
    period = next_reset = started = None
    if d.period is not None:
        period = describe_period(d.period.to_spec())
        _start, end = d.period.bounds(now)
        next_reset = time_text(end)
        started = time_text(s.period) if s.period is not None else "no event yet"
    return TrackerView(
        name=d.name,
        kind=d.kind,
        conditions=describe_conditions([c.to_spec() for c in d.conditions]),
        key=d.key,
        progress=s.progress,
        stage=s.stage,
        stages=stages,
        limiters=limiters,
        completed=s.completed,
        limited=s.limited,
        period=period,
        period_started=started,
        next_reset=next_reset,
        expires=time_text(cached.expire_at) if cached.expire_at is not None else None,
        reset_policy=describe_policy(int(d.reset_policy)),
        loop_forever=d.loop_forever,
    )


def _limiter_view(limiter: Any, value: float, now: float) -> LimiterView:
    if isinstance(limiter, CountLimiter):
        used = limiter.count - value
        return LimiterView(
            "count",
            f"{used:g} of {limiter.count} used",
            used=used,
            limit=limiter.count,
            percent=_percent(used, limiter.count),
            blocking=value <= 0,
        )
    if isinstance(limiter, TimeLimiter):
        start, end = value, value + limiter.interval_seconds
        open_now = start <= now <= end
        state = "open now" if open_now else ("not open yet" if now < start else "closed")
        return LimiterView(
            "time",
            f"window {time_text(start)} to {time_text(end)} "
            f"({duration_text(limiter.interval_seconds)}), {state}",
            blocking=not open_now,
        )
    return LimiterView("other", type(limiter).__name__)


class Source:
    """Read-only access to one deployment (the settings the workers use)."""

    def __init__(
        self,
        settings: Settings,
        *,
        cache: RedisDataCache | None = None,
        store: DataStore | None = None,
        client: redis.Redis | RedisCluster | None = None,
        flower_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self.cache: RedisDataCache = cache or cache_from_settings(settings)  # type: ignore[assignment]
        self._store = store
        self.client = client or client_from_url(redis_url(settings))
        self.flower_url = flower_url
        self.handler_error: str | None = None
        try:
            handlers.load_handlers(settings.event_handlers)
        except TrackingError as exc:  # show it, keep serving the rest
            self.handler_error = str(exc)
        self._count_lock = threading.Lock()
        self._count: tuple[int, float] | None = None
        self._counting = False
        self._counter: threading.Thread | None = None

    @property
    def store(self) -> DataStore:
        if self._store is None:
            self._store = store_from_settings(self.settings)
        return self._store

    def handler_names(self) -> list[str]:
        return sorted(handlers.registered())

    # -- group page ----------------------------------------------------------

    def group_page(self, group_id: str) -> GroupPage:
        check_name(group_id, "group id")
        now = time.time()
        inspection = self.cache.inspect_group(group_id)
        where, version = "cache", None
        trackers: list[TrackerView] = []
        if inspection.group is not None:
            version = inspection.group.version
            trackers = [tracker_view(t, now) for t in inspection.group.trackers.values()]
        else:
            records = self.store.load_group(group_id, now)
            where = "store" if records else "nowhere"
            for record in records:
                definition = definition_from_spec(record.spec)
                state = TrackerState.from_json(record.state, definition)
                trackers.append(
                    tracker_view(CachedTracker(definition, state, record.expire_at), now)
                )
        events = [
            EventView(
                event_id=entry.entry_id,
                event=EVENT_NAMES.get(_int(entry.payload.get("code")), "?"),
                name=str(entry.payload.get("name")),
                stage=_stage(entry.payload.get("stage")),
                progress=entry.payload.get("progress"),
                time=time_text(_float(entry.payload.get("event_ts"))),
                pending=True,
            )
            for entry in reversed(inspection.outbox)
        ]
        raw = self.client.lrange(activity.recent_key(self.prefix, group_id), 0, -1)
        events += _recorded_events(raw, seen={e.event_id for e in events})
        self._handler_runs(events)
        return GroupPage(
            group_id=group_id,
            where=where,
            version=version,
            trackers=trackers,
            events=events,
            handlers=self.handler_names(),
            handler_error=self.handler_error,
        )

    def _handler_runs(self, events: list[EventView]) -> None:
        """Fill in each event's handlers and whether each ran (one pipeline)."""
        pairs: list[tuple[EventView, str]] = []
        for event in events:
            code = EVENT_CODES.get(event.event)
            for name in handlers.handlers_for(code) if code is not None else []:
                if event.pending:
                    event.handlers.append(HandlerRun(name, "waiting in the outbox"))
                else:
                    pairs.append((event, name))
        if not pairs:
            return
        pipe = self.client.pipeline(transaction=False)
        for event, name in pairs:
            pipe.exists(service_key(self.prefix, "ev-done", event.event_id, name))
            pipe.exists(service_key(self.prefix, "ev-claim", event.event_id, name))
        flags = pipe.execute()
        for i, (event, name) in enumerate(pairs):
            done, running = flags[2 * i], flags[2 * i + 1]
            status = "done" if done else ("running" if running else "not run yet")
            event.handlers.append(HandlerRun(name, status))

    # -- overview ------------------------------------------------------------

    def overview(self) -> Overview:
        now = time.time()
        summary = self.cache.index_summary()
        minute = int(now // 60)
        hour = minute // 60
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(activity.rate_key(self.prefix, hour - 1))
        pipe.hgetall(activity.rate_key(self.prefix, hour))
        pipe.lrange(activity.recent_all_key(self.prefix), 0, -1)
        *hashes, latest = pipe.execute()
        counts: dict[str, int] = {}
        for raw in hashes:
            for k, v in (raw or {}).items():
                counts[_text(k)] = int(v)
        rows = []
        for m in range(minute - 59, minute + 1):
            rows.append((m, counts.get(f"t:{m}", 0), counts.get(f"c:{m}", 0)))
        peak = max((t for _, t, _ in rows), default=0)
        rates = [
            RateRow(
                time.strftime("%H:%M", time.gmtime(m * 60)),
                t,
                c,
                _percent(t, peak) if peak else 0.0,
            )
            for m, t, c in reversed(rows)
        ]
        groups, counted = self._group_count(now)
        recorded = _recorded_events(latest or [], seen=set())
        return Overview(
            prefix=self.prefix,
            groups=groups,
            groups_counted=counted,
            index=summary,
            flush_lag=duration_text(now - summary.oldest_dirty)
            if summary.oldest_dirty is not None
            else None,
            next_expiry=time_text(summary.next_expiry),
            tracked_hour=sum(t for _, t, _ in rows),
            completed_hour=sum(c for _, _, c in rows),
            rates=rates,
            latest=recorded[:LATEST_EVENTS],
            active_groups=list(dict.fromkeys(e.group_id for e in recorded if e.group_id)),
            handlers=self.handler_names(),
            handler_error=self.handler_error,
            flower_url=self.flower_url,
        )

    def _group_count(self, now: float) -> tuple[int | None, str | None]:
        """The last background count and its age; starts a new count when it is stale."""
        with self._count_lock:
            current = self._count
            stale = current is None or now - current[1] > COUNT_EVERY_SECONDS
            if stale and not self._counting:
                self._counting = True
                self._counter = threading.Thread(target=self._count_groups, daemon=True)
                self._counter.start()
        if current is None:
            return None, None
        return current[0], f"{duration_text(now - current[1])} ago"

    def _count_groups(self) -> None:
        try:
            count = self.cache.count_groups()
            with self._count_lock:
                self._count = (count, time.time())
        except Exception:
            logger.warning("counting the cached groups failed", exc_info=True)
        finally:
            with self._count_lock:
                self._counting = False

    def start_count(self) -> None:
        """Count the cached groups in the background now (the server does this at start)."""
        self._group_count(time.time())

    def wait_for_count(self, timeout: float = 30.0) -> bool:
        """Start a count if none ran and wait for it (tests, the benchmark)."""
        self._group_count(time.time())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._count_lock:
                if self._count is not None and not self._counting:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        if self._counter is not None:
            self._counter.join(timeout=30)
        self.cache.close()
        self.client.close()
        if self._store is not None:
            self._store.close()


def _recorded_events(raw_items: list[Any], seen: set[str]) -> list[EventView]:
    """Fired-event records (see :mod:`celery_app.activity`) as views, repeats dropped."""
    views = []
    for raw in raw_items:
        item = _json(raw)
        event_id = str(item.get("event_id"))
        if event_id in seen:
            continue
        seen.add(event_id)
        group_id = item.get("group_id")
        views.append(
            EventView(
                event_id=event_id,
                event=str(item.get("event") or EVENT_NAMES.get(_int(item.get("code")), "?")),
                name=str(item.get("name")),
                stage=_stage(item.get("stage")),
                progress=item.get("progress"),
                time=time_text(_float(item.get("event_ts"))),
                pending=False,
                group_id=group_id if isinstance(group_id, str) else None,
            )
        )
    return views


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _stage(value: Any) -> Any:
    """An event's 0-based stage index as people count stages (1-based)."""
    return value + 1 if isinstance(value, int) and not isinstance(value, bool) else value
