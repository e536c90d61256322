"""Condition-based progress tracking, dictrack-compatible, built for Celery workers.

Everything a dictrack user imports is here::

    from tracking import KeyValueEQ, CountTracker, CountLimiter, TrackingManager, ResetPolicy

``MongoDBDataStore`` is imported on first access, so ``import tracking``
does not need (or load) pymongo.
"""

from typing import TYPE_CHECKING, Any

from tracking import store as _store
from tracking.cache import DataCache, MemoryDataCache, RedisDataCache
from tracking.conditions import (
    AllOf,
    AnyOf,
    BaseCondition,
    KeyExists,
    KeyNotExists,
    KeyValueComparison,
    KeyValueContained,
    KeyValueEQ,
    KeyValueGE,
    KeyValueGT,
    KeyValueInList,
    KeyValueLE,
    KeyValueListHasItem,
    KeyValueListIntersectList,
    KeyValueListNotHasItem,
    KeyValueListNotIntersectList,
    KeyValueLT,
    KeyValueNE,
    KeyValueNotContained,
    KeyValueNotInList,
    Not,
)
from tracking.errors import (
    BackendError,
    CacheError,
    ConflictingNameError,
    GroupIdAlreadySetError,
    InvalidEventError,
    InvalidSpecError,
    StoreError,
    TrackerCompletedError,
    TrackerNotFoundError,
    TrackingError,
    TrackingTypeError,
    TrackingValueError,
)
from tracking.events import (
    EVENT_ALL,
    EVENT_TRACKER_ADDED,
    EVENT_TRACKER_ALL_COMPLETED,
    EVENT_TRACKER_EXPIRED,
    EVENT_TRACKER_LIMITED,
    EVENT_TRACKER_REMOVED,
    EVENT_TRACKER_RESET,
    EVENT_TRACKER_STAGE_COMPLETED,
    BaseEvent,
    LimitedTrackerEvent,
    TrackerEvent,
)
from tracking.limiters import BaseLimiter, CountLimiter, TimeLimiter
from tracking.manager import TrackingManager, TrackResult
from tracking.model import ResetPolicy, TrackerDefinition, TrackerState
from tracking.periods import ResetPeriod
from tracking.spec import (
    condition_from_spec,
    from_spec,
    limiter_from_spec,
    tracker_from_spec,
)
from tracking.store import (
    DataStore,
    FileDataStore,
    MemoryDataStore,
    TrackerRecord,
    store_from_url,
)
from tracking.trackers import AccumulationTracker, BaseTracker, CountTracker

if TYPE_CHECKING:
    from tracking.store.mongo import MongoDBDataStore

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Serve the lazily imported store backends of :mod:`tracking.store` (PEP 562)."""
    if name == "MongoDBDataStore":
        return _store.MongoDBDataStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EVENT_ALL",
    "EVENT_TRACKER_ADDED",
    "EVENT_TRACKER_ALL_COMPLETED",
    "EVENT_TRACKER_EXPIRED",
    "EVENT_TRACKER_LIMITED",
    "EVENT_TRACKER_REMOVED",
    "EVENT_TRACKER_RESET",
    "EVENT_TRACKER_STAGE_COMPLETED",
    "AccumulationTracker",
    "AllOf",
    "AnyOf",
    "BackendError",
    "BaseCondition",
    "BaseEvent",
    "BaseLimiter",
    "BaseTracker",
    "CacheError",
    "ConflictingNameError",
    "CountLimiter",
    "CountTracker",
    "DataCache",
    "DataStore",
    "FileDataStore",
    "GroupIdAlreadySetError",
    "InvalidEventError",
    "InvalidSpecError",
    "KeyExists",
    "KeyNotExists",
    "KeyValueComparison",
    "KeyValueContained",
    "KeyValueEQ",
    "KeyValueGE",
    "KeyValueGT",
    "KeyValueInList",
    "KeyValueLE",
    "KeyValueLT",
    "KeyValueListHasItem",
    "KeyValueListIntersectList",
    "KeyValueListNotHasItem",
    "KeyValueListNotIntersectList",
    "KeyValueNE",
    "KeyValueNotContained",
    "KeyValueNotInList",
    "LimitedTrackerEvent",
    "MemoryDataCache",
    "MemoryDataStore",
    "MongoDBDataStore",
    "Not",
    "RedisDataCache",
    "ResetPeriod",
    "ResetPolicy",
    "StoreError",
    "TimeLimiter",
    "TrackResult",
    "TrackerCompletedError",
    "TrackerDefinition",
    "TrackerEvent",
    "TrackerNotFoundError",
    "TrackerRecord",
    "TrackerState",
    "TrackingError",
    "TrackingManager",
    "TrackingTypeError",
    "TrackingValueError",
    "__version__",
    "condition_from_spec",
    "from_spec",
    "limiter_from_spec",
    "store_from_url",
    "tracker_from_spec",
]
