"""Per-process resources of workers, beat and clients, built lazily.

Nothing here connects at import time. A prefork worker forks its pool
processes from the main process; a Redis connection or a manager made
before the fork would be shared by every child (and corrupted). So each
process builds its own on first use, and the ``worker_process_init``
signal (see :mod:`celery_app.signals`) drops whatever a child inherited and
builds a fresh manager before the first task arrives.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import redis
from redis.cluster import RedisCluster

from config.settings import Settings, get_settings

if TYPE_CHECKING:
    from tracking.manager import TrackingManager


class _State:
    """This process's resources; rebuilt after a fork (checked by pid)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: Settings | None = None
        self.manager: TrackingManager | None = None
        self.redis: redis.Redis | RedisCluster | None = None
        self.pid = os.getpid()

    def drop(self, *, close: bool) -> None:
        if close:
            if self.manager is not None:
                self.manager.data_cache.close()
            if self.redis is not None:
                self.redis.close()
        self.manager = None
        self.redis = None
        self.pid = os.getpid()

    def check_pid(self) -> None:
        if self.pid != os.getpid():  # forked without worker_process_init
            self.drop(close=False)


_state = _State()


def settings() -> Settings:
    """The settings this process runs with (the environment's unless overridden)."""
    return _state.settings if _state.settings is not None else get_settings()


def use_settings(new: Settings | None) -> None:
    """Run this process with ``new`` settings (None: back to the environment)."""
    with _state.lock:
        _state.settings = new
        _state.drop(close=True)


def close() -> None:
    """Close this process's connections (they are rebuilt on next use)."""
    with _state.lock:
        _state.drop(close=True)


def reset_after_fork() -> None:
    """Forget (without closing: they belong to the parent) inherited resources."""
    _state.lock = threading.Lock()  # the parent's lock may have been held at fork time
    _state.drop(close=False)


def get_manager() -> TrackingManager:
    """This process's :class:`~tracking.manager.TrackingManager` (built on first use)."""
    from tracking.factory import manager_from_settings  # noqa: PLC0415 - only when needed

    with _state.lock:
        _state.check_pid()
        if _state.manager is None:
            _state.manager = manager_from_settings(settings())
        return _state.manager


def redis_client() -> redis.Redis | RedisCluster:
    """A redis-py client on the cache's Redis, for the service's own small keys.

    Used for the outbox drain lock and the handler done-markers; never for
    tracker state (that belongs to the cache). A ``RedisCluster`` when the
    cache is a cluster (``redis+cluster://``): every service key is one key,
    so each command goes to that key's node.
    """
    from tracking.cache.redis.client import client_from_url  # noqa: PLC0415 - only when needed
    from tracking.factory import redis_url  # noqa: PLC0415 - only when needed

    with _state.lock:
        _state.check_pid()
        if _state.redis is None:
            _state.redis = client_from_url(redis_url(settings()))
        return _state.redis


def service_key(prefix: str, *parts: str) -> str:
    """A key of the service under ``prefix`` (``<prefix>:svc:...``), for any settings."""
    return ":".join((prefix, "svc", *parts))


def key(*parts: str) -> str:
    """A key of the service, under the configured prefix (``<prefix>:svc:...``)."""
    return service_key(settings().key_prefix, *parts)
