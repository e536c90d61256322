"""The Celery configuration, as data, computed from :class:`config.Settings`.

``celery_app.app`` loads this module with ``config_from_object``. Every
value is plain data derived from the ``TRACKING_*`` settings by
:func:`build_config`, so tests, the benchmark and the demo can build the
same configuration for other settings (see ``celery_app.app.configure``).

Why each choice (see DESIGN.md, "Celery conventions"):

- JSON only: nothing read from a message can execute code.
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is
  acknowledged after it ran, so a worker killed mid-task gets it
  redelivered; the engine deduplicates by event id, so the effect is
  exactly once.
- ``worker_prefetch_multiplier`` 1 by default: a dying worker holds back
  at most one message per process (``TRACKING_PREFETCH_MULTIPLIER`` raises
  it for hot tracking queues; redelivery stays safe thanks to dedupe).
  The one exception is ``tasks.track``: it has its own queue
  (``tracking.batch``) that a worker consumes on a channel of its own with
  ``TRACKING_BATCH_PREFETCH`` (see :mod:`celery_app.batching`), because
  batching single messages needs hundreds of them in flight while every
  other queue stays at prefetch 1.
- Redis broker ``visibility_timeout`` above the longest countdown (the
  retry backoff cap), or a retried task would be redelivered twice.
- Task events on (``worker_send_task_events``, ``task_send_sent_event``)
  so Flower lists workers and tasks.
- No result backend by default, and ``track``/``track_many`` ignore
  results: no result traffic on the hot path.
- Queues by role, routes and the beat schedule as data.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from typing import Any

from kombu.entity import Exchange, Queue

from config.settings import Settings, get_settings
from tracking.errors import TrackingValueError

#: Queues by role. A worker started by ``tracking worker`` consumes all of
#: them; production may run dedicated workers per queue.
QUEUE_TRACKING = "tracking"
#: ``tasks.track`` only: consumed in batches (celery_app.batching).
QUEUE_TRACK_BATCH = "tracking.batch"
QUEUE_ADMIN = "admin"
QUEUE_EVENTS = "events"
QUEUE_MAINTENANCE = "maintenance"
QUEUES = (QUEUE_TRACK_BATCH, QUEUE_TRACKING, QUEUE_ADMIN, QUEUE_EVENTS, QUEUE_MAINTENANCE)

#: Task name -> queue. Names are stable public API (``send_task`` by name
#: works from any process without importing ``tasks``).
TASK_QUEUES: dict[str, str] = {
    "tasks.track": QUEUE_TRACK_BATCH,
    "tasks.track_one": QUEUE_TRACKING,
    "tasks.track_many": QUEUE_TRACKING,
    "tasks.add_tracker": QUEUE_ADMIN,
    "tasks.add_trackers": QUEUE_ADMIN,
    "tasks.update_tracker": QUEUE_ADMIN,
    "tasks.remove_tracker": QUEUE_ADMIN,
    "tasks.reset": QUEUE_ADMIN,
    "tasks.events.dispatch_event": QUEUE_EVENTS,
    "tasks.drain_outbox": QUEUE_MAINTENANCE,
    "tasks.flush_dirty": QUEUE_MAINTENANCE,
    "tasks.expire_sweep": QUEUE_MAINTENANCE,
    "tasks.reset_due": QUEUE_MAINTENANCE,
    "tasks.repair_indexes": QUEUE_MAINTENANCE,
    "tasks.noop": QUEUE_TRACKING,
}


def resolve_broker_url(settings: Settings) -> str:
    """``TRACKING_BROKER_URL``, else the embedded Redis over its unix socket.

    Resolving the embedded URL attaches to the server serving
    ``data_dir`` or starts one (owned by this process), see
    :mod:`tracking.embedded`. With a Redis Cluster cache there is no
    default: Celery's Redis transport cannot use a cluster, so a broker
    must be named (RabbitMQ recommended).
    """
    if settings.broker_url and settings.broker_url.strip():
        return settings.broker_url.strip()
    from tracking.cache.redis.client import is_cluster_url  # noqa: PLC0415 - light, no I/O

    if settings.redis_url and is_cluster_url(settings.redis_url.strip()):
        raise TrackingValueError(
            "TRACKING_REDIS_URL is a Redis Cluster, which Celery's Redis transport cannot "
            "use as a broker: set TRACKING_BROKER_URL (RabbitMQ recommended, e.g. "
            "amqp://user:password@host:5672/vhost)"
        )
    from tracking.embedded import (  # noqa: PLC0415 - only without a broker URL
        broker_url_from_redis_url,
        redis_url_from_settings,
    )

    return broker_url_from_redis_url(redis_url_from_settings(settings.redis_url, settings.data_dir))


def make_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The periodic jobs. Each is idempotent: beat may fire twice or late.

    ``expires`` drops a job that waited longer than its own period in the
    queue (the next one does the same work), so a stalled maintenance
    queue never piles up copies.
    """
    flush = settings.flush_interval_seconds
    drain = settings.drain_interval_seconds
    sweep = settings.sweep_interval_seconds
    return {
        "flush-dirty": {
            "task": "tasks.flush_dirty",
            "schedule": timedelta(seconds=flush),
            "options": {"queue": QUEUE_MAINTENANCE, "expires": max(flush, 1.0)},
        },
        "drain-outbox": {
            "task": "tasks.drain_outbox",
            "schedule": timedelta(seconds=drain),
            "options": {"queue": QUEUE_MAINTENANCE, "expires": max(drain, 1.0)},
        },
        "expire-sweep": {
            "task": "tasks.expire_sweep",
            "schedule": timedelta(seconds=sweep),
            "options": {"queue": QUEUE_MAINTENANCE, "expires": max(sweep, 1.0)},
        },
        "reset-due": {
            "task": "tasks.reset_due",
            "schedule": timedelta(seconds=sweep),
            "options": {"queue": QUEUE_MAINTENANCE, "expires": max(sweep, 1.0)},
        },
        "repair-indexes": {
            "task": "tasks.repair_indexes",
            "schedule": timedelta(seconds=settings.repair_interval_seconds),
            "options": {"queue": QUEUE_MAINTENANCE, "expires": settings.repair_interval_seconds},
        },
    }


def beat_config(settings: Settings) -> dict[str, Any]:
    """Which beat scheduler runs the schedule, and redbeat's settings.

    ``file`` is celery's own ``PersistentScheduler`` (its schedule file in
    the data directory; run exactly one beat). ``redbeat`` is celery-redbeat:
    the active beat holds a lock in the cache's Redis and renews it on every
    tick (at least every ``beat_max_loop_interval`` seconds); a standby beat
    polls for the lock at that interval and takes over once the lock has
    expired, ``beat_lock_timeout_seconds`` after the active beat's last
    renewal. Every job is idempotent, so an overlap is harmless. The keys are
    always present (the lazy module serves a fixed set), unused with ``file``.
    """
    if settings.beat_scheduler != "redbeat":
        return {
            "beat_scheduler": "celery.beat:PersistentScheduler",
            "beat_max_loop_interval": 0,  # the scheduler's own default
            "redbeat_redis_url": None,
            "redbeat_key_prefix": None,
            "redbeat_lock_timeout": None,
        }
    from tracking.cache.redis.client import is_cluster_url  # noqa: PLC0415 - only for redbeat
    from tracking.embedded import redis_url_from_settings  # noqa: PLC0415 - only for redbeat
    from tracking.errors import MissingDependencyError, TrackingValueError  # noqa: PLC0415

    if importlib.util.find_spec("redbeat") is None:
        raise MissingDependencyError("celery-redbeat", "TRACKING_BEAT_SCHEDULER=redbeat")
    url = redis_url_from_settings(settings.redis_url, settings.data_dir)
    if is_cluster_url(url):
        raise TrackingValueError(
            "TRACKING_BEAT_SCHEDULER=redbeat keeps its lock in the cache's Redis, which must "
            "then be a standalone server, not a Redis Cluster (TRACKING_REDIS_URL)"
        )
    timeout = settings.beat_lock_timeout_seconds
    return {
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "beat_max_loop_interval": max(1, min(5, timeout // 3)),
        "redbeat_redis_url": url,
        "redbeat_key_prefix": f"{settings.key_prefix}:redbeat:",
        "redbeat_lock_timeout": timeout,
    }


def build_config(settings: Settings) -> dict[str, Any]:
    """The whole Celery configuration for ``settings``, as a plain dict."""
    url = resolve_broker_url(settings)
    transport_options: dict[str, Any] = {}
    if url.startswith(("redis", "rediss")):
        # Longest countdown is the retry backoff cap; keep a wide margin.
        transport_options["visibility_timeout"] = max(
            settings.visibility_timeout_seconds, 2 * settings.retry_backoff_max_seconds
        )
        # kombu restores unacknowledged messages under a Redis mutex that
        # expires after 300 s by default: a worker SIGKILLed while holding it
        # would hold back every redelivery for five minutes. A restore scan
        # takes milliseconds, so 30 s is ample; a rare overlap of two
        # restores only redelivers twice, which the event-id dedupe absorbs.
        transport_options["unacked_mutex_expire"] = 30
        # kombu sweeps for messages a dead or frozen worker holds every
        # unacked_restore_interval (10 s) x unacked_restore_throttle (10) =
        # ~100 s by default. A batching worker holds many recent messages, so
        # sweep every 10 s (one ZRANGE on the unacked index per sweep).
        transport_options["unacked_restore_throttle"] = 1
    elif url.startswith(("amqp", "pyamqp")):
        # Publisher confirms: publish returns once RabbitMQ has the message,
        # which is what lets drain_outbox acknowledge the outbox afterwards.
        transport_options["confirm_publish"] = True
    quorum = settings.rabbitmq_quorum_queues and url.startswith(("amqp", "pyamqp"))
    # Quorum queues (replicated by Raft across the RabbitMQ cluster) for every
    # task queue; Celery then turns off global QoS and delays countdown/ETA
    # tasks by RabbitMQ's native delayed delivery instead of in the worker.
    queue_arguments = {"x-queue-type": "quorum"} if quorum else None
    transport_options.update(settings.broker_transport_options)
    exchange = Exchange("tracking", type="direct")  # type: ignore[no-untyped-call]
    return {
        "broker_url": url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": False,
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": QUEUE_TRACKING,
        "task_queues": tuple(
            Queue(name, exchange, routing_key=name, queue_arguments=queue_arguments)  # type: ignore[no-untyped-call]
            for name in QUEUES
        ),
        "task_default_queue_type": "quorum" if quorum else "classic",
        "task_default_exchange": "tracking",
        "task_default_routing_key": QUEUE_TRACKING,
        "task_routes": {
            name: {"queue": queue, "routing_key": queue} for name, queue in TASK_QUEUES.items()
        },
        "beat_schedule": make_beat_schedule(settings),
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
        **beat_config(settings),
        "timezone": "UTC",
        "enable_utc": True,
    }


#: The names ``build_config`` returns (a unit test keeps the two in step), so
#: a lookup of any other name (Celery probes e.g. ``override_backends``)
#: answers "absent" without building the configuration.
CONFIG_KEYS: frozenset[str] = frozenset(
    {
        "broker_url",
        "broker_transport_options",
        "broker_connection_retry_on_startup",
        "result_backend",
        "task_ignore_result",
        "accept_content",
        "task_serializer",
        "result_serializer",
        "result_accept_content",
        "event_serializer",
        "task_acks_late",
        "task_reject_on_worker_lost",
        "worker_prefetch_multiplier",
        "worker_send_task_events",
        "task_send_sent_event",
        "task_default_queue",
        "task_queues",
        "task_default_queue_type",
        "task_default_exchange",
        "task_default_routing_key",
        "task_routes",
        "beat_schedule",
        "beat_schedule_filename",
        "beat_scheduler",
        "beat_max_loop_interval",
        "redbeat_redis_url",
        "redbeat_key_prefix",
        "redbeat_lock_timeout",
        "timezone",
        "enable_utc",
    }
)

_built: dict[str, Any] | None = None


def current_config() -> dict[str, Any]:
    """The configuration for this process's settings, built on first call.

    Building resolves the broker URL, which without ``TRACKING_BROKER_URL``
    starts or attaches to the embedded Redis: that must happen when Celery
    first reads its configuration (a worker starting, the first publish),
    never when a web process merely imports ``tasks``.
    """
    global _built  # noqa: PLW0603 - one lazily built value per process
    if _built is None:
        _built = build_config(get_settings())
    return _built


# ``config_from_object("celery_app.celeryconfig")`` reads the module's
# attributes (``dir()`` then ``getattr``). Module-level ``__getattr__`` and
# ``__dir__`` (PEP 562) serve them from ``current_config()``, so nothing is
# computed when the module (or ``celery_app``, or ``tasks``) is imported.


def __getattr__(name: str) -> Any:
    if name in CONFIG_KEYS:
        return current_config()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *CONFIG_KEYS})
